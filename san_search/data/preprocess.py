"""Image preprocessing shared by `data prepare` and `perturb`: decode, grayscale or RGB, square
face crop, resize. Runs in worker processes, so everything here is a plain top-level function."""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from san_search.errors import DataError

# Haar boxes are tight around eyes-to-mouth; widen them so the crop matches a centred crop
# of an aligned set (forehead and chin included).
DETECT_MARGIN = 1.4

# Images with more pixels are refused before decoding (PIL's own warning threshold, about
# 9459 x 9459): a small compressed file can claim 20000 x 20000 and inflate to gigabytes.
MAX_PIXELS = 89_478_485


@dataclass(frozen=True)
class Settings:
    """How each image becomes a dataset image."""

    size: int
    crop: float = 1.0  # side of the centred square crop, as a fraction of the shorter side
    detect: bool = False  # find the face with OpenCV's Haar cascade instead of a fixed crop
    color: str = "gray"  # "gray": (size, size) pixels; "rgb": (size, size, 3)


@dataclass(frozen=True)
class Decoded:
    """A preprocessed image (`pixels`, uint8 bytes of size*size, times 3 for rgb) or the
    reason it failed.

    `raw_sha256` is the hash of the file's bytes, so the dataset fingerprint changes when any
    input file changes, even in a region the crop throws away.
    """

    pixels: bytes | None
    raw_sha256: str
    error: str | None = None
    ita: float | None = None  # the source photo's skin ITA (`data.groups`), None: unmeasured


_CASCADE = None


def _cascade() -> Any:
    global _CASCADE
    if _CASCADE is None:
        import cv2

        folder = cv2.data.haarcascades  # type: ignore[attr-defined]
        path = os.path.join(folder, "haarcascade_frontalface_default.xml")
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise RuntimeError(
                f"OpenCV's Haar cascade is missing ({path}); install opencv-python-headless 4.x"
            )
        _CASCADE = cascade
    return _CASCADE


def detect_faces(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Every face OpenCV's Haar cascade finds in a uint8 gray image, as (x, y, w, h) boxes
    (tight around eyes-to-mouth), with the settings `data prepare --detect` uses."""
    h, w = gray.shape
    faces = _cascade().detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(max(16, min(h, w) // 10),) * 2
    )
    return [(int(x), int(y), int(fw), int(fh)) for x, y, fw, fh in faces]


def _detect_box(gray: np.ndarray) -> tuple[int, int, int] | None:
    """Return (centre x, centre y, side) of the largest detected face, or None."""
    faces = detect_faces(gray)
    if not faces:
        return None
    x, y, fw, fh = max(faces, key=lambda f: f[2] * f[3])
    side = int(round(max(fw, fh) * DETECT_MARGIN))
    return int(x + fw // 2), int(y + fh // 2), side


def crop_square(img: Image.Image, cx: float, cy: float, side: float) -> Image.Image:
    """Crop a square of `side` pixels centred on (cx, cy); parts outside the image are black."""
    half = side / 2.0
    box = (int(round(cx - half)), int(round(cy - half)))
    box4 = (box[0], box[1], box[0] + int(round(side)), box[1] + int(round(side)))
    return img.crop(box4)  # PIL pads out-of-bounds regions with 0


def _scaled(a: np.ndarray, top: float) -> Image.Image:
    return Image.fromarray(np.round(a.astype(np.float64) * (255.0 / top)).astype(np.uint8))


def to_gray(img: Image.Image) -> Image.Image:
    """8-bit grayscale of any PIL mode. 16- and 32-bit integer modes are scaled from 0..65535
    and float mode F from 0..1 (PIL's own convert clips them, so a 16-bit photo turns white);
    values outside those ranges, or a mode PIL cannot turn into gray, raise DataError."""
    mode = img.mode
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I (32-bit)
        a = np.asarray(img)
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise DataError(f"unsupported pixel values: integer image (mode {mode}) with "
                            f"values in [{lo}, {hi}], expected [0, 65535]")
        return _scaled(a, 65535.0)
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        low, high = float(np.nanmin(a)), float(np.nanmax(a))
        if not np.isfinite(a).all() or low < 0 or high > 1:
            raise DataError(f"unsupported pixel values: float image (mode F) with values in "
                            f"[{low:g}, {high:g}], expected [0, 1]")
        return _scaled(a, 1.0)
    for route in (("L",), ("RGB", "L")):
        try:
            out = img
            for step in route:
                out = out.convert(step)
            return out
        except ValueError:
            continue
    raise DataError(f"unsupported image mode {mode}: no conversion to grayscale")


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB of any PIL mode: gray modes (16-bit and float included, scaled as `to_gray`
    scales them) repeated to three channels; alpha dropped; palette, CMYK, YCbCr converted."""
    if img.mode in ("1", "L", "LA", "F") or img.mode.startswith("I"):
        return to_gray(img).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError:
        raise DataError(f"unsupported image mode {img.mode}: no conversion to RGB") from None


def to_face(img: Image.Image, settings: Settings) -> np.ndarray | None:
    """Grayscale or RGB (`settings.color`), crop and resize one image; None when `detect`
    finds no face (detection always runs on the gray image)."""
    gray = to_gray(img)
    src = to_rgb(img) if settings.color == "rgb" else gray
    w, h = gray.size
    if settings.detect:
        found = _detect_box(np.asarray(gray))
        if found is None:
            return None
        cx, cy, side = found
        face = crop_square(src, cx, cy, side)
    else:
        face = crop_square(src, w / 2.0, h / 2.0, settings.crop * min(w, h))
    face = face.resize((settings.size, settings.size), Image.Resampling.LANCZOS)
    return np.asarray(face, dtype=np.uint8)


def open_image(raw: bytes) -> Image.Image:
    """Decode one file's bytes fully; DataError when it claims more than MAX_PIXELS (checked
    from the header, before the pixels are decoded)."""
    with warnings.catch_warnings():
        # our own limit below is lower than PIL's error threshold and names the size
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(raw))
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise DataError(f"image too large: {w}x{h} = {w * h} pixels, over the limit of "
                            f"{MAX_PIXELS} (a guard against decompression bombs)")
        img.load()
        return img


def read_image(path: Path) -> tuple[Image.Image | None, str, str | None]:
    """(image, SHA-256 of the file's bytes, None), or (None, hash, why it failed): failures
    come back, never raised, so one bad file never stops a batch."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        return None, "", f"unreadable file: {exc.strerror or exc}"
    digest = hashlib.sha256(raw).hexdigest()
    try:
        return open_image(raw), digest, None
    except Exception as exc:  # noqa: BLE001 - any decoder failure on hostile bytes is per file
        return None, digest, _failure(exc)


def _failure(exc: Exception) -> str:
    """Why a file failed, the same words for the same bytes on every run (PIL names the
    in-memory buffer by its address: `<_io.BytesIO object at 0x...>`; that is cut)."""
    if isinstance(exc, DataError):
        return str(exc)
    text = re.sub(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>", "", str(exc))
    if isinstance(exc, Image.DecompressionBombError):  # over twice PIL's limit: from open
        return f"image too large: {text}"
    return f"corrupt or unsupported image: {text}"


def decode_file(path: Path, settings: Settings, *, ita: bool = False) -> Decoded:
    """Read one file and preprocess it; failures come back as `Decoded.error`, never raised,
    so one bad file never stops a batch. With `ita`, also measure the source's skin ITA."""
    img, digest, error = read_image(path)
    if img is None:
        return Decoded(None, digest, error)
    try:
        face = to_face(img, settings)
    except Exception as exc:  # noqa: BLE001 - as above
        return Decoded(None, digest, _failure(exc))
    if face is None:
        return Decoded(None, digest, "no face found")
    return Decoded(face.tobytes(), digest, ita=_source_ita(img, settings) if ita else None)


def image_ita(img: Image.Image, settings: Settings) -> float | None:
    """The ITA of a decoded source photo's face, cropped as `data prepare` crops it (the
    centred square, or the detected face with `detect`); None without colour or skin."""
    from san_search.data.groups import ITA_SIZE, face_tone

    if img.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
        return None  # grayscale or high-bit-depth: no colour to measure
    rgb = img.convert("RGB")
    w, h = rgb.size
    if settings.detect:
        found = _detect_box(np.asarray(rgb.convert("L")))
        if found is None:
            return None
        face = crop_square(rgb, *found)
    else:
        face = crop_square(rgb, w / 2.0, h / 2.0, settings.crop * min(w, h))
    face = face.resize((ITA_SIZE, ITA_SIZE), Image.Resampling.BILINEAR)
    return face_tone(np.asarray(face, dtype=np.uint8)).ita


def _source_ita(img: Image.Image, settings: Settings) -> float | None:
    """The skin ITA of the colour source (`image_ita`); None when it fails."""

    try:
        return image_ita(img, settings)
    except Exception:  # noqa: BLE001 - a group is optional: never reject an image for it
        return None


def _decode_chunk(args: tuple[list[str], Settings]) -> list[Decoded]:
    paths, settings = args
    return [decode_file(Path(p), settings, ita=True) for p in paths]


def decode_many(
    paths: Sequence[Path], settings: Settings, *, workers: int | None = None, chunk: int = 64
) -> Iterator[Decoded]:
    """Decode `paths` in order, in `workers` processes (default: all cores), with each
    source's skin ITA (`data prepare` stores it)."""
    workers = workers or os.cpu_count() or 1
    chunks = [
        ([str(p) for p in paths[i : i + chunk]], settings) for i in range(0, len(paths), chunk)
    ]
    if workers <= 1 or len(chunks) <= 1:
        for c in chunks:
            yield from _decode_chunk(c)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(_decode_chunk, chunks):
            yield from result
