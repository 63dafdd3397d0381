"""Candidates of a finished search and their scores: the trials loaded from the search folder
and MLflow, each scored on the val pool, and the test pool's verdict on a chosen ensemble
(its table, and the CMC curves of each method in the three identification scenarios).

Every candidate here is judged with the ensemble's gender predictor (the best auxiliary
classifier by val AUC) choosing the prototypes, as `perturb` will on unlabelled images.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from san_search import metric_names as mn
from san_search.console import Log
from san_search.ensemble.serving import (
    EnsembleRuntime,
    member_index,
    torch_gender,
    torch_member,
)
from san_search.ensemble.tables import ADVANTAGE_MATCHER, BASELINE, METHOD, SIGMA
from san_search.errors import EnsembleError

if TYPE_CHECKING:
    from san_search.data.store import PreparedDataset
    from san_search.search.record import SearchRecord
    from san_search.search.space import SearchSpace
    from san_search.zoo.pool import BaselineSweep, Curves, PoolScorer
    from san_search.zoo.store import Zoo

DISTANCE_IMAGES = 512  # val images the pairwise output distances are measured on
ENSEMBLE_KIND = "ensemble"  # the KIND_TAG of an ensemble run (not a candidate)


@dataclasses.dataclass
class Candidate:
    """A finished, finalised trial of the search and its downloaded weights."""

    name: str  # the trial id
    run_id: str
    checkpoint: Path  # local folder: model.safetensors + trainer.json
    search_metrics: dict[str, float]  # the search's last reported metrics (val pool)
    feasible: bool
    params: dict[str, str] = dataclasses.field(default_factory=dict)  # what it is (MLflow params)


def stable_order(cands: list[Candidate]) -> list[Candidate]:
    """Candidates in an order that depends on what they are, not on Tune's random trial ids:
    by their params, then id. Member order decides which member the random policy gives an
    image, so a rerun with the same seeds must list the same candidates the same way."""
    return sorted(cands, key=lambda c: (json.dumps(c.params, sort_keys=True), c.name))


def load_candidates(folder: Path, log: Log = print
                    ) -> tuple[SearchRecord, SearchSpace, list[Candidate]]:
    """The search record, its space, and every finished, finalised trial with its weights
    (downloaded from its MLflow child run into <folder>/ensemble/candidates/)."""
    from san_search import tracking
    from san_search.search import SearchRecord, load_search_space
    from san_search.tracking import FINALIZED_TAG, KIND_TAG, TRIAL_TAG, child_runs

    record = SearchRecord.load(folder)
    space = load_search_space(folder / "space.yaml", record.overrides)
    tracking.check_reachable(record.tracking_uri)
    parent = tracking.get_run(record.tracking_uri, record.parent_run_id)
    if parent.info.status == "RUNNING":
        log(f"note: search {record.name} is still running; selecting from the trials "
            "finished so far")
    cache = folder / "ensemble" / "candidates"
    out: list[Candidate] = []
    for run in child_runs(record.tracking_uri, record.experiment_id, record.parent_run_id):
        if run.info.status != "FINISHED" or run.data.tags.get(FINALIZED_TAG) != "1":
            continue
        if run.data.tags.get(KIND_TAG) == ENSEMBLE_KIND:
            continue
        dst = cache / run.info.run_id
        if not (dst / "weights" / "model.safetensors").is_file():
            tracking.download_artifacts(record.tracking_uri, run.info.run_id, "weights", dst)
        metrics = dict(run.data.metrics)
        viol = space.violation(metrics)
        finite = all(np.isfinite(metrics.get(m, np.nan)) for m in space.metrics)
        out.append(Candidate(run.data.tags.get(TRIAL_TAG, run.info.run_name), run.info.run_id,
                             dst / "weights", metrics, bool(finite and viol == 0),
                             dict(run.data.params)))
    return record, space, stable_order(out)


def best_predictor(zoo: Zoo) -> str:
    """The auxiliary gender classifier with the best val AUC: the ensemble's predictor."""
    names = zoo.names("gender", "aux")
    if not names:
        raise EnsembleError(f"zoo {zoo.path} has no aux gender classifier to predict genders")
    return max(names, key=lambda n: (zoo.entries[n].get("metrics", {}).get("val_auc", 0.0), n))


def torch_runtime(checkpoints: Sequence[Path], zoo: Zoo, predictor: str,
                  prototypes: dict[str, np.ndarray], policy: str = "random", seed: int = 0
                  ) -> EnsembleRuntime:
    """An ensemble runtime straight from the members' training checkpoints."""
    from san_search.training.trainer import load_san

    members = [torch_member(load_san(c)[0]) for c in checkpoints]
    return EnsembleRuntime(members, torch_gender(zoo.load(predictor).eval()), prototypes,
                           policy, seed)


@dataclasses.dataclass
class ValScores:
    """The val pool's view of the candidates, in the order they were given."""

    names: list[str]
    classifiers: list[str]  # the val gender classifiers
    privacy: np.ndarray  # (n, C)
    metrics: list[dict[str, float]]  # the full val-pool score of each candidate
    distance: np.ndarray  # (n, n) mean absolute output difference
    outputs: list[np.ndarray]  # each candidate's val outputs


def score_candidates(cands: Sequence[Candidate], ds: PreparedDataset, zoo: Zoo, predictor: str,
                     log: Log = print) -> tuple[ValScores, PoolScorer]:
    """Every candidate's val-pool score, its privacy per val classifier and the pairwise
    output distances; also returns the val `PoolScorer` for scoring sets later."""
    from san_search.training.trainer import load_san
    from san_search.zoo.pool import PoolScorer, load_pool

    gender = torch_gender(zoo.load(predictor).eval())  # loaded once, shared by every candidate
    val = ds.split("val")
    scorer = PoolScorer(load_pool(zoo, "val"), val)
    classifiers = [g.name for g in scorer.pool.genders]
    outputs, metrics = [], []
    t0 = time.perf_counter()
    for i, c in enumerate(cands):
        rt = EnsembleRuntime([torch_member(load_san(c.checkpoint)[0])], gender, ds.prototypes)
        y = rt.perturb(val.images)
        outputs.append(y)
        metrics.append(scorer.score(y))
        log(f"  scored {c.name} on the val pool ({i + 1}/{len(cands)}, "
            f"{time.perf_counter() - t0:.0f} s)")
    n = len(cands)
    sub = np.random.default_rng(0).permutation(len(val))[:DISTANCE_IMAGES]
    dist = np.zeros((n, n))
    for i, j in itertools.combinations(range(n), 2):
        dist[i, j] = dist[j, i] = float(np.abs(outputs[i][sub] - outputs[j][sub]).mean())
    privacy = np.array([[m[f"privacy.{c}"] for c in classifiers] for m in metrics]).reshape(
        n, len(classifiers))
    return ValScores([c.name for c in cands], classifiers, privacy, metrics, dist,
                     outputs), scorer


def assemble_random(outputs: Sequence[np.ndarray], members: Sequence[int],
                    images: np.ndarray, seed: int) -> np.ndarray:
    """The random policy's output from members' precomputed outputs (no re-running)."""
    out = np.empty_like(outputs[members[0]])
    for i, im in enumerate(images):
        out[i] = outputs[members[member_index(im, len(members), seed)]][i]
    return out


def cmc_rows(method: str, curves: Curves) -> list[dict[str, Any]]:
    """One method's CMC curves as records (`method`, `scenario`, `matcher`, `cmc` list): each
    matcher's and the pool mean's, in every scenario."""
    rows = []
    for s in mn.SCENARIOS:
        per = {m: [float(x) for x in c[s]] for m, c in curves.items()}
        per[mn.POOL_MEAN_MATCHER] = [float(x) for x in np.mean([c[s] for c in curves.values()],
                                                               axis=0)]
        rows += [{METHOD: method, mn.SCENARIO: s, mn.MATCHER: m, mn.CMC: c} for m, c in per.items()]
    return rows


def cmc_table(records: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """CMC records as the MLflow table: one row per method, scenario, matcher and rank."""
    cols: dict[str, list[Any]] = {c: [] for c in (METHOD, *mn.CMC_COLUMNS)}
    for r in records:
        for k, rate in enumerate(r[mn.CMC], start=1):
            for c, v in ((METHOD, r[METHOD]), (mn.SCENARIO, r[mn.SCENARIO]),
                         (mn.MATCHER, r[mn.MATCHER]), (mn.RANK, k), (mn.RATE, rate)):
                cols[c].append(v)
    return cols


def test_report(checkpoints: Sequence[Path], best_single: int, ds: PreparedDataset, zoo: Zoo,
                predictor: str, seed: int, third_party: bool = True, log: Log = print,
                groups_out: list[dict[str, Any]] | None = None,
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The test pool's verdict: ensemble (random), ensemble (chain), the best single member
    (by val privacy), then Gaussian noise and blur at the random ensemble's utility for the
    headline matcher (dlib's descriptor when present; their rows carry the strength as
    `sigma`). Every row has its advantage over noise and over blur (`san_search.zoo.advantage`:
    per judge and matcher, the headline minimum and the mean over the judges, with bootstrap
    intervals over identities). Returns the table's rows and every method's CMC records
    (`cmc_rows`). When the test split has skin-tone groups, each method's per-group rows
    (`PoolScorer.by_group`, labelled with the method) are appended to `groups_out`. What is
    scored is what ships: the uint8 images `perturb` writes (`baseline_sweeps` for the rest)."""
    from san_search.images import to_uint8
    from san_search.zoo import advantage as adv
    from san_search.zoo.pool import BASELINES, PoolScorer, load_pool

    test = ds.split("test")
    pool = load_pool(zoo, "test", third_party=third_party)
    scorer = PoolScorer(pool, test)
    rt = torch_runtime(checkpoints, zoo, predictor, ds.prototypes, "random", seed)
    rows: list[dict[str, Any]] = []
    cmc: list[dict[str, Any]] = []
    raws: dict[str, adv.Raw] = {}
    if not scorer.has_groups:
        log(f"  note: {ds.path.name} has no skin-tone groups: no per-group results")

    def add(label: str, images: np.ndarray, **extra: Any) -> None:
        metrics, curves = scorer.score_with_curves(to_uint8(images))
        assert scorer.last_raw is not None
        raws[label] = scorer.last_raw
        rows.append({METHOD: label, **extra, **metrics})
        cmc.extend(cmc_rows(label, curves))
        if groups_out is not None:
            groups_out.extend({METHOD: label, **g} for g in scorer.by_group())

    for label, policy in (("ensemble (random)", "random"), ("ensemble (chain)", "chain")):
        add(label, rt.perturb(test.images, policy))
        log(f"  test pool: {label} scored")
    single = torch_runtime([checkpoints[best_single]], zoo, predictor, ds.prototypes)
    add("best single member", single.perturb(test.images))
    log("  test pool: best single member scored")
    sweeps, head = baseline_sweeps(scorer, rows, f"{ds.fingerprint}|test|{pool.key}", seed, log)
    target = float(rows[0][f"utility.{head}"])
    for kind, sw in sweeps.items():
        s = sw.matched(head, target)
        if s is None:
            log(f"  test pool: {kind} cannot match {head} utility {target:.3f} (out of range)")
            continue
        add(f"{kind} sigma {s:g} (matched {head} utility)",
            BASELINES[kind](s, seed)(scorer.original), **{SIGMA: s, BASELINE: kind})
        log(f"  test pool: {kind} at sigma {s:g} scored")
    reports = adv.reports_for(raws, {k: sw.curve() for k, sw in sweeps.items()},
                              scorer.frame(), seed=seed, matcher=head)
    for r in rows:
        r.update(adv.columns(reports[r[METHOD]]))
        r[ADVANTAGE_MATCHER] = head
    return rows, cmc


def baseline_sweeps(scorer: PoolScorer, rows: Sequence[dict[str, Any]], identity: str,
                    seed: int, log: Log) -> tuple[dict[str, BaselineSweep], str]:
    """Noise and blur swept on `scorer`'s whole split, refined where the `rows`' utilities
    lie (per matcher), and the headline matcher (`advantage.headline_matcher`). Swept on
    uint8 images and cached per pool, split and dataset (`zoo.pool.BaselineSweep`)."""
    from san_search.zoo import advantage as adv
    from san_search.zoo.pool import BaselineSweep

    frame = scorer.frame()
    targets = {m: [float(r[f"utility.{m}"]) for r in rows] for m in frame.original_pairs}
    sweeps = {}
    for kind in (adv.NOISE, adv.BLUR):
        sweeps[kind] = sw = BaselineSweep(scorer, kind, identity, seed=seed, log=log)
        sw.refine(targets)
        log(f"  test pool: {kind} swept at {len(sw.raw)} strengths on the whole split "
            f"({sw.cached} cached, {sw.seconds:.0f} s scoring)")
    return sweeps, adv.headline_matcher(frame)
