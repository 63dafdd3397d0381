"""Readers for raw face collections: LFW, CelebA and CSV manifests, into labelled records.

Each reader only lists files and labels; decoding happens later, in parallel
(`san_search.data.preprocess`). Records without a usable label become rejections, never
silent drops.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from san_search.errors import DataError

FEMALE, MALE = 0, 1
FORMATS = ("lfw", "celeba", "manifest")

# Images in these formats are already aligned: a fixed centred crop of this fraction of the
# shorter side frames the face. LFW's deep-funneled faces are about 110 px wide in a 250 px
# image; CelebA's aligned faces fill most of the 178 px width.
DEFAULT_CROP = {"lfw": 0.5, "celeba": 0.75, "manifest": 1.0}


@dataclass(frozen=True)
class Record:
    """One raw image with its labels. `path` is absolute; `source` is relative to the root."""

    path: Path
    source: str
    identity: str
    gender: int
    group: str | None = None  # a manifest's `group` column, when it has one


@dataclass(frozen=True)
class Rejection:
    """One image left out of the dataset, and why."""

    source: str
    reason: str


@dataclass
class Listing:
    """What a reader found: usable records and the rejected ones."""

    records: list[Record]
    rejected: list[Rejection]
    duplicates: int = 0  # repeated rows of one image, dropped


def _require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{what} not found: {path}")
    if not path.is_dir():
        raise DataError(f"{what} is not a folder: {path}")


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")


def _read_lines(path: Path) -> list[str]:
    # LFW's gender lists are published with CRLF line endings; splitlines handles both.
    return [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]


def list_lfw(root: Path) -> Listing:
    """List an LFW tree: `<root>/<images>/<Name>/<Name>_NNNN.jpg` + `male_names.txt` /
    `female_names.txt` (one image file name per line).

    The image folder is `lfw-deepfunneled`, `lfw_funneled` or `lfw` under the root, or the root
    itself when it holds the per-person folders. An image named in both gender lists or in
    neither is rejected with that reason.
    """
    _require_dir(root, "LFW root")
    male_file, female_file = root / "male_names.txt", root / "female_names.txt"
    _require_file(male_file, "LFW gender list male_names.txt")
    _require_file(female_file, "LFW gender list female_names.txt")
    males, females = set(_read_lines(male_file)), set(_read_lines(female_file))
    image_root = next(
        (root / d for d in ("lfw-deepfunneled", "lfw_funneled", "lfw") if (root / d).is_dir()),
        root,
    )
    records: list[Record] = []
    rejected: list[Rejection] = []
    person_dirs = sorted(p for p in image_root.iterdir() if p.is_dir())
    if not person_dirs:
        raise DataError(
            f"no per-person folders in {image_root}: expected <Name>/<Name>_0001.jpg "
            "(the standard LFW layout)"
        )
    for person in person_dirs:
        for img in sorted(person.iterdir()):
            if not img.is_file() or img.suffix.lower() not in {".jpg", ".jpeg", ".png"}:
                continue
            source = str(img.relative_to(root))
            is_m, is_f = img.name in males, img.name in females
            if is_m and is_f:
                rejected.append(Rejection(source, "gender label conflict: in both gender lists"))
            elif not (is_m or is_f):
                rejected.append(Rejection(source, "no gender label"))
            else:
                records.append(Record(img, source, person.name, MALE if is_m else FEMALE))
    return Listing(records, rejected)


def _read_celeba_table(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Read a CelebA annotation file: optional count line, optional header, then rows."""
    header: list[str] = []
    rows: dict[str, list[str]] = {}
    for i, line in enumerate(_read_lines(path)):
        parts = line.split()
        if i == 0 and len(parts) == 1 and parts[0].isdigit():
            continue  # the image count line of list_attr_celeba.txt
        if not header and not parts[0].lower().endswith((".jpg", ".png")):
            header = parts
            continue
        rows[parts[0]] = parts[1:]
    return header, rows


def list_celeba(root: Path) -> Listing:
    """List CelebA's aligned release: `img_align_celeba/*.jpg`, `list_attr_celeba.txt` (the `Male`
    column, 1 / -1) and `identity_CelebA.txt` (file name, identity id)."""
    _require_dir(root, "CelebA root")
    image_root = root / "img_align_celeba"
    _require_dir(image_root, "CelebA image folder img_align_celeba")
    attr_file, id_file = root / "list_attr_celeba.txt", root / "identity_CelebA.txt"
    _require_file(attr_file, "CelebA attribute file list_attr_celeba.txt")
    _require_file(id_file, "CelebA identity file identity_CelebA.txt")
    header, attrs = _read_celeba_table(attr_file)
    if "Male" not in header:
        raise DataError(f"{attr_file}: no 'Male' column in the header line (found {header[:5]}...)")
    male_col = header.index("Male")
    _, ids = _read_celeba_table(id_file)
    records: list[Record] = []
    rejected: list[Rejection] = []
    for img in sorted(image_root.iterdir()):
        if not img.is_file() or img.suffix.lower() not in {".jpg", ".jpeg", ".png"}:
            continue
        source = str(img.relative_to(root))
        identity = ids.get(img.name)
        row = attrs.get(img.name)
        if identity is None:
            rejected.append(Rejection(source, "no identity label"))
        elif row is None or len(row) <= male_col or row[male_col] not in {"1", "-1"}:
            rejected.append(Rejection(source, "no gender label"))
        else:
            gender = MALE if row[male_col] == "1" else FEMALE
            records.append(Record(img, source, f"celeba_{identity[0]}", gender))
    return Listing(records, rejected)


_GENDER_CODES = {"m": MALE, "male": MALE, "1": MALE, "f": FEMALE, "female": FEMALE, "0": FEMALE}


@dataclass(frozen=True)
class _Row:
    """One labelled manifest row whose path resolves inside the manifest's folder."""

    line: int
    source: str
    path: Path  # resolved
    identity: str
    gender: int
    group: str | None = None


def _read_manifest_text(csv_path: Path) -> str:
    """The manifest's text; bytes that are not UTF-8 are a DataError naming the offset."""
    raw = csv_path.read_bytes()
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + skip
        raise DataError(
            f"{csv_path} is not UTF-8 text: byte 0x{raw[offset]:02x} at offset {offset}; "
            "save it as UTF-8 CSV with the columns path,identity,gender"
        ) from None


def _manifest_rows(csv_path: Path, rejected: list[Rejection]) -> list[_Row]:
    """Parse the manifest: labelled rows inside its folder; every other row is rejected."""
    base = csv_path.parent.resolve()
    reader = csv.DictReader(io.StringIO(_read_manifest_text(csv_path), newline=""))
    missing = {"path", "identity", "gender"} - set(reader.fieldnames or [])
    if missing:
        raise DataError(
            f"{csv_path}: missing column(s) {sorted(missing)}; "
            f"the header must name path,identity,gender (found {reader.fieldnames})"
        )
    rows: list[_Row] = []
    for line_no, row in enumerate(reader, start=2):
        rel = (row["path"] or "").strip()
        if not rel:
            rejected.append(Rejection(f"{csv_path.name}:{line_no}", "empty path"))
            continue
        identity = (row["identity"] or "").strip()
        code = (row["gender"] or "").strip().lower()
        try:
            target = (base / rel).resolve()  # symlinks and '..' followed before the check
        except (OSError, RuntimeError, ValueError) as exc:  # NUL byte, symlink loop
            rejected.append(Rejection(rel, f"unresolvable path: {exc} (line {line_no})"))
            continue
        if not target.is_relative_to(base):
            rejected.append(Rejection(rel, f"path outside the manifest's folder: resolves to "
                                           f"{target} (line {line_no})"))
        elif not identity:
            rejected.append(Rejection(rel, f"no identity label (line {line_no})"))
        elif code not in _GENDER_CODES:
            why = "no gender label" if not code else f"unknown gender label {code!r}"
            rejected.append(Rejection(rel, f"{why} (line {line_no}; use M/F or 1/0)"))
        else:
            group = (row.get("group") or "").strip() or None
            rows.append(_Row(line_no, rel, target, identity, _GENDER_CODES[code], group))
    return rows


def _listed_as(values: list[str]) -> str:
    return ", ".join(values[:-1]) + f" and {values[-1]}"


def _dedupe(rows: list[_Row], rejected: list[Rejection]) -> tuple[list[Record], int]:
    """One record per image file: repeated rows are dropped (counted); a file listed under
    two identities or two genders is rejected, every row of it."""
    by_path: dict[Path, list[_Row]] = {}
    for r in rows:
        by_path.setdefault(r.path, []).append(r)
    records: list[Record] = []
    duplicates = 0
    for group in by_path.values():
        identities = sorted({r.identity for r in group})
        genders = sorted({"M" if r.gender == MALE else "F" for r in group})
        if len(identities) > 1:
            why = "identity conflict: the same image is listed as " + _listed_as(
                [repr(i) for i in identities])
        elif len(genders) > 1:
            why = "gender conflict: the same image is listed as " + _listed_as(genders)
        else:
            first = group[0]
            records.append(Record(first.path, first.source, first.identity, first.gender,
                                  first.group))
            duplicates += len(group) - 1
            continue
        rejected.extend(Rejection(r.source, f"{why} (line {r.line})") for r in group)
    return records, duplicates


def list_manifest(root: Path) -> Listing:
    """List a CSV manifest with columns `path,identity,gender` (gender M/F or 1/0), and an
    optional `group` (any names; an empty cell is no group); paths are
    relative to the CSV's folder. `root` is the CSV file, or a folder holding `manifest.csv`.

    A path that resolves outside that folder (``..``, absolute, or through a symlink) is
    rejected; repeated rows of one file are dropped and counted in `Listing.duplicates`.
    """
    csv_path = root / "manifest.csv" if root.is_dir() else root
    _require_file(csv_path, "manifest CSV")
    rejected: list[Rejection] = []
    try:
        rows = _manifest_rows(csv_path, rejected)
    except csv.Error as exc:
        raise DataError(f"{csv_path}: not a readable CSV file: {exc}") from None
    records, duplicates = _dedupe(rows, rejected)
    return Listing(records, rejected, duplicates)


READERS: dict[str, Callable[[Path], Listing]] = {
    "lfw": list_lfw,
    "celeba": list_celeba,
    "manifest": list_manifest,
}


def list_records(fmt: str, root: Path) -> Listing:
    """Dispatch to the reader of `fmt`; an unknown format names the known ones."""
    if fmt not in READERS:
        raise DataError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return READERS[fmt](Path(root))
