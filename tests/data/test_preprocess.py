"""Decoding hostile and unusual images: every PIL mode scaled to 8 bits (not clipped) or
rejected with a reason, and a pixel limit against decompression bombs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from san_search.data.preprocess import MAX_PIXELS, Settings, decode_file, decode_many

SETTINGS = Settings(size=8)


def _pixels(path: Path) -> np.ndarray:
    dec = decode_file(path, SETTINGS)
    assert dec.error is None, dec.error
    assert dec.pixels is not None
    return np.frombuffer(dec.pixels, np.uint8).reshape(8, 8)


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((16, 16), 128 * 257, np.uint16)).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # really stored as 16-bit
    got = _pixels(path)
    assert int(got.min()) == 128 and int(got.max()) == 128  # was 255: an all-white square


def _image(mode: str) -> Image.Image:
    gray = Image.fromarray(np.full((16, 16), 128, np.uint8))
    if mode == "I":
        return Image.fromarray(np.full((16, 16), 128 * 257, np.int32), mode="I")
    if mode == "F":
        return Image.fromarray(np.full((16, 16), 128 / 255, np.float32), mode="F")
    if mode in ("LA", "RGBA"):
        base = gray.convert(mode[:-1])
        base.putalpha(255)
        return base
    if mode == "P":
        return gray.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    if mode == "1":
        return gray.convert("1", dither=Image.Dither.NONE)
    return gray.convert(mode)


@pytest.mark.parametrize(("mode", "suffix"), [
    ("I", ".tif"), ("F", ".tif"), ("LA", ".png"), ("P", ".png"), ("RGBA", ".png"),
    ("CMYK", ".tif"), ("RGB", ".png"), ("1", ".png")])
def test_each_pil_mode_becomes_the_same_gray(mode: str, suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"img{suffix}"
    _image(mode).save(path)
    with Image.open(path) as img:
        assert img.mode == mode
    got = _pixels(path).astype(int)
    want = 255 if mode == "1" else 128
    assert np.abs(got - want).max() <= 1, (mode, got.min(), got.max())


def test_float_image_outside_0_1_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "hdr.tif"
    Image.fromarray(np.full((16, 16), 300.0, np.float32), mode="F").save(path)
    dec = decode_file(path, SETTINGS)
    assert dec.pixels is None
    assert dec.error == "unsupported pixel values: float image (mode F) with values in " \
                        "[300, 300], expected [0, 1]"


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height 8-bit gray pixels: what a decompression bomb shows
    before it is decoded (its tiny IDAT would inflate to width*height bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def test_decompression_bomb_is_reported_and_the_rest_decoded(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    png_header_only(bomb, 20000, 20000)
    good = tmp_path / "good.png"
    Image.fromarray(np.full((16, 16), 40, np.uint8)).save(good)
    out = list(decode_many([good, bomb, good], SETTINGS, workers=1))
    assert [d.error is None for d in out] == [True, False, True]
    # over twice PIL's limit, PIL itself refuses it while reading the header
    assert out[1].error is not None and out[1].error.startswith("image too large: ")
    assert "400000000 pixels" in out[1].error and "decompression bomb" in out[1].error
    assert out[1].raw_sha256  # still hashed, so the rejection is traceable


def test_pixel_limit_applies_below_pils_own_error(tmp_path: Path) -> None:
    side = int(MAX_PIXELS ** 0.5) + 1  # just over our limit, under PIL's 2x error threshold
    big = tmp_path / "big.png"
    png_header_only(big, side, side)
    dec = decode_file(big, SETTINGS)
    assert dec.error == (f"image too large: {side}x{side} = {side * side} pixels, over the "
                         f"limit of {MAX_PIXELS} (a guard against decompression bombs)")


def test_a_file_that_is_no_image_fails_with_the_same_words_every_time(tmp_path: Path) -> None:
    from san_search.data.preprocess import read_image

    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not a JPEG at all" * 10)
    reasons = {read_image(junk)[2] for _ in range(3)}
    assert len(reasons) == 1
    reason = reasons.pop()
    assert reason is not None and reason.startswith("corrupt or unsupported image: cannot "
                                                    "identify image file")
    assert "0x" not in reason and "BytesIO" not in reason
