"""`san-search demo`: its local MLflow server, its sample faces, its refusals, and the whole
demo end to end on a tiny dataset (real Ray, a real MLflow server, real training)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from san_search import tracking
from san_search.cli import main
from san_search.demo import DemoError, demo_data, resolve_tracking, run_demo, write_samples


def _stop(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)


def test_write_samples_alternates_genders_and_keeps_the_pixels(problem: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    from PIL import Image

    from san_search.data import open_dataset

    data, _ = problem
    files = write_samples(data, tmp_path / "in", count=6)
    assert len(files) == 6 and all(f.suffix == ".png" for f in files)
    test = open_dataset(data).split("test")
    idx = [int(f.stem) for f in files]
    assert list(test.gender[idx]) == [0, 1, 0, 1, 0, 1]
    for f, i in zip(files, idx, strict=True):
        assert np.array_equal(np.asarray(Image.open(f)), test.images[i])


def test_demo_data_takes_the_given_dataset_or_reuses_its_synthetic_faces(
        problem: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = problem
    lines: list[str] = []
    path, ds = demo_data(str(data), tmp_path, lines.append)
    assert path == data.absolute() and ds.fingerprint
    assert lines == [f"dataset {path}: {ds.size} px, fingerprint {ds.fingerprint[:12]}"]
    shutil.copytree(data, tmp_path / "data")
    lines.clear()
    path, again = demo_data(None, tmp_path, lines.append)
    assert path == (tmp_path / "data").absolute() and again.fingerprint == ds.fingerprint
    assert lines[0] == f"reusing the synthetic faces in {tmp_path / 'data'}"

def test_a_configured_but_unreachable_server_fails_in_seconds(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(tracking.TrackingError, match="127.0.0.1:9 is unreachable"):
        resolve_tracking("http://127.0.0.1:9", tmp_path / "mlflow", log=lambda _: None)
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "mlflow").exists()


def test_demo_refuses_a_folder_that_is_not_a_dataset(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "photos").mkdir()
    rc = main(["demo", "--out", str(tmp_path / "demo"), "--data", str(tmp_path / "photos")])
    assert rc == 2
    assert "not a prepared dataset (no dataset.json)" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
    with pytest.raises(DemoError, match="--trials must be at least 2"):
        run_demo(tmp_path / "demo", trials=1)


@pytest.mark.slow
def test_serve_local_starts_once_and_is_reused(tmp_path: Path) -> None:
    first = tracking.serve_local(tmp_path / "mlflow", port=tracking.free_port(0))
    try:
        assert first["started"] and tracking.healthy(first["uri"])
        assert first["uri"].startswith("http://127.0.0.1:")
        again = tracking.serve_local(tmp_path / "mlflow")
        assert not again["started"] and again["pid"] == first["pid"]
        assert json.loads((tmp_path / "mlflow" / "server.json").read_text())["pid"] == \
            first["pid"]
        assert (tmp_path / "mlflow" / "mlflow.db").is_file()
    finally:
        _stop(first["pid"])


@pytest.mark.slow
def test_demo_end_to_end_on_a_tiny_dataset(problem: tuple[Path, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from san_search.ensemble.serving import load_ensemble

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data, _ = problem
    out = tmp_path / "demo"
    lines: list[str] = []
    result = run_demo(out, data=data, trials=2, size=1, gpus_per_trial=0, log=lines.append)
    try:
        text = "\n".join(lines)
        assert f"MLflow UI: {result['tracking_uri']}" in text
        for step in range(1, 7):
            assert f"[{step}/6]" in text
        summary = (out / f"{result['name']}-summary.txt").read_text()
        assert "test pool (never used before)" in summary and "ensemble (random)" in summary
        assert len(result["search"]["rows"]) == 2
        assert result["perturbed"] == result["originals"] > 0
        assert len(list((Path(result["samples"]) / "perturbed").glob("*.png"))) == \
            result["perturbed"]
        ens = load_ensemble(result["export"], "onnx")
        assert len(ens.manifest["members"]) == 1
        client = MlflowClient(result["tracking_uri"])
        exp = client.get_experiment_by_name("san-search-demo")
        assert exp is not None
        kinds = [r.data.tags.get("san_search.kind")
                 for r in client.search_runs([exp.experiment_id])]
        assert sorted(k for k in kinds if k) == ["candidate", "candidate", "ensemble", "search"]
        members = client.search_runs([exp.experiment_id],
                                     filter_string='tags.san_search.ensemble_member = "true"')
        assert {r.info.run_id for r in members} == {
            m["run_id"] for m in ens.manifest["members"]}
        version = client.get_model_version_by_alias("san-search-demo", "champion")
        assert version.tags["search"] == result["name"]
    finally:
        _stop(result["server"]["pid"])
