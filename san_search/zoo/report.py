"""`zoo report`: every zoo model (and the installed third-party evaluators) scored on the test
identities' original images, beside a majority-class gender baseline and an eigenfaces
matcher; printed and logged to MLflow as one run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np

from san_search.data import open_dataset
from san_search.data.groups import has_groups, originals_by_group
from san_search.metrics import gender_scores as pooled_gender_scores
from san_search.metrics import pair_verification
from san_search.zoo.evaluators import EigenfaceMatcher, MajorityGender, third_party_evaluators
from san_search.zoo.store import open_zoo


class ReportContext(TypedDict):
    """What a zoo report was scored on: the zoo, the data, the test split's size, and the
    notices of third-party evaluators that could not load."""

    zoo: str
    data: str
    data_fingerprint: str
    test_images: int
    test_pairs: int
    notices: list[str]


@dataclass(frozen=True)
class Row:
    kind: str
    name: str
    role: str
    arch: str
    metrics: dict[str, float]
    licence: dict[str, str] | None = None  # pretrained models: code, weights, training data

    @property
    def use(self) -> str:
        """Short licence column: our own models are ours; pretrained ones say if research-only."""
        if self.licence is None:
            return "own" if self.role not in ("baseline",) else "-"
        return "research" if self.licence["commercial_use"].startswith("no") else "commercial"


def score_zoo(zoo_path: str | Path, data: str | Path | None = None, *,
              third_party: bool = True) -> tuple[list[Row], ReportContext]:
    """Score every model of the zoo and the baselines on the test split."""
    ds = open_dataset(data or open_zoo(zoo_path).data_path)
    zoo = open_zoo(zoo_path, expect=ds)  # other data: refused
    test, train = ds.split("test"), ds.split("train")
    pairs = test.pairs
    assert pairs is not None
    rows: list[Row] = []
    group = test.group if has_groups(test.group) else None

    def pair_scores(emb: np.ndarray) -> dict[str, float]:
        extra = (originals_by_group(group, test.gender, embedding=emb, pairs=pairs)
                 if group is not None else {})
        return {**pair_verification(emb, emb, pairs.a, pairs.b, pairs.same), **extra}

    def gender_scores(score: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        extra = (originals_by_group(group, labels, male_score=score)
                 if group is not None else {})
        return {**pooled_gender_scores(score, labels), **extra}

    for name in zoo.names("gender"):
        ev = zoo.gender_evaluator(name)
        m = gender_scores(ev.male_score(test.images), test.gender)
        rows.append(Row("gender", name, ev.role, zoo.entries[name]["arch"], m,
                        zoo.entries[name].get("licence")))
    extra = third_party_evaluators() if third_party else None
    for g in extra.genders if extra else []:
        rows.append(Row("gender", g.name, g.role, "pretrained",
                        gender_scores(g.male_score(test.images), test.gender), g.licence))
    majority = MajorityGender(float((train.gender == 1).mean()))
    rows.append(Row("gender", majority.name, majority.role, "constant",
                    gender_scores(majority.male_score(test.images), test.gender)))
    for name in zoo.names("matcher"):
        mv = zoo.matcher_evaluator(name)
        rows.append(Row("matcher", name, mv.role, zoo.entries[name]["arch"],
                        pair_scores(mv.embed(test.images)), zoo.entries[name].get("licence")))
    for mt in extra.matchers if extra else []:
        rows.append(Row("matcher", mt.name, mt.role, "pretrained",
                        pair_scores(mt.embed(test.images)), mt.licence))
    eig = EigenfaceMatcher(train.images)
    rows.append(Row("matcher", eig.name, eig.role, "pca-64", pair_scores(eig.embed(test.images))))
    context = ReportContext(
        zoo=str(zoo.path), data=str(ds.path), data_fingerprint=ds.fingerprint,
        test_images=len(test), test_pairs=len(pairs.a),
        notices=extra.notices if extra else [])
    return rows, context


def format_table(rows: list[Row]) -> str:
    head = (f"{'kind':<8} {'model':<26} {'role':<9} {'arch':<22} {'acc/TAR':>8} {'AUC':>6}"
            f"  {'weights':<10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        first = r.metrics.get("accuracy", r.metrics.get("tar", float("nan")))
        lines.append(f"{r.kind:<8} {r.name:<26} {r.role:<9} {r.arch:<22} {first:>8.3f} "
                     f"{r.metrics['auc']:>6.3f}  {r.use:<10}")
    lines.append("gender: accuracy and ROC-AUC on the test identities' images; matcher: "
                 "TAR at FAR=1% and ROC-AUC on the test pairs; weights: own (trained here), "
                 "commercial or research (pretrained, see licences)")
    lines += _group_lines(rows)
    for r in rows:
        if r.licence:
            lines.append(f"  {r.name}: {r.licence['source']}; code {r.licence['code_licence']}; "
                         f"weights {r.licence['weights_licence']}; "
                         f"data {r.licence['training_data']}")
    return "\n".join(lines)


def log_report(rows: list[Row], context: ReportContext, table: str,
               tracking_uri: str | None, experiment: str) -> str:
    """Log the report as one MLflow run; returns the run id."""
    from san_search import tracking

    return tracking.log_report_run(
        tracking_uri, experiment, run_name="zoo-report", kind="zoo_report",
        params={"zoo": context["zoo"], "data": context["data"],
                "data_fingerprint": context["data_fingerprint"],
                "test_images": context["test_images"], "test_pairs": context["test_pairs"]},
        metrics={tracking.metric_key(r.kind, r.name, k): float(v)
                 for r in rows for k, v in r.metrics.items()},
        tables={"zoo_report.json": {
            "kind": [r.kind for r in rows], "model": [r.name for r in rows],
            "role": [r.role for r in rows], "arch": [r.arch for r in rows],
            "accuracy_or_tar": [r.metrics.get("accuracy", r.metrics.get("tar")) for r in rows],
            "auc": [r.metrics["auc"] for r in rows],
            "weights": [r.use for r in rows],
        }},
        texts={"zoo_report.txt": table, "context.json": json.dumps(context, indent=2),
               "licences.json": json.dumps({r.name: r.licence for r in rows if r.licence},
                                           indent=2)})


def _group_lines(rows: list[Row]) -> list[str]:
    """Accuracy (gender) and TAR (matchers) per skin-tone group x gender; one line saying
    there are none for a dataset without groups."""
    cells = list(dict.fromkeys(k.split(".", 1)[1] for r in rows for k in r.metrics
                               if k.startswith(("accuracy.", "tar."))))
    if not cells:
        return ["skin-tone groups: none in this dataset, so no per-group columns"]
    width = max(12, *(len(c) for c in cells))
    head = f"{'model':<26} " + " ".join(f"{c:>{width}}" for c in cells)
    out = ["per skin-tone group x gender (ITA bins, a proxy; gender: accuracy, matcher: TAR)",
           head, "-" * len(head)]
    for r in rows:
        key = "accuracy" if r.kind == "gender" else "tar"
        vals = [r.metrics.get(f"{key}.{c}") for c in cells]
        if any(v is not None for v in vals):
            out.append(f"{r.name:<26} " + " ".join(
                f"{v:>{width}.3f}" if v is not None else f"{'-':>{width}}" for v in vals))
    return out
