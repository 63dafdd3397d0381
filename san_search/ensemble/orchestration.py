"""`san-search ensemble select`: the whole step and its record.

Load and score the search's candidates (`scoring`), choose K members (`selection`), compare
the chosen set on the val pool with "top-K by privacy" and "K random from the front"
(the random policy realised), score both policies on the test pool, never used before,
beside the best single member and Gaussian noise at matched utility, then record it all:
<search>/ensemble/selection.json (`Selection`) and an `ensemble` MLflow child run under the
search's parent (`log_selection`: settings, members, both tables, the CMC curves, the
trade-off figure).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from san_search import metric_names as mn
from san_search.atomic import write_atomic
from san_search.console import Log
from san_search.ensemble.attack import Budget, format_attack, log_attack, run_attack
from san_search.ensemble.scoring import (
    ENSEMBLE_KIND,
    Candidate,
    ValScores,
    assemble_random,
    best_predictor,
    cmc_table,
    load_candidates,
    score_candidates,
    test_report,
    torch_runtime,
)
from san_search.ensemble.selection import (
    DEFAULT_WEIGHTS,
    TERMS,
    Weights,
    hv_shares,
    normalised_distance,
    random_from_front,
    select_members,
    set_terms,
    top_k_by_privacy,
)
from san_search.ensemble.tables import (
    ADVANTAGE_MATCHER,
    METHOD,
    SIGMA,
    format_rows,
    json_plain,
)
from san_search.errors import EnsembleError
from san_search.zoo import advantage as adv

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from san_search.data.store import PreparedDataset
    from san_search.search.record import SearchRecord
    from san_search.search.space import SearchSpace
    from san_search.zoo.pool import PoolScorer
    from san_search.zoo.store import Zoo

SELECTION_FILE = "selection.json"
# The val pool metrics each compared set is realised on (`random_<metric>` columns).
REALISED = (mn.PRIVACY_MEAN, mn.PRIVACY_MIN, mn.UTILITY_MEAN, mn.SSIM)
# Of those, what the val table prints and the ensemble run logs (`val_random_<metric>`).
REALISED_SHOWN = (mn.PRIVACY_MEAN, mn.UTILITY_MEAN, mn.SSIM)
SET, MEMBERS = "set", "members"  # the val table's label and member columns
MAX_PARAM = 6000  # characters of a param value MLflow keeps (a long member list is cut)


@dataclasses.dataclass
class Selection:
    """What `ensemble export` packages; saved as <search>/ensemble/selection.json."""

    search: str
    members: list[dict[str, Any]]  # name, run_id, checkpoint, config (to_dict), val
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
    # the test pool's CMC records (`scoring.cmc_rows`); empty in a selection made before them
    test_cmc: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # the test pool per skin-tone group x gender (`scoring.test_report`'s `groups_out`);
    # empty for a dataset without groups or a selection made before them
    test_groups: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # the adaptive attacker's result (`ensemble.attack`) with `select --attack`; else empty
    attack: dict[str, Any] = dataclasses.field(default_factory=dict)

    def save(self, folder: Path) -> Path:
        path = folder / "ensemble" / SELECTION_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(dataclasses.asdict(self), indent=2, default=json_plain))
        return path

    @classmethod
    def load(cls, folder: Path) -> Selection:
        path = folder / "ensemble" / SELECTION_FILE
        if not path.is_file():
            raise EnsembleError(f"{folder} has no ensemble yet ({path} missing): run "
                                "`san-search ensemble select` first")
        return cls(**json.loads(path.read_text()))


def format_advantage(rows: Sequence[dict[str, Any]]) -> str:
    """Each method's advantage over noise and blur at the headline matcher: the minimum over
    the gender judges and their mean, with 95% intervals over identities, and whether the
    whole interval of the minimum clears 0."""
    if not rows or mn.ADVANTAGE not in rows[0]:
        return ""
    head = rows[0].get(ADVANTAGE_MATCHER, "?")
    table = []
    for r in rows:
        row: dict[str, Any] = {METHOD: r[METHOD]}
        for key, name in ((mn.ADVANTAGE, "vs noise (min)"), (mn.ADVANTAGE_MEAN, "(mean)"),
                          (mn.ADVANTAGE_BLUR, "vs blur (min)"),
                          (mn.ADVANTAGE_BLUR_MEAN, "(blur mean)")):
            row[name] = (f"{adv.fmt(r.get(key))} "
                         f"{adv.fmt_interval(r.get(mn.low(key)), r.get(mn.high(key)))}")
        lo = r.get(mn.low(mn.ADVANTAGE))
        row["beats noise"] = "yes" if lo is not None and lo > 0 else "no"
        table.append(row)
    cols = ["vs noise (min)", "(mean)", "vs blur (min)", "(blur mean)", "beats noise"]
    return (f"advantage over noise and blur at {head}'s utility (privacy minus the baseline's "
            "best privacy at the same utility; min and mean over the gender judges; 95% "
            "interval over identities)\n" + format_rows(table, cols, METHOD))


def advantage_verdict(rows: Sequence[dict[str, Any]]) -> str | None:
    """One plain sentence when the shipped ensemble (the first row) does not clear noise:
    the 95% interval of its headline advantage does not lie above 0 (or is out of range).
    None when it does, or for a selection made before advantage was measured."""
    if not rows or mn.ADVANTAGE not in rows[0]:
        return None
    r = rows[0]
    lo = r.get(mn.low(mn.ADVANTAGE))
    if lo is not None and lo > 0:
        return None
    head = r.get(ADVANTAGE_MATCHER, "the headline matcher")
    return (f"WARNING: {r[METHOD]} does not hide gender better than Gaussian noise at the same "
            f"{head} utility: advantage {adv.fmt(r.get(mn.ADVANTAGE))} (min over the gender "
            f"judges), 95% interval "
            f"{adv.fmt_interval(lo, r.get(mn.high(mn.ADVANTAGE)))} does not lie above 0. "
            "Noise would protect as well at that cost to recognition.")


def advantage_cell_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The per judge x matcher advantage-over-noise columns a test table has."""
    prefix = mn.ADVANTAGE + "."
    return sorted(k for k in rows[0] if k.startswith(prefix)) if rows else []


def per_evaluator_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A test table's per-model columns (`privacy.<classifier>`, `utility.<matcher>`)."""
    return sorted(k for k in rows[0] if k.startswith(("privacy.", "utility.")))


# ------------------------------------------------------------------ the step

def search_folder(search: str, search_dir: str | Path) -> Path:
    """`search` is a name under `search_dir`, or a path to a search folder."""
    from san_search.search import SEARCH_FILE

    p = Path(search)
    for cand in (p, Path(search_dir) / search):
        if (cand / SEARCH_FILE).is_file():
            return cand.absolute()
    raise EnsembleError(f"no search {search!r}: neither {p} nor {Path(search_dir) / search} "
                        f"holds a {SEARCH_FILE} (see --search-dir)")


@dataclasses.dataclass
class _Scored:
    """The val-pool view of the feasible candidates that the choice is made on."""

    feasible: list[Candidate]
    vs: ValScores
    scorer: PoolScorer
    eligible: np.ndarray
    points: np.ndarray  # (n, 2) val privacy mean, val utility mean
    share: np.ndarray
    front_hypervolume: float
    distance: np.ndarray  # normalised


def _open_search(search: str, search_dir: str | Path, size: int, log: Log
                 ) -> tuple[Path, SearchRecord, SearchSpace, PreparedDataset, Zoo,
                            list[Candidate]]:
    """The search folder, record, space, dataset and zoo, and its feasible candidates."""
    from san_search.data import open_dataset
    from san_search.zoo.store import open_zoo

    folder = search_folder(search, search_dir)
    record, space, cands = load_candidates(folder, log)
    ds = open_dataset(record.data)
    if ds.fingerprint != record.data_fingerprint:
        raise EnsembleError(f"the dataset at {record.data} changed since search "
                            f"{record.name} ran (fingerprint {ds.fingerprint[:12]} != "
                            f"{record.data_fingerprint[:12]})")
    zoo = open_zoo(record.zoo, expect=ds)
    feasible = [c for c in cands if c.feasible]
    log(f"search {record.name}: {len(cands)} finished trial(s), {len(feasible)} meet the "
        "constraints")
    if len(feasible) < size:
        raise EnsembleError(
            f"search {record.name} has {len(feasible)} finished trial(s) that meet its "
            f"constraints ({len(cands)} finished in all); an ensemble of {size} needs at "
            "least that many: lower --size or run a longer search")
    return folder, record, space, ds, zoo, feasible


def _score(feasible: list[Candidate], ds: PreparedDataset, zoo: Zoo, predictor: str,
           space: SearchSpace,
           size: int, min_utility: float, log: Log) -> _Scored:
    from san_search.search import reference_point

    vs, scorer = score_candidates(feasible, ds, zoo, predictor, log)
    utility = np.array([m[mn.UTILITY_MEAN] for m in vs.metrics])
    eligible = utility >= min_utility
    if eligible.sum() < size:
        best = ", ".join(f"{vs.names[i]} {utility[i]:.3f}" for i in np.argsort(-utility)[:5])
        raise EnsembleError(
            f"only {int(eligible.sum())} candidate(s) reach --min-utility {min_utility} on "
            f"the val pool (best: {best}); lower --min-utility or --size")
    points = np.column_stack([[m[mn.PRIVACY_MEAN] for m in vs.metrics], utility])
    share, total = hv_shares(points, eligible, reference_point(space)[:2])
    return _Scored(feasible, vs, scorer, eligible, points, share, total,
                   normalised_distance(vs.distance, eligible))


def _val_table(sc: _Scored, chosen: list[int], size: int, w: Weights, images: np.ndarray,
               seed: int) -> list[dict[str, Any]]:
    """The chosen set and the two simple rules, each with J's terms and the random policy
    realised on the val pool."""
    sets = [("chosen (J)", chosen),
            ("top-K by privacy", top_k_by_privacy(sc.points[:, 0], sc.eligible, size)),
            ("K random from front", random_from_front(sc.points, sc.eligible, size, seed))]
    rows = []
    for label, members in sets:
        terms = set_terms(members, sc.vs.privacy, sc.distance, sc.share, w)
        realised = sc.scorer.score(assemble_random(sc.vs.outputs, members, images, seed))
        rows.append({SET: label, MEMBERS: ",".join(sc.vs.names[i] for i in members), **terms,
                     **{mn.random(m): realised[m] for m in REALISED}})
    return rows


def _member_records(sc: _Scored, chosen: list[int]) -> list[dict[str, Any]]:
    from san_search.training.trainer import load_san

    members = []
    for i in chosen:
        c = sc.feasible[i]
        _, cfg = load_san(c.checkpoint)
        members.append({"name": c.name, "run_id": c.run_id, "checkpoint": str(c.checkpoint),
                        "config": cfg.to_dict(), "val": dict(sc.vs.metrics[i])})
    return members


def format_val_table(val_table: list[dict[str, Any]]) -> str:
    shown = [*TERMS, *(mn.random(m) for m in REALISED_SHOWN), MEMBERS]
    return ("val pool: the chosen set against two simple rules (random policy realised)\n"
            + format_rows(val_table, shown, SET))


def ident_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The identification columns a test table has (none in one made before them)."""
    return [k for k in mn.TEST_IDENT_COLUMNS if rows and k in rows[0]]


def format_test_table(test_table: list[dict[str, Any]],
                      test_groups: Sequence[dict[str, Any]] = ()) -> str:
    text = ("test pool (never used before): pooled, then per evaluator\n"
            + format_rows(test_table, [*mn.TEST_COLUMNS, *group_columns(test_table)], METHOD)
            + "\n" + format_rows(test_table, per_evaluator_columns(test_table), METHOD))
    advantage = format_advantage(test_table)
    if advantage:
        text += "\n" + advantage + "\n" + format_rows(test_table,
                                                      advantage_cell_columns(test_table), METHOD)
    ident = ident_columns(test_table)
    if ident:
        text += ("\nidentification (closed set, pool mean over matchers) and both-perturbed "
                 "verification\n" + format_rows(test_table, ident, METHOD))
    if test_groups:
        text += ("\nper skin-tone group x gender (ITA bins are a proxy, not a label; "
                 "a cell's privacy against the split's other gender; rank-1 retention of the row's "
                 "own probes)\n"
                 + format_group_rows(test_groups))
    return text


def group_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The worst-group column, when the table has it (a dataset with skin-tone groups)."""
    return [mn.WORST_GROUP_PRIVACY] if rows and mn.WORST_GROUP_PRIVACY in rows[0] else []


def format_group_rows(test_groups: Sequence[dict[str, Any]]) -> str:
    """The per-group table: one row per method, group and gender, with sizes."""
    labelled = [{**r, "method / group": f"{r[METHOD]} / {r[mn.GROUP]}"} for r in test_groups]
    return format_rows(labelled, mn.group_table_columns(test_groups), "method / group")


def check_test_pool(zoo: Zoo, third_party: bool) -> None:
    """Refuse a test pool without a gender classifier or without a matcher, naming what is
    missing and how to add it (the test report needs one of each)."""
    from san_search.zoo.evaluators import third_party_installed

    for kind in ("gender", "matcher"):
        if zoo.names(kind, "test") or (third_party and third_party_installed(kind)):
            continue
        why = ("--no-third-party leaves out the third-party one" if not third_party else
               "the third-party one is not installed (pip install 'san-search[evaluators]')")
        word = "gender classifier" if kind == "gender" else "matcher"
        raise EnsembleError(f"the test pool has no {word}: zoo {zoo.path} has no test-role "
                            f"{word} and {why}; add a test {word} to the zoo (zoo train "
                            f"--zoo <yaml> --out {zoo.path})"
                            + ("" if third_party else " or drop --no-third-party"))


def select(search: str, *, search_dir: str | Path, size: int, min_utility: float = 0.5,
           weights: Weights = DEFAULT_WEIGHTS, seed: int = 0, policy: str = "random",
           third_party: bool = True, attack: Budget | None = None, log: Log = print
           ) -> Selection:
    """Choose, compare, test and record an ensemble of `size` members (see the module doc);
    with `attack`, also run the adaptive attacker on it (`san_search.ensemble.attack`) under that
    budget, print its columns after the test table and log them in a run nested under the
    ensemble's."""
    from san_search.ensemble.serving import check_policy

    check_policy(policy)
    if size < 1:
        raise EnsembleError(f"--size must be at least 1, got {size}")
    if not 0 <= min_utility <= 1:
        raise EnsembleError(f"--min-utility must be in [0, 1], got {min_utility}")
    folder, record, space, ds, zoo, feasible = _open_search(search, search_dir, size, log)
    check_test_pool(zoo, third_party)  # before the long val scoring, not after it
    predictor = best_predictor(zoo)
    log(f"gender predictor: {predictor}; scoring {len(feasible)} candidate(s) on the val pool")
    sc = _score(feasible, ds, zoo, predictor, space, size, min_utility, log)
    chosen = select_members(sc.vs.privacy, sc.distance, sc.share, sc.eligible, size, weights)
    val_table = _val_table(sc, chosen, size, weights, ds.split("val").images, seed)
    log(format_val_table(val_table))
    members = _member_records(sc, chosen)
    best_single = int(np.argmax([sc.vs.metrics[i][mn.PRIVACY_MEAN] for i in chosen]))
    log(f"scoring the ensemble on the test pool ({', '.join(m['name'] for m in members)})")
    test_groups: list[dict[str, Any]] = []
    checkpoints = [feasible[i].checkpoint for i in chosen]
    test_table, test_cmc = test_report(checkpoints, best_single, ds, zoo, predictor, seed,
                                       third_party, log, test_groups)
    attacked = {} if attack is None else run_attack(
        torch_runtime(checkpoints, zoo, predictor, ds.prototypes, policy, seed), best_single,
        ds, zoo, attack, test_table, log)
    log(format_test_table(test_table, test_groups)
        + (f"\n{format_attack(attacked)}" if attacked else ""))
    sel = Selection(
        record.name, members, predictor, policy, seed, record.data, record.zoo,
        record.data_fingerprint, record.tracking_uri, record.experiment_id,
        record.parent_run_id, "",
        {"size": size, "min_utility": min_utility, "diversity_weight": weights.diversity,
         "hv_weight": weights.hypervolume, "front_hypervolume": sc.front_hypervolume,
         "eligible": int(sc.eligible.sum()), "feasible": len(feasible)},
        val_table, test_table,
        [{"name": sc.vs.names[i], "run_id": feasible[i].run_id, **sc.vs.metrics[i]}
         for i in np.flatnonzero(sc.eligible)],
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), test_cmc, test_groups, attacked)
    sel.ensemble_run_id = log_selection(sel)
    from san_search import tracking

    tracking.tag_runs(sel.tracking_uri, {m["run_id"]: {tracking.MEMBER_TAG: "true"}
                                         for m in members})
    if attacked:
        rid = log_attack(attacked, sel.tracking_uri, sel.ensemble_run_id, record.name)
        log(f"attack logged to MLflow run {rid}, nested under the ensemble's")
    path = sel.save(folder)
    log(f"ensemble of {size} recorded in {path} and MLflow run {sel.ensemble_run_id}")
    return sel


# ------------------------------------------------------------------ the record in MLflow

def trade_off_figure(sel: Selection) -> Figure:
    """Val privacy against val utility of every eligible candidate, the members marked, and
    the test-pool points of the ensemble, the best member and the noise baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p, u = mn.PRIVACY_MEAN, mn.UTILITY_MEAN
    fig, ax = plt.subplots(figsize=(5.8, 4.4))
    cs = sel.candidates
    ax.scatter([c[u] for c in cs], [c[p] for c in cs], c="0.6", s=18,
               label="eligible candidates (val)")
    members = {m["name"] for m in sel.members}
    mem = [c for c in cs if c["name"] in members]
    ax.scatter([c[u] for c in mem], [c[p] for c in mem], c="C3", s=40, marker="D",
               label="ensemble members (val)")
    for r, style in zip(sel.test_table, ("*", "P", "o", "s", "X"), strict=False):
        ax.scatter([r[u]], [r[p]], marker=style, s=80, label=f"{r[METHOD]} (test)")
    ax.set_xlabel(f"{mn.LABELS[u]} (TAR@1%FAR retention, pool mean)")
    ax.set_ylabel(f"{mn.LABELS[p]} (1 - |2 AUC - 1|, pool mean)")
    ax.set_xlim(-0.05, 1.1)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"ensemble of {len(sel.members)} from search {sel.search}", fontsize=9)
    fig.tight_layout()
    return fig


def selection_metrics(sel: Selection) -> dict[str, float]:
    """The ensemble run's metrics: `test_<method>_<metric>` per test-table row and pooled
    metric, identification included (and the matched noise's `test_noise_matched_sigma`),
    `val_<term>` of the chosen set."""
    out: dict[str, float] = {}
    for r in sel.test_table:
        for k in (*mn.TEST_COLUMNS, *ident_columns([r]), *group_columns([r])):
            out[mn.test(r[METHOD], k)] = float(r[k])
        if r.get(SIGMA) is not None:
            out[mn.test(r[METHOD], SIGMA)] = float(r[SIGMA])
        for k, v in r.items():  # out of range (None) is left out, never logged as a number
            if k.startswith(mn.ADVANTAGE) and isinstance(v, (int, float)):
                out[mn.test(r[METHOD], k)] = float(v)
    chosen = sel.val_table[0]
    for k in (*TERMS, *(mn.random(m) for m in REALISED_SHOWN)):
        out[mn.val(k)] = float(chosen[k])
    return out


def log_selection(sel: Selection) -> str:
    """An `ensemble` child run under the search's parent: settings, members, both tables,
    the test pool's CMC curves (`ensemble_test_cmc.json`), its per-group table when the
    dataset has skin-tone groups (`ensemble_test_groups.json`), the figure, and the headline
    metrics."""
    from san_search import tracking

    params = {**{k: str(v) for k, v in sel.settings.items()}, "policy": sel.policy,
              "seed": str(sel.seed), "predictor": sel.predictor,
              "members": ",".join(m["name"] for m in sel.members),
              "member_run_ids": ",".join(m["run_id"] for m in sel.members)}
    tables = {}
    for name, rows in (("selection_val.json", sel.val_table),
                       ("ensemble_test.json", sel.test_table)):
        cols = list(dict.fromkeys(k for r in rows for k in r))
        tables[name] = {c: [r.get(c) for r in rows] for c in cols}
    if sel.test_cmc:
        tables["ensemble_test_cmc.json"] = cmc_table(sel.test_cmc)
    if sel.test_groups:
        cols = [METHOD, mn.GROUP, *mn.group_table_columns(sel.test_groups)]
        tables["ensemble_test_groups.json"] = {c: [r.get(c) for r in sel.test_groups]
                                               for c in cols}
    return tracking.log_child_run(
        sel.tracking_uri, sel.experiment_id, sel.parent_run_id,
        run_name=f"{sel.search}-ensemble",
        tags={tracking.KIND_TAG: ENSEMBLE_KIND, tracking.SEARCH_TAG: sel.search,
              "data_fingerprint": sel.data_fingerprint},
        params={k: v[:MAX_PARAM] for k, v in params.items()},
        metrics=selection_metrics(sel), tables=tables,
        figures={"ensemble_trade_off.png": trade_off_figure(sel)})
