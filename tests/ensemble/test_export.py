"""The export: every file written with its hash, the refusal of an existing folder (leaving
nothing behind), the model card's rows, and the registered pyfunc model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from san_search.ensemble.orchestration import Selection
from san_search.errors import EnsembleError


def test_export_writes_every_file_with_its_hash(exported: tuple[Path, Selection]) -> None:
    from san_search.ensemble.export import sha256_file

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


def test_export_refuses_an_existing_folder_and_leaves_nothing(
        exported: tuple[Path, Selection]) -> None:
    from san_search.ensemble.export import export_ensemble

    out, sel = exported
    before = sorted(p.name for p in out.parent.iterdir())
    with pytest.raises(EnsembleError, match="already exists"):
        export_ensemble(sel, out, log=lambda _: None)
    broken = dataclasses.replace(sel, members=[{**sel.members[0], "checkpoint": "/nope"}])
    with pytest.raises(FileNotFoundError):
        export_ensemble(broken, out.parent / "other", log=lambda _: None)
    assert sorted(p.name for p in out.parent.iterdir()) == before



def test_the_model_card_names_metrics_from_the_vocabulary(
        exported: tuple[Path, Selection]) -> None:
    out, sel = exported
    card = (out / "README.md").read_text()
    assert "| member | MLflow run | val privacy | val utility | val SSIM | autoencoder |" in card
    assert "| method | privacy | privacy (worst) | utility | utility (worst) | SSIM |" in card
    noise = sel.test_table[-1]
    assert noise["method"].startswith("noise sigma") and noise["sigma"] > 0
    assert f"| {noise['method']} | {noise['privacy_mean']:.3f} |" in card
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["members"][0]["config"]["aux_gender"] == "g_aux"  # to_dict's spelling
    assert "| g_aux | m_aux |" in card
    assert ("| method | rank-1 retention | utility (both perturbed) | rank-1 (probe perturbed) | "
            "rank-5 (probe perturbed) | rank-1 (both perturbed) | rank-5 (both perturbed) | "
            "rank-1 (originals) | rank-5 (originals) |") in card
    r = sel.test_table[0]
    assert (f"| {r['method']} | {r['rank1_retention']:.3f} | {r['utility_both_mean']:.3f} | "
            f"{r['rank1_probe_perturbed']:.3f} |") in card


def test_the_test_report_identifies_in_three_scenarios(exported: tuple[Path, Selection]
                                                       ) -> None:
    """The originals' rank-k is computed once: the same in every row; each method's CMC
    records cover every matcher and the pool mean in the three scenarios, and the pool
    mean's rank-1 and rank-5 are the table's."""
    _, sel = exported
    rows = sel.test_table
    assert len({r["rank1_original"] for r in rows}) == 1 and rows[0]["rank1_original"] > 0
    matchers = sorted(k.split(".", 1)[1] for k in rows[0] if k.startswith("utility."))
    cmc = {(c["method"], c["scenario"], c["matcher"]): c["cmc"] for c in sel.test_cmc}
    assert len(cmc) == len(sel.test_cmc) == len(rows) * 3 * (len(matchers) + 1)
    for r in rows:
        for s in ("probe_perturbed", "both_perturbed", "original"):
            pooled = cmc[(r["method"], s, "pool mean")]
            assert len(pooled) == 20 and pooled == sorted(pooled)  # cumulative
            assert pooled[0] == pytest.approx(r[f"rank1_{s}"])
            assert pooled[4] == pytest.approx(r[f"rank5_{s}"])
            for m in matchers:
                assert cmc[(r["method"], s, m)][0] == pytest.approx(r[f"rank1_{s}.{m}"])
        assert 0 <= r["rank1_retention"] <= 1 and 0 <= r["utility_both_mean"] <= 1


def test_registered_pyfunc_loads_by_alias_and_predicts(exported: tuple[Path, Selection],
                                                      tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    import mlflow
    from san_search.ensemble.export import register
    from san_search.ensemble.orchestration import log_selection
    from san_search.ensemble.serving import load_ensemble

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
    assert logged["test_ensemble_random_rank1_retention"] == pytest.approx(
        by_method["ensemble (random)"]["rank1_retention"])
    assert logged["test_noise_matched_rank1_both_perturbed"] == pytest.approx(
        sel.test_table[-1]["rank1_both_perturbed"])
    cmc = json.loads(Path(client.download_artifacts(run_id, "ensemble_test_cmc.json",
                                                    str(tmp_path))).read_text())
    assert cmc["columns"] == ["method", "scenario", "matcher", "rank", "identification_rate"]
    assert len(cmc["data"]) == 20 * len(sel.test_cmc)
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
    # The model's code imports san_search: its requirements must say so, pinned, or it cannot
    # load in a fresh environment (they listed torch, onnxruntime, safetensors, numpy only).
    from san_search import __version__

    reqs = Path(mlflow.pyfunc.get_model_dependencies(got["uri"])).read_text().split()
    assert f"san-search=={__version__}" in reqs
    assert any(r.startswith("torch==") for r in reqs)


# ------------------------------------------------------------------ overwrite safety

def _user_folder(path: Path) -> dict[str, bytes]:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text('{"format": "my-own-list"}')
    (path / "thesis.pdf").write_bytes(b"%PDF years of work")
    return {p.name: p.read_bytes() for p in path.iterdir()}


def test_export_overwrite_refuses_a_folder_the_tool_did_not_write(
        exported: tuple[Path, Selection], tmp_path: Path) -> None:
    from san_search.ensemble.export import export_ensemble

    _, sel = exported
    mine = tmp_path / "mine"
    files = _user_folder(mine)
    with pytest.raises(EnsembleError) as err:
        export_ensemble(sel, mine, overwrite=True, log=lambda _: None)
    assert str(err.value).startswith(
        f"refusing to replace {mine}: it has no .san-search-output marker file, nor the "
        "manifest.json (format san-search-ensemble/1) of an ensemble export from san-search "
        "0.1")
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_export_has_the_marker_outside_its_hashed_files(
        exported: tuple[Path, Selection]) -> None:
    from san_search.outputs import MARKER

    out, _ = exported
    marker = json.loads((out / MARKER).read_text())
    assert marker["kind"] == "ensemble export" and marker["written_by"] == "san-search"
    assert MARKER not in json.loads((out / "manifest.json").read_text())["files"]


def test_export_overwrite_replaces_an_export_from_0_1(exported: tuple[Path, Selection],
                                                      tmp_path: Path) -> None:
    import shutil

    from san_search.ensemble.export import EXPORT, export_ensemble
    from san_search.outputs import MARKER, check_output

    out, sel = exported
    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / MARKER).unlink()  # 0.1 wrote no marker: its manifest.json is the signature
    (old / "stale.txt").write_text("x")
    check_output(old, True, EXPORT)  # accepted
    export_ensemble(sel, old, overwrite=True, log=lambda _: None)
    assert (old / MARKER).is_file() and not (old / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_cli_export_overwrite_refuses_a_users_folder(
        exported: tuple[Path, Selection], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from san_search.cli import main
    from san_search.search import SEARCH_FILE

    _, sel = exported
    search = tmp_path / "search"
    search.mkdir()
    (search / SEARCH_FILE).write_text("{}")
    sel.save(search)
    mine = tmp_path / "mine"
    files = _user_folder(mine)
    rc = main(["ensemble", "export", "--search", str(search), "--out", str(mine),
               "--overwrite", "--no-register"])
    assert rc == 2
    assert f"error: refusing to replace {mine}: it has no .san-search-output" in (
        capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == files
