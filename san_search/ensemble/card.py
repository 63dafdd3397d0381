"""The model card of an export folder: `README.md`, written from its manifest (members and
their val scores, the test pool's verification and identification tables, provenance, and
the pretrained models' licences), beside the trade-off figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from san_search import metric_names as mn
from san_search.ensemble.attack import ATTACK_FILE, ATTACK_MIN, DATA, INITS, column, variant_column
from san_search.ensemble.orchestration import (
    Selection,
    advantage_verdict,
    format_advantage,
    group_columns,
    per_evaluator_columns,
    trade_off_figure,
)
from san_search.ensemble.serving import MANIFEST
from san_search.ensemble.tables import ADVANTAGE_MATCHER, METHOD, format_rows

CARD, FIGURE = "README.md", "trade_off.png"
# The val metrics of each member in the model card.
CARD_VAL = (mn.PRIVACY_MEAN, mn.UTILITY_MEAN, mn.SSIM)


def model_card(manifest: dict[str, Any], attack: dict[str, Any] | None = None) -> str:
    """README.md of an export folder, from its manifest (and the adaptive attacker's result,
    `attack.json`, when there is one)."""
    members = manifest["members"]
    pre = manifest["preprocessing"]
    val_heads = " | ".join(mn.label(mn.val(k)) for k in CARD_VAL)
    lines = [
        f"# SAN ensemble from search `{manifest['search']}`",
        "",
        f"{len(members)} semi-adversarial networks that rewrite {pre['size']}x{pre['size']} "
        f"{'colour' if pre.get('color') == 'rgb' else 'grayscale'} faces so gender "
        "classifiers fail while face matchers still verify the person."
        f" Policy `{manifest['policy']}` (seed {manifest['seed']}): "
        + ("each image goes through one member, chosen by a hash of its pixels."
           if manifest["policy"] == "random" else "every member in turn."),
        "",
        f"![trade-off]({FIGURE})",
        "",
        "## Use",
        "```",
        "san-search perturb --ensemble <this folder> --input FACES --output OUT",
        "```",
        "or `mlflow.pyfunc.load_model(\"models:/<name>@champion\")` and `predict` on a uint8 "
        "array (N, S, S), or (N, S, S, 3) for colour. Loading checks the SHA-256 of every "
        f"file listed in `{MANIFEST}`.",
        "",
        "## Members",
        "",
        f"| member | MLflow run | {val_heads} | autoencoder | aux gender | aux matcher |",
        "|---|---|" + "---|" * len(CARD_VAL) + "---|---|---|",
    ]
    for m in members:
        c, v = m["config"], m["val"]
        arch = (f"{c['autoencoder']} d{c['depth']} w{c['width']}" if c["autoencoder"] ==
                "san_conv" else c["autoencoder"])
        vals = " | ".join(f"{v[k]:.3f}" for k in CARD_VAL)
        lines.append(f"| {m['name']} | `{m['run_id']}` | {vals} | {arch} | "
                     f"{c['aux_gender']} | {c['aux_matcher']} |")
    return "\n".join(lines + _card_advantage(manifest["test"]) + _card_test_pool(manifest)
                     + _card_attack(attack)
                     + _card_provenance(manifest))


def _card_advantage(test: list[dict[str, Any]]) -> list[str]:
    """Advantage over noise and blur first: whether the ensemble hides more than a naive
    baseline at the same cost to recognition (a plain warning when it does not)."""
    text = format_advantage(test)
    if not text:
        return []
    verdict = advantage_verdict(test)
    return ["", "## Advantage over noise", "",
            verdict if verdict else
            (f"{test[0][METHOD]} hides more gender than Gaussian noise at the same "
             f"{test[0].get(ADVANTAGE_MATCHER)} utility: the 95% interval of its advantage "
             "(minimum over the gender judges) lies above 0."),
            "", "Advantage = privacy minus the best privacy the baseline reaches at any "
            "strength that keeps at least the method's utility (a monotone envelope over "
            "strengths, the originals included); out of range when the method costs more "
            "utility than every strength swept.", "", "```", text, "```"]


def _card_test_pool(manifest: dict[str, Any]) -> list[str]:
    test = manifest["test"]
    cols = [*mn.TEST_COLUMNS, *group_columns(test)]
    lines = ["", "## Test pool (never used during search or selection)", "",
             "| method | " + " | ".join(mn.LABELS[k] for k in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for r in test:
        lines.append(f"| {r[METHOD]} | " + " | ".join(f"{r[k]:.3f}" for k in cols) + " |")
    return lines + ["", "Per evaluator (privacy = 1 - |2 AUC - 1| per gender classifier; "
                    "utility = TAR@1%FAR retention per matcher):", "", "```",
                    format_rows(test, per_evaluator_columns(test), METHOD), "```"
                    ] + _card_identification(test) + _card_groups(manifest.get("test_groups"))


def _card_groups(rows: list[dict[str, Any]] | None) -> list[str]:
    """Privacy and utility per skin-tone group x gender, with sizes; one line saying there
    are none for a dataset without groups."""
    if not rows:
        return ["", "### By skin-tone group", "",
                "The dataset has no skin-tone groups (no colour source or manifest `group` "
                "column): no per-group results."]
    cols = mn.group_table_columns(rows)
    return ["", "### By skin-tone group", "",
            "Groups are bins of the Individual Typology Angle of each face's skin pixels, "
            "measured on the colour source photo (light > 41 deg, intermediate 10..41, dark "
            "<= 10; Chardon et al.'s scale merged), or a manifest's own `group` column. ITA is "
            "a proxy for skin tone in a photo, not a label of the person. A group's privacy "
            "is 1 - |2 AUC - 1| within the group; a group x gender cell holds one gender, so "
            "its privacy is 1 - |2 AUC - 1| of its faces against the other gender's faces of "
            "the whole test split (1 for a classifier that knows nothing of gender, whatever "
            "it answers). Utility is the "
            "TAR@1%FAR retention of the cell's genuine pairs at the whole split's threshold "
            "(probe perturbed, and both perturbed); rank-1 retention is that of the cell's "
            "own probes, searched in the whole test gallery.",
            "", "| method | group | " + " | ".join(mn.LABELS.get(c, c) for c in cols) + " |",
            "|---|---|" + "---|" * len(cols)
            ] + [f"| {r[METHOD]} | {r[mn.GROUP]} | "
                 + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c])
                              for c in cols) + " |" for r in rows]


def _card_identification(test: list[dict[str, Any]]) -> list[str]:
    """Rank-1 / rank-5 identification (pool means) of each method, when the table has them
    (a selection made before identification was scored has not)."""
    cols = [k for k in mn.CARD_IDENT_COLUMNS if test and k in test[0]]
    if not cols:
        return []
    return ["", "### Identification", "",
            "Closed set: the gallery holds one original image per test identity (its first), "
            "and the identity's other images are probes. Rank-k is the share of probes whose "
            "identity is among the k most similar gallery entries (cosine; ties count against "
            "the probe), as a mean over the pool's matchers. Scenarios: *probe perturbed* "
            "(perturbed probes, original gallery), *both perturbed* (a protected database "
            "searched with protected probes), *originals* (the ceiling). Rank-1 retention is "
            "perturbed / original rank-1, capped at 1; utility (both perturbed) is the "
            "TAR@1%FAR retention with both images of every pair perturbed.", "",
            "| method | " + " | ".join(mn.LABELS[k] for k in cols) + " |",
            "|---|" + "---|" * len(cols)] + [
        f"| {r[METHOD]} | " + " | ".join(f"{r[k]:.3f}" for k in cols) + " |" for r in test]


def _card_attack(attack: dict[str, Any] | None) -> list[str]:
    """The adaptive attacker's table (`san_search.ensemble.attack`): privacy against the fixed test
    classifiers beside each retrained attacker's, with its budget."""
    if not attack:
        return []
    b = attack["budget"]
    heads = ["privacy (fixed, mean)", "privacy (fixed, worst)"]
    cols = [mn.PRIVACY_MEAN, mn.PRIVACY_MIN]
    for a in attack["attackers"]:
        for i in INITS:
            for d in DATA:
                heads.append(f"{a['arch']} {i} {d.replace('_', ' ')}")
                cols.append(column(a["model"], i, d))
    heads.append("worst attacker")
    cols.append(ATTACK_MIN)
    return ["", "## Adaptive attacker", "",
            "Gender classifiers retrained on this ensemble's outputs: the attacker perturbs "
            f"{attack['train_images']} train images with the ensemble (a black box) and trains "
            "on them with their labels (*perturbed*), or on them plus their originals (*plus "
            "originals*), from random weights (*scratch*) or from the zoo's trained model "
            f"(*finetuned*): {b['epochs']} epoch(s), lr {b['lr']:g}, batch {b['batch']}, seed "
            f"{b['seed']}. Privacy (1 - |2 AUC - 1|) on the {attack['test_images']} perturbed "
            "test images; attackers: " + ", ".join(f"`{a['model']}` ({a['arch']}, {a['role']})"
                                                   for a in attack["attackers"]) + ".", "",
            "| method | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)] + [
        f"| {r[METHOD]} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |"
        for r in attack["rows"]] + _card_attack_groups(attack.get("groups"))


def _card_attack_groups(rows: list[dict[str, Any]] | None) -> list[str]:
    """The attacker's privacy per skin-tone group x gender (with skin-tone groups only)."""
    if not rows:
        return []
    heads = ["privacy (fixed, mean)", *(f"worst attacker, {d.replace('_', ' ')}"
                                       for d in DATA), "worst attacker"]
    cols = [mn.PRIVACY_MEAN, *(variant_column(d) for d in DATA), ATTACK_MIN]
    return ["", "### Adaptive attacker by skin-tone group", "",
            "The same attackers' privacy within each group (1 - |2 AUC - 1|) and group x "
            "gender cell (against the split's other gender), the lowest over the attackers "
            "of each training variant.", "",
            "| method | group | gender | images | " + " | ".join(heads) + " |",
            "|---|---|---|---|" + "---|" * len(heads)] + [
        f"| {r[METHOD]} | {r[mn.GROUP]} | {r[mn.GENDER]} | {r[mn.IMAGES]} | "
        + " | ".join(f"{r[c]:.3f}" for c in cols) + " |" for r in rows]


def _card_provenance(manifest: dict[str, Any]) -> list[str]:
    return ["", "## Provenance", "",
            f"- data fingerprint `{manifest['data_fingerprint']}`, zoo fingerprint "
            f"`{manifest['zoo_fingerprint']}`",
            f"- preprocessing: {manifest['preprocessing']}",
            f"- gender predictor: `{manifest['predictor']['name']}` "
            f"({manifest['predictor']['arch']})",
            f"- ONNX Runtime vs PyTorch, max abs difference: {manifest['onnx_check']}",
            f"- versions: {manifest['versions']}",
            f"- exported {manifest['created']}", ""] + _card_licences(manifest)


def _card_licences(manifest: dict[str, Any]) -> list[str]:
    found = manifest.get("licences") or {}
    if not found:
        return []
    lines = ["## Pretrained models and their licences", "",
             "| model | role | source | code | weights | training data | commercial use |",
             "|---|---|---|---|---|---|---|"]
    for name, lic in sorted(found.items()):
        lines.append(f"| {name} | {lic['role']} | `{lic['source']}` | {lic['code_licence']} | "
                     f"{lic['weights_licence']} | {lic['training_data']} | "
                     f"{lic['commercial_use']} |")
    return lines + [""]


def write_card(folder: Path, sel: Selection, manifest: dict[str, Any]) -> None:
    """The model card: the trade-off figure and README.md."""
    import matplotlib.pyplot as plt

    fig = trade_off_figure(sel)
    fig.savefig(folder / FIGURE, dpi=120)
    plt.close(fig)
    attack = folder / ATTACK_FILE  # there when `ensemble select --attack` ran
    (folder / CARD).write_text(model_card(
        manifest, json.loads(attack.read_text()) if attack.is_file() else None))


