"""The adaptive attacker (`san-search attack`, `ensemble select --attack`): does an ensemble's
privacy survive a gender classifier retrained on its perturbed faces?

The attacker holds the ensemble as a black box and the train split's gender labels. For each
method (the ensemble under the `random` and the `chain` policy, the best single member as a
one-member ensemble, and the matched Gaussian noise when the test table has it) it perturbs a
seeded sample of the TRAIN split, trains gender classifiers on (perturbed, label), and scores
them on the perturbed TEST split: privacy = 1 - |2 AUC - 1| (DESIGN.md) and error rate.

Attackers: two architectures, one of the zoo's test-role gender classifiers and the aux
gender classifier with the best val AUC (own-trained models only: a converted pretrained
network has no training recipe here), each trained from scratch and fine-tuned from the
zoo's own trained weights, each on the perturbed images alone (`perturbed`) and, the
stronger variant, on the perturbed images plus the same images' originals
(`plus_originals`). Training is the zoo's own loop (`zoo.train_model` with its `train`
override), seeded, under a stated `Budget`.

Every image is rounded to 8 bits after perturbation, as a deployment writes it. The result
(`attack.json` in the export folder; the `Result` dict below) carries the budget, the
attackers and one row per method: privacy against the zoo's fixed test gender classifiers
(`privacy_mean`, `privacy_min`: third-party judges are left out), each attacker's privacy
(`attack.<model>.<init>.<data>`) and error (`attack_error.<...>`), and the worst attacker
(`attack_privacy_min`, `attack_worst`). When the test split has skin-tone groups, `groups`
holds one row per method, group and group x gender (`data.groups.privacy_by_group`): the
fixed classifiers' privacy, the lowest attacker privacy of each training variant
(`attack_privacy_min.perturbed`, `attack_privacy_min.plus_originals`) and of all.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from san_search import metric_names as mn
from san_search.console import Log
from san_search.ensemble.tables import BASELINE, METHOD, SIGMA, format_rows, json_plain
from san_search.errors import EnsembleError

if TYPE_CHECKING:
    from san_search.data.store import PreparedDataset, SplitView
    from san_search.ensemble.serving import EnsembleRuntime
    from san_search.zoo.store import Zoo

ATTACK_FILE = "attack.json"
ATTACK_KIND = "attack"  # the KIND_TAG of the attack's MLflow run
GROUPS_TABLE = "attack_groups.json"  # the run's per-group table, with skin-tone groups
INITS = ("scratch", "finetuned")  # random weights, or the zoo model's trained weights
DATA = ("perturbed", "plus_originals")  # what the attacker trains on
ATTACK_MIN, ATTACK_WORST = "attack_privacy_min", "attack_worst"
RANDOM, CHAIN, SINGLE = "ensemble (random)", "ensemble (chain)", "best single member"

Transform = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Budget:
    """The attacker's training budget, the same for every attacker: `images` train images
    (a seeded sample; the stronger variant adds their originals), `epochs` passes over them,
    AdamW at `lr` (warm-up and cosine decay, as the zoo), batches of `batch`, `seed`.
    Defaults: a few minutes on 2 CPU cores at 32 px (README)."""

    images: int = 512
    epochs: int = 2
    lr: float = 2e-3
    batch: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("images", "epochs", "batch"):
            if getattr(self, key) < 1:
                raise EnsembleError(f"attack budget: --attack-{key} must be at least 1, "
                                    f"got {getattr(self, key)}")
        if self.lr <= 0:
            raise EnsembleError(f"attack budget: --attack-lr must be positive, got {self.lr}")


def column(model: str, init: str, data: str) -> str:
    """An attacker's privacy column: `attack.<zoo model>.<init>.<data>`."""
    return f"attack.{model}.{init}.{data}"


def error_column(model: str, init: str, data: str) -> str:
    return f"attack_error.{model}.{init}.{data}"


def variant_column(data: str) -> str:
    """The worst attacker of one training variant, in the per-group rows:
    `attack_privacy_min.plus_originals`."""
    return f"{ATTACK_MIN}.{data}"


GROUP_COLUMNS = (mn.GENDER, mn.IMAGES, mn.PRIVACY_MEAN, *(variant_column(d) for d in DATA),
                 ATTACK_MIN)  # the per-group table's columns, after method and group


def attack_columns(result: dict[str, Any]) -> list[str]:
    """The privacy columns of a result, in attacker, init, data order, then the worst."""
    return [*(column(a["model"], i, d) for a in result["attackers"] for i in INITS
              for d in DATA), ATTACK_MIN]


# ------------------------------------------------------------------ who attacks


def _own(zoo: Zoo, role: str) -> list[str]:
    """Gender classifiers of `role` that the zoo trained itself (not converted)."""
    return [n for n in zoo.names("gender", role) if not zoo.entries[n]["training"].get("source")]


def choose_attackers(zoo: Zoo, log: Log = print) -> list[dict[str, str]]:
    """The test-role gender classifier (first by name; the val role when the zoo has no test
    gender classifier, said once) and the aux one with the best val AUC."""
    role = "test"
    tests = _own(zoo, "test")
    if not tests:
        role, tests = "val", _own(zoo, "val")
        log(f"note: zoo {zoo.path} has no own-trained test gender classifier; the attacker's "
            "first architecture comes from the val role")
    aux = _own(zoo, "aux")
    if not tests or not aux:
        raise EnsembleError(f"zoo {zoo.path} needs an own-trained test (or val) and aux gender "
                            "classifier for the attacker's two architectures")
    best = max(aux, key=lambda n: (zoo.entries[n].get("metrics", {}).get("val_auc", 0.0), n))
    return [{"model": tests[0], "arch": zoo.entries[tests[0]]["arch"], "role": role},
            {"model": best, "arch": zoo.entries[best]["arch"], "role": "aux"}]


# ------------------------------------------------------------------ what it trains on


def train_rows(train: SplitView, budget: Budget) -> np.ndarray:
    """The seeded sample of train rows the attacker gets (all of them when fewer)."""
    order = np.random.default_rng(budget.seed).permutation(len(train))
    return np.sort(order[: budget.images])


def attack_train_set(train: SplitView, rows: np.ndarray, perturbed: np.ndarray,
                     with_originals: bool) -> SplitView:
    """The attacker's training split: the perturbed images of train `rows` with their labels,
    and with `with_originals` the same rows' originals after them."""
    import pyarrow as pa

    from san_search.data.store import SplitView
    from san_search.images import to_uint8

    take = pa.array(rows)
    parts = [(to_uint8(perturbed), train.gender[rows], train.identity_index[rows],
              train.identity.take(take), train.source_path.take(take))]
    if with_originals:
        parts.append((np.asarray(train.images[rows]), *parts[0][1:]))
    return SplitView(
        f"attack-{DATA[int(with_originals)]}",
        np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]), pa.concat_arrays([p[3] for p in parts]),
        pa.concat_arrays([p[4] for p in parts]), None)


def methods(rt: EnsembleRuntime, best_single: int, test_table: Sequence[dict[str, Any]]
            ) -> list[tuple[str, Transform, dict[str, Any]]]:
    """(label, transform, extra row fields) of each method: both policies, the best single
    member, and the matched noise and blur when the test table has rows for them (a table
    made before blur rows names no kind: its one baseline row is noise)."""
    from san_search.ensemble.serving import EnsembleRuntime
    from san_search.zoo.pool import BASELINES

    single = EnsembleRuntime([rt.members[best_single]], rt.predictor, rt.prototypes)
    out: list[tuple[str, Transform, dict[str, Any]]] = [
        (RANDOM, lambda x: rt.perturb(x, "random"), {}),
        (CHAIN, lambda x: rt.perturb(x, "chain"), {}),
        (SINGLE, single.perturb, {"member": best_single}),
    ]
    for r in test_table:
        if r.get(SIGMA) is not None:
            kind = str(r.get(BASELINE, "noise"))
            out.append((str(r[METHOD]), BASELINES[kind](float(r[SIGMA]), 0),
                        {SIGMA: float(r[SIGMA]), BASELINE: kind}))
    return out


# ------------------------------------------------------------------ training and scoring


def train_attacker(attacker: dict[str, str], init: str, train: SplitView, ds_path: str | Path,
                   zoo: Zoo, budget: Budget) -> Any:
    """One attacker trained by the zoo's loop on `train`; the model (CPU, eval mode)."""
    from san_search.config import ModelSpec
    from san_search.zoo.store import train_model

    name = attacker["model"]
    weights = None
    if init == "finetuned":
        zoo.load(name)  # checks the weights' SHA-256 and data before they are used
        weights = str(zoo.path / "models" / f"{name}.safetensors")
    spec = ModelSpec(name=f"attack-{name}-{init}", kind="gender", arch=attacker["arch"],
                     role=attacker["role"], epochs=budget.epochs, batch_size=budget.batch,
                     lr=budget.lr, images_per_epoch=0, weights=weights, seed=budget.seed)
    model, _ = train_model(spec, ds_path, log=lambda _: None, train=train)
    return model


def fixed_scores(zoo: Zoo, test: SplitView) -> dict[str, np.ndarray]:
    """The male scores of `test` (perturbed) from the zoo's fixed test gender classifiers (the
    val ones when the zoo has none)."""
    names = zoo.names("gender", "test") or zoo.names("gender", "val")
    return {n: zoo.gender_evaluator(n).male_score(test.images) for n in names}


def fixed_privacy(scores: dict[str, np.ndarray], gender: np.ndarray) -> dict[str, float]:
    """`privacy_mean`, `privacy_min` of the fixed classifiers' `scores`."""
    from san_search.metrics import gender_scores

    p = [gender_scores(s, gender)["privacy"] for s in scores.values()]
    return {mn.PRIVACY_MEAN: float(np.mean(p)), mn.PRIVACY_MIN: float(np.min(p))}


def group_rows(group: np.ndarray, gender: np.ndarray, fixed: dict[str, np.ndarray],
               attacked: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per group and group x gender (`data.groups.privacy_by_group`, sizes included): the
    fixed classifiers' mean privacy, and for each training variant the lowest privacy of its
    attackers (`attacked`: attack column -> male scores), then the lowest of all."""
    from san_search.data.groups import privacy_by_group

    rows = privacy_by_group(group, gender, fixed)
    per = {c: privacy_by_group(group, gender, {c: s}) for c, s in attacked.items()}
    for i, row in enumerate(rows):
        for d in DATA:
            row[variant_column(d)] = min(per[c][i][mn.PRIVACY_MEAN] for c in attacked
                                         if c.endswith(f".{d}"))
        row[ATTACK_MIN] = min(row[variant_column(d)] for d in DATA)
    return rows


def _attack_method(label: str, f: Transform, ds: PreparedDataset, zoo: Zoo,
                   attackers: list[dict[str, str]], budget: Budget, log: Log
                   ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One method's row (fixed privacy and every attacker's privacy and error) and its
    per-group rows (`group_rows`; none when the test split has no groups)."""
    from san_search.data.groups import has_groups
    from san_search.images import to_uint8
    from san_search.metrics import gender_scores
    from san_search.zoo.evaluators import TorchGender

    train, test = ds.split("train"), ds.split("test")
    rows = train_rows(train, budget)
    perturbed = f(np.asarray(train.images[rows]))
    test_view = dataclasses.replace(test, images=to_uint8(f(test.images)))
    fixed = fixed_scores(zoo, test_view)
    row: dict[str, Any] = {METHOD: label, **fixed_privacy(fixed, test.gender)}
    attacked: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for a in attackers:
        for init in INITS:
            for with_orig, data in enumerate(DATA):
                model = train_attacker(a, init, attack_train_set(train, rows, perturbed,
                                                                 bool(with_orig)),
                                       ds.path, zoo, budget)
                col = column(a["model"], init, data)
                attacked[col] = TorchGender(col, "attack", model).male_score(test_view.images)
                s = gender_scores(attacked[col], test.gender)
                row[col], row[error_column(a["model"], init, data)] = s["privacy"], s["error"]
    cols = [column(a["model"], i, d) for a in attackers for i in INITS for d in DATA]
    worst = min(cols, key=lambda c: (row[c], c))
    row[ATTACK_MIN], row[ATTACK_WORST] = row[worst], worst
    log(f"  attack: {label}: fixed privacy {row[mn.PRIVACY_MEAN]:.3f}, worst attacker "
        f"{row[ATTACK_MIN]:.3f} ({worst}; {time.perf_counter() - t0:.0f} s)")
    if not has_groups(test.group):
        return row, []
    assert test.group is not None
    return row, [{METHOD: label, **g} for g in group_rows(test.group, test.gender, fixed,
                                                           attacked)]


def run_attack(rt: EnsembleRuntime, best_single: int, ds: PreparedDataset, zoo: Zoo,
               budget: Budget, test_table: Sequence[dict[str, Any]] = (), log: Log = print
               ) -> dict[str, Any]:
    """The attack on every method (`methods`); the result recorded as attack.json."""
    t0 = time.perf_counter()
    attackers = choose_attackers(zoo, log)
    log(f"adaptive attacker: {', '.join(a['model'] + ' (' + a['arch'] + ')' for a in attackers)}"
        f"; budget {dataclasses.asdict(budget)}")
    rows, groups = [], []
    for label, f, extra in methods(rt, best_single, test_table):
        row, by_group = _attack_method(label, f, ds, zoo, attackers, budget, log)
        rows.append({**row, **extra})
        groups += by_group
    return {"budget": dataclasses.asdict(budget), "attackers": attackers, "rows": rows,
            **({"groups": groups} if groups else {}),
            "train_images": len(train_rows(ds.split("train"), budget)),
            "test_images": len(ds.split("test")), "data_fingerprint": ds.fingerprint,
            "seconds": round(time.perf_counter() - t0, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def format_attack(result: dict[str, Any]) -> str:
    """The attack table as plain text (privacy: fixed classifiers, then each attacker)."""

    b = result["budget"]
    text = (f"adaptive attacker (privacy on the perturbed test split; trained on "
            f"{result['train_images']} perturbed train images, {b['epochs']} epoch(s), lr "
            f"{b['lr']:g}, batch {b['batch']}, seed {b['seed']})\n"
            + format_rows(result["rows"], [mn.PRIVACY_MEAN, mn.PRIVACY_MIN,
                                           *attack_columns(result)], METHOD))
    if result.get("groups"):
        labelled = [{**r, "method / group": f"{r[METHOD]} / {r[mn.GROUP]}"}
                    for r in result["groups"]]
        text += ("\nper skin-tone group x gender (privacy: the fixed classifiers' mean, then "
                 "the worst attacker of each variant; a cell's privacy against the split's other "
                 "gender)\n"
                 + format_rows(labelled, list(GROUP_COLUMNS), "method / group"))
    return text


def budget_params(result: dict[str, Any]) -> dict[str, str]:
    """The MLflow params of an attack: its budget and attackers."""
    return {**{f"attack_{k}": str(v) for k, v in result["budget"].items()},
            "attack_train_images": str(result["train_images"]),
            "attackers": ",".join(f"{a['model']}:{a['arch']}" for a in result["attackers"])}


def attack_metrics(result: dict[str, Any]) -> dict[str, float]:
    """`test_<method tag>_<column>` for every number of every row."""
    return {mn.test(r[METHOD], k): float(v) for r in result["rows"] for k, v in r.items()
            if isinstance(v, float)}


def log_attack(result: dict[str, Any], tracking_uri: str, ensemble_run_id: str, search: str
               ) -> str:
    """A finished `attack` run nested under the ensemble's run (where its test table is):
    budget params, metrics, and the table as `attack.json`; returns its run id."""
    from san_search import tracking

    run = tracking.get_run(tracking_uri, ensemble_run_id)
    cols = list(dict.fromkeys(k for r in result["rows"] for k in r))
    tables = {ATTACK_FILE: {c: [r.get(c) for r in result["rows"]] for c in cols}}
    if result.get("groups"):
        tables[GROUPS_TABLE] = {c: [r.get(c) for r in result["groups"]]
                                for c in (METHOD, mn.GROUP, *GROUP_COLUMNS)}
    return tracking.log_child_run(
        tracking_uri, run.info.experiment_id, ensemble_run_id, run_name=f"{search}-attack",
        tags={tracking.KIND_TAG: ATTACK_KIND, tracking.SEARCH_TAG: search},
        params=budget_params(result), metrics=attack_metrics(result),
        tables=tables, figures={})


def to_json(result: dict[str, Any]) -> str:

    return json.dumps(result, indent=2, default=json_plain)


# ------------------------------------------------------------------ on an export folder


def best_single_of(manifest: dict[str, Any]) -> int:
    """The member with the best val privacy: the test table's "best single member"."""
    return int(np.argmax([m["val"][mn.PRIVACY_MEAN] for m in manifest["members"]]))
