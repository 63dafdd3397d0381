"""Running an ensemble of SANs on images: the two serving policies and the two backends.

Policies (one name each, the same in the CLI, the manifest and MLflow):
  random  each image goes through one member, chosen by a seeded SHA-256 of the image's
          pixels, so the same image always gets the same output (the BTAS 2018 ensemble);
  chain   every member in turn, the output of one the input of the next (FlowSAN, 2019).

A SAN needs the face's gender to pick its prototypes (same gender into the encoder, the
opposite into the combiner). Unless the caller passes known genders, the ensemble's gender
predictor (an auxiliary classifier exported with it) decides, on the original image; every
member of a chain uses that same decision.

Backends: `torch` modules or ONNX Runtime sessions behind the same two callables, so policies
and preprocessing are shared. Nothing here touches MLflow or Ray.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from san_search.evaluators import as_float

POLICIES = ("random", "chain")
BACKENDS = ("torch", "onnx")
BATCH = 256

# (x, proto_same, proto_opp), each (B, 1, S, S) float32 -> the privacy output (B, 1, S, S)
MemberFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# (B, 1, S, S) float32 -> probability of "male" (B,)
GenderFn = Callable[[np.ndarray], np.ndarray]


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"policy {policy!r} is not one of {', '.join(POLICIES)}")
    return policy


def to_uint8(images: np.ndarray) -> np.ndarray:
    """The 8-bit pixels an image is identified by (float images are rounded)."""
    if images.dtype == np.uint8:
        return images
    return np.clip(np.rint(np.asarray(images, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def member_index(image: np.ndarray, k: int, seed: int) -> int:
    """The member that perturbs `image` under the random policy: SHA-256 of the seed and the
    8-bit pixels, modulo the ensemble size. Depends on the image alone, not its position."""
    h = hashlib.sha256(seed.to_bytes(8, "little", signed=True))
    h.update(np.ascontiguousarray(to_uint8(image)).tobytes())
    return int.from_bytes(h.digest()[:8], "little") % k


@dataclass
class EnsembleRuntime:
    """Members, gender predictor and prototypes (`female`, `male`: (S, S) float32)."""

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

    def is_male(self, images: np.ndarray) -> np.ndarray:
        """The predictor's decision for each image, (N,) bool."""
        x = as_float(images)
        out = [self.predictor(x[i : i + self.batch, None]) for i in range(0, len(x), self.batch)]
        return (np.concatenate(out) if out else np.zeros(0)) >= 0.5

    def assignment(self, images: np.ndarray) -> np.ndarray:
        """The random policy's member index of each image."""
        return np.array([member_index(im, len(self.members), self.seed) for im in images],
                        dtype=int)

    def member_output(self, j: int, images: np.ndarray, male: np.ndarray) -> np.ndarray:
        """Member `j` alone on `images` (N, S, S) given each face's gender."""
        x = as_float(images)
        female_p = self.prototypes["female"].astype(np.float32)[None, None]
        male_p = self.prototypes["male"].astype(np.float32)[None, None]
        out = np.empty_like(x)
        for i in range(0, len(x), self.batch):
            g = male[i : i + self.batch].reshape(-1, 1, 1, 1)
            same = np.where(g, male_p, female_p).astype(np.float32)
            opp = np.where(g, female_p, male_p).astype(np.float32)
            y = self.members[j](np.ascontiguousarray(x[i : i + self.batch, None]), same, opp)
            out[i : i + self.batch] = y[:, 0]
        return np.clip(out, 0.0, 1.0)

    def perturb(self, images: np.ndarray, policy: str | None = None,
                male: np.ndarray | None = None) -> np.ndarray:
        """Perturbed faces, float32 (N, S, S) in [0, 1], from uint8 or float (N, S, S)."""
        policy = check_policy(policy or self.policy)
        images = np.asarray(images)
        if images.ndim != 3:
            raise ValueError(f"images must be (N, S, S) grayscale, got shape {images.shape}")
        side = self.prototypes["female"].shape[-1]
        if images.shape[1:] != (side, side):
            raise ValueError(f"images are {images.shape[1]}x{images.shape[2]} px; this ensemble "
                             f"takes {side}x{side}")
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
