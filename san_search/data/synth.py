"""`data synth`: procedural synthetic faces, a stand-in for real faces in the demo and tests.

Each identity has its own geometry (face outline, jaw, eye spacing and size, brows, nose,
mouth, hair, skin tone and texture). Gender moves a latent "masculinity" score whose two
class distributions overlap (means ±`GENDER_SHIFT`, unit spread), and the score shifts jaw
width, brow weight, hair length and lip contrast; so even a perfect reader of the cues is right
only about Φ(GENDER_SHIFT) ≈ 92% of the time. Each image varies pose, scale, lighting,
expression and noise. These are not real faces: results on them say the pipeline works, not
how a SAN behaves on people.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from san_search.data.prepare import BuildOptions, build_dataset, check_size
from san_search.data.store import SYNTH_FILES, atomic_folder
from san_search.errors import DataError

GENDER_SHIFT = 1.4


def _identity_params(
    rng: np.random.Generator, n: int, female_share: float
) -> dict[str, np.ndarray]:
    gender = (rng.random(n) >= female_share).astype(np.int8)  # 1 = male
    m = np.where(gender == 1, GENDER_SHIFT, -GENDER_SHIFT) + rng.standard_normal(n)
    u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    return {
        "gender": gender,
        "face_w": u(0.52, 0.66),
        "face_h": u(0.72, 0.84),
        "jaw": np.clip(0.72 + 0.07 * m + rng.normal(0, 0.03, n), 0.45, 0.98),
        "skin": u(0.45, 0.85),
        "eye_sep": u(0.2, 0.3),
        "eye_y": u(-0.22, -0.1),
        "eye_w": u(0.07, 0.12),
        "eye_h": u(0.035, 0.06),
        "brow_gap": u(0.1, 0.16),
        "brow_len": u(0.1, 0.16),
        "brow_t": np.clip(0.032 + 0.01 * m + rng.normal(0, 0.006, n), 0.012, 0.08),
        "brow_d": np.clip(0.28 + 0.07 * m + rng.normal(0, 0.04, n), 0.05, 0.6),
        "nose_y": u(0.12, 0.22),
        "nose_w": u(0.05, 0.1),
        "mouth_y": u(0.35, 0.48),
        "mouth_w": u(0.14, 0.24),
        "lip": np.clip(0.2 - 0.08 * m + rng.normal(0, 0.04, n), 0.02, 0.6),
        "hair_len": np.clip(0.15 - 0.28 * m + rng.normal(0, 0.1, n), -0.35, 0.95),
        "hair_tone": u(0.05, 0.7),
        "tex_f": rng.uniform(3.0, 9.0, (n, 3)),
        "tex_a": rng.uniform(0.0, 2 * np.pi, (n, 3)),
        "tex_p": rng.uniform(0.0, 2 * np.pi, (n, 3)),
    }


def _soft(d: np.ndarray, sharp: float) -> np.ndarray:
    """Soft inside-mask of a shape whose normalised distance is `d` (inside when d < 1)."""
    return 1.0 / (1.0 + np.exp(np.clip((d - 1.0) * sharp, -30, 30)))


def _features(img: np.ndarray, p: dict[str, np.ndarray], col: Callable[[Any], np.ndarray],
              r: Callable[[float, float], np.ndarray], fx: np.ndarray, y: np.ndarray,
              face: np.ndarray, sharp: float) -> np.ndarray:
    """Eyes, brows, nose and mouth drawn onto `img` inside the `face` mask (in `render`'s
    coordinates; `r` draws per-image values, in the same order as ever)."""
    # Eyes (openness varies per image) and brows.
    open_ = r(0.55, 1.15)
    ey, es = col(p["eye_y"]), col(p["eye_sep"])
    for side in (-1.0, 1.0):
        eye = _soft(np.sqrt(((fx - side * es) / col(p["eye_w"])) ** 2
                            + ((y - ey) / (col(p["eye_h"]) * open_)) ** 2), sharp)
        img = img - 0.38 * eye * face
        by = ey - col(p["brow_gap"]) + 0.02 * side * r(-1, 1)
        brow = _soft(np.maximum(np.abs(fx - side * es) / col(p["brow_len"]),
                                np.abs(y - by) / col(p["brow_t"])), sharp)
        img = img - col(p["brow_d"]) * brow * face
    # Nose: a shaded ridge and two nostrils.
    ny, nw = col(p["nose_y"]), col(p["nose_w"])
    ridge = _soft(np.maximum(np.abs(fx - 0.3 * nw) / (0.25 * nw), np.abs(y - (ey + ny) / 2)
                             / (np.abs(ny - ey) / 2 + 1e-3)), sharp)
    img = img - 0.08 * ridge * face
    for side in (-1.0, 1.0):
        img = img - 0.22 * _soft(np.sqrt(((fx - side * 0.5 * nw) / (0.3 * nw)) ** 2
                                         + ((y - ny) / 0.025) ** 2), sharp) * face
    # Mouth: lip contrast is a gender cue; smile bends it, opening varies per image.
    smile = r(-0.6, 1.2)
    my = col(p["mouth_y"]) - smile * 0.15 * (fx / col(p["mouth_w"])) ** 2 * col(p["mouth_w"])
    mouth_h = 0.03 + r(0.0, 0.03)
    mouth = _soft(np.sqrt((fx / col(p["mouth_w"])) ** 2 + ((y - my) / mouth_h) ** 2), sharp)
    img = img - (0.12 + col(p["lip"])) * mouth * face
    return img


def render(params: dict[str, np.ndarray], idx: np.ndarray, size: int,
           rng: np.random.Generator) -> np.ndarray:
    """Render one image per entry of `idx` (identity numbers). Returns (B, size, size) uint8."""
    b = len(idx)
    p = {k: v[idx] for k, v in params.items()}
    col = lambda a: np.asarray(a, np.float32).reshape(b, 1, 1)  # noqa: E731
    r = lambda lo, hi: col(rng.uniform(lo, hi, b))  # noqa: E731
    lin = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    v, u = np.meshgrid(lin, lin, indexing="ij")  # (S, S): v down, u right
    # Per-image pose: in-plane rotation, scale, shift; yaw moves features inside the outline.
    th, sc = r(-0.2, 0.2), r(0.85, 1.05)
    tx, ty, yaw = r(-0.08, 0.08), r(-0.08, 0.08), r(-0.1, 0.1)
    cu, su = np.cos(th), np.sin(th)
    x = (cu * (u - tx) + su * (v - ty)) / sc
    y = (-su * (u - tx) + cu * (v - ty)) / sc
    sharp = float(size) / 2.5
    fw, fh = col(p["face_w"]), col(p["face_h"])
    # Face: an ellipse whose lower half narrows towards the jaw.
    narrow = 1.0 - (1.0 - col(p["jaw"])) * np.clip(y / fh, 0, 1) ** 2
    face = _soft(np.sqrt((x / (fw * narrow)) ** 2 + (y / fh) ** 2), sharp)
    # Hair: a cap above the hairline, plus sides from the temples down to hair_len (drawn
    # behind the face, so only what falls outside the outline shows).
    cap = _soft(np.sqrt((x / (fw * 1.14)) ** 2 + ((y + 0.06) / (fh * 1.08)) ** 2), sharp)
    cap = cap * _soft((y + fh * 1.2) / (0.85 * fh), sharp)
    top, bottom = -0.5 * fh, np.maximum(col(p["hair_len"]), -0.5 * fh + 0.05)
    sides = _soft(np.maximum(np.abs(x) / (fw * 1.16),
                             np.abs(y - (top + bottom) / 2) / ((bottom - top) / 2)), sharp)
    hair = np.maximum(cap, sides)
    bg = r(0.15, 0.85) + r(-0.15, 0.15) * u
    img = bg * (1 - hair) + col(p["hair_tone"]) * hair
    tex = sum(
        0.025 * np.sin(col(p["tex_f"][:, k]) * (x * np.cos(col(p["tex_a"][:, k]))
                                               + y * np.sin(col(p["tex_a"][:, k])))
                       + col(p["tex_p"][:, k]))
        for k in range(3)
    )
    skin = col(p["skin"]) + tex
    img = img * (1 - face) + skin * face
    fx = x - yaw  # features follow the yaw
    img = _features(img, p, col, r, fx, y, face, sharp)
    # Lighting: a directional gradient, then global contrast and brightness, then sensor noise.
    ang = r(0, 2 * np.pi)
    img = img * (1.0 + r(0.0, 0.35) * (u * np.cos(ang) + v * np.sin(ang)))
    img = (img - 0.5) * r(0.75, 1.2) + 0.5 + r(-0.1, 0.1)
    img = img + rng.standard_normal(img.shape).astype(np.float32) * r(0.005, 0.04)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def generate(identities: int, images_per_identity: int, size: int, seed: int,
             female_share: float = 0.5) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """Generate faces: (images (N, S, S) uint8, identity names, genders, source names)."""
    check_size(size)
    if identities < 6:
        raise DataError(f"--identities must be at least 6 (2 per split), got {identities}")
    if images_per_identity < 2:
        raise DataError(
            f"--images-per-identity must be at least 2 (genuine pairs), got {images_per_identity}"
        )
    if not 0 < female_share < 1:
        raise DataError(f"--female-share must be in (0, 1), got {female_share}")
    rng = np.random.default_rng(seed)
    params = _identity_params(rng, identities, female_share)
    idx = np.repeat(np.arange(identities), images_per_identity)
    chunk = max(1, 2_000_000 // (size * size))
    images = np.concatenate([render(params, idx[i : i + chunk], size, rng)
                             for i in range(0, len(idx), chunk)])
    names = [f"synth_{i:05d}" for i in idx]
    sources = [f"{n}/{n}_{k % images_per_identity:04d}.png" for k, n in enumerate(names)]
    return images, names, params["gender"][idx], sources


def synth(
    out: Path,
    *,
    identities: int = 500,
    images_per_identity: int = 20,
    size: int = 64,
    female_share: float = 0.5,
    options: BuildOptions | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate a synthetic set and write it as a prepared dataset. Returns dataset.json."""
    options = options or BuildOptions()
    images, names, gender, sources = generate(
        identities, images_per_identity, size, options.seed, female_share
    )
    hashes = [hashlib.sha256(im.tobytes()).hexdigest() for im in images]
    return build_dataset(
        Path(out), images, names, gender, sources, hashes,
        settings={"format": "synth", "size": size, "identities": identities,
                  "images_per_identity": images_per_identity, "female_share": female_share},
        options=options, rejected=[], overwrite=overwrite,
    )


def synth_files(
    out: Path,
    *,
    identities: int = 500,
    images_per_identity: int = 20,
    size: int = 64,
    seed: int = 0,
    female_share: float = 0.5,
    overwrite: bool = False,
) -> Path:
    """Write synthetic faces as PNG files plus `manifest.csv` (path,identity,gender): raw input
    for `data prepare --format manifest`."""
    from PIL import Image

    images, names, gender, sources = generate(identities, images_per_identity, size, seed,
                                              female_share)
    out = Path(out).absolute()
    with atomic_folder(out, overwrite, SYNTH_FILES) as tmp:
        rows = [["path", "identity", "gender"]]
        for im, name, g, src in zip(images, names, gender, sources, strict=True):
            (tmp / src).parent.mkdir(exist_ok=True)
            Image.fromarray(im).save(tmp / src)
            rows.append([src, name, "M" if g == 1 else "F"])
        with (tmp / "manifest.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)
    return out
