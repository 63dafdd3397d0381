"""Per skin-tone group results in the reports: the pool scorer's worst group and per-group
rows, the test table's printout, the ensemble run's metrics and tables, and the model card;
a dataset without groups gets none of it and says so once."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from san_search.data.splits import Pairs
from san_search.data.store import SplitView
from san_search.ensemble.card import _card_groups, _card_test_pool
from san_search.ensemble.orchestration import Selection, format_test_table, selection_metrics
from san_search.zoo.pool import Pool, PoolScorer

from .test_orchestration import _selection


class _Gender:
    """Scores male as the image's first pixel: the test sets it per row."""

    name, role = "g_first", "val"

    def male_score(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(images, np.float64).reshape(len(images), -1)[:, 0]


class _Flat:
    name, role = "flat", "val"

    def embed(self, images: np.ndarray) -> np.ndarray:
        f = np.asarray(images, np.float64).reshape(len(images), -1)[:, 1:]
        return f / np.linalg.norm(f, axis=1, keepdims=True)


def _view(group: list[str | None] | None) -> SplitView:
    """8 images, 4 identities of 2 (light f, light m, dark f, dark m); embeddings one-hot per
    identity in pixels 1..8; pixel 0 (the male score) separates light faces, not dark ones."""
    images = np.zeros((8, 3, 3), np.float32)
    for i in range(8):
        images[i].flat[1 + i // 2] = 1.0
        images[i].flat[5 + i % 2] = 0.1  # the two images of an identity differ a little
    gender = np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int8)
    images[:, 0, 0] = [0.1, 0.2, 0.8, 0.9, 0.6, 0.4, 0.5, 0.55]
    ident = np.repeat(np.arange(4, dtype=np.int32), 2)
    pairs = Pairs(np.array([0, 2, 4, 6, 0, 2, 4, 6], np.int32),
                  np.array([1, 3, 5, 7, 3, 5, 7, 1], np.int32), np.array([True] * 4 + [False] * 4))
    names = pa.array([f"p{i}" for i in ident])
    return SplitView("test", images, gender, ident, names, names, pairs,
                     None if group is None else np.array(group, dtype=object),
                     None if group is None else np.zeros(8, np.float32))


def test_scorer_reports_the_worst_group_and_rows_per_group_and_gender() -> None:
    scorer = PoolScorer(Pool("test", [_Gender()], [_Flat()]),
                        _view(["light"] * 4 + ["dark"] * 4))
    got = scorer.score(scorer.original)
    # light: AUC 1 -> privacy 0; dark: male scores .5, .55 vs female .6, .4 -> AUC .5 -> 1
    assert got["worst_group_privacy"] == pytest.approx(0.0)
    rows = scorer.by_group()
    cells = {(r["group"], r["gender"]): r for r in rows}
    assert [(r["group"], r["gender"], r["images"]) for r in rows] == [
        ("light", "all", 4), ("light", "female", 2), ("light", "male", 2),
        ("dark", "all", 4), ("dark", "female", 2), ("dark", "male", 2),
        ("worst group: light", "all", 4)]
    assert cells["dark", "all"]["privacy_mean"] == pytest.approx(1.0)
    # dark women (.6, .4) against all the men (.8, .9, .5, .55): AUC 6/8 -> privacy 0.5
    assert cells["dark", "female"]["privacy_mean"] == pytest.approx(0.5)
    assert cells["light", "male"]["utility_mean"] == 1.0  # originals against themselves
    assert cells["light", "male"]["utility_both_mean"] == 1.0
    assert cells["light", "male"]["rank1_retention"] == 1.0
    assert cells["dark", "all"]["rank1_both_retention"] == 1.0


@pytest.mark.parametrize("group", [None, [None] * 8])
def test_scorer_without_groups_reports_no_group_metric(group: list[None] | None) -> None:
    scorer = PoolScorer(Pool("test", [_Gender()], [_Flat()]), _view(group))
    assert "worst_group_privacy" not in scorer.score(scorer.original)
    assert scorer.by_group() == [] and not scorer.has_groups


def _group_rows() -> list[dict[str, object]]:
    return [{"method": m, "group": g, "gender": s, "images": n, "privacy_mean": p,
             "utility_mean": 0.8}
            for m in ("ensemble (random)", "best single member")
            for g, s, n, p in (("light", "all", 40, 0.3), ("light", "female", 15, 0.6),
                               ("dark", "all", 10, 0.2), ("worst group: dark", "all", 10, 0.2))]


def _grouped_selection() -> Selection:
    sel = _selection()
    for r, w in zip(sel.test_table, (0.2, 0.3, 0.1, 0.05), strict=True):
        r["worst_group_privacy"] = w
    sel.test_groups = _group_rows()
    return sel


def test_the_test_table_prints_the_worst_group_and_a_table_per_group() -> None:
    sel = _grouped_selection()
    lines = format_test_table(sel.test_table, sel.test_groups).splitlines()
    assert lines[1].split()[-1] == "worst_group_privacy"
    start = next(i for i, line in enumerate(lines) if line.startswith("per skin-tone group"))
    assert lines[start + 1].split() == ["method", "/", "group", "gender", "images",
                                        "privacy_mean", "utility_mean"]
    assert lines[start + 3].split() == ["ensemble", "(random)", "/", "light", "all", "40",
                                        "0.300", "0.800"]
    assert len(lines) == start + 3 + 8
    got = selection_metrics(sel)
    assert got["test_ensemble_chain_worst_group_privacy"] == pytest.approx(0.3)
    assert got["test_noise_matched_worst_group_privacy"] == pytest.approx(0.05)


def test_without_groups_the_printout_has_no_group_columns() -> None:
    sel = _selection()
    text = format_test_table(sel.test_table, sel.test_groups)
    assert "group" not in text
    assert not any("worst_group" in k for k in selection_metrics(sel))


def test_the_card_gives_groups_or_says_once_there_are_none() -> None:
    sel = _grouped_selection()
    lines = _card_test_pool({"test": sel.test_table, "test_groups": sel.test_groups})
    assert lines[3] == ("| method | privacy | privacy (worst) | utility | utility (worst) | "
                        "SSIM | privacy (worst group) |")
    assert "| ensemble (random) | light | female | 15 | 0.600 | 0.800 |" in lines
    assert "| best single member | worst group: dark | all | 10 | 0.200 | 0.800 |" in lines
    assert any("proxy for skin tone" in line for line in lines)
    none = _card_test_pool({"test": _selection().test_table})  # an export before groups too
    assert sum("no skin-tone groups" in line for line in none) == 1
    assert not any("worst group" in line for line in none)
    assert _card_groups([]) == _card_groups(None)


def test_a_selection_made_before_groups_still_loads(tmp_path: Path) -> None:
    raw = dataclasses.asdict(_grouped_selection())
    del raw["test_groups"]
    (tmp_path / "ensemble").mkdir()
    (tmp_path / "ensemble" / "selection.json").write_text(json.dumps(raw))
    assert Selection.load(tmp_path).test_groups == []


def test_the_ensemble_run_logs_the_group_table(monkeypatch: pytest.MonkeyPatch) -> None:
    from san_search import tracking
    from san_search.ensemble import orchestration

    seen: dict[str, object] = {}

    def fake(*_: object, **kw: object) -> str:
        seen.update(kw)
        return "run"

    monkeypatch.setattr(tracking, "log_child_run", fake)
    monkeypatch.setattr(orchestration, "trade_off_figure", lambda _: None)
    orchestration.log_selection(_grouped_selection())
    tables = seen["tables"]
    assert isinstance(tables, dict)
    t = tables["ensemble_test_groups.json"]
    assert list(t) == ["method", "group", "gender", "images", "privacy_mean", "utility_mean"]
    assert t["group"][:4] == ["light", "light", "dark", "worst group: dark"]
    seen.clear()
    orchestration.log_selection(_selection())
    assert "ensemble_test_groups.json" not in seen["tables"]  # type: ignore[operator]


def test_an_export_from_a_dataset_without_groups_says_so_once(
        exported: tuple[Path, Selection]) -> None:
    out, sel = exported  # the synthetic grayscale problem: no colour, no groups
    assert sel.test_groups == [] and "worst_group_privacy" not in sel.test_table[0]
    card = (out / "README.md").read_text()
    assert card.count("no skin-tone groups") == 1 and "worst group" not in card
    assert json.loads((out / "manifest.json").read_text())["test_groups"] == []
