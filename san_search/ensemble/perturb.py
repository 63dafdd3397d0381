"""`san-search perturb`: an exported ensemble applied to image files, the batch driver.

Whole photos (the default): each photo's faces are found, cut as `data prepare` cut the
ensemble's training faces, perturbed, and pasted back into the photo at its full size; the
photo is written under the output folder with its relative path and name (`a/b.jpg` ->
`a/b.jpg`), in its own format (JPEG at quality 95, PNG; other formats as PNG). How faces are
found, framed and pasted back (colour for a colour ensemble on a colour photo; luminance only
for a gray ensemble, or for a gray photo) is `san_search.ensemble.photos`.
`report.csv` in the output folder has one row per input file: its path, status (`written`,
`no face found`, `unreadable: why`, `skipped: why`), the number of faces, their boxes
`x,y,w,h;...` (the only pixels that may change) and the member that perturbed each face
(random policy; blank for chain). `--sheet` adds a before/after contact sheet of the first
`SHEET_PHOTOS` photos written. The same inputs and seed give the same bytes.

`crops_only`: what perturb wrote before whole photos: each file gets the preprocessing the
ensemble's dataset got in `data prepare` (its colour mode, the same crop or face detection, the
same size) and the perturbed crop is written as a PNG (`a/b.jpg` -> `a/b.png`); no report.csv.

Either way unreadable, corrupt or faceless files are reported and skipped; the rest go on.
Each file is written to a temporary name and renamed, so an interrupted run leaves only whole
files.

Safety: `--output` may not be, contain or lie inside `--input` (symlinks resolved); that is
checked before anything is read. The output folder gets the `.san-search-output` marker before
the first file. A non-empty `--output` is refused; with `--overwrite` it is accepted only if it
has the marker (an earlier perturb output), and then only the files this run writes are
replaced: every other file in it is left as is. Outputs of san-search 0.1 have no marker and
cannot be told from a folder of photos, so they are refused too. Within a run, no file is
written twice (two inputs with one output name: the first is kept, the other reported) or
through a symbolic link that leads out of `--output`.

Trust: with `--trust PUBKEY` (or `$SAN_SEARCH_TRUST_KEY`) the ensemble's signed manifest is
checked before anything else of it is read (`san_search.ensemble.signing`); an unsigned ensemble
still runs, with a notice.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from san_search.atomic import write_atomic
from san_search.ensemble.signing import Trust
from san_search.errors import EnsembleError
from san_search.outputs import OutputKind, refusal, write_marker, written_by_tool

if TYPE_CHECKING:
    from PIL import Image

    from san_search.ensemble.photos import Framing, Photo, Square
    from san_search.ensemble.serving import LoadedEnsemble

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm",
                  ".ppm"}
CHUNK = 64
PHOTO_PIXELS = 50_000_000  # photo pixels held at once, at most (RGB: about 150 MB)
SHEET_PHOTOS = 8
REPORT = "report.csv"
NO_FACE = "no face found"
GRAY_NOTE = ("note: this ensemble works on grayscale faces; in colour photos only the faces' "
             "luminance (Y of YCbCr) changes, their colour (Cb, Cr) is kept")
RGB_ON_GRAY_NOTE = ("note: this ensemble works on colour faces; gray photos are perturbed as "
                    "their gray repeated to RGB, and only the result's luminance is kept")


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Row:
    """One input file's line of report.csv."""

    path: str
    status: str
    faces: int = 0
    boxes: str = ""
    members: str = ""


@dataclass
class PerturbReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    rows: list[Row] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status.split(":")[0] == status for r in self.rows)

    def summary(self) -> str:
        text = (f"{len(self.written)} written, {self.count(NO_FACE)} no face found, "
                f"{self.count('unreadable')} unreadable")
        skipped = self.count("skipped")
        return text + (f", {skipped} skipped" if skipped else "")

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


def check_sheet(sheet: Path, source: Path, output: Path, overwrite: bool) -> None:
    """The contact sheet may not land inside --input, nor replace a file this tool did not
    write: an existing sheet is replaced only with --overwrite and inside --output (whose
    marker says it is ours); anywhere else it could be anyone's file."""
    if sheet.resolve().is_relative_to(source.resolve()):
        raise EnsembleError(f"--sheet {sheet} lies inside --input {source}; pick a path "
                            "outside the input")
    ours = sheet.resolve().is_relative_to(output.resolve())
    if sheet.exists() and not (overwrite and ours and sheet.is_file()):
        raise EnsembleError(f"--sheet {sheet} exists: pick a new path (--overwrite replaces "
                            "a sheet only inside --output)")


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


def as_png(relative: Path) -> Path:
    return relative.with_suffix(".png")


def destination(p: Path, root: Path, out: Path, claimed: dict[Path, Path],
                name: Callable[[Path], Path] = as_png) -> tuple[Path | None, str]:
    """Where input `p`'s output goes (`name` of its path relative to `root`), or None and why
    not: of two inputs with one output name (`a.jpg`, `a.png` as crops) the first keeps it,
    and a subfolder of `--output` that is a symbolic link out of it is not followed (it could
    lead anywhere, the input included)."""
    dst = out / name(p.relative_to(root))
    if dst in claimed:
        return None, f"same output {dst} as {claimed[dst]}"
    if not dst.parent.resolve().is_relative_to(out.resolve()):
        return None, f"its output {dst} would leave --output {out} through a symbolic link"
    claimed[dst] = p
    return dst, ""


def perturb_files(ensemble: str | Path, source: str | Path, output: str | Path, *,
                  policy: str | None = None, backend: str = "torch", overwrite: bool = False,
                  trust: Trust = None, progress: Callable[[str], None] = stderr,
                  crops_only: bool = False, aligned: bool = False, faces: str = "all",
                  sheet: str | Path | None = None, allow_unsigned: bool = False
                  ) -> PerturbReport:
    """Perturb every image under `source` into `output`: whole photos, or with `crops_only`
    the crops as PNGs; `aligned`, `faces` and `sheet` as in `ensemble.photos` and the module
    docstring, which also says what `overwrite` may replace and what `trust` (a public key
    file) checks."""
    from san_search.ensemble.photos import Framing
    from san_search.ensemble.serving import load_ensemble

    out = Path(output)
    check_paths(Path(source), out)  # before anything is read
    check_output_folder(out, overwrite)
    if crops_only and (aligned or sheet is not None or faces != "all"):
        raise EnsembleError("--crops-only writes the crops as data prepare made them: "
                            "--aligned, --faces and --sheet do not apply to it")
    if sheet is not None:
        check_sheet(Path(sheet), Path(source), Path(output), overwrite)
    # verifies the signature (with a trust key), then the hashes, before loading any member
    ens = load_ensemble(ensemble, backend, policy, trust=trust, notice=progress,
                        allow_unsigned=allow_unsigned)
    if ens.signature.state == "verified":
        progress(f"signature verified: {ensemble} was signed by trusted key "
                 f"{ens.signature.key_fingerprint}")
    framing = Framing.of(ens.manifest["preprocessing"], aligned=aligned, faces=faces)
    root, files = list_inputs(Path(source))
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, PERTURBED)
    report = PerturbReport()
    t0 = time.perf_counter()
    if crops_only:
        _run_crops(ens, root, files, out, report, progress)
    else:
        pairs = _run_photos(ens, root, files, out, framing, report, progress)
        write_atomic(out / REPORT, report_csv(report.rows))
        if sheet is not None and pairs:
            from san_search.ensemble.photos import contact_sheet

            write_atomic(Path(sheet), contact_sheet(pairs))
        progress(f"summary: {report.summary()}")
    report.seconds = time.perf_counter() - t0
    return report


def _run_crops(ens: LoadedEnsemble, root: Path, files: list[Path], out: Path,
               report: PerturbReport, progress: Callable[[str], None]) -> None:
    """The crops as PNGs, as `data prepare` would have made them, perturbed."""
    from PIL import Image

    from san_search.data.preprocess import Settings, decode_file

    pre = ens.manifest["preprocessing"]
    settings = Settings(size=int(pre["size"]), crop=float(pre.get("crop") or 1.0),
                        detect=bool(pre.get("detect")), color=ens.color)
    t0 = time.perf_counter()
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
            faces.append(np.frombuffer(dec.pixels, np.uint8).reshape(ens.face_shape))
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


@dataclass
class _Pending:
    """A photo with faces, waiting for the ensemble."""

    src: Path
    dst: Path
    fmt: str
    photo: Photo
    squares: list[Square]
    first: int = 0  # index of its first face in the batch


def _skip(report: PerturbReport, p: Path, root: Path, status: str,
          progress: Callable[[str], None]) -> None:
    report.skipped.append((p, status.split(": ", 1)[-1]))
    report.rows.append(Row(p.relative_to(root).as_posix(), status))
    progress(f"skipped {p}: {status}")


def _prepare(p: Path, root: Path, out: Path, claimed: dict[Path, Path], framing: Framing,
             report: PerturbReport, progress: Callable[[str], None]
             ) -> tuple[_Pending, np.ndarray] | None:
    """Read one photo and cut its faces; None (and a report row) when it has none."""
    from san_search.data.preprocess import to_gray
    from san_search.ensemble.photos import face_crops, find_squares, load_photo, output_name

    dst, why = destination(p, root, out, claimed, lambda rel: output_name(rel)[0])
    if dst is None:
        _skip(report, p, root, f"skipped: {why}", progress)
        return None
    photo = load_photo(p)
    try:
        gray = to_gray(photo.image) if photo.image is not None else None
        source = framing.face_source(photo.image) if photo.image is not None else None
    except Exception as exc:  # noqa: BLE001 - an unconvertible mode is this file's problem
        gray, source, photo.error = None, None, str(exc)
    if gray is None or source is None:
        _skip(report, p, root, f"unreadable: {photo.error}", progress)
        return None
    squares = find_squares(gray, framing)
    if not squares:
        _skip(report, p, root, NO_FACE, progress)
        return None
    item = _Pending(p, dst, output_name(dst)[1], photo, squares)
    return item, face_crops(source, squares, framing.size)


def _run_photos(ens: LoadedEnsemble, root: Path, files: list[Path], out: Path,
                framing: Framing, report: PerturbReport, progress: Callable[[str], None]
                ) -> list[tuple[Image.Image, Image.Image]]:
    """Whole photos with their faces perturbed; returns the contact sheet's thumbnails.
    Photos are held until `CHUNK` of them or `PHOTO_PIXELS` pixels wait, then their faces go
    through the ensemble in one batch (small batches cost the ensemble most of its time)."""
    from san_search.ensemble.photos import is_colour

    claimed: dict[Path, Path] = {}
    pairs: list[tuple[Image.Image, Image.Image]] = []
    pending: list[_Pending] = []
    crops: list[np.ndarray] = []
    told: set[str] = set()
    t0 = time.perf_counter()
    for done, p in enumerate(files, 1):
        got = _prepare(p, root, out, claimed, framing, report, progress)
        if got is not None:
            item, faces = got
            assert item.photo.image is not None
            note = _note(framing.color, is_colour(item.photo.image))
            if note and note not in told:
                progress(note)
                told.add(note)
            item.first = sum(len(c) for c in crops)
            pending.append(item)
            crops.append(faces)
        held = sum(i.photo.image.width * i.photo.image.height for i in pending
                   if i.photo.image is not None)
        if pending and (len(pending) >= CHUNK or held >= PHOTO_PIXELS or done == len(files)):
            x = np.concatenate(crops)
            y, members = ens.runtime.perturb(x), _members(ens, x)
            for item in pending:
                _finish(item, root, y, members, report, pairs)
            pending, crops = [], []
        if len(files) > 1 and (done % CHUNK == 0 or done == len(files)):
            rate = len(report.written) / max(time.perf_counter() - t0, 1e-9)
            progress(f"perturbed {done}/{len(files)} photos ({report.summary()}; "
                     f"{rate:.1f} photos/s)")
    return pairs


def _note(ensemble_color: str, colour_photo: bool) -> str:
    """The one-time note for a photo whose colour the ensemble does not take ('' if none)."""
    if ensemble_color == "gray" and colour_photo:
        return GRAY_NOTE
    if ensemble_color == "rgb" and not colour_photo:
        return RGB_ON_GRAY_NOTE
    return ""


def _members(ens: LoadedEnsemble, faces: np.ndarray) -> list[str]:
    """The member that perturbed each face: the random policy's choice; blank for chain."""
    if ens.runtime.policy != "random":
        return [""] * len(faces)
    names = [str(m.get("name", i)) for i, m in enumerate(ens.manifest["members"])]
    return [names[j] for j in ens.runtime.assignment(faces)]


def _finish(item: _Pending, root: Path, y: np.ndarray, members: list[str],
            report: PerturbReport, pairs: list[tuple[Image.Image, Image.Image]]) -> None:
    """Paste the faces back, write the photo and its report row."""
    from san_search.ensemble.photos import encode, paste_faces, thumbnail

    before = item.photo.image
    assert before is not None
    n = len(item.squares)
    after = paste_faces(before, item.squares, y[item.first : item.first + n])
    item.dst.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(item.dst, encode(after, item.fmt, item.photo.icc))
    report.written.append(item.dst)
    boxes = ";".join(",".join(map(str, s.box(*before.size))) for s in item.squares)
    report.rows.append(Row(item.src.relative_to(root).as_posix(), "written", n, boxes,
                           ";".join(members[item.first : item.first + n])))
    if len(pairs) < SHEET_PHOTOS:
        pairs.append((thumbnail(before), thumbnail(after)))


def report_csv(rows: list[Row]) -> str:
    """report.csv's text: a header and one row per input file, in input order."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "status", "faces", "boxes", "members"])
    for r in sorted(rows, key=lambda r: r.path):
        w.writerow([r.path, r.status, r.faces, r.boxes, r.members])
    return buf.getvalue()
