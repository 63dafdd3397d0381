"""Whole photos in and out of an ensemble: where the faces are, the crop each one gets, and
pasting the perturbed faces back into the photo at its full resolution.

Faces. By default OpenCV's Haar cascade (`data/preprocess.py`, the one `data prepare
--detect` uses) finds every face (`faces="all"`) or the largest one (`"largest"`). Each box
becomes the square the ensemble's training data was cut as:
  - a dataset prepared with detection: the box's centre, side `DETECT_MARGIN` x the box's
    larger side, exactly as `data prepare --detect` crops;
  - a dataset prepared with a fixed centred crop (LFW: 0.5 of the shorter side): the box's
    centre, side = larger box side x crop / `LFW_HAAR_FRACTION`. On LFW's 250x250 photos the
    Haar box is 0.46 of the side (median of 300 photos, centred within 1 px), so a face
    found in any photo is framed as the fixed crop framed the LFW faces the ensemble saw.
With `aligned`, no detection: the photo is one face, cut as the fixed crop would cut it (the
crop fraction of the shorter side, centred; the whole shorter side for a detection dataset).

Paste-back. The ensemble's output (S x S) is resized (bicubic) to the square and blended
into the photo with a raised-cosine mask: weight 1 in the middle, falling smoothly to 0 over
the outer `FEATHER` of each side, so no seam shows.
  - A colour (rgb) ensemble on a colour photo: the face's R, G and B are blended towards the
    ensemble's output (`blend_colour`): colour changes too.
  - A gray ensemble: only the luminance changes (`blend_luminance`): in RGB the same amount is
    added to R, G and B, which moves Y of YCbCr and leaves Cb and Cr as they were (up to
    rounding); the amount is limited per pixel so that no channel clips, which would shift
    the colour.
  - A colour ensemble on a gray photo: the gray face was repeated to RGB for the ensemble
    (`face_source`), and the output's luminance (Y = 0.299 R + 0.587 G + 0.114 B) goes back.
Gray photos (L, 16-bit, float) get the blend directly; other modes (palette, CMYK, ...) go
through RGB and back, inside the square only.
Pixels outside the squares are never touched (bit-exact in the decoded photo; a JPEG is
re-encoded, so its file's pixels differ by the codec's loss everywhere).

Orientation and format. EXIF orientation is applied to the pixels (`ImageOps.exif_transpose`)
before detection, and the result is written upright with no EXIF at all (the orientation tag
would now be wrong, and the rest, such as GPS, is not passed on); an ICC profile is kept.
The file's name decides its format: `.jpg`/`.jpeg` are written as JPEG at quality
`JPEG_QUALITY`, `.png` as PNG, anything else as PNG under a `.png` name. A mode the format
cannot hold is converted (alpha dropped for JPEG; CMYK to RGB, float to 16-bit for PNG).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from san_search.data.preprocess import (
    DETECT_MARGIN,
    crop_square,
    detect_faces,
    read_image,
    to_gray,
    to_rgb,
)

JPEG_QUALITY = 95
FEATHER = 0.2  # the mask rises from 0 to 1 over this fraction of the square's side, each side
LFW_HAAR_FRACTION = 0.46  # median Haar box side / photo side on LFW deepfunneled (250 px)
FACES = ("all", "largest")
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
JPEG_MODES = {"L", "RGB", "CMYK"}
PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}
LUMA = np.array([0.299, 0.587, 0.114])  # Y of ITU-R BT.601, as PIL's YCbCr


@dataclass(frozen=True)
class Square:
    """A face's square in photo pixels: the crop the ensemble sees and where it goes back."""

    cx: float
    cy: float
    side: float

    def bounds(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), rounded as `crop_square` rounds (may reach outside the photo)."""
        x0, y0 = int(round(self.cx - self.side / 2)), int(round(self.cy - self.side / 2))
        n = int(round(self.side))
        return x0, y0, x0 + n, y0 + n

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the part inside a `width` x `height` photo: the only pixels that
        can change."""
        x0, y0, x1, y1 = self.bounds()
        x, y = max(x0, 0), max(y0, 0)
        return x, y, min(x1, width) - x, min(y1, height) - y


@dataclass(frozen=True)
class Framing:
    """How faces are found and cut for one ensemble (its manifest's `preprocessing`)."""

    size: int
    crop: float = 1.0
    detect: bool = False  # the dataset was prepared with detection
    aligned: bool = False  # each photo is one aligned face: no detection
    faces: str = "all"
    color: str = "gray"  # the ensemble's colour mode: the crops it takes

    @classmethod
    def of(cls, preprocessing: dict[str, Any], *, aligned: bool = False, faces: str = "all"
           ) -> Framing:
        if faces not in FACES:
            raise ValueError(f"faces must be one of {', '.join(FACES)}, got {faces!r}")
        return cls(int(preprocessing["size"]), float(preprocessing.get("crop") or 1.0),
                   bool(preprocessing.get("detect")), aligned, faces,
                   str(preprocessing.get("color") or "gray"))

    def face_source(self, image: Image.Image) -> Image.Image:
        """What the crops are cut from: the photo in RGB (a gray photo repeated to three
        channels) for a colour ensemble, in gray for a gray one."""
        return to_rgb(image) if self.color == "rgb" else to_gray(image)

    def square(self, x: int, y: int, w: int, h: int) -> Square:
        """The crop for a Haar box, framed like the training data (module docstring)."""
        if self.detect:
            side = float(round(max(w, h) * DETECT_MARGIN))
        else:
            side = max(w, h) * self.crop / LFW_HAAR_FRACTION
        return Square(float(x + w // 2), float(y + h // 2), side)


@dataclass
class Photo:
    """An upright photo, its ICC profile, or why it could not be read."""

    image: Image.Image | None
    icc: bytes | None = None
    error: str | None = None


def load_photo(path: Path) -> Photo:
    """Read, decode (with the decompression-bomb guard) and turn upright one photo."""
    img, _, error = read_image(path)
    if img is None:
        return Photo(None, error=error)
    icc = img.info.get("icc_profile")
    try:
        up = ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - a broken EXIF block is this file's problem
        return Photo(None, error=f"corrupt EXIF orientation: {exc}")
    return Photo(up if up is not None else img, icc if isinstance(icc, bytes) else None)


def find_squares(gray: Image.Image, framing: Framing) -> list[Square]:
    """The faces' squares in a gray photo, largest first ([] when none is found)."""
    w, h = gray.size
    if framing.aligned:
        return [Square(w / 2.0, h / 2.0, framing.crop * min(w, h))]
    boxes = sorted(detect_faces(np.asarray(gray)), key=lambda b: (-b[2] * b[3], b[1], b[0]))
    if framing.faces == "largest":
        boxes = boxes[:1]
    return [framing.square(*b) for b in boxes]


def face_crops(image: Image.Image, squares: list[Square], size: int) -> np.ndarray:
    """(N, size, size) uint8 from a gray `image`, (N, size, size, 3) from an RGB one: each
    square cut and resized as `data prepare` does."""
    out = [np.asarray(crop_square(image, s.cx, s.cy, s.side).resize(
        (size, size), Image.Resampling.LANCZOS), dtype=np.uint8) for s in squares]
    depth = (3,) if image.mode == "RGB" else ()
    return np.stack(out) if out else np.zeros((0, size, size, *depth), np.uint8)


def feather_mask(n: int, feather: float = FEATHER) -> np.ndarray:
    """(n, n) raised-cosine weights: 1 in the middle, smoothly to 0 at the edges."""
    t = (np.arange(n) + 0.5) / n
    ramp = np.clip(np.minimum(t, 1.0 - t) / feather, 0.0, 1.0)
    w = 0.5 - 0.5 * np.cos(math.pi * ramp)
    return np.outer(w, w)


def _blend_rgb(a: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Move Y of the first three channels towards `target` (0..255) by `weight`, adding the
    same amount to R, G and B (Cb, Cr unchanged), never past 0 or 255."""
    rgb = a[..., :3].astype(np.float64)
    delta = weight * (target - rgb @ LUMA)
    delta = np.clip(delta, -rgb.min(axis=-1), 255.0 - rgb.max(axis=-1))
    out = a.copy()
    out[..., :3] = np.rint(rgb + delta[..., None]).astype(a.dtype)
    return out


def _blend_gray(a: np.ndarray, target: np.ndarray, weight: np.ndarray, top: float
                ) -> np.ndarray:
    v = a.astype(np.float64)
    new = v + weight * (target / 255.0 * top - v)
    return new.astype(a.dtype) if a.dtype.kind == "f" else np.rint(new).astype(a.dtype)


def blend_luminance(region: Image.Image, target: np.ndarray, weight: np.ndarray
                    ) -> Image.Image:
    """`region` with its luminance moved to `target` ((h, w) in 0..255) by `weight` (0..1);
    colour kept. Where `weight` is 0 the pixels stay exactly as they were."""
    mode = region.mode
    a = np.asarray(region)
    if mode in ("RGB", "RGBA"):
        return Image.fromarray(_blend_rgb(a, target, weight), mode)
    if mode in ("L", "LA"):
        out = a.copy()
        ch = out if mode == "L" else out[..., 0]
        ch[...] = _blend_gray(ch, target, weight, 255.0)
        return Image.fromarray(out, mode)
    if mode.startswith("I") or mode == "F":
        top = 1.0 if mode == "F" else 65535.0
        return Image.fromarray(_blend_gray(a, target, weight, top))
    alpha = "A" in mode or "transparency" in region.info
    rgb = region.convert("RGBA" if alpha else "RGB")
    new = Image.fromarray(_blend_rgb(np.asarray(rgb), target, weight), rgb.mode)
    return _back_to_mode(new, region, weight)


def _back_to_mode(new: Image.Image, region: Image.Image, weight: np.ndarray) -> Image.Image:
    """`new` (RGB or RGBA) converted back to `region`'s mode (a palette image keeps its
    palette), taken only where `weight` > 0: every other pixel stays exactly `region`'s."""
    if region.mode == "P":
        back = new.convert("RGB").quantize(palette=region, dither=Image.Dither.NONE)
    else:
        back = new.convert(region.mode)
    changed = Image.fromarray(((weight > 0) * 255).astype(np.uint8), "L")
    return Image.composite(back, region, changed)


def blend_colour(region: Image.Image, target: np.ndarray, weight: np.ndarray) -> Image.Image:
    """`region` (a colour mode) with its R, G and B moved to `target` ((h, w, 3) in 0..255)
    by `weight` (0..1); alpha kept. Where `weight` is 0 the pixels stay exactly as they were."""
    mode = region.mode
    alpha = "A" in mode or "transparency" in region.info
    rgb = region if mode in ("RGB", "RGBA") else region.convert("RGBA" if alpha else "RGB")
    a = np.asarray(rgb)
    out = a.copy()
    old = a[..., :3].astype(np.float64)
    out[..., :3] = np.rint(old + weight[..., None] * (target - old)).astype(a.dtype)
    new = Image.fromarray(out, rgb.mode)
    return new if mode in ("RGB", "RGBA") else _back_to_mode(new, region, weight)


def _resized(face: np.ndarray, n: int) -> np.ndarray:
    """A face (S, S) or (S, S, 3), floats in 0..1, resized (bicubic) to n x n, in 0..255."""
    chans = [face] if face.ndim == 2 else [face[..., c] for c in range(face.shape[-1])]
    big = [np.asarray(Image.fromarray(np.asarray(ch, np.float32) * 255.0, "F").resize(
        (n, n), Image.Resampling.BICUBIC), np.float64) for ch in chans]
    return np.clip(big[0] if face.ndim == 2 else np.stack(big, axis=-1), 0.0, 255.0)


def paste_faces(photo: Image.Image, squares: list[Square], faces: np.ndarray) -> Image.Image:
    """A copy of `photo` with each perturbed face (`faces`: (N, S, S) gray or (N, S, S, 3)
    rgb floats in 0..1) resized to its square and blended in: rgb faces into a colour photo's
    R, G and B, otherwise into the luminance (module docstring); nothing outside the squares
    changes."""
    out = photo.copy()
    width, height = out.size
    colour = np.asarray(faces).ndim == 4 and is_colour(photo)
    for sq, face in zip(squares, faces, strict=True):
        x0, y0, x1, y1 = sq.bounds()
        n = x1 - x0
        target = _resized(np.asarray(face), n)
        if target.ndim == 3 and not colour:
            target = target @ LUMA
        weight = feather_mask(n)
        x, y, w, h = sq.box(width, height)
        if w <= 0 or h <= 0:
            continue
        inner = (slice(y - y0, y - y0 + h), slice(x - x0, x - x0 + w))
        region = out.crop((x, y, x + w, y + h))
        blend = blend_colour if colour else blend_luminance
        out.paste(blend(region, target[inner], weight[inner]), (x, y))
    return out


def is_colour(img: Image.Image) -> bool:
    return img.mode not in GRAY_MODES


def output_name(relative: Path) -> tuple[Path, str]:
    """(output path, format) for an input path: JPEG and PNG keep their name, others -> PNG."""
    suffix = relative.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        return relative, "JPEG"
    return (relative, "PNG") if suffix == ".png" else (relative.with_suffix(".png"), "PNG")


def _savable(img: Image.Image, fmt: str) -> Image.Image:
    if fmt == "JPEG" and img.mode not in JPEG_MODES:
        return to_gray(img) if img.mode in GRAY_MODES else img.convert("RGB")
    if fmt == "PNG" and img.mode not in PNG_MODES:
        if img.mode.startswith("I;16"):
            return Image.fromarray(np.asarray(img).astype(np.uint16))
        if img.mode == "F":
            a = np.clip(np.rint(np.asarray(img, np.float64) * 65535.0), 0, 65535)
            return Image.fromarray(a.astype(np.uint16))
        alpha = "A" in img.mode or "transparency" in img.info
        return img.convert("RGBA" if alpha else "RGB")
    return img


def encode(img: Image.Image, fmt: str, icc: bytes | None = None) -> bytes:
    """The file's bytes: JPEG at `JPEG_QUALITY` or PNG, no EXIF, the ICC profile kept."""
    buf = io.BytesIO()
    extra: dict[str, Any] = {"icc_profile": icc} if icc else {}
    if fmt == "JPEG":
        _savable(img, fmt).save(buf, "JPEG", quality=JPEG_QUALITY, **extra)
    else:
        _savable(img, fmt).save(buf, "PNG", **extra)
    return buf.getvalue()


def thumbnail(img: Image.Image, height: int = 160) -> Image.Image:
    """A small RGB copy for the contact sheet."""
    rgb = img.convert("RGB") if img.mode in ("RGB", "L", "RGBA", "P", "CMYK") \
        else to_gray(img).convert("RGB")
    w = max(1, round(img.width * height / img.height))
    return rgb.resize((w, height), Image.Resampling.LANCZOS)


def contact_sheet(pairs: list[tuple[Image.Image, Image.Image]], gap: int = 4) -> bytes:
    """PNG bytes: one row per photo, before on the left and after on the right."""
    if not pairs:
        raise ValueError("a contact sheet needs at least one photo")
    width = max(b.width + a.width for b, a in pairs) + 3 * gap
    height = sum(b.height for b, _ in pairs) + gap * (len(pairs) + 1)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    y = gap
    for before, after in pairs:
        sheet.paste(before, (gap, y))
        sheet.paste(after, (2 * gap + before.width, y))
        y += before.height + gap
    buf = io.BytesIO()
    sheet.save(buf, "PNG")
    return buf.getvalue()
