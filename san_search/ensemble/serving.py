"""Serving an exported ensemble: the verified loader of an export folder and the runtime
that applies the members to images. `perturb` and the MLflow pyfunc model import this module
alone (nothing of the selection, MLflow or Ray).

Policies (one name each, the same in the CLI, the manifest and MLflow):
  random  each image goes through one member, chosen by a seeded SHA-256 of the image's
          pixels, so the same image always gets the same output (the BTAS 2018 ensemble);
  chain   every member in turn, the output of one the input of the next (FlowSAN, 2019).

A SAN needs the face's gender to pick its prototypes (same gender into the encoder, the
opposite into the combiner). Unless the caller passes known genders, the ensemble's gender
predictor (an auxiliary classifier exported with it) decides, on the original image; every
member of a chain uses that same decision.

Backends: `torch` modules or ONNX Runtime sessions behind the same two callables, so policies
and preprocessing are shared.

Colour: the manifest's `preprocessing.color` (gray or rgb; an export without it is gray) says
what faces the ensemble takes: (N, S, S) gray or (N, S, S, 3) rgb, and its graphs take
(B, C, S, S) with C = 1 or 3 (`san_search.images`).

Loading (`load_ensemble`) first checks the signature of the manifest when a trust key is
set (`trust=`, or `$SAN_SEARCH_TRUST_KEY`; see `ensemble.signing`), over the very bytes it
then parses, then every file listed in the manifest against its SHA-256 before reading it,
and refuses a changed or missing one. Only JSON, safetensors and ONNX are read: nothing is
unpickled. The folder's layout is described in `san_search.ensemble.export`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from san_search.ensemble.signing import (
    SignatureCheck,
    Trust,
    check_signature,
    resolve_trust,
    stderr_notice,
)
from san_search.errors import EnsembleError
from san_search.images import as_float, channels, color_of, from_nchw, to_nchw, to_uint8

POLICIES = ("random", "chain")
BACKENDS = ("torch", "onnx")
BATCH = 256
MANIFEST = "manifest.json"
FORMAT = "san-search-ensemble/1"
PROTOTYPES = "prototypes.safetensors"

# (x, proto_same, proto_opp), each (B, C, S, S) float32 -> the privacy output (B, C, S, S)
MemberFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# (B, C, S, S) float32 -> probability of "male" (B,)
GenderFn = Callable[[np.ndarray], np.ndarray]


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"policy {policy!r} is not one of {', '.join(POLICIES)}")
    return policy


def member_index(image: np.ndarray, k: int, seed: int) -> int:
    """The member that perturbs `image` under the random policy: SHA-256 of the seed and the
    8-bit pixels, modulo the ensemble size. Depends on the image alone, not its position."""
    h = hashlib.sha256(seed.to_bytes(8, "little", signed=True))
    h.update(np.ascontiguousarray(to_uint8(image)).tobytes())
    return int.from_bytes(h.digest()[:8], "little") % k


@dataclass
class EnsembleRuntime:
    """Members, gender predictor and prototypes (`female`, `male`: (S, S) float32 for a gray
    ensemble, (S, S, 3) for rgb)."""

    members: Sequence[MemberFn]
    predictor: GenderFn
    prototypes: dict[str, np.ndarray]
    policy: str = "random"
    seed: int = 0
    batch: int = BATCH

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        check_policy(self.policy)

    @property
    def face_shape(self) -> tuple[int, ...]:
        """The shape of one face it takes: (S, S) gray or (S, S, 3) rgb."""
        return tuple(self.prototypes["female"].shape)

    @property
    def color(self) -> str:
        return "rgb" if len(self.face_shape) == 3 else "gray"

    def is_male(self, images: np.ndarray) -> np.ndarray:
        """The predictor's decision for each image, (N,) bool."""
        x = as_float(images)
        out = [self.predictor(to_nchw(x[i : i + self.batch]).numpy())
               for i in range(0, len(x), self.batch)]
        return (np.concatenate(out) if out else np.zeros(0)) >= 0.5

    def assignment(self, images: np.ndarray) -> np.ndarray:
        """The random policy's member index of each image."""
        return np.array([member_index(im, len(self.members), self.seed) for im in images],
                        dtype=int)

    def member_output(self, j: int, images: np.ndarray, male: np.ndarray) -> np.ndarray:
        """Member `j` alone on `images` (N, S, S[, 3]) given each face's gender."""
        x = as_float(images)
        female_p = to_nchw(self.prototypes["female"][None]).numpy()  # (1, C, S, S)
        male_p = to_nchw(self.prototypes["male"][None]).numpy()
        out = np.empty_like(x)
        for i in range(0, len(x), self.batch):
            g = male[i : i + self.batch].reshape(-1, 1, 1, 1)
            same = np.where(g, male_p, female_p).astype(np.float32)
            opp = np.where(g, female_p, male_p).astype(np.float32)
            y = self.members[j](to_nchw(x[i : i + self.batch]).numpy(), same, opp)
            out[i : i + self.batch] = from_nchw(y)
        return np.clip(out, 0.0, 1.0)

    def perturb(self, images: np.ndarray, policy: str | None = None,
                male: np.ndarray | None = None) -> np.ndarray:
        """Perturbed faces, float32 in [0, 1], from uint8 or float faces of `face_shape`:
        (N, S, S) gray or (N, S, S, 3) rgb."""
        policy = check_policy(policy or self.policy)
        images = np.asarray(images)
        shape = self.face_shape
        if images.ndim != 1 + len(shape):
            kind = "(N, S, S, 3) rgb" if self.color == "rgb" else "(N, S, S) grayscale"
            raise ValueError(f"images must be {kind} for this {self.color} ensemble, got shape "
                             f"{images.shape}")
        if images.shape[1:] != shape:
            raise ValueError(f"images are {images.shape[1]}x{images.shape[2]} px; this ensemble "
                             f"takes {shape[0]}x{shape[1]}")
        x = as_float(images)
        male = self.is_male(x) if male is None else np.asarray(male).astype(bool)
        if policy == "chain":
            for j in range(len(self.members)):
                x = self.member_output(j, x, male)
            return x
        idx = self.assignment(images)
        out = np.empty_like(x)
        for j in range(len(self.members)):
            sel = np.flatnonzero(idx == j)
            if len(sel):
                out[sel] = self.member_output(j, x[sel], male[sel])
        return out


# ------------------------------------------------------------------ backends

def torch_member(model: object) -> MemberFn:
    import torch

    def run(x: np.ndarray, same: np.ndarray, opp: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(torch.from_numpy(x), torch.from_numpy(same),  # type: ignore[operator]
                        torch.from_numpy(opp))[1]
        return out.float().numpy()

    return run


def torch_gender(model: object) -> GenderFn:
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = model(torch.from_numpy(x))  # type: ignore[operator]
        return torch.softmax(logits.float(), dim=1)[:, 1].numpy()

    return run


def _session(onnx_bytes: bytes, threads: int | None) -> object:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


def onnx_member(onnx_bytes: bytes, threads: int | None = None) -> MemberFn:
    sess = _session(onnx_bytes, threads)

    def run(x: np.ndarray, same: np.ndarray, opp: np.ndarray) -> np.ndarray:
        return sess.run(["privacy"], {"x": x, "proto_same": same,  # type: ignore[attr-defined]
                                      "proto_opp": opp})[0]

    return run


def onnx_gender(onnx_bytes: bytes, threads: int | None = None) -> GenderFn:
    sess = _session(onnx_bytes, threads)

    def run(x: np.ndarray) -> np.ndarray:
        logits = sess.run(["logits"], {"x": x})[0]  # type: ignore[attr-defined]
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e[:, 1] / e.sum(axis=1)).astype(np.float32)

    return run


# ------------------------------------------------------------------ an export folder

@dataclass
class LoadedEnsemble:
    """An export folder, verified and loaded: its manifest and a ready runtime."""

    path: Path
    manifest: dict[str, Any]
    runtime: EnsembleRuntime
    signature: SignatureCheck = SignatureCheck("unsigned")

    @property
    def image_size(self) -> int:
        return int(self.manifest["preprocessing"]["size"])

    @property
    def color(self) -> str:
        """`gray` or `rgb` (an export written before colour records none: gray)."""
        return color_of(self.manifest["preprocessing"])

    @property
    def face_shape(self) -> tuple[int, ...]:
        """One face: (S, S) gray or (S, S, 3) rgb."""
        s = self.image_size
        return (s, s, 3) if self.color == "rgb" else (s, s)


def read_verified(folder: str | Path, trust: Trust = None,
                  notice: Callable[[str], None] = stderr_notice, allow_unsigned: bool = False
                  ) -> tuple[dict[str, Any], dict[str, bytes], SignatureCheck]:
    """The manifest, the bytes of every file it lists (each checked against its SHA-256) and
    what the signature check found. With a trust key (`trust`, else `$SAN_SEARCH_TRUST_KEY`)
    the manifest's signature is checked first, over the bytes that are then parsed, before
    any other file is read; `notice` gets the check's one-line notice, if any."""
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise EnsembleError(f"{folder} is not an exported ensemble ({MANIFEST} missing)")
    raw_manifest = mpath.read_bytes()  # read once: the bytes checked are the bytes parsed
    signature = check_signature(folder, raw_manifest, resolve_trust(trust), allow_unsigned)
    if signature.notice:
        notice(signature.notice)
    try:
        manifest = json.loads(raw_manifest)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EnsembleError(f"{mpath}: not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise EnsembleError(f"{mpath}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    blobs = {}
    for rel, digest in manifest["files"].items():
        p = folder / rel
        if not p.is_file():
            raise EnsembleError(f"{p}: listed in {MANIFEST} but missing; refusing to load")
        raw = p.read_bytes()
        if hashlib.sha256(raw).hexdigest() != digest:
            raise EnsembleError(f"{p}: SHA-256 does not match {MANIFEST} (the file changed "
                                "after export); refusing to load")
        blobs[rel] = raw
    _check_listed(manifest, mpath)
    return manifest, blobs, signature


def _check_listed(manifest: dict[str, Any], mpath: Path) -> None:
    """Every file the members and the predictor name is one the manifest lists (and so was
    verified above): an unlisted one would load unchecked, or not at all."""
    named = [(f"members[{i}].{k}", m.get(k)) for i, m in enumerate(manifest["members"])
             for k in ("weights", "onnx")]
    named += [(f"predictor.{k}", manifest["predictor"].get(k)) for k in ("weights", "onnx")]
    named.append(("the prototypes", PROTOTYPES))
    for where, rel in named:
        if rel is not None and rel not in manifest["files"]:
            raise EnsembleError(f"{mpath}: {where} names {rel!r}, which its files do not list "
                                "(so it cannot be verified); refusing to load")


def _onnx_parts(manifest: dict[str, Any], blobs: dict[str, bytes], threads: int | None
                ) -> tuple[list[MemberFn], GenderFn]:
    members = [onnx_member(blobs[m["onnx"]], threads) for m in manifest["members"]]
    return members, onnx_gender(blobs[manifest["predictor"]["onnx"]], threads)


def _torch_parts(folder: Path, manifest: dict[str, Any], blobs: dict[str, bytes],
                 threads: int | None) -> tuple[list[MemberFn], GenderFn]:
    import torch
    from safetensors.torch import load as st_load

    from san_search.config import CandidateConfig
    from san_search.models import create

    if threads:
        torch.set_num_threads(threads)
    members = []
    c = channels(color_of(manifest["preprocessing"]))
    for i, m in enumerate(manifest["members"]):
        cfg = CandidateConfig.from_dict(m["config"], f"{folder / MANIFEST}: members[{i}].config")
        model = create("autoencoder", cfg.autoencoder, channels=c, **cfg.autoencoder_kwargs())
        model.load_state_dict(st_load(blobs[m["weights"]]))
        members.append(torch_member(model.eval()))
    pred = manifest["predictor"]
    g = create("gender", pred["arch"], image_size=pred["image_size"], channels=c)
    g.load_state_dict(st_load(blobs[pred["weights"]]))
    return members, torch_gender(g.eval())


def load_ensemble(folder: str | Path, backend: str = "torch", policy: str | None = None,
                  threads: int | None = None, *, trust: Trust = None,
                  notice: Callable[[str], None] = stderr_notice,
                  allow_unsigned: bool = False) -> LoadedEnsemble:
    """Verify and load an export folder with the `torch` or `onnx` backend. `trust`: the
    public key (file) the manifest's signature must verify with; None reads
    `$SAN_SEARCH_TRUST_KEY`, and with neither the signature is not checked (see
    `ensemble.signing`); with a trust key an unsigned export is refused unless
    `allow_unsigned`. `notice` gets a one-line notice for an unsigned export loaded with a
    trust key (allowed), or a signed one loaded without."""
    from safetensors.numpy import load as np_load

    if backend not in BACKENDS:
        raise EnsembleError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    manifest, blobs, signature = read_verified(folder, trust, notice, allow_unsigned)
    protos = np_load(blobs[PROTOTYPES])
    if backend == "onnx":
        members, predictor = _onnx_parts(manifest, blobs, threads)
    else:
        members, predictor = _torch_parts(Path(folder), manifest, blobs, threads)
    rt = EnsembleRuntime(members, predictor, {k: protos[k] for k in ("female", "male")},
                         policy or manifest["policy"], int(manifest["seed"]))
    return LoadedEnsemble(Path(folder), manifest, rt, signature)
