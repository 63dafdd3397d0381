"""`san-search keys generate`: a working Ed25519 pair, the private key mode 0600 whatever the
umask, and no key file ever replaced."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from san_search.cli import main


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_keys_generate_writes_a_pair_that_signs_and_verifies(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from san_search.ensemble.signing import fingerprint, load_private_key, load_public_key

    old = os.umask(0)  # a permissive umask must not leak into the private key's mode
    try:
        rc = main(["keys", "generate", "--out", str(tmp_path / "k")])
    finally:
        os.umask(old)
    assert rc == 0
    private, public = tmp_path / "k" / "signing.key", tmp_path / "k" / "signing.pub"
    assert _mode(private) == 0o600
    assert _mode(public) == 0o644
    assert _mode(tmp_path / "k") == 0o700
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    key, pub = load_private_key(private), load_public_key(public)
    pub.verify(key.sign(b"manifest"), b"manifest")  # raises if the two do not pair
    out = capsys.readouterr().out
    assert f"public key:  {public} (fingerprint {fingerprint(pub)})" in out
    assert fingerprint(pub).startswith("sha256:") and len(fingerprint(pub)) == 7 + 64
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["signing.key", "signing.pub"]


@pytest.mark.parametrize("present", [("signing.key", "signing.pub"), ("signing.pub",)])
def test_keys_generate_never_replaces_a_key_file(
        present: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "k"
    folder.mkdir()
    for name in present:
        (folder / name).write_text(f"my old {name}\n")
    rc = main(["keys", "generate", "--out", str(folder)])
    assert rc == 2
    err = capsys.readouterr().err
    named = ", ".join(str(folder / n) for n in present)
    assert err.startswith(f"error: refusing to overwrite {named}: ")
    # the existing files are as they were, and nothing was added beside them
    assert {p.name: p.read_text() for p in folder.iterdir()} == {
        n: f"my old {n}\n" for n in present}


def test_a_private_key_is_refused_as_a_trust_key(tmp_path: Path) -> None:
    from san_search.ensemble.signing import generate_keys, load_public_key
    from san_search.errors import EnsembleError

    private, _ = generate_keys(tmp_path / "k")
    with pytest.raises(EnsembleError, match=r"trust key .*signing\.key is a private key; pass "
                                            r"its public key \(signing\.pub\)"):
        load_public_key(private)
    (tmp_path / "junk.pub").write_text("hello")
    with pytest.raises(EnsembleError, match=r"junk\.pub is not a PEM or OpenSSH public key"):
        load_public_key(tmp_path / "junk.pub")
    with pytest.raises(EnsembleError, match=r"trust key .*nope\.pub: no such file"):
        load_public_key(tmp_path / "nope.pub")
