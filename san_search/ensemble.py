"""Choosing a diverse ensemble from a finished search (`san-search ensemble select`).

Eligible candidates are the search's finished trials that meet its constraints and reach
`min_utility` (val pool mean). For a set S of K eligible members the selection maximises

    J(S) = coverage(S) + diversity_weight * diversity(S) + hv_weight * hv_share(S)

  coverage(S)   mean over the val gender classifiers c of max over m in S of privacy_c(m):
                each unseen classifier counts the member that confounds it best (the BTAS
                2018 idea that some member should fool any classifier);
  diversity(S)  mean over member pairs of the mean absolute pixel difference between their
                val outputs, divided by the largest such difference among eligible pairs
                (0 for K = 1): members whose outputs differ;
  hv_share(S)   the members' exclusive hypervolume contributions in (val privacy, val
                utility) among the eligible candidates, over that front's hypervolume.

Every K-subset is tried when there are at most `EXHAUSTIVE_LIMIT`, else greedy forward
selection with one pass of swaps. The chosen set is compared on the val pool with "top-K by
privacy" and "K random from the front"; then both policies are scored on the test pool,
never used before, beside the best single member and Gaussian noise at matched utility.

Every candidate here is judged with the ensemble's gender predictor (the best auxiliary
classifier by val AUC) choosing the prototypes, as `perturb` will on unlabelled images.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from san_search.atomic import write_atomic
from san_search.console import Log
from san_search.errors import EnsembleError
from san_search.pareto import front_mask, hypervolume, hypervolume_contributions

# MLflow draws a progress bar per downloaded artefact: noise in a CLI that downloads many.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
EXHAUSTIVE_LIMIT = 20_000
DISTANCE_IMAGES = 512  # val images the pairwise output distances are measured on
SELECTION_FILE = "selection.json"



@dataclasses.dataclass(frozen=True)
class Weights:
    diversity: float = 0.2
    hypervolume: float = 0.2


# ------------------------------------------------------------------ the objective (pure)

def normalised_distance(distance: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    d = np.asarray(distance, dtype=float)
    idx = np.flatnonzero(eligible)
    top = max((d[i, j] for i, j in itertools.combinations(idx, 2)), default=0.0)
    return d / top if top > 0 else np.zeros_like(d)


def set_terms(members: Sequence[int], privacy: np.ndarray, distance: np.ndarray,
              hv_share: np.ndarray, w: Weights) -> dict[str, float]:
    """coverage, diversity, hv_share and the objective of one set (see the module doc).
    `distance` is already normalised; `hv_share` is per candidate."""
    m = list(members)
    coverage = float(np.asarray(privacy, dtype=float)[m].max(axis=0).mean())
    pairs = list(itertools.combinations(m, 2))
    diversity = float(np.mean([distance[i, j] for i, j in pairs])) if pairs else 0.0
    share = float(np.sum(np.asarray(hv_share)[m]))
    return {"coverage": coverage, "diversity": diversity, "hv_share": share,
            "objective": coverage + w.diversity * diversity + w.hypervolume * share}


def select_members(privacy: np.ndarray, distance: np.ndarray, hv_share: np.ndarray,
                   eligible: np.ndarray, k: int, w: Weights = Weights()) -> list[int]:
    """The K eligible indices maximising J (exhaustive when feasible, else greedy + swaps).
    Ties go to the lexicographically smallest index set, so the result is deterministic."""
    idx = [int(i) for i in np.flatnonzero(eligible)]
    if k < 1:
        raise EnsembleError(f"--size must be at least 1, got {k}")
    if len(idx) < k:
        raise EnsembleError(f"only {len(idx)} eligible candidate(s) for an ensemble of {k}")

    def score(s: Sequence[int]) -> float:
        return set_terms(s, privacy, distance, hv_share, w)["objective"]

    if math.comb(len(idx), k) <= EXHAUSTIVE_LIMIT:
        best: tuple[int, ...] = ()
        best_score = -math.inf
        for combo in itertools.combinations(idx, k):
            s = score(combo)
            if s > best_score + 1e-12:
                best, best_score = combo, s
        return list(best)
    chosen: list[int] = []
    while len(chosen) < k:
        rest = [i for i in idx if i not in chosen]
        chosen.append(max(rest, key=lambda i: (score([*chosen, i]), -i)))
    improved = True
    while improved:
        improved = False
        for pos, out in itertools.product(range(k), idx):
            if out in chosen:
                continue
            trial = chosen.copy()
            trial[pos] = out
            if score(trial) > score(chosen) + 1e-12:
                chosen, improved = trial, True
    return sorted(chosen)


def top_k_by_privacy(privacy_mean: np.ndarray, eligible: np.ndarray, k: int) -> list[int]:
    idx = np.flatnonzero(eligible)
    order = sorted(idx, key=lambda i: (-privacy_mean[i], i))
    return sorted(int(i) for i in order[:k])


def random_from_front(points: np.ndarray, eligible: np.ndarray, k: int, seed: int
                      ) -> list[int]:
    """K seeded picks from the eligible front (topped up from the other eligible candidates
    when the front has fewer than K)."""
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(eligible)
    on = idx[front_mask(points[idx])] if len(idx) else idx
    off = np.setdiff1d(idx, on)
    pick = list(rng.permutation(on)[:k])
    if len(pick) < k:
        pick += list(rng.permutation(off)[: k - len(pick)])
    return sorted(int(i) for i in pick)


def hv_shares(points: np.ndarray, eligible: np.ndarray, reference: Sequence[float]
              ) -> tuple[np.ndarray, float]:
    """Per-candidate exclusive hypervolume contribution over the eligible set's total."""
    share = np.zeros(len(points))
    idx = np.flatnonzero(eligible)
    total = hypervolume(points[idx], reference) if len(idx) else 0.0
    if total > 0:
        share[idx] = hypervolume_contributions(points[idx], reference) / total
    return share, total


# ------------------------------------------------------------------ candidates from a search

@dataclasses.dataclass
class Candidate:
    name: str  # the trial id
    run_id: str
    checkpoint: Path  # local folder: model.safetensors + trainer.json
    search_metrics: dict[str, float]  # the search's last reported metrics (val pool)
    feasible: bool


def search_folder(search: str, search_dir: str | Path) -> Path:
    """`search` is a name under `search_dir`, or a path to a search folder."""
    from san_search.search import SEARCH_FILE

    p = Path(search)
    for cand in (p, Path(search_dir) / search):
        if (cand / SEARCH_FILE).is_file():
            return cand.absolute()
    raise EnsembleError(f"no search {search!r}: neither {p} nor {Path(search_dir) / search} "
                        f"holds a {SEARCH_FILE} (see --search-dir)")


def load_candidates(folder: Path, log: Log = print) -> tuple[Any, Any, list[Candidate]]:
    """The search record, its space, and every finished, finalised trial with its weights
    (downloaded from its MLflow child run into <folder>/ensemble/candidates/)."""
    import mlflow
    from san_search import tracking
    from san_search.search import SearchRecord, load_search_space
    from san_search.tracking import FINALIZED_TAG, TRIAL_TAG, child_runs, client_for

    record = SearchRecord.load(folder)
    space = load_search_space(folder / "space.yaml", record.overrides)
    tracking.check_reachable(record.tracking_uri)
    client = client_for(record.tracking_uri)
    parent = client.get_run(record.parent_run_id)
    if parent.info.status == "RUNNING":
        log(f"note: search {record.name} is still running; selecting from the trials "
            "finished so far")
    cache = folder / "ensemble" / "candidates"
    out: list[Candidate] = []
    for run in child_runs(record.tracking_uri, record.experiment_id, record.parent_run_id):
        if run.info.status != "FINISHED" or run.data.tags.get(FINALIZED_TAG) != "1":
            continue
        if run.data.tags.get("san_search.kind") == "ensemble":
            continue
        dst = cache / run.info.run_id
        if not (dst / "weights" / "model.safetensors").is_file():
            dst.mkdir(parents=True, exist_ok=True)
            mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="weights",
                                                dst_path=str(dst),
                                                tracking_uri=record.tracking_uri)
        metrics = dict(run.data.metrics)
        viol = space.violation(metrics)
        finite = all(np.isfinite(metrics.get(m, np.nan)) for m in space.metrics)
        out.append(Candidate(run.data.tags.get(TRIAL_TAG, run.info.run_name), run.info.run_id,
                             dst / "weights", metrics, bool(finite and viol == 0)))
    out.sort(key=lambda c: c.name)
    return record, space, out


def best_predictor(zoo: Any) -> str:
    """The auxiliary gender classifier with the best val AUC: the ensemble's predictor."""
    names = zoo.names("gender", "aux")
    if not names:
        raise EnsembleError(f"zoo {zoo.path} has no aux gender classifier to predict genders")
    return max(names, key=lambda n: (zoo.entries[n].get("metrics", {}).get("val_auc", 0.0), n))


def torch_runtime(checkpoints: Sequence[Path], zoo: Any, predictor: str,
                  prototypes: dict[str, np.ndarray], policy: str = "random", seed: int = 0
                  ) -> Any:
    from san_search.runtime import EnsembleRuntime, torch_gender, torch_member
    from san_search.train import load_san

    members = [torch_member(load_san(c)[0]) for c in checkpoints]
    return EnsembleRuntime(members, torch_gender(zoo.load(predictor).eval()), prototypes,
                           policy, seed)


@dataclasses.dataclass
class ValScores:
    names: list[str]
    classifiers: list[str]  # the val gender classifiers
    privacy: np.ndarray  # (n, C)
    metrics: list[dict[str, float]]  # the full val-pool score of each candidate
    distance: np.ndarray  # (n, n) mean absolute output difference
    outputs: list[np.ndarray]  # each candidate's val outputs


def score_candidates(cands: Sequence[Candidate], ds: Any, zoo: Any, predictor: str,
                     log: Log = print) -> tuple[ValScores, Any]:
    from san_search.evaluate import PoolScorer, load_pool
    from san_search.runtime import EnsembleRuntime, torch_gender, torch_member
    from san_search.train import load_san

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
    from san_search.runtime import member_index

    out = np.empty_like(outputs[members[0]])
    for i, im in enumerate(images):
        out[i] = outputs[members[member_index(im, len(members), seed)]][i]
    return out


# ------------------------------------------------------------------ the whole step

@dataclasses.dataclass
class Selection:
    """What `ensemble export` packages; saved as <search>/ensemble/selection.json."""

    search: str
    members: list[dict[str, Any]]  # name, run_id, checkpoint, config, val
    predictor: str
    policy: str
    seed: int
    data: str
    zoo: str
    data_fingerprint: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    ensemble_run_id: str
    settings: dict[str, Any]  # size, min_utility, weights
    val_table: list[dict[str, Any]]
    test_table: list[dict[str, Any]]
    candidates: list[dict[str, Any]]  # every eligible candidate's val point, for the figure
    created: str

    def save(self, folder: Path) -> Path:
        path = folder / "ensemble" / SELECTION_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(dataclasses.asdict(self), indent=2, default=_plain))
        return path

    @classmethod
    def load(cls, folder: Path) -> Selection:
        path = folder / "ensemble" / SELECTION_FILE
        if not path.is_file():
            raise EnsembleError(f"{folder} has no ensemble yet ({path} missing): run "
                                "`san-search ensemble select` first")
        return cls(**json.loads(path.read_text()))


def _plain(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON: {type(v).__name__}")


def _val_row(label: str, members: list[int], vs: ValScores, dist_n: np.ndarray,
             share: np.ndarray, w: Weights, scorer: Any, images: np.ndarray, seed: int
             ) -> dict[str, Any]:
    terms = set_terms(members, vs.privacy, dist_n, share, w)
    realised = scorer.score(assemble_random(vs.outputs, members, images, seed))
    return {"set": label, "members": ",".join(vs.names[i] for i in members), **terms,
            "random_privacy_mean": realised["privacy_mean"],
            "random_privacy_min": realised["privacy_min"],
            "random_utility_mean": realised["utility_mean"], "random_ssim": realised["ssim"]}


def format_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], first: str) -> str:
    width = max([len(first), *(len(str(r[first])) for r in rows)])
    widths = [max(len(c), 9) for c in columns]  # whole names: evaluators share prefixes
    head = f"{first:<{width}} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths,
                                                                       strict=True))
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = [f"{r[c]:>{w}.3f}" if isinstance(r.get(c), float) else f"{str(r.get(c, '-')):>{w}}"
                 for c, w in zip(columns, widths, strict=True)]
        lines.append(f"{str(r[first]):<{width}} " + " ".join(cells))
    return "\n".join(lines)


def matched_sigma(utility_at: Callable[[float], float], target: float, *, high: float = 0.5,
                  steps: int = 7) -> float:
    """The Gaussian-noise sigma in [0, high] whose utility is closest to `target`, by
    bisection (utility falls as sigma grows). `utility_at(sigma)` scores one strength."""
    lo, hi = 0.0, high
    for _ in range(steps):
        mid = (lo + hi) / 2
        if utility_at(mid) > target:
            lo = mid
        else:
            hi = mid
    return round((lo + hi) / 2, 4)


def test_report(checkpoints: Sequence[Path], best_single: int, ds: Any, zoo: Any,
                predictor: str, seed: int, third_party: bool = True, log: Log = print
                ) -> list[dict[str, Any]]:
    """The test pool's verdict: ensemble (random), ensemble (chain), the best single member
    (by val privacy) and Gaussian noise at the random ensemble's utility.

    The noise strength is matched by bisection on a 30% identity subset of the test split
    (the same pool, third-party models included, so the match holds for every matcher; the
    whole split when the subset would lack a gender or a pair kind), then
    scored once on the whole split: dlib's descriptor embeds every image at 150 px, and five
    full scorings per selection cost half an hour on 2 cores."""
    from san_search.evaluate import PoolScorer, gaussian_noise, load_pool

    test = ds.split("test")
    pool = load_pool(zoo, "test", third_party=third_party)
    scorer = PoolScorer(pool, test)
    rt = torch_runtime(checkpoints, zoo, predictor, ds.prototypes, "random", seed)
    rows: list[dict[str, Any]] = []
    for label, policy in (("ensemble (random)", "random"), ("ensemble (chain)", "chain")):
        rows.append({"method": label, **scorer.score(rt.perturb(test.images, policy))})
        log(f"  test pool: {label} scored")
    single = torch_runtime([checkpoints[best_single]], zoo, predictor, ds.prototypes)
    rows.append({"method": "best single member", **scorer.score(single.perturb(test.images))})
    log("  test pool: best single member scored")
    sub = test.identity_subset(0.3, seed)
    assert sub.pairs is not None
    if len(set(sub.gender.tolist())) < 2 or len(set(sub.pairs.same.tolist())) < 2:
        sub = test  # a small split: its subset lacks a gender or a pair kind, and is cheap
    quick = PoolScorer(pool, sub)
    target = quick.score(rt.perturb(sub.images, "random"))["utility_mean"]
    sigma = matched_sigma(
        lambda s: quick.score(gaussian_noise(s)(sub.images))["utility_mean"], target, steps=5)
    rows.append({"method": f"noise sigma {sigma:g} (matched utility)",
                 **scorer.score(gaussian_noise(sigma)(test.images))})
    log(f"  test pool: noise at sigma {sigma:g} scored")
    return rows


def trade_off_figure(sel: Selection) -> Any:
    """Val privacy against val utility of every eligible candidate, the members marked, and
    the test-pool points of the ensemble, the best member and the noise baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.8, 4.4))
    cs = sel.candidates
    ax.scatter([c["utility_mean"] for c in cs], [c["privacy_mean"] for c in cs], c="0.6",
               s=18, label="eligible candidates (val)")
    members = {m["name"] for m in sel.members}
    mem = [c for c in cs if c["name"] in members]
    ax.scatter([c["utility_mean"] for c in mem], [c["privacy_mean"] for c in mem], c="C3",
               s=40, marker="D", label="ensemble members (val)")
    for r, style in zip(sel.test_table, ("*", "P", "o", "s"), strict=False):
        ax.scatter([r["utility_mean"]], [r["privacy_mean"]], marker=style, s=80,
                   label=f"{r['method']} (test)")
    ax.set_xlabel("utility (TAR@1%FAR retention, pool mean)")
    ax.set_ylabel("privacy (1 - |2 AUC - 1|, pool mean)")
    ax.set_xlim(-0.05, 1.1)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"ensemble of {len(sel.members)} from search {sel.search}", fontsize=9)
    fig.tight_layout()
    return fig


def select(search: str, *, search_dir: str | Path, size: int, min_utility: float = 0.5,
           weights: Weights = Weights(), seed: int = 0, policy: str = "random",
           third_party: bool = True, log: Log = print) -> Selection:
    """Choose, compare, test and record an ensemble of `size` members (see the module doc)."""
    from san_search.config import CandidateConfig
    from san_search.data import open_dataset
    from san_search.runtime import check_policy
    from san_search.search import reference_point
    from san_search.train import load_san
    from san_search.zoo import open_zoo

    check_policy(policy)
    if size < 1:
        raise EnsembleError(f"--size must be at least 1, got {size}")
    if not 0 <= min_utility <= 1:
        raise EnsembleError(f"--min-utility must be in [0, 1], got {min_utility}")
    folder = search_folder(search, search_dir)
    record, space, cands = load_candidates(folder, log)
    ds = open_dataset(record.data)
    if ds.fingerprint != record.data_fingerprint:
        raise EnsembleError(f"the dataset at {record.data} changed since search "
                            f"{record.name} ran (fingerprint {ds.fingerprint[:12]} != "
                            f"{record.data_fingerprint[:12]})")
    zoo = open_zoo(record.zoo, expect_fingerprint=ds.fingerprint)
    feasible = [c for c in cands if c.feasible]
    log(f"search {record.name}: {len(cands)} finished trial(s), {len(feasible)} meet the "
        "constraints")
    if len(feasible) < size:
        raise EnsembleError(
            f"search {record.name} has {len(feasible)} finished trial(s) that meet its "
            f"constraints ({len(cands)} finished in all); an ensemble of {size} needs at "
            "least that many: lower --size or run a longer search")
    predictor = best_predictor(zoo)
    log(f"gender predictor: {predictor}; scoring {len(feasible)} candidate(s) on the val pool")
    vs, scorer = score_candidates(feasible, ds, zoo, predictor, log)
    utility = np.array([m["utility_mean"] for m in vs.metrics])
    eligible = utility >= min_utility
    if eligible.sum() < size:
        best = ", ".join(f"{vs.names[i]} {utility[i]:.3f}" for i in np.argsort(-utility)[:5])
        raise EnsembleError(
            f"only {int(eligible.sum())} candidate(s) reach --min-utility {min_utility} on "
            f"the val pool (best: {best}); lower --min-utility or --size")
    points = np.column_stack([[m["privacy_mean"] for m in vs.metrics], utility])
    share, total = hv_shares(points, eligible, reference_point(space)[:2])
    dist_n = normalised_distance(vs.distance, eligible)
    chosen = select_members(vs.privacy, dist_n, share, eligible, size, weights)
    val = ds.split("val")
    sets = [("chosen (J)", chosen),
            ("top-K by privacy", top_k_by_privacy(points[:, 0], eligible, size)),
            ("K random from front", random_from_front(points, eligible, size, seed))]
    val_table = [_val_row(label, s, vs, dist_n, share, weights, scorer, val.images, seed)
                 for label, s in sets]
    log("val pool: the chosen set against two simple rules (random policy realised)\n"
        + format_rows(val_table, ["objective", "coverage", "diversity", "hv_share",
                                  "random_privacy_mean", "random_utility_mean",
                                  "random_ssim", "members"], "set"))
    members: list[dict[str, Any]] = []
    for i in chosen:
        c = feasible[i]
        _, cfg = load_san(c.checkpoint)
        assert isinstance(cfg, CandidateConfig)
        members.append({"name": c.name, "run_id": c.run_id, "checkpoint": str(c.checkpoint),
                        "config": dataclasses.asdict(cfg),
                        "val": {k: v for k, v in vs.metrics[i].items()}})
    best_single = int(np.argmax([vs.metrics[i]["privacy_mean"] for i in chosen]))
    log(f"scoring the ensemble on the test pool ({', '.join(m['name'] for m in members)})")
    test_table = test_report([feasible[i].checkpoint for i in chosen], best_single, ds, zoo,
                             predictor, seed, third_party, log)
    pooled = ["privacy_mean", "privacy_min", "utility_mean", "utility_min", "ssim"]
    per = sorted(k for k in test_table[0] if k.startswith(("privacy.", "utility.")))
    log("test pool (never used before): pooled, then per evaluator\n"
        + format_rows(test_table, pooled, "method") + "\n"
        + format_rows(test_table, per, "method"))
    sel = Selection(
        record.name, members, predictor, policy, seed, record.data, record.zoo,
        record.data_fingerprint, record.tracking_uri, record.experiment_id,
        record.parent_run_id, "",
        {"size": size, "min_utility": min_utility, "diversity_weight": weights.diversity,
         "hv_weight": weights.hypervolume, "front_hypervolume": total,
         "eligible": int(eligible.sum()), "feasible": len(feasible)},
        val_table, test_table,
        [{"name": vs.names[i], "run_id": feasible[i].run_id, **vs.metrics[i]}
         for i in np.flatnonzero(eligible)],
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    sel.ensemble_run_id = log_selection(sel)
    path = sel.save(folder)
    log(f"ensemble of {size} recorded in {path} and MLflow run {sel.ensemble_run_id}")
    return sel


def metric_tag(method: str) -> str:
    """The MLflow metric prefix of a test-table row: one stable name per method, the same in
    every ensemble run (the noise row's sigma varies, so it is logged as its own metric)."""
    if method.startswith("noise sigma"):
        return "noise_matched"
    return "".join(c if c.isalnum() else "_" for c in method).strip("_").replace("__", "_")


def log_selection(sel: Selection) -> str:
    """An `ensemble` child run under the search's parent: settings, members, both tables,
    the figure, and the headline metrics."""
    import matplotlib.pyplot as plt
    from mlflow.entities import Metric, Param

    from san_search.tracking import SEARCH_TAG, client_for, replace_table

    client = client_for(sel.tracking_uri)
    run = client.create_run(sel.experiment_id, run_name=f"{sel.search}-ensemble", tags={
        "mlflow.parentRunId": sel.parent_run_id, "san_search.kind": "ensemble",
        SEARCH_TAG: sel.search, "data_fingerprint": sel.data_fingerprint})
    rid = run.info.run_id
    params = {**{k: str(v) for k, v in sel.settings.items()}, "policy": sel.policy,
              "seed": str(sel.seed), "predictor": sel.predictor,
              "members": ",".join(m["name"] for m in sel.members),
              "member_run_ids": ",".join(m["run_id"] for m in sel.members)}
    now = int(time.time() * 1000)
    metrics = []
    for r in sel.test_table:
        tag = metric_tag(r["method"])
        for k in ("privacy_mean", "privacy_min", "utility_mean", "utility_min", "ssim"):
            metrics.append(Metric(f"test_{tag}_{k}", float(r[k]), now, 0))
        if tag == "noise_matched":
            sigma = r["method"].split()[2]
            metrics.append(Metric("test_noise_matched_sigma", float(sigma), now, 0))
    chosen = sel.val_table[0]
    for k in ("objective", "coverage", "diversity", "hv_share", "random_privacy_mean",
              "random_utility_mean", "random_ssim"):
        metrics.append(Metric(f"val_{k}", float(chosen[k]), now, 0))
    client.log_batch(rid, metrics=metrics, params=[Param(k, v[:6000]) for k, v in
                                                   params.items()])
    for name, rows in (("selection_val.json", sel.val_table),
                       ("ensemble_test.json", sel.test_table)):
        cols = list(dict.fromkeys(k for r in rows for k in r))
        replace_table(client, rid, {c: [r.get(c) for r in rows] for c in cols}, name)
    fig = trade_off_figure(sel)
    client.log_figure(rid, fig, "ensemble_trade_off.png")
    plt.close(fig)
    client.set_terminated(rid, "FINISHED")
    return rid
