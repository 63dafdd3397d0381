"""Colour end to end on real LFW faces: `data prepare --color rgb`, a zoo, a SAN candidate,
the export (ONNX and PyTorch agree), `perturb` of a colour photo (colour changes inside the
face box, nothing outside), and every refusal of a zoo or candidate of the other colour mode
(naming both modes and both paths)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from san_search.cli import main
from san_search.data import open_dataset
from san_search.errors import CandidateError, EnsembleError, ZooError
from san_search.images import luminance
from tests.conftest import TINY, make_lfw_subset

SIZE = 32


@pytest.fixture(scope="module")
def lfw_tree(lfw_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lfw_subset(lfw_root, tmp_path_factory.mktemp("lfwc") / "lfw", women=12, men=12)


def _prepare(root: Path, out: Path, color: str) -> Path:
    rc = main(["data", "prepare", "--format", "lfw", "--root", str(root), "--out", str(out),
               "--size", str(SIZE), "--color", color, "--pairs", "60", "--workers", "1"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def rgb_data(lfw_tree: Path) -> Path:
    return _prepare(lfw_tree, lfw_tree.parent / "rgb", "rgb")


@pytest.fixture(scope="module")
def gray_data(lfw_tree: Path) -> Path:
    return _prepare(lfw_tree, lfw_tree.parent / "gray", "gray")


def _zoo(data: Path, out: Path) -> Path:
    from safetensors.torch import save

    from san_search.config import ModelSpec
    from san_search.zoo.store import add_model, train_model

    for name, kind, arch, role in [
        ("g_aux", "gender", "paper_cnn", "aux"), ("m_aux", "matcher", "regnetx_002", "aux"),
        ("g_val", "gender", "paper_cnn", "val"), ("m_val", "matcher", "regnetx_002", "val"),
        ("g_test", "gender", "paper_cnn", "test"), ("m_test", "matcher", "regnetx_002", "test"),
    ]:
        spec = ModelSpec(name=name, kind=kind, arch=arch, role=role, **TINY)  # type: ignore[arg-type]
        model, meta = train_model(spec, data, log=lambda _: None)
        add_model(out, save(model.state_dict()), meta, str(data))
    return out


@pytest.fixture(scope="module")
def rgb_zoo(rgb_data: Path) -> Path:
    return _zoo(rgb_data, rgb_data.parent / "rgb_zoo")


def _candidate(seed: int = 0, width: int = 4):  # type: ignore[no-untyped-def]
    from san_search.config import CandidateConfig

    return CandidateConfig(autoencoder="san_conv", depth=1, width=width, aux_gender=("g_aux",),
                           aux_matcher="m_aux", batch_size=16, epochs=1, images_per_epoch=32,
                           seed=seed)


@pytest.fixture(scope="module")
def rgb_members(rgb_data: Path, rgb_zoo: Path) -> list[Path]:
    from san_search.training.trainer import SanTrainer

    out = []
    for i in range(2):
        t = SanTrainer(_candidate(i, 4 * (i + 1)), rgb_data, rgb_zoo)
        t.train_epoch()
        folder = rgb_data.parent / f"member{i}"
        folder.mkdir()
        t.save(folder)
        out.append(folder)
    return out


def _selection(members: list[Path], data: Path, zoo: Path, scored: bool = True
               ):  # type: ignore[no-untyped-def]
    """A selection of `members` (with `scored`, their test report on the test pool)."""
    from san_search.ensemble.orchestration import Selection
    from san_search.ensemble.scoring import test_report
    from san_search.training.trainer import load_san
    from san_search.zoo.store import open_zoo

    ds = open_dataset(data)
    table, cmc = (test_report(members, 0, ds, open_zoo(zoo, expect=ds), "g_aux", seed=0,
                              third_party=False, log=lambda _: None) if scored else ([], []))
    val = {"privacy_mean": 0.3, "utility_mean": 0.7, "ssim": 0.8}
    ms = [{"name": f"m{i}", "run_id": f"run{i}", "checkpoint": str(c),
           "config": load_san(c)[1].to_dict(), "val": val} for i, c in enumerate(members)]
    return Selection("unit", ms, "g_aux", "random", 0, str(data), str(zoo), ds.fingerprint,
                     "", "", "", "", {"size": 2}, [], table, [{"name": "m0", **val}], "now",
                     cmc)


@pytest.fixture(scope="module")
def rgb_export(rgb_members: list[Path], rgb_data: Path, rgb_zoo: Path) -> Path:
    from san_search.ensemble.export import export_ensemble

    sel = _selection(rgb_members, rgb_data, rgb_zoo)
    return export_ensemble(sel, rgb_data.parent / "export", log=lambda _: None)


# ------------------------------------------------------------------ data


def test_prepare_rgb_stores_colour_faces_and_records_the_mode(rgb_data: Path,
                                                              gray_data: Path) -> None:
    import pyarrow.parquet as pq

    rgb, gray = open_dataset(rgb_data), open_dataset(gray_data)
    assert (rgb.color, rgb.channels, gray.color, gray.channels) == ("rgb", 3, "gray", 1)
    assert json.loads((rgb_data / "dataset.json").read_text())["color"] == "rgb"
    x = rgb.split("train").images
    assert x.shape[1:] == (SIZE, SIZE, 3) and x.dtype == np.uint8
    assert gray.split("train").images.shape[1:] == (SIZE, SIZE)
    assert rgb.prototypes["male"].shape == (SIZE, SIZE, 3)
    assert gray.prototypes["male"].shape == (SIZE, SIZE)
    shard = sorted((rgb_data / "parquet").glob("train-*.parquet"))[0]
    assert pq.read_schema(shard).field("image").type.byte_width == SIZE * SIZE * 3
    # real colour, not gray repeated: skin is redder than it is blue
    assert float(np.mean(x[..., 0].astype(float) - x[..., 2])) > 10
    # the same faces: the gray set is the colour set's luminance (up to rounding and resizing)
    diff = np.abs(luminance(x) * 255 - gray.split("train").images)
    assert float(diff.mean()) < 1.5
    assert rgb.fingerprint != gray.fingerprint


def test_a_dataset_without_a_colour_mode_reads_as_gray(gray_data: Path, tmp_path: Path
                                                       ) -> None:
    old = tmp_path / "old"
    shutil.copytree(gray_data, old)
    info = json.loads((old / "dataset.json").read_text())
    del info["color"]
    (old / "dataset.json").write_text(json.dumps(info))
    ds = open_dataset(old)
    assert ds.color == "gray"
    assert np.array_equal(ds.split("val").images, open_dataset(gray_data).split("val").images)


# ------------------------------------------------------------------ zoo and candidates


def test_the_rgb_zoo_records_its_mode_and_takes_three_channels(rgb_zoo: Path,
                                                               rgb_data: Path) -> None:
    from san_search.zoo.store import open_zoo

    assert json.loads((rgb_zoo / "zoo.json").read_text())["color"] == "rgb"
    assert json.loads((rgb_zoo / "models" / "g_aux.json").read_text())["color"] == "rgb"
    zoo = open_zoo(rgb_zoo, expect=open_dataset(rgb_data))
    assert zoo.color == "rgb"
    first = zoo.load("g_aux").features[0]
    assert first.in_channels == 3


def test_a_zoo_of_the_other_mode_is_refused_naming_both(rgb_zoo: Path, gray_data: Path
                                                        ) -> None:
    from san_search.config import CandidateConfig
    from san_search.training.trainer import SanTrainer
    from san_search.zoo.store import open_zoo

    want = (f"zoo {rgb_zoo} was made for rgb images, but the dataset {gray_data} is gray; "
            "prepare the data with `--color rgb`")
    with pytest.raises(ZooError) as err:
        open_zoo(rgb_zoo, expect=open_dataset(gray_data))
    assert want in str(err.value)
    with pytest.raises(ZooError, match="made for rgb images"):
        SanTrainer(CandidateConfig(aux_gender=("g_aux",), aux_matcher="m_aux"), gray_data,
                   rgb_zoo)


def test_search_check_names_both_modes(rgb_zoo: Path, rgb_data: Path, gray_data: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    space = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"
    rc = main(["search", str(space), "--data", str(gray_data), "--zoo", str(rgb_zoo),
               "--check"])
    assert rc != 0
    err = capsys.readouterr().err
    assert f"zoo {rgb_zoo} was made for rgb images" in err and f"{gray_data} is gray" in err


def test_an_rgb_candidate_trains_and_scores_colour(rgb_members: list[Path], rgb_data: Path,
                                                   rgb_zoo: Path) -> None:
    from san_search.training.trainer import SanTrainer, load_san, san_color

    assert san_color(rgb_members[0]) == "rgb"
    model, _ = load_san(rgb_members[0])
    assert model.channels == 3
    t = SanTrainer(_candidate(), rgb_data, rgb_zoo)
    t.load(rgb_members[0])
    out = t.perturb_val()
    assert out.shape == open_dataset(rgb_data).split("val").images.shape
    m = t.evaluate()
    assert 0 <= m["val_ssim"] <= 1 and 0 <= m["val_privacy_mean"] <= 1


def test_a_candidate_of_the_other_mode_is_refused(rgb_members: list[Path], problem: tuple[
        Path, Path], rgb_zoo: Path, rgb_data: Path) -> None:
    from san_search.ensemble.export import export_ensemble
    from san_search.training.trainer import SanTrainer, check_san_color

    gray, gray_zoo = problem
    t = SanTrainer(_candidate(), gray, gray_zoo)
    with pytest.raises(CandidateError) as err:
        t.load(rgb_members[0])
    assert (f"candidate {rgb_members[0]} was made for rgb images, but the dataset {gray} is "
            "gray") in str(err.value)
    with pytest.raises(CandidateError, match="made for rgb images"):
        check_san_color(rgb_members[0], open_dataset(gray))
    # exporting a gray-trained member with the rgb data is refused before anything is written
    gray_member = rgb_data.parent / "gray_member"
    t.save(gray_member.mkdir() or gray_member)
    sel = _selection([gray_member], rgb_data, rgb_zoo, scored=False)
    with pytest.raises(EnsembleError, match=r"member m0: candidate .* was made for gray "
                       r"images, but the dataset .* is rgb"):
        export_ensemble(sel, rgb_data.parent / "refused", log=lambda _: None)
    assert not (rgb_data.parent / "refused").exists()


# ------------------------------------------------------------------ export and perturb


def test_the_rgb_export_takes_bchw_and_both_backends_agree(rgb_export: Path,
                                                           rgb_data: Path) -> None:
    import onnx

    from san_search.ensemble.serving import load_ensemble

    manifest = json.loads((rgb_export / "manifest.json").read_text())
    assert manifest["preprocessing"]["color"] == "rgb"
    graph = onnx.load(str(rgb_export / manifest["members"][0]["onnx"])).graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, SIZE, SIZE]
    images = open_dataset(rgb_data).split("test").images[:12]
    ref = load_ensemble(rgb_export, "torch", notice=lambda _: None)
    onx = load_ensemble(rgb_export, "onnx", notice=lambda _: None)
    assert ref.face_shape == (SIZE, SIZE, 3)
    a, b = ref.runtime.perturb(images), onx.runtime.perturb(images)
    assert a.shape == images.shape
    assert float(np.abs(a - b).max()) < 1e-3
    with pytest.raises(ValueError, match=r"\(N, S, S, 3\) rgb for this rgb ensemble"):
        ref.runtime.perturb(images[..., 0])


def test_the_pyfunc_model_takes_rgb_rows(rgb_export: Path, rgb_data: Path) -> None:
    from types import SimpleNamespace

    import pandas as pd

    from san_search.ensemble.pyfunc_model import SanEnsembleModel

    model = SanEnsembleModel()
    model.load_context(SimpleNamespace(artifacts={"ensemble": str(rgb_export)}))
    images = open_dataset(rgb_data).split("test").images[:3]
    out = model.predict(None, pd.DataFrame(images.reshape(3, -1)))
    assert out.shape == (3, SIZE, SIZE, 3)
    assert np.allclose(out, model.loaded["torch"].runtime.perturb(images), atol=1e-6)


def _lfw_photo(lfw_root: Path, folder: Path) -> Path:
    """One real LFW colour photo (250x250), as a lossless PNG so pixels compare exactly."""
    src = sorted((lfw_root / "lfw-deepfunneled" / "Aaron_Eckhart").glob("*.jpg"))[0]
    folder.mkdir()
    dst = folder / "face.png"
    Image.open(src).convert("RGB").save(dst)
    return dst


def _inside(report: Path, name: str, shape: tuple[int, int]) -> np.ndarray:
    """The pixels of the face boxes report.csv gives for `name` (the only ones that may
    change), as a mask."""
    import csv

    rows = {r["path"]: r for r in csv.DictReader(report.open())}
    assert rows[name]["status"] == "written", rows[name]
    mask = np.zeros(shape, bool)
    for box in rows[name]["boxes"].split(";"):
        x, y, w, h = (int(v) for v in box.split(","))
        mask[y : y + h, x : x + w] = True
    return mask


def test_perturb_replaces_the_faces_colour_and_nothing_outside(rgb_export: Path,
                                                               lfw_root: Path,
                                                               tmp_path: Path) -> None:
    from san_search.ensemble.perturb import perturb_files

    src = _lfw_photo(lfw_root, tmp_path / "in")
    notes: list[str] = []
    perturb_files(rgb_export, src.parent, tmp_path / "out", progress=notes.append)
    before = np.asarray(Image.open(src).convert("RGB")).astype(int)
    after_img = Image.open(tmp_path / "out" / "face.png")
    assert after_img.mode == "RGB" and after_img.size == (250, 250)
    after = np.asarray(after_img).astype(int)
    inside = _inside(tmp_path / "out" / "report.csv", "face.png", before.shape[:2])
    assert np.array_equal(before[~inside], after[~inside])
    d = (after - before)[inside]
    assert float(np.abs(d).mean()) > 1  # the face changed
    # in colour: a luminance-only blend adds the same amount to R, G and B (up to rounding)
    assert int(np.abs(d[..., 0] - d[..., 2]).max()) > 10
    assert not any("grayscale" in n or "colour faces" in n for n in notes)


def test_an_rgb_ensemble_on_a_gray_photo_keeps_the_luminance_and_says_so(
        rgb_export: Path, lfw_root: Path, tmp_path: Path) -> None:
    from san_search.ensemble.perturb import RGB_ON_GRAY_NOTE, perturb_files

    src = _lfw_photo(lfw_root, tmp_path / "in")
    Image.open(src).convert("L").save(src)
    shutil.copy(src, src.with_name("again.png"))
    notes: list[str] = []
    perturb_files(rgb_export, src.parent, tmp_path / "out", progress=notes.append)
    assert notes.count(RGB_ON_GRAY_NOTE) == 1
    out = Image.open(tmp_path / "out" / "face.png")
    assert out.mode == "L" and out.size == (250, 250)
    d = np.asarray(out).astype(int) - np.asarray(Image.open(src)).astype(int)
    inside = _inside(tmp_path / "out" / "report.csv", "face.png", d.shape)
    assert float(np.abs(d[inside]).mean()) > 1
    assert not d[~inside].any()


def test_crops_only_writes_colour_crops(rgb_export: Path, lfw_root: Path, tmp_path: Path
                                        ) -> None:
    from san_search.ensemble.perturb import perturb_files

    src = _lfw_photo(lfw_root, tmp_path / "in")
    perturb_files(rgb_export, src.parent, tmp_path / "out", crops_only=True,
                  progress=lambda _: None)
    crop = Image.open(tmp_path / "out" / "face.png")
    assert crop.mode == "RGB" and crop.size == (SIZE, SIZE)


# ------------------------------------------------------------------ the slow path


@pytest.mark.slow
def test_zoo_train_from_a_tiny_yaml_on_rgb_data(rgb_data: Path, tmp_path: Path) -> None:
    spec = tmp_path / "zoo.yaml"
    spec.write_text(yaml.safe_dump({
        "defaults": {"epochs": 1, "batch_size": 32, "images_per_epoch": 64, "cpus": 1},
        "models": [{"name": "g_aux", "kind": "gender", "arch": "paper_cnn", "role": "aux"},
                   {"name": "m_aux", "kind": "matcher", "arch": "regnetx_002",
                    "role": "aux"}]}))
    out = tmp_path / "zoo"
    assert main(["zoo", "train", "--zoo", str(spec), "--data", str(rgb_data), "--out",
                 str(out)]) == 0
    info = json.loads((out / "zoo.json").read_text())
    assert info["color"] == "rgb" and sorted(info["models"]) == ["g_aux", "m_aux"]


@pytest.mark.slow
def test_san_search_train_on_rgb_data(rgb_data: Path, rgb_zoo: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cand = tmp_path / "cand.yaml"
    cand.write_text(yaml.safe_dump({
        "autoencoder": "san_conv", "depth": 1, "width": 4, "aux_gender": ["g_aux"],
        "aux_matcher": "m_aux", "batch_size": 16, "epochs": 1, "images_per_epoch": 32,
        "resources": {"num_workers": 1, "cpus_per_worker": 1}}))
    rc = main(["train", "--data", str(rgb_data), "--zoo", str(rgb_zoo), "--config", str(cand),
               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--out",
               str(tmp_path / "runs"), "--name", "rgb"])
    assert rc == 0
    states = list((tmp_path / "runs" / "rgb").glob("checkpoint_*/trainer.json"))
    assert states and json.loads(states[0].read_text())["color"] == "rgb"
