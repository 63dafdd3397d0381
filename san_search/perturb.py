"""`san-search perturb`: an exported ensemble applied to image files.

Each file gets the preprocessing the ensemble's dataset got in `data prepare` (grayscale,
the same crop or face detection, the same size), then the ensemble, and is written as a PNG
under the output folder with its relative path (`a/b.jpg` -> `a/b.png`). Unreadable,
corrupt or faceless files are reported and skipped; the rest go on. Each PNG is written to
a temporary name and renamed, so an interrupted run leaves only whole files.

Safety: `--output` may not be, contain or lie inside `--input` (symlinks resolved); that is
checked before anything is read. The output folder gets the `.san-search-output` marker before
the first PNG. A non-empty `--output` is refused; with `--overwrite` it is accepted only if it
has the marker (an earlier perturb output), and then only the PNGs this run writes are
replaced: every other file in it is left as is. Outputs of san-search 0.1 have no marker and
cannot be told from a folder of photos, so they are refused too. Within a run, no PNG is
written twice (two inputs with one output name: the first is kept, the other reported) or
through a symbolic link that leads out of `--output`.

Trust: with `--trust PUBKEY` (or `$SAN_SEARCH_TRUST_KEY`) the ensemble's signed manifest is
checked before anything else of it is read (`san_search.signing`); an unsigned ensemble
still runs, with a notice.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from san_search.atomic import write_atomic
from san_search.errors import EnsembleError
from san_search.outputs import OutputKind, refusal, write_marker, written_by_tool
from san_search.signing import Trust

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm",
                  ".ppm"}
CHUNK = 64


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class PerturbReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0


def list_inputs(source: Path) -> tuple[Path, list[Path]]:
    """(root, files): one file, or every image file under a folder (sorted)."""
    if source.is_file():
        return source.parent, [source]
    if not source.is_dir():
        raise EnsembleError(f"--input {source}: no such file or folder")
    files = sorted(p for p in source.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        raise EnsembleError(f"--input {source}: no image files ({kinds})")
    return source, files


PERTURBED = OutputKind("perturb output", EnsembleError)


def check_paths(source: Path, output: Path) -> None:
    """Refuse an --output that is, contains or lies inside --input (symlinks resolved), so
    the originals can never be replaced or read back as input."""
    src, out = source.resolve(), output.resolve()
    if out == src or out.is_relative_to(src) or src.is_relative_to(out):
        where = ("is" if out == src else "lies inside" if out.is_relative_to(src)
                 else "contains")
        raise EnsembleError(f"--output {output} {where} --input {source} (resolved: {out} "
                            f"and {src}); pick an output folder outside the input")


def check_output_folder(out: Path, overwrite: bool) -> None:
    """A new or empty folder, or (with `overwrite`) one an earlier perturb run wrote."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise EnsembleError(f"--output {out} is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise EnsembleError(f"--output {out} is not empty: pick an empty folder or pass "
                            "--overwrite")
    if not written_by_tool(out, PERTURBED):
        raise EnsembleError(refusal(out, PERTURBED))


def destination(p: Path, root: Path, out: Path, claimed: dict[Path, Path]
                ) -> tuple[Path | None, str]:
    """Where input `p`'s PNG goes, or None and why not: of two inputs with one output name
    (`a.jpg`, `a.png`) the first keeps it, and a subfolder of `--output` that is a symbolic
    link out of it is not followed (it could lead anywhere, the input included)."""
    dst = out / p.relative_to(root).with_suffix(".png")
    if dst in claimed:
        return None, f"same output {dst} as {claimed[dst]}"
    if not dst.parent.resolve().is_relative_to(out.resolve()):
        return None, f"its output {dst} would leave --output {out} through a symbolic link"
    claimed[dst] = p
    return dst, ""


def perturb_files(ensemble: str | Path, source: str | Path, output: str | Path, *,
                  policy: str | None = None, backend: str = "torch", overwrite: bool = False,
                  trust: Trust = None, progress: Callable[[str], None] = stderr
                  ) -> PerturbReport:
    """Perturb every image under `source` into `output`; see the module docstring for what
    `overwrite` may replace and what `trust` (a public key file) checks."""
    from san_search.data.preprocess import Settings, decode_file
    from san_search.ensemble.serving import load_ensemble

    out = Path(output)
    check_paths(Path(source), out)  # before anything is read
    check_output_folder(out, overwrite)
    # verifies the signature (with a trust key), then the hashes, before loading any member
    ens = load_ensemble(ensemble, backend, policy, trust=trust, notice=progress)
    if ens.signature.state == "verified":
        progress(f"signature verified: {ensemble} was signed by trusted key "
                 f"{ens.signature.key_fingerprint}")
    root, files = list_inputs(Path(source))
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, PERTURBED)
    pre = ens.manifest["preprocessing"]
    settings = Settings(size=int(pre["size"]), crop=float(pre.get("crop") or 1.0),
                        detect=bool(pre.get("detect")))
    from PIL import Image

    report = PerturbReport()
    t0 = time.perf_counter()
    side = settings.size
    claimed: dict[Path, Path] = {}
    for start in range(0, len(files), CHUNK):
        batch, faces = [], []
        for p in files[start : start + CHUNK]:
            dst, why = destination(p, root, out, claimed)
            if dst is None:
                report.skipped.append((p, why))
                progress(f"skipped {p}: {why}")
                continue
            dec = decode_file(p, settings)
            if dec.error is not None or dec.pixels is None:
                report.skipped.append((p, dec.error or "unreadable"))
                progress(f"skipped {p}: {dec.error}")
                continue
            batch.append(dst)
            faces.append(np.frombuffer(dec.pixels, np.uint8).reshape(side, side))
        if faces:
            y = ens.runtime.perturb(np.stack(faces))
            for dst, img in zip(batch, y, strict=True):
                dst.parent.mkdir(parents=True, exist_ok=True)
                png = io.BytesIO()
                Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(
                    png, format="PNG")
                write_atomic(dst, png.getvalue())
                report.written.append(dst)
        done = min(start + CHUNK, len(files))
        rate = len(report.written) / max(time.perf_counter() - t0, 1e-9)
        progress(f"perturbed {done}/{len(files)} ({len(report.written)} written, "
                 f"{len(report.skipped)} skipped, {rate:.0f} images/s)")
    report.seconds = time.perf_counter() - t0
    return report
