"""Pareto arithmetic, the ensemble selection on hand-made candidates whose answer is known,
the two policies, and the export: round trip, tampering, ONNX against PyTorch, perturb."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from san_search.ensemble import (
    EnsembleError,
    Selection,
    Weights,
    hv_shares,
    matched_sigma,
    normalised_distance,
    random_from_front,
    select_members,
    set_terms,
    top_k_by_privacy,
)
from san_search.pareto import hypervolume, hypervolume_contributions, non_dominated_ranks
from san_search.runtime import EnsembleRuntime, member_index

# ------------------------------------------------------------------ Pareto, by hand


def test_hypervolume_and_contributions_of_a_hand_made_2d_front() -> None:
    # A staircase (1,3), (2,2), (3,1) over (0,0): 3 + 2 + 1 = 6; each point alone owns a
    # 1x1 box; a dominated point and a point below the reference own nothing.
    pts = np.array([[1, 3], [2, 2], [3, 1], [1, 1], [-1, 5]], dtype=float)
    assert hypervolume(pts, [0, 0]) == pytest.approx(6.0)
    assert hypervolume_contributions(pts, [0, 0]) == pytest.approx([1, 1, 1, 0, 0])
    assert list(non_dominated_ranks(pts[:4])) == [0, 0, 0, 1]
    # a duplicate shares its box: neither copy owns it exclusively
    dup = np.array([[2, 2], [2, 2], [1, 3]], dtype=float)
    assert hypervolume_contributions(dup, [0, 0]) == pytest.approx([0, 0, 1])


def test_hypervolume_of_a_hand_made_3d_front() -> None:
    # Two boxes 2x1x1 and 1x2x1 overlap in a 1x1x1 cube: 2 + 2 - 1 = 3.
    pts = np.array([[2, 1, 1], [1, 2, 1]], dtype=float)
    assert hypervolume(pts, [0, 0, 0]) == pytest.approx(3.0)
    assert hypervolume_contributions(pts, [0, 0, 0]) == pytest.approx([1.0, 1.0])
    # a third box 1x1x3 adds 2 (its part above z = 1)
    pts3 = np.vstack([pts, [1, 1, 3]])
    assert hypervolume(pts3, [0, 0, 0]) == pytest.approx(5.0)
    assert hypervolume_contributions(pts3, [0, 0, 0]) == pytest.approx([1.0, 1.0, 2.0])


# ------------------------------------------------------------------ selection, by hand

def _hand_made() -> dict[str, Any]:
    """Five candidates and three val classifiers.

    A, B, C each fool one classifier (0.9) and not the others (0.1); D is fair against all
    (0.5) and has the best mean privacy; E fools all three but fails the utility floor."""
    privacy = np.array([
        [0.9, 0.1, 0.1],  # A
        [0.1, 0.9, 0.1],  # B
        [0.1, 0.1, 0.9],  # C
        [0.5, 0.5, 0.5],  # D
        [0.95, 0.95, 0.95],  # E
    ])
    utility = np.array([0.8, 0.8, 0.8, 0.8, 0.2])
    distance = np.array([[0, 1, 1, .2, .5], [1, 0, 1, .2, .5], [1, 1, 0, .2, .5],
                         [.2, .2, .2, 0, .5], [.5, .5, .5, .5, 0]], dtype=float)
    return {"privacy": privacy, "utility": utility, "distance": distance,
            "eligible": utility >= 0.5}


def test_selection_picks_the_members_that_each_fool_a_different_classifier() -> None:
    h = _hand_made()
    points = np.column_stack([h["privacy"].mean(axis=1), h["utility"]])
    share, total = hv_shares(points, h["eligible"], [0.0, 0.0])
    assert total > 0 and share[4] == 0  # E is not eligible
    dist = normalised_distance(h["distance"], h["eligible"])
    chosen = select_members(h["privacy"], dist, share, h["eligible"], 3)
    assert chosen == [0, 1, 2]  # A, B, C: every classifier meets a member that fools it
    terms = set_terms(chosen, h["privacy"], dist, share, Weights())
    assert terms["coverage"] == pytest.approx(0.9)
    assert terms["diversity"] == pytest.approx(1.0)
    # the simple rule takes D first (best mean privacy), then two of A, B, C
    top = top_k_by_privacy(points[:, 0], h["eligible"], 3)
    assert 3 in top and 4 not in top
    assert set_terms(top, h["privacy"], dist, share, Weights())["coverage"] < 0.9
    # with K = 1 the fair D covers best (0.5 vs 0.37 for a specialist)
    assert select_members(h["privacy"], dist, share, h["eligible"], 1) == [3]


def test_selection_respects_the_floor_and_says_why_it_cannot() -> None:
    h = _hand_made()
    dist = normalised_distance(h["distance"], h["eligible"])
    share = np.zeros(5)
    with pytest.raises(EnsembleError, match="only 4 eligible candidate"):
        select_members(h["privacy"], dist, share, h["eligible"], 5)
    with pytest.raises(EnsembleError, match="at least 1"):
        select_members(h["privacy"], dist, share, h["eligible"], 0)


def test_greedy_path_matches_exhaustive_on_a_separable_case(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    import san_search.ensemble as ens

    h = _hand_made()
    dist = normalised_distance(h["distance"], h["eligible"])
    share = np.zeros(5)
    monkeypatch.setattr(ens, "EXHAUSTIVE_LIMIT", 0)
    assert ens.select_members(h["privacy"], dist, share, h["eligible"], 3) == [0, 1, 2]


def test_random_from_front_is_seeded_and_stays_on_the_front() -> None:
    pts = np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9], [0.2, 0.2], [0.3, 0.3]])
    ok = np.ones(5, dtype=bool)
    a = random_from_front(pts, ok, 2, seed=3)
    assert a == random_from_front(pts, ok, 2, seed=3)
    assert set(a) <= {0, 1, 2}
    assert set(random_from_front(pts, ok, 4, seed=0)) >= {0, 1, 2}  # topped up


def test_matched_sigma_finds_the_strength_of_a_given_utility() -> None:
    calls: list[float] = []

    def utility(sigma: float) -> float:  # falls linearly: 1 at 0, 0 at 0.4
        calls.append(sigma)
        return max(0.0, 1.0 - 2.5 * sigma)

    assert matched_sigma(utility, 0.5) == pytest.approx(0.2, abs=0.5 / 2**7)
    assert len(calls) == 7
    assert matched_sigma(utility, 1.5) < 0.01  # nothing reaches it: the weakest noise
    assert matched_sigma(utility, -1.0) > 0.49  # everything beats it: the strongest


# ------------------------------------------------------------------ policies

def _toy_runtime(policy: str) -> EnsembleRuntime:
    def add(c: float):  # type: ignore[no-untyped-def]
        return lambda x, same, opp: np.clip(x + c + 0 * same, 0, 1)

    return EnsembleRuntime([add(0.1), add(0.2), add(0.3)], lambda x: x.mean(axis=(1, 2, 3)),
                           {"female": np.zeros((4, 4), np.float32),
                            "male": np.ones((4, 4), np.float32)}, policy, seed=7)


def test_random_policy_is_a_function_of_the_image_alone() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 150, (40, 4, 4), dtype=np.uint8)  # + 0.3 stays below 1
    rt = _toy_runtime("random")
    out = rt.perturb(imgs)
    assert np.array_equal(out, rt.perturb(imgs))  # deterministic
    perm = rng.permutation(40)
    assert np.array_equal(rt.perturb(imgs[perm]), out[perm])  # position does not matter
    idx = rt.assignment(imgs)
    assert set(idx) == {0, 1, 2}  # 40 images spread over all three members
    added = np.round((out - imgs / 255.0).mean(axis=(1, 2)), 4)
    assert np.allclose(added, (idx + 1) * 0.1, atol=1e-4)
    assert member_index(imgs[0], 3, 7) != member_index(imgs[0], 3, 8) or \
        member_index(imgs[1], 3, 7) != member_index(imgs[1], 3, 8) or \
        member_index(imgs[2], 3, 7) != member_index(imgs[2], 3, 8)  # the seed matters


def test_chain_policy_applies_every_member_in_order() -> None:
    imgs = np.full((3, 4, 4), 10, dtype=np.uint8)
    out = _toy_runtime("chain").perturb(imgs)
    assert np.allclose(out, 10 / 255 + 0.6, atol=1e-6)
    with pytest.raises(ValueError, match="takes 4x4"):
        _toy_runtime("chain").perturb(np.zeros((1, 5, 5), np.uint8))
    with pytest.raises(ValueError, match="not one of random, chain"):
        _toy_runtime("shuffle")


# ------------------------------------------------------------------ export and load

def _train_member(data: Path, zoo: Path, folder: Path, width: int, seed: int) -> Path:
    from san_search.config import CandidateConfig
    from san_search.train import SanTrainer

    cfg = CandidateConfig(autoencoder="san_conv", depth=1, width=width,
                          aux_gender=("g_aux",), aux_matcher="m_aux", batch_size=16,
                          epochs=1, images_per_epoch=32, seed=seed)
    t = SanTrainer(cfg, data, zoo)
    t.train_epoch()
    folder.mkdir(parents=True)
    t.save(folder)
    return folder


@pytest.fixture(scope="module")
def exported(problem: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, Selection]:
    from san_search.data import open_dataset
    from san_search.ensemble import best_predictor, test_report
    from san_search.export import export_ensemble
    from san_search.zoo import open_zoo

    data, zoo_dir = problem
    root = tmp_path_factory.mktemp("ensemble")
    ckpts = [_train_member(data, zoo_dir, root / f"m{i}", 4 * (i + 1), i) for i in range(2)]
    ds = open_dataset(data)
    zoo = open_zoo(zoo_dir, expect_fingerprint=ds.fingerprint)
    predictor = best_predictor(zoo)
    table = test_report(ckpts, 0, ds, zoo, predictor, seed=0, third_party=False,
                        log=lambda _: None)
    val = {"privacy_mean": 0.3, "utility_mean": 0.7, "ssim": 0.8}
    from san_search.train import load_san

    members = [{"name": f"m{i}", "run_id": f"run{i}", "checkpoint": str(c),
                "config": dataclasses.asdict(load_san(c)[1]), "val": val}
               for i, c in enumerate(ckpts)]
    sel = Selection("unit", members, predictor, "random", 0, str(data), str(zoo_dir),
                    ds.fingerprint, "", "", "", "", {"size": 2}, [], table,
                    [{"name": "m0", **val}], "now")
    out = export_ensemble(sel, root / "export", log=lambda _: None)
    return out, sel


def test_export_writes_every_file_with_its_hash(exported: tuple[Path, Selection]) -> None:
    from san_search.export import sha256_file

    out, _ = exported
    manifest = json.loads((out / "manifest.json").read_text())
    files = set(manifest["files"])
    assert {"members/member_0.safetensors", "members/member_0.onnx",
            "members/member_1.safetensors", "members/member_1.onnx",
            "gender_predictor.safetensors", "gender_predictor.onnx",
            "prototypes.safetensors", "trade_off.png", "README.md"} == files
    for rel, digest in manifest["files"].items():
        assert sha256_file(out / rel) == digest
    assert [m["run_id"] for m in manifest["members"]] == ["run0", "run1"]
    assert manifest["members"][1]["config"]["width"] == 8
    assert all(v <= 1e-3 for v in manifest["onnx_check"].values())
    assert manifest["preprocessing"]["size"] == 16
    assert [r["method"] for r in manifest["test"]][:3] == [
        "ensemble (random)", "ensemble (chain)", "best single member"]
    card = (out / "README.md").read_text()
    assert "run0" in card and "ensemble (chain)" in card and "trade_off.png" in card
    assert not list(out.parent.glob(".export.partial-*"))


def test_round_trip_gives_the_checkpoints_outputs_on_both_backends(
        exported: tuple[Path, Selection], problem: tuple[Path, Path]) -> None:
    from san_search.data import open_dataset
    from san_search.ensemble import torch_runtime
    from san_search.export import load_ensemble
    from san_search.zoo import open_zoo

    out, sel = exported
    data, zoo_dir = problem
    ds = open_dataset(data)
    x = ds.split("test").images
    direct = torch_runtime([Path(m["checkpoint"]) for m in sel.members], open_zoo(zoo_dir),
                           sel.predictor, ds.prototypes, "random", 0)
    for policy in ("random", "chain"):
        want = direct.perturb(x, policy)
        got = load_ensemble(out, "torch").runtime.perturb(x, policy)
        assert np.array_equal(got, want)
        onnx = load_ensemble(out, "onnx").runtime.perturb(x, policy)
        assert float(np.abs(onnx - want).max()) < 1e-3
    # the two members really differ, so the policy matters
    assert not np.allclose(direct.perturb(x, "random"), direct.perturb(x, "chain"))


def test_a_tampered_file_is_refused(exported: tuple[Path, Selection], tmp_path: Path) -> None:
    import shutil

    from san_search.export import load_ensemble

    src, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    w = copy / "members" / "member_1.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-1] ^= 0x01
    w.write_bytes(bytes(raw))
    with pytest.raises(EnsembleError, match=r"member_1\.safetensors: SHA-256 does not match"):
        load_ensemble(copy)
    (copy / "members" / "member_1.safetensors").unlink()
    with pytest.raises(EnsembleError, match=r"member_1\.safetensors: listed .* but missing"):
        load_ensemble(copy, "onnx")


def test_export_refuses_an_existing_folder_and_leaves_nothing(
        exported: tuple[Path, Selection]) -> None:
    from san_search.export import export_ensemble

    out, sel = exported
    before = sorted(p.name for p in out.parent.iterdir())
    with pytest.raises(EnsembleError, match="already exists"):
        export_ensemble(sel, out, log=lambda _: None)
    broken = dataclasses.replace(sel, members=[{**sel.members[0], "checkpoint": "/nope"}])
    with pytest.raises(FileNotFoundError):
        export_ensemble(broken, out.parent / "other", log=lambda _: None)
    assert sorted(p.name for p in out.parent.iterdir()) == before


def test_perturb_writes_pngs_and_skips_unreadable_images(
        exported: tuple[Path, Selection], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from san_search.cli import main

    out, _ = exported
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "sub/b.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (60, 50, 3), dtype=np.uint8)).save(src / name)
    (src / "broken.jpg").write_bytes(b"not an image")
    rc = main(["perturb", "--ensemble", str(out), "--input", str(src),
               "--output", str(tmp_path / "o1")])
    assert rc == 0
    captured = capsys.readouterr()
    assert "wrote 3 PNG(s)" in captured.out and "skipped 1" in captured.out
    assert "broken.jpg: corrupt or unsupported image" in captured.out
    assert "perturbed 4/4" in captured.err
    written = sorted(p.relative_to(tmp_path / "o1").as_posix()
                     for p in (tmp_path / "o1").rglob("*.png"))
    assert written == ["a.png", "c.png", "sub/b.png"]
    img = np.asarray(Image.open(tmp_path / "o1" / "a.png"))
    assert img.shape == (16, 16) and img.dtype == np.uint8
    # the same image gives the same output, on either backend
    main(["perturb", "--ensemble", str(out), "--input", str(src / "a.jpg"),
          "--output", str(tmp_path / "o2"), "--backend", "onnx"])
    again = np.asarray(Image.open(tmp_path / "o2" / "a.png")).astype(int)
    assert np.abs(again - img.astype(int)).max() <= 1
    # a non-empty output folder is refused
    rc = main(["perturb", "--ensemble", str(out), "--input", str(src),
               "--output", str(tmp_path / "o1")])
    assert rc == 2 and "is not empty" in capsys.readouterr().err


def test_registered_pyfunc_loads_by_alias_and_predicts(exported: tuple[Path, Selection],
                                                      tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    import mlflow
    from san_search.ensemble import log_selection
    from san_search.export import load_ensemble, register

    out, sel = exported
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("unit", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp).info.run_id
    val_row = {"set": "chosen (J)", "objective": 0.5, "coverage": 0.3, "diversity": 0.8,
               "hv_share": 0.1, "random_privacy_mean": 0.3, "random_utility_mean": 0.7,
               "random_ssim": 0.8, "members": "m0,m1"}
    run_id = log_selection(dataclasses.replace(sel, tracking_uri=uri, experiment_id=exp,
                                               parent_run_id=parent, val_table=[val_row]))
    logged = client.get_run(run_id).data.metrics
    by_method = {r["method"]: r for r in sel.test_table}
    assert logged["test_ensemble_random_privacy_mean"] == pytest.approx(
        by_method["ensemble (random)"]["privacy_mean"])
    assert logged["test_ensemble_chain_privacy_mean"] == pytest.approx(
        by_method["ensemble (chain)"]["privacy_mean"])
    assert {"test_best_single_member_utility_mean", "test_noise_matched_sigma"} <= set(logged)
    got = register(out, uri, run_id, "unit-ensemble", log=lambda _: None)
    assert got["uri"] == "models:/unit-ensemble@champion" and got["version"] == "1"
    assert str(client.get_model_version_by_alias("unit-ensemble", "champion").version) == "1"
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/unit-ensemble@champion")
    x = np.random.default_rng(1).integers(0, 256, (5, 16, 16), dtype=np.uint8)
    want = load_ensemble(out).runtime.perturb(x)
    assert np.array_equal(np.asarray(model.predict(x)), want)
    chain = np.asarray(model.predict(x, params={"policy": "chain"}))
    assert np.array_equal(chain, load_ensemble(out).runtime.perturb(x, "chain"))
