"""Group oversampling as a search knob: `group_weights` in the candidate (its spelling and
checks), the train sampler following the weights (and today's epochs unchanged without
them), `val_worst_group_privacy` from the val scoring, and the errors that name the key."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from san_search.config import CandidateConfig
from san_search.errors import CandidateError, ConfigError
from tests.helpers import tiny_candidate


def test_group_weights_spelling_and_round_trip() -> None:
    cfg = CandidateConfig(group_weights="dark:3+intermediate:1.5")  # type: ignore[arg-type]
    assert cfg.group_weights == {"dark": 3.0, "intermediate": 1.5}
    d = cfg.to_dict()
    assert d["group_weights"] == "dark:3+intermediate:1.5"
    assert CandidateConfig.from_dict(d) == cfg
    assert CandidateConfig.from_dict({"group_weights": {"dark": 2}}).group_weights == \
        {"dark": 2.0}
    assert CandidateConfig().to_dict()["group_weights"] is None
    assert CandidateConfig.from_dict({k: v for k, v in d.items() if k != "group_weights"}
                                     ).group_weights is None  # a checkpoint from before


@pytest.mark.parametrize(("value", "message"), [
    ("dark:0+light:0", "key 'group_weights': the weights sum to zero"),
    ({"dark": 0.0}, "key 'group_weights': the weights sum to zero"),
    ({"dark": -1}, "key 'group_weights': the weight of 'dark' must be a finite number >= 0"),
    ("dark=3", "key 'group_weights': 'dark=3' is not group:weight"),
    ({}, "key 'group_weights' is empty"),
])
def test_bad_group_weights_name_the_key(tmp_path: Path, value: object, message: str) -> None:
    from san_search.config import load_candidate

    with pytest.raises(ConfigError, match=f"c.yaml: {message}"):
        CandidateConfig.from_dict({"group_weights": value}, str(tmp_path / "c.yaml"))
    p = tmp_path / "c.yaml"
    if isinstance(value, dict):
        import yaml

        p.write_text(yaml.safe_dump({"group_weights": value}))
        with pytest.raises(ConfigError, match=message):
            load_candidate(p)


def _with_groups(data: Path, dest: Path) -> Path:
    """A copy of a prepared dataset with a `group` column added to its Arrow files (the
    fingerprint left as is, so the zoo still matches): identities 0, 1, 8, 9, 16, 17, ... are
    dark, the others light (a quarter dark)."""
    shutil.copytree(data, dest)
    for p in (dest / "arrow").glob("*.arrow"):
        table = ipc.open_file(pa.memory_map(str(p), "r")).read_all()
        table = table.drop_columns([c for c in ("group", "ita") if c in table.column_names])
        ids = table.column("identity_index").to_numpy()
        group = ["dark" if (i // 2) % 4 == 0 else "light" for i in ids]
        table = table.append_column("group", pa.array(group, pa.string())).append_column(
            "ita", pa.array(np.zeros(len(ids), np.float32)))
        p.unlink()
        with pa.OSFile(str(p), "wb") as sink, ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
    return dest


def _sampled(trainer: object, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    monkeypatch.setattr(trainer, "step", lambda idx, _: seen.extend(idx.tolist()) or {})
    trainer.train_epoch()  # type: ignore[attr-defined]
    return seen


def test_without_weights_the_epoch_is_todays_permutation(problem: tuple[Path, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from san_search.training.trainer import SanTrainer

    data, zoo = problem
    t = SanTrainer(tiny_candidate(images_per_epoch=48, batch_size=16), data, zoo)
    assert t.sample_p is None
    order = np.random.default_rng(0).permutation(len(t.shard))[:48]
    expect = [i for k in range(0, 47, 16) for i in np.sort(order[k : k + 16]).tolist()]
    assert _sampled(t, monkeypatch) == expect  # bit for bit: seed 0, rank 0


def test_weights_oversample_a_group(problem: tuple[Path, Path], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from san_search.training.trainer import SanTrainer

    data, zoo = problem
    grouped = _with_groups(data, tmp_path / "grouped")
    cfg = tiny_candidate(images_per_epoch=0, batch_size=32, group_weights={"dark": 6.0})
    t = SanTrainer(cfg, grouped, zoo)
    group = t.shard.group
    assert group is not None
    dark = np.array([g == "dark" for g in group])
    share = dark.mean()  # about a quarter
    assert t.sample_p is not None
    assert t.sample_p[dark].sum() == pytest.approx(6 * share / (6 * share + (1 - share)))
    counts = np.zeros(len(group))
    for _ in range(5):
        for i in _sampled(t, monkeypatch):
            counts[i] += 1
    drawn = counts[dark].sum() / counts.sum()
    assert drawn > 0.55 > share + 0.2  # dark faces: ~2/3 of the draws, not ~1/4
    assert len(set(np.flatnonzero(counts))) < len(group)  # drawn with replacement
    # seeded: the same config draws the same images
    again = SanTrainer(cfg, grouped, zoo)
    first = _sampled(again, monkeypatch)
    assert first == _sampled(SanTrainer(cfg, grouped, zoo), monkeypatch)


def test_weights_on_a_dataset_without_groups_name_the_key(problem: tuple[Path, Path]) -> None:
    from san_search.training.trainer import SanTrainer

    data, zoo = problem
    with pytest.raises(CandidateError, match="key 'group_weights': the dataset has no "
                                             "skin-tone groups to oversample"):
        SanTrainer(tiny_candidate(group_weights={"dark": 2.0}), data, zoo)


def test_unknown_group_name_names_the_key(problem: tuple[Path, Path], tmp_path: Path) -> None:
    from san_search.training.trainer import SanTrainer

    data, zoo = problem
    grouped = _with_groups(data, tmp_path / "grouped")
    with pytest.raises(CandidateError, match="key 'group_weights': unknown group 'Dark'; "
                                             "the dataset's groups: light, dark"):
        SanTrainer(tiny_candidate(group_weights={"Dark": 2.0}), grouped, zoo)


def test_weights_that_leave_a_shard_nothing_to_draw_name_the_key() -> None:
    from san_search.data.groups import sample_probabilities

    light_only = np.array(["light"] * 5, dtype=object)  # a worker's shard without dark faces
    with pytest.raises(CandidateError, match="key 'group_weights': the weights .* give every "
                                             "train image probability zero"):
        sample_probabilities({"light": 0.0, "dark": 1.0}, light_only)
    p = sample_probabilities({"dark": 3.0}, np.array(["dark", "light", None], dtype=object))
    assert p.tolist() == pytest.approx([0.6, 0.2, 0.2])  # unnamed and unassigned weigh 1


def test_val_scoring_reports_worst_group_privacy(problem: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    from san_search.training.trainer import SanTrainer

    data, zoo = problem
    grouped = _with_groups(data, tmp_path / "grouped")
    got = SanTrainer(tiny_candidate(), grouped, zoo).evaluate()
    assert 0 <= got["val_worst_group_privacy"] <= 1
    assert "val_worst_group_privacy" not in SanTrainer(tiny_candidate(), data, zoo).evaluate()


def _space(tmp_path: Path, extra: str) -> Path:
    src = Path(__file__).parent.parent / "search_spaces" / "smoke.yaml"
    p = tmp_path / "space.yaml"
    p.write_text(src.read_text() + extra)
    return p


def test_a_space_checks_group_weights_and_worst_group_against_the_dataset(
        problem: tuple[Path, Path], tmp_path: Path) -> None:
    from san_search.data import open_dataset
    from san_search.data.groups import check_space_groups
    from san_search.search import load_search_space

    data, _ = problem
    grouped = open_dataset(_with_groups(data, tmp_path / "grouped"))
    plain = open_dataset(data)
    knob = _space(tmp_path, "  group_weights: {type: categorical, "
                            "choices: ['light:1', 'dark:4+light:1']}\n")
    space = load_search_space(knob)
    check_space_groups(space, grouped)  # fine: both groups exist
    with pytest.raises(ConfigError, match=r"space.yaml: parameters.group_weights = 'light:1': "
                                          "key 'group_weights': the dataset has no skin-tone"):
        check_space_groups(space, plain)
    bad = _space(tmp_path, "  group_weights: {type: categorical, choices: ['dark:4+Lite:1']}\n")
    with pytest.raises(ConfigError, match="unknown group 'Lite'"):
        check_space_groups(load_search_space(bad), grouped)
    plain_space = _space(tmp_path, "")
    plain_space.write_text(plain_space.read_text().replace(
        "  - {metric: val_ssim, min: 0.0}", "  - {metric: val_worst_group_privacy, min: 0.2}"))
    constrained = load_search_space(plain_space)
    assert constrained.constraints[0].metric == "val_worst_group_privacy"
    check_space_groups(constrained, grouped)
    with pytest.raises(ConfigError, match="metric 'val_worst_group_privacy' needs a dataset "
                                          "with skin-tone groups"):
        check_space_groups(constrained, plain)


def test_the_zoo_report_gives_each_judge_per_group_and_gender(problem: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    from san_search.zoo.report import format_table, score_zoo

    data, zoo = problem
    from san_search.data import open_dataset

    grouped = _with_groups(data, tmp_path / "grouped")
    test = open_dataset(grouped).split("test")
    assert test.group is not None
    present = {f"accuracy.{g}_{'male' if s else 'female'}"
               for g, s in zip(test.group, test.gender, strict=True)}
    rows, _ = score_zoo(zoo, grouped, third_party=False)
    g = next(r for r in rows if r.name == "g_test")
    cells = {k for k in g.metrics if k.startswith("accuracy.")}
    assert cells == present and len(cells) >= 2
    assert all(0 <= g.metrics[c] <= 1 for c in cells)
    m = next(r for r in rows if r.name == "m_test")
    assert any(k.startswith("tar.light") for k in m.metrics)
    table = format_table(rows)
    assert "per skin-tone group x gender" in table and "light_female" in table
    plain = format_table(score_zoo(zoo, data, third_party=False)[0])
    assert plain.count("skin-tone groups: none") == 1 and "light_female" not in plain


def test_the_trade_off_curve_table_gains_the_worst_group_column_only_with_groups() -> None:
    from san_search.metric_names import CURVE_COLUMNS
    from san_search.training.candidate import curve_columns

    plain = [{c: 0.5 for c in CURVE_COLUMNS}]
    assert curve_columns(plain) == CURVE_COLUMNS
    grouped = [{**plain[0], "worst_group_privacy": 0.2}]
    assert curve_columns(grouped) == (*CURVE_COLUMNS, "worst_group_privacy")
