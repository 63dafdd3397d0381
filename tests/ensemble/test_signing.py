"""Signed exports: `ensemble export --sign` then `perturb --trust` through the CLI; a member
swapped together with its hash runs without a trust key and is refused with one; a signature
by another key, a manifest changed after signing and a malformed signature are refused; an
unsigned export is refused when a trust key is set, unless unsigned exports are allowed."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from san_search.ensemble.orchestration import Selection
from san_search.ensemble.signing import TRUST_ENV
from san_search.errors import EnsembleError


@pytest.fixture(autouse=True)
def _no_trust_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRUST_ENV, raising=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from san_search.ensemble.signing import generate_keys

    return generate_keys(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture(scope="module")
def signed(exported: tuple[Path, Selection], keys: tuple[Path, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared selection exported again through the CLI, signed with `keys`."""
    from san_search.cli import main
    from san_search.search import SEARCH_FILE

    _, sel = exported
    root = tmp_path_factory.mktemp("signed")
    search = root / "search"
    search.mkdir()
    (search / SEARCH_FILE).write_text("{}")
    sel.save(search)
    out = root / "export"
    rc = main(["ensemble", "export", "--search", str(search), "--out", str(out),
               "--no-register", "--sign", str(keys[0])])
    assert rc == 0
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _faces(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _swap_member(folder: Path) -> None:
    """What someone who can write the folder does: member 1's ONNX graph replaced (here by
    member 0's) and its SHA-256 in manifest.json updated to match."""
    m1 = folder / "members" / "member_1.onnx"
    m1.write_bytes((folder / "members" / "member_0.onnx").read_bytes())
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["members/member_1.onnx"] = hashlib.sha256(m1.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_cli_signs_the_export_and_perturb_verifies_it(
        signed: Path, keys: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from san_search.cli import main
    from san_search.ensemble.signing import fingerprint, load_public_key
    from san_search.outputs import MARKER

    public = load_public_key(keys[1])
    record = json.loads((signed / "manifest.sig.json").read_text())
    assert record["algorithm"] == "ed25519" and record["signed_file"] == "manifest.json"
    assert record["key_fingerprint"] == fingerprint(public)
    # the signature is over the exact bytes of manifest.json (raises if not)
    public.verify(base64.b64decode(record["signature"]), (signed / "manifest.json").read_bytes())
    files = json.loads((signed / "manifest.json").read_text())["files"]
    assert "manifest.sig.json" not in files and MARKER not in files
    assert (signed / MARKER).is_file()

    rc = main(["perturb", "--ensemble", str(signed), "--input", str(_faces(tmp_path / "in")),
               "--output", str(tmp_path / "out"), "--trust", str(keys[1]), "--aligned"])
    err = capsys.readouterr().err
    assert rc == 0
    assert (f"signature verified: {signed} was signed by trusted key "
            f"{record['key_fingerprint']}") in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["0.png", "1.png",
                                                                         "2.png"]


def test_a_member_swapped_with_its_hash_runs_without_trust_and_is_refused_with_it(
        signed: Path, keys: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from san_search.cli import main
    from san_search.ensemble.serving import load_ensemble

    copy = _copy(signed, tmp_path / "copy")
    _swap_member(copy)
    # without a trust key the hashes all match: the swapped member runs silently
    ens = load_ensemble(copy, "onnx", notice=lambda _: None)
    faces = np.random.default_rng(0).integers(0, 255, (4, 16, 16), dtype=np.uint8)
    male = np.array([True, False, True, False])
    np.testing.assert_array_equal(ens.runtime.member_output(1, faces, male),
                                  ens.runtime.member_output(0, faces, male))
    # with it, the signature catches the change, before any member is loaded
    with pytest.raises(EnsembleError) as err:
        load_ensemble(copy, "onnx", trust=keys[1])
    assert str(err.value) == (
        f"{copy / 'manifest.sig.json'}: the signature does not match {copy / 'manifest.json'} "
        "(the manifest changed after it was signed, or the signature was altered); refusing "
        "to load")
    rc = main(["perturb", "--ensemble", str(copy), "--input", str(_faces(tmp_path / "in")),
               "--output", str(tmp_path / "out"), "--trust", str(keys[1]), "--backend", "onnx"])
    assert rc == 2
    assert "manifest.sig.json: the signature does not match" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before the output folder was made


def test_the_trust_key_can_come_from_the_environment(
        signed: Path, keys: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from san_search.ensemble.serving import load_ensemble

    monkeypatch.setenv(TRUST_ENV, str(keys[1]))
    assert load_ensemble(signed, "onnx").signature.state == "verified"
    copy = _copy(signed, tmp_path / "copy")
    _swap_member(copy)
    with pytest.raises(EnsembleError, match=r"manifest\.sig\.json: the signature does not "
                                            r"match .*manifest\.json"):
        load_ensemble(copy, "onnx")
    # trust=False: no check, whatever the environment says
    assert load_ensemble(copy, "onnx", trust=False, notice=lambda _: None
                         ).signature.state == "unchecked"


def test_a_signature_by_another_key_is_refused(
        signed: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    from san_search.ensemble.serving import load_ensemble
    from san_search.ensemble.signing import (
        fingerprint,
        generate_keys,
        load_private_key,
        load_public_key,
        sign_manifest,
    )

    other_private, other_public = generate_keys(tmp_path / "other")
    copy = _copy(signed, tmp_path / "copy")
    _swap_member(copy)
    sign_manifest(copy, load_private_key(other_private))  # re-signed by the one who swapped
    theirs = fingerprint(load_public_key(other_public))
    ours = fingerprint(load_public_key(keys[1]))
    with pytest.raises(EnsembleError) as err:
        load_ensemble(copy, "onnx", trust=keys[1])
    assert str(err.value) == (
        f"{copy / 'manifest.sig.json'}: the signature of {copy / 'manifest.json'} names key "
        f"{theirs} as its signer, not the trust key {keys[1]} ({ours}), and does not verify "
        "with it; refusing to load")
    # naming our key in the signature file does not help: the signature is checked
    sig = copy / "manifest.sig.json"
    record = json.loads(sig.read_text())
    sig.write_text(json.dumps({**record, "key_fingerprint": ours}))
    with pytest.raises(EnsembleError, match="the signature does not match"):
        load_ensemble(copy, "onnx", trust=keys[1])
    # whoever trusts the other key accepts it
    sig.write_text(json.dumps(record))
    assert load_ensemble(copy, "onnx", trust=other_public).signature.state == "verified"


def test_a_manifest_changed_after_signing_or_a_broken_signature_is_refused(
        signed: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    from san_search.ensemble.serving import load_ensemble

    copy = _copy(signed, tmp_path / "copy")
    mpath = copy / "manifest.json"
    mpath.write_text(mpath.read_text().replace('"policy": "random"', '"policy": "chain"'))
    with pytest.raises(EnsembleError, match=r"copy/manifest\.sig\.json: the signature does "
                                            r"not match .*copy/manifest\.json"):
        load_ensemble(copy, trust=keys[1])
    shutil.copy(signed / "manifest.json", mpath)
    sig = copy / "manifest.sig.json"
    record = json.loads(sig.read_text())
    for broken, why in [("{not json", "not a valid signature file"),
                        (json.dumps({**record, "signature": "***"}), "signature is not base64"),
                        (json.dumps({**record, "algorithm": "rsa"}),
                         "algorithm 'rsa'; only 'ed25519' is accepted")]:
        sig.write_text(broken)
        with pytest.raises(EnsembleError) as err:
            load_ensemble(copy, trust=keys[1])
        assert str(err.value).startswith(f"{sig}: ") and why in str(err.value)
    sig.unlink()
    sig.mkdir()  # not a file: refused with the reason, not an OSError traceback
    with pytest.raises(EnsembleError, match=r"manifest\.sig\.json: cannot read it \(Is a "
                                            r"directory\); refusing to load"):
        load_ensemble(copy, trust=keys[1])


def test_a_trust_key_means_signed_unless_unsigned_exports_are_allowed(
        exported: tuple[Path, Selection], signed: Path, keys: tuple[Path, Path],
        tmp_path: Path) -> None:
    from san_search.ensemble.serving import load_ensemble
    from san_search.ensemble.signing import fingerprint, load_public_key

    unsigned = _copy(exported[0], tmp_path / "unsigned")
    assert not (unsigned / "manifest.sig.json").exists()
    with pytest.raises(EnsembleError, match=(
            rf"{unsigned} is unsigned \(no manifest\.sig\.json\), but a trust key is set "
            rf"\(the trust key {keys[1]}\): a trust key means signed.*--allow-unsigned.*"
            "CHANGELOG.md")):
        load_ensemble(unsigned, "onnx", trust=keys[1])
    told: list[str] = []
    ens = load_ensemble(unsigned, "onnx", trust=keys[1], notice=told.append,
                        allow_unsigned=True)
    assert ens.signature.state == "unsigned"
    assert told == [f"notice: {unsigned} is unsigned (no manifest.sig.json); loading it on its "
                    f"SHA-256 hashes alone, so who wrote it is not checked against the trust "
                    f"key {keys[1]}"]
    load_ensemble(unsigned, "onnx", trust=keys[1], notice=told.append, allow_unsigned=True)
    assert len(told) == 1  # once per folder
    # no trust key, unsigned: nothing to check, nothing said
    quiet: list[str] = []
    load_ensemble(_copy(exported[0], tmp_path / "u2"), "onnx", notice=quiet.append)
    assert quiet == []
    # signed, no trust key: loads, and says once that the signature was not checked
    copy = _copy(signed, tmp_path / "signed")
    said: list[str] = []
    assert load_ensemble(copy, "onnx", notice=said.append).signature.state == "unchecked"
    load_ensemble(copy, "onnx", notice=said.append)
    fp = fingerprint(load_public_key(keys[1]))
    assert said == [f"notice: {copy} is signed (by {fp}) but no trust key is set, so the "
                    f"signature is not checked; pass --trust PUBKEY or set {'$' + TRUST_ENV}"]


def test_deleting_the_signature_does_not_downgrade_a_signed_export(
        signed: Path, keys: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from san_search.ensemble.serving import load_ensemble

    copy = _copy(signed, tmp_path / "stripped")
    assert load_ensemble(copy, "onnx", trust=keys[1]).signature.state == "verified"
    (copy / "manifest.sig.json").unlink()  # then a member could be swapped unchecked
    with pytest.raises(EnsembleError, match="is unsigned .* a trust key means signed"):
        load_ensemble(copy, "onnx", trust=keys[1])
    monkeypatch.setenv(TRUST_ENV, str(keys[1]))  # the environment's key means the same
    with pytest.raises(EnsembleError, match="the \\$SAN_SEARCH_TRUST_KEY key|a trust key"):
        load_ensemble(copy, "onnx")


def test_cli_perturb_with_trust_refuses_an_unsigned_export_unless_allowed(
        exported: tuple[Path, Selection], keys: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from san_search.cli import main

    unsigned = _copy(exported[0], tmp_path / "unsigned")
    faces = _faces(tmp_path / "in")
    rc = main(["perturb", "--ensemble", str(unsigned), "--input", str(faces),
               "--output", str(tmp_path / "refused"), "--trust", str(keys[1]), "--aligned"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"error: {unsigned} is unsigned (no manifest.sig.json)" in err
    assert not (tmp_path / "refused").exists()  # refused before anything was written
    rc = main(["perturb", "--ensemble", str(unsigned), "--input", str(faces),
               "--output", str(tmp_path / "out"), "--trust", str(keys[1]), "--aligned",
               "--allow-unsigned"])
    assert rc == 0
    err = capsys.readouterr().err
    assert f"notice: {unsigned} is unsigned (no manifest.sig.json)" in err
    assert "signature verified" not in err
    assert len(list((tmp_path / "out").glob("*.png"))) == 3


def test_export_sign_refuses_a_public_key_before_any_work(
        exported: tuple[Path, Selection], keys: tuple[Path, Path], tmp_path: Path) -> None:
    from san_search.ensemble.export import export_ensemble

    _, sel = exported
    with pytest.raises(EnsembleError, match=r"signing key .*signing\.pub is not a PEM private "
                                            r"key \(that is a public key"):
        export_ensemble(sel, tmp_path / "out", sign=keys[1], log=lambda _: None)
    assert list(tmp_path.iterdir()) == []
