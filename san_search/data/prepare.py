"""`data prepare`: raw face images → a prepared dataset (splits, pairs, prototypes, summary).

Also the shared back half, `build_dataset`, that turns labelled face arrays (decoded or
synthetic) into the on-disk format of `san_search.data.store`.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from san_search import __version__
from san_search.data.groups import GROUPS, group_sizes, identity_groups
from san_search.data.ingest import DEFAULT_CROP, FORMATS, Listing, Record, Rejection, list_records
from san_search.data.preprocess import Settings, decode_many
from san_search.data.splits import SPLITS, cap_per_identity, make_pairs, split_identities
from san_search.data.store import (
    GENDER_NAMES,
    SCHEMA_VERSION,
    SplitRows,
    check_output,
    fingerprint,
    write_dataset,
)
from san_search.errors import DataError
from san_search.images import COLORS, color_of_images

Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BuildOptions:
    """Settings of the split and pair stages, shared by `prepare` and `synth`."""

    seed: int = 0
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    pairs: int = 3000  # genuine pairs per val/test split (as many impostor pairs again)


def check_size(size: int) -> None:
    if not isinstance(size, int) or size <= 0 or size % 2:
        raise DataError(f"--size must be a positive even number of pixels, got {size!r}")


def build_dataset(
    out: Path,
    images: np.ndarray,
    identity: list[str],
    gender: np.ndarray,
    source_path: list[str],
    raw_hashes: list[str],
    *,
    settings: dict[str, Any],
    options: BuildOptions,
    rejected: list[Rejection],
    overwrite: bool = False,
    extra_info: dict[str, Any] | None = None,
    groups: GroupColumns | None = None,
) -> dict[str, Any]:
    """Split, pair, compute prototypes and write the dataset atomically. Returns dataset.json.
    `images` are (N, S, S) gray or (N, S, S, 3) rgb; dataset.json records which as `color`
    (a hashed setting), and the prototypes have the images' shape. `groups`: each image's
    skin-tone group and ITA (none: a dataset without groups)."""
    gender = np.asarray(gender, dtype=np.int8)
    settings = {**settings, "color": color_of_images(images)}
    rows = _split_rows(images, identity, gender, source_path, options, groups)
    train = rows["train"]
    prototypes = {
        GENDER_NAMES[g]: (train.images[train.gender == g].astype(np.float64).mean(axis=0) / 255.0)
        .astype(np.float32)
        for g in (0, 1)
    }
    full_settings = {
        **settings,
        "seed": options.seed,
        "fractions": list(options.fractions),
        "pairs": options.pairs,
    }
    info: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "san_search_version": __version__,
        **full_settings,
        "counts": {split: _counts(rows[split]) for split in SPLITS},
        "rejected": dict(Counter(_reason_kind(r.reason) for r in rejected)),
        "fingerprint": fingerprint(full_settings, rows, raw_hashes),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra_info or {}),
    }
    if groups is not None and any(g is not None for g in groups.group):
        info["groups"] = {"source": groups.source,
                          "sizes": {split: group_sizes(rows[split].group or [],
                                                       rows[split].gender)
                                    for split in SPLITS}}
    write_dataset(out, rows, prototypes, info, rejected, overwrite=overwrite)
    return info


@dataclass(frozen=True)
class GroupColumns:
    """Each image's skin-tone group (None: unknown) and ITA (nan: unmeasured), and where the
    groups came from: `ita` (binned, `data.groups`) or `manifest` (its `group` column)."""

    group: list[str | None]
    ita: np.ndarray
    source: str


def _split_rows(images: np.ndarray, identity: list[str], gender: np.ndarray,
                source_path: list[str], options: BuildOptions,
                groups: GroupColumns | None = None) -> dict[str, SplitRows]:
    """Assign identities to splits, order each split's rows and draw its verification pairs."""
    names = sorted(set(identity))
    code = {n: i for i, n in enumerate(names)}
    ident = np.array([code[n] for n in identity], dtype=np.int64)
    assignment = split_identities(ident, gender, options.fractions, options.seed)

    # Rows of a split ordered by (identity name, source path): stable across runs.
    order = sorted(range(len(identity)), key=lambda i: (identity[i], source_path[i]))
    split_of_row = np.array([assignment[int(ident[i])] for i in range(len(identity))])
    # identity_index: train identities first (0..n_train-1, a class label), then val, test.
    index_of: dict[str, int] = {}
    for split in SPLITS:
        for n in names:
            if assignment[code[n]] == split:
                index_of[n] = len(index_of)
    rows: dict[str, SplitRows] = {}
    for k, split in enumerate(SPLITS):
        sel = [i for i in order if split_of_row[i] == split]
        sel_ids = np.array([ident[i] for i in sel], dtype=np.int64)
        pairs = (
            make_pairs(sel_ids, options.pairs, options.seed + 101 * (k + 1))
            if split != "train"
            else None
        )
        rows[split] = SplitRows(
            images=images[sel] if sel else np.zeros((0, *images.shape[1:]), np.uint8),
            identity=[identity[i] for i in sel],
            identity_index=np.array([index_of[identity[i]] for i in sel], dtype=np.int32),
            gender=gender[sel] if sel else np.zeros(0, np.int8),
            source_path=[source_path[i] for i in sel],
            pairs=pairs,
            group=None if groups is None else [groups.group[i] for i in sel],
            ita=None if groups is None else np.asarray(groups.ita, np.float64)[sel],
        )
    return rows


def _counts(r: SplitRows) -> dict[str, Any]:
    """One split's counts for dataset.json: images and identities (per gender too), pairs."""
    ids_by_gender = {g: {n for n, gg in zip(r.identity, r.gender, strict=True) if gg == g}
                     for g in (0, 1)}
    return {
        "images": len(r.identity),
        "identities": len(set(r.identity)),
        **{f"{GENDER_NAMES[g]}_images": int((r.gender == g).sum()) for g in (0, 1)},
        **{f"{GENDER_NAMES[g]}_identities": len(ids_by_gender[g]) for g in (0, 1)},
        "genuine_pairs": int(r.pairs.same.sum()) if r.pairs is not None else 0,
        "impostor_pairs": int((~r.pairs.same).sum()) if r.pairs is not None else 0,
    }


def _reason_kind(reason: str) -> str:
    """Group rejection reasons for the summary ('corrupt or unsupported image: ...' → prefix)."""
    return reason.split(":")[0].split(" (")[0]


def prepare(
    fmt: str,
    root: Path,
    out: Path,
    *,
    size: int = 64,
    color: str = "rgb",
    crop: float | None = None,
    detect: bool = False,
    max_per_identity: int = 20,
    options: BuildOptions | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Progress = stderr_progress,
) -> dict[str, Any]:
    """Prepare a dataset from raw images; returns the written dataset.json content. Every
    check that needs no decoding (format, size, output folder, labels, genders, identities
    with 2+ images) runs before the first image is decoded."""
    options = options or BuildOptions()
    crop = _check_settings(fmt, size, crop, max_per_identity)
    if color not in COLORS:
        raise DataError(f"--color must be one of {', '.join(COLORS)}, got {color!r}")
    out = Path(out).absolute()
    check_output(out, overwrite)
    root = Path(root).absolute()
    t0 = time.perf_counter()
    listing, records, names = _listed(fmt, root, max_per_identity, options)
    progress(
        f"found {len(listing.records)} labelled images of {len(set(names))} identities "
        f"({len(listing.rejected)} rejected, {listing.duplicates} duplicate rows dropped); "
        f"decoding {len(records)} "
        f"(at most {max_per_identity or 'all'} per identity) at {size} px {color}"
    )
    settings = Settings(size=size, crop=crop, detect=detect, color=color)
    rejected = list(listing.rejected)
    images, ok, raw_hashes, ita = _decode(records, settings, workers, rejected, progress, t0)
    kept = np.flatnonzero(ok)
    info = build_dataset(
        out,
        images[kept],
        [records[i].identity for i in kept],
        np.array([records[i].gender for i in kept], np.int8),
        [records[i].source for i in kept],
        raw_hashes,
        settings={
            "format": fmt,
            "size": size,
            "crop": None if detect else crop,
            "detect": detect,
            "max_per_identity": max_per_identity,
        },
        options=options,
        rejected=rejected,
        overwrite=overwrite,
        extra_info={"root": str(root), "seconds": round(time.perf_counter() - t0, 1),
                    "duplicates_dropped": listing.duplicates},
        groups=_groups([records[i] for i in kept], ita[kept]),
    )
    return info


def _listed(fmt: str, root: Path, max_per_identity: int, options: BuildOptions
            ) -> tuple[Listing, list[Record], np.ndarray]:
    """The listing of `root`, the records kept (at most `max_per_identity` per person,
    seeded) and every listed record's identity; refuses an empty listing, and any label
    problem that would fail the split, before the expensive decode."""
    listing = list_records(fmt, root)
    if not listing.records:
        raise DataError(
            f"no labelled images found under {root} ({len(listing.rejected)} rejected; "
            f"first: {listing.rejected[0].source}: {listing.rejected[0].reason})"
            if listing.rejected
            else f"no images found under {root}"
        )
    names = np.array([r.identity for r in listing.records])
    _, ident = np.unique(names, return_inverse=True)
    keep = cap_per_identity(ident, max_per_identity, options.seed)
    records = [listing.records[i] for i in keep]
    split_identities(
        ident[keep], np.array([r.gender for r in records], np.int8), options.fractions, options.seed
    )
    return listing, records, names


def _groups(records: list[Record], ita: np.ndarray) -> GroupColumns:
    """The group of each kept image: a manifest's `group` column when it has one, else the
    ITA bin of the identity (`identity_groups`)."""
    if any(r.group is not None for r in records):
        return GroupColumns([r.group for r in records], ita, "manifest")
    return GroupColumns(identity_groups([r.identity for r in records], ita), ita, "ita")


def _check_settings(fmt: str, size: int, crop: float | None, max_per_identity: int) -> float:
    """The checks on `prepare`'s settings; returns the crop (the format's default if None)."""
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_size(size)
    crop = DEFAULT_CROP[fmt] if crop is None else crop
    if not 0 < crop <= 1:
        raise DataError(f"--crop must be in (0, 1] (a fraction of the shorter side), got {crop}")
    if max_per_identity < 0:
        raise DataError(f"--max-per-identity must be >= 0 (0 = no cap), got {max_per_identity}")
    return crop


def _decode(records: list[Record], settings: Settings, workers: int | None,
            rejected: list[Rejection], progress: Progress, t0: float
            ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Decode every record's image: (images, which decoded, raw SHA-256 of each file, skin
    ITA of each source (nan: unmeasured)).
    Undecodable images are appended to `rejected`; progress is reported every tenth."""
    size = settings.size
    shape = (size, size, 3) if settings.color == "rgb" else (size, size)
    images = np.zeros((len(records), *shape), np.uint8)
    ok = np.zeros(len(records), bool)
    ita = np.full(len(records), np.nan)
    raw_hashes: list[str] = []
    step = max(1, len(records) // 10)
    for i, dec in enumerate(decode_many([r.path for r in records], settings, workers=workers)):
        if dec.pixels is None:
            rejected.append(Rejection(records[i].source, dec.error or "unreadable"))
        else:
            images[i] = np.frombuffer(dec.pixels, np.uint8).reshape(shape)
            ok[i] = True
            ita[i] = np.nan if dec.ita is None else dec.ita
        raw_hashes.append(dec.raw_sha256)
        if (i + 1) % step == 0 or i + 1 == len(records):
            progress(f"  decoded {i + 1}/{len(records)} ({time.perf_counter() - t0:.1f} s)")
    return images, ok, raw_hashes, ita


def summary_table(info: dict[str, Any], out: Path | None = None) -> str:
    """The terminal summary of a prepared dataset: counts per split and gender, pairs,
    rejections."""
    head = f"{'split':<6} {'identities':>10} {'images':>7} {'female':>7} {'male':>7} " \
           f"{'genuine':>8} {'impostor':>9}"
    lines = [head, "-" * len(head)]
    total = Counter[str]()
    for split in SPLITS:
        c = info["counts"][split]
        lines.append(
            f"{split:<6} {c['identities']:>10} {c['images']:>7} {c['female_images']:>7} "
            f"{c['male_images']:>7} {c['genuine_pairs']:>8} {c['impostor_pairs']:>9}"
        )
        total.update({k: v for k, v in c.items()})
    lines.append(
        f"{'all':<6} {total['identities']:>10} {total['images']:>7} {total['female_images']:>7} "
        f"{total['male_images']:>7} {total['genuine_pairs']:>8} {total['impostor_pairs']:>9}"
    )
    rej = info.get("rejected", {})
    n_rej = sum(rej.values())
    lines.append(
        f"rejected: {n_rej}"
        + (" (" + ", ".join(f"{k}: {v}" for k, v in sorted(rej.items())) + ")" if rej else "")
        + (f" -> {out / 'rejected.csv'}" if out is not None and n_rej else "")
    )
    lines += _group_lines(info)
    if info.get("duplicates_dropped"):
        lines.append(f"duplicate rows dropped: {info['duplicates_dropped']}")
    lines.append(
        f"size {info['size']} px {info.get('color', 'gray')}, seed {info['seed']}, "
        f"fingerprint {info['fingerprint'][:16]}"
    )
    return "\n".join(lines)


def _group_lines(info: dict[str, Any]) -> list[str]:
    """The summary's skin-tone group sizes (all splits, by gender), when the dataset has them."""
    groups = info.get("groups")
    if not groups:
        return ["skin-tone groups: none (no colour source or manifest group column)"]
    total: dict[str, Counter[str]] = {}
    for sizes in groups["sizes"].values():
        for g, by_gender in sizes.items():
            total.setdefault(g, Counter()).update(by_gender)
    order = [*(g for g in GROUPS if g in total), *sorted(set(total) - {*GROUPS, "none"}),
             *(["none"] if "none" in total else [])]
    cells = ", ".join(f"{g} {total[g]['female'] + total[g]['male']} ({total[g]['female']} f / "
                      f"{total[g]['male']} m)" for g in order)
    return [f"skin-tone groups ({groups['source']}): {cells}"]
