"""Signed exports: the one home of Ed25519 keys, of the signature over an export's
`manifest.json`, and of its check.

What a signature proves: `manifest.json` lists the SHA-256 of every file of the export, so a
valid signature over its exact bytes by a key you trust proves that the manifest, and through
its hashes every file it lists, was written by the holder of the private key. Without it the
hashes guard against accidents only: whoever can write the folder can change a file and its
hash together. It proves nothing about the model being good.

Files:
  <keys>/signing.key     the private key, PKCS#8 PEM, mode 0600 (`san-search keys generate`);
                         keep it on the machine that exports, never where `perturb` runs
  <keys>/signing.pub     its public key, SubjectPublicKeyInfo PEM: the trust key
  <export>/manifest.sig.json   {"format", "algorithm": "ed25519", "signed_file":
                         "manifest.json", "key_fingerprint": "sha256:<hex>", "signature":
                         base64}; written by `ensemble export --sign`, not one of the
                         manifest's hashed files (it signs them)

Trust (`check_signature`): with a trust key (`perturb --trust`, `load_ensemble(trust=...)`
or `$SAN_SEARCH_TRUST_KEY`), a signed export loads only if its signature is valid for that
key; a bad signature, one by another key, or a manifest changed after signing is refused,
naming the file. A trust key means signed: an unsigned export is refused too (deleting
manifest.sig.json must not turn a signed export into one that loads), unless the caller
allows unsigned exports (`--allow-unsigned`), when it loads with a notice. Without a trust key
nothing is checked beyond the hashes; a signed export says so once per folder and process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from san_search.errors import EnsembleError

SIGNATURE = "manifest.sig.json"
SIGNATURE_FORMAT = "san-search-signature/1"
ALGORITHM = "ed25519"
SIGNED_FILE = "manifest.json"
TRUST_ENV = "SAN_SEARCH_TRUST_KEY"
PRIVATE_KEY, PUBLIC_KEY = "signing.key", "signing.pub"

# A public key file or key; None: `$SAN_SEARCH_TRUST_KEY` if set; False: none, whatever the
# environment says.
Trust = str | Path | Ed25519PublicKey | Literal[False] | None


# ------------------------------------------------------------------ keys

def fingerprint(key: Ed25519PublicKey) -> str:
    """`sha256:<hex>` of the 32 raw bytes of a public key: how messages and signatures
    name a key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` with `mode`, never replacing an existing file: written under a
    temporary name (created with `mode`, so never readable by others), then hard-linked into
    place, which fails if `path` exists."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away; mode is what we want
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def generate_keys(out: str | Path) -> tuple[Path, Path]:
    """A new Ed25519 key pair in folder `out` (created, mode 0700, if missing): the private
    key `signing.key` (mode 0600) and the public key `signing.pub`. Refuses, writing
    nothing, if either file exists. Returns (private, public)."""
    out = Path(out)
    private, public = out / PRIVATE_KEY, out / PUBLIC_KEY
    existing = [p for p in (private, public) if p.exists() or p.is_symlink()]
    if existing:
        raise EnsembleError(f"refusing to overwrite {', '.join(map(str, existing))}: a key "
                            "that is replaced cannot be recovered, and exports signed with it "
                            "would no longer verify; pick another --out, or move the old keys "
                            "yourself")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        _write_new(private, pem, 0o600)
    except FileExistsError:
        raise EnsembleError(f"refusing to overwrite {private}: it appeared meanwhile") from None
    try:
        _write_new(public, pub, 0o644)
    except FileExistsError:
        private.unlink()  # ours, written just now: no half pair left behind
        raise EnsembleError(f"refusing to overwrite {public}: it appeared meanwhile") from None
    return private, public


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise EnsembleError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise EnsembleError(f"{what} {path}: cannot read it ({exc.strerror})") from None


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM file `path` (as `keys generate` writes it)."""
    path = Path(path)
    data = _read_key_file(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise EnsembleError(f"signing key {path} is encrypted; san-search reads only "
                            "unencrypted keys (protect the file by its mode, 0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        hint = (" (that is a public key: --sign takes the private one)"
                if b"PUBLIC KEY" in data or data.startswith(b"ssh-") else "")
        raise EnsembleError(f"signing key {path} is not a PEM private key{hint}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EnsembleError(f"signing key {path} is a {type(key).__name__}, not Ed25519 "
                            "(make one with `san-search keys generate`)")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """The Ed25519 public key in file `path`: PEM (as `keys generate` writes it) or one
    OpenSSH line (`ssh-ed25519 AAAA...`). A private key is refused: it belongs on the
    machine that signs, not the ones that verify."""
    path = Path(path)
    data = _read_key_file(path, "trust key")
    if b"PRIVATE KEY" in data:
        raise EnsembleError(f"trust key {path} is a private key; pass its public key "
                            f"({PUBLIC_KEY}) and keep the private one off this machine")
    try:
        key = (serialization.load_ssh_public_key(data.strip()) if data.startswith(b"ssh-")
               else serialization.load_pem_public_key(data))
    except (ValueError, UnsupportedAlgorithm):
        raise EnsembleError(f"trust key {path} is not a PEM or OpenSSH public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise EnsembleError(f"trust key {path} is a {type(key).__name__}, not Ed25519")
    return key


@dataclass(frozen=True)
class TrustKey:
    """The public key signatures are checked against, and where it came from (for messages)."""

    key: Ed25519PublicKey
    source: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)


def resolve_trust(trust: Trust = None) -> TrustKey | None:
    """The trust key: `trust` (a public key file or key), else the file `$SAN_SEARCH_TRUST_KEY`
    names, else None (no signature is checked). `trust=False`: None, ignoring the
    environment."""
    if trust is False:
        return None
    if isinstance(trust, Ed25519PublicKey):
        return TrustKey(trust, "trusted key")
    if trust is not None:
        return TrustKey(load_public_key(trust), f"trust key {trust}")
    env = os.environ.get(TRUST_ENV, "").strip()
    if env:
        return TrustKey(load_public_key(env), f"${TRUST_ENV} ({env})")
    return None


# ------------------------------------------------------------------ signing

def sign_manifest(folder: str | Path, key: Ed25519PrivateKey) -> Path:
    """Sign the exact bytes of `folder`/manifest.json with `key`; writes and returns
    `folder`/manifest.sig.json."""
    folder = Path(folder)
    signature = key.sign((folder / SIGNED_FILE).read_bytes())
    record = {"format": SIGNATURE_FORMAT, "algorithm": ALGORITHM, "signed_file": SIGNED_FILE,
              "key_fingerprint": fingerprint(key.public_key()),
              "signature": base64.b64encode(signature).decode("ascii")}
    path = folder / SIGNATURE
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


# ------------------------------------------------------------------ verifying

@dataclass(frozen=True)
class SignatureCheck:
    """What `check_signature` found: `verified` (valid, by the trust key), `unsigned` (no
    signature file) or `unchecked` (a signature, but no trust key to check it with);
    `key_fingerprint` as the signature file states it (verified only when `verified`);
    `notice`: a line to show the user, or ''."""

    state: Literal["verified", "unsigned", "unchecked"]
    key_fingerprint: str = ""
    notice: str = ""


_TOLD: set[tuple[str, str]] = set()  # (state, folder) already noticed in this process


def _once(state: str, folder: Path, line: str) -> str:
    key = (state, str(folder.resolve()))
    if key in _TOLD:
        return ""
    _TOLD.add(key)
    return line


def _read_signature(path: Path) -> tuple[str, bytes]:
    """(key fingerprint, signature bytes) of a signature file; refuses a malformed one."""
    def bad(why: str) -> EnsembleError:
        return EnsembleError(f"{path}: {why}; refusing to load")

    try:
        record = json.loads(path.read_bytes())
    except OSError as exc:
        raise bad(f"cannot read it ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError):
        raise bad("not a valid signature file (not JSON)") from None
    if not isinstance(record, dict):
        raise bad("not a valid signature file (not a JSON object)")
    if record.get("format") != SIGNATURE_FORMAT:
        raise bad(f"format {record.get('format')!r}, expected {SIGNATURE_FORMAT!r}")
    if record.get("algorithm") != ALGORITHM:
        raise bad(f"algorithm {record.get('algorithm')!r}; only {ALGORITHM!r} is accepted")
    if record.get("signed_file") != SIGNED_FILE:
        raise bad(f"signs {record.get('signed_file')!r}, not {SIGNED_FILE!r}")
    try:
        signature = base64.b64decode(str(record.get("signature", "")), validate=True)
    except (binascii.Error, ValueError):
        raise bad("its signature is not base64") from None
    if len(signature) != 64:
        raise bad(f"its signature is {len(signature)} bytes, an Ed25519 one is 64")
    return str(record.get("key_fingerprint", "")), signature


def check_signature(folder: str | Path, manifest: bytes, trust: TrustKey | None,
                    allow_unsigned: bool = False) -> SignatureCheck:
    """Check the signature of `folder`'s manifest, whose bytes (as read, and then parsed by
    the caller) are `manifest`, against `trust`. Raises `EnsembleError`, naming the file,
    when a trust key is set and the signature is malformed, by another key, or does not
    match the manifest, or is missing (unless `allow_unsigned`). Call it before anything the
    manifest names is read."""
    folder = Path(folder)
    sig_path, manifest_path = folder / SIGNATURE, folder / SIGNED_FILE
    if not (sig_path.exists() or sig_path.is_symlink()):
        if trust is None:
            return SignatureCheck("unsigned")
        if not allow_unsigned:
            raise EnsembleError(
                f"{folder} is unsigned (no {SIGNATURE}), but a trust key is set (the "
                f"{trust.source}): a trust key means signed, so who wrote this export cannot "
                "be checked and it is refused. Sign it (`ensemble export --sign KEY`), or "
                "pass --allow-unsigned to load it on its SHA-256 hashes alone (changed in "
                "0.3: it used to load with a notice; see CHANGELOG.md)")
        return SignatureCheck("unsigned", notice=_once(
            "unsigned", folder, f"notice: {folder} is unsigned (no {SIGNATURE}); loading it "
            f"on its SHA-256 hashes alone, so who wrote it is not checked against the "
            f"{trust.source}"))
    if trust is None:
        try:
            stated, _ = _read_signature(sig_path)
        except EnsembleError:
            stated = "an unreadable key"
        return SignatureCheck("unchecked", stated, _once(
            "unchecked", folder, f"notice: {folder} is signed (by {stated}) but no trust key "
            f"is set, so the signature is not checked; pass --trust PUBKEY or set "
            f"${TRUST_ENV}"))
    stated, signature = _read_signature(sig_path)
    try:
        trust.key.verify(signature, manifest)
    except InvalidSignature:
        if stated != trust.fingerprint:
            raise EnsembleError(
                f"{sig_path}: the signature of {manifest_path} names key "
                f"{stated or '(none)'} as its signer, not the {trust.source} "
                f"({trust.fingerprint}), and does not verify with it; refusing to load"
            ) from None
        raise EnsembleError(
            f"{sig_path}: the signature does not match {manifest_path} (the manifest changed "
            "after it was signed, or the signature was altered); refusing to load") from None
    return SignatureCheck("verified", trust.fingerprint)


def stderr_notice(line: str) -> None:
    """The default place of a loader's notice: one line on stderr."""
    print(line, file=sys.stderr, flush=True)
