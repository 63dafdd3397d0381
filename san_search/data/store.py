"""The prepared-dataset format on disk: writing it atomically, and opening it without copying.

A prepared dataset is a folder:

- `parquet/<split>-NNNNN.parquet`: the dataset of record. Columns `image` (size*size uint8
  bytes, row-major, for `color` gray; size*size*3, R, G, B interleaved, for rgb),
  `identity` (name), `identity_index` (int32; train identities are 0..n_train-1, so it
  doubles as a class label for matchers, then val, then test), `gender` (int8, 0 = female,
  1 = male), `split`, `source_path` (relative to the input root), and `group` (string, null
  when unknown) and `ita` (float32, null when unmeasured): the image's skin-tone group
  (`san_search.data.groups`). Datasets written before these two columns open without groups.
- `arrow/<split>.arrow`: the same rows as uncompressed Arrow IPC, one record batch per split,
  memory-mapped by `open_dataset` so images are numpy views with no copy. Derived from the
  Parquet shards and rebuilt from them when missing.
- `pairs/<split>.parquet` for val and test: `a`, `b` (row positions in that split), `same`.
- `prototypes.npz`: `female`, `male` — the mean train face of each gender, float32 in [0, 1],
  (S, S) or (S, S, 3) like the images.
- `dataset.json`: settings (`color`: gray or rgb; a dataset without it is gray), counts,
  fingerprint. `rejected.csv`: every skipped input image.
- `.san-search-output`: the marker (san_search.outputs) that lets `--overwrite` replace it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from san_search import outputs
from san_search.data.ingest import Rejection
from san_search.data.splits import SPLITS, Pairs
from san_search.errors import DataError
from san_search.images import channels, color_of
from san_search.outputs import OutputKind, json_file

SCHEMA_VERSION = 1
ROWS_PER_SHARD = 4096
GENDER_NAMES = ("female", "male")


GROUP_COLUMNS = (("group", pa.string()), ("ita", pa.float32()))


def schema(size: int, channels: int = 1) -> pa.Schema:
    return pa.schema(
        [
            ("image", pa.binary(size * size * channels)),
            ("identity", pa.string()),
            ("identity_index", pa.int32()),
            ("gender", pa.int8()),
            ("split", pa.string()),
            ("source_path", pa.string()),
            *GROUP_COLUMNS,
        ]
    )


@dataclass
class SplitRows:
    """All rows of one split, in memory, ready to write."""

    images: np.ndarray  # (N, S, S) or (N, S, S, 3) uint8
    identity: list[str]
    identity_index: np.ndarray  # (N,) int32
    gender: np.ndarray  # (N,) int8
    source_path: list[str]
    pairs: Pairs | None = None
    group: list[str | None] | None = None  # skin-tone group per row (None: unknown)
    ita: np.ndarray | None = None  # (N,) float, nan where unmeasured

    def table(self, split: str) -> pa.Table:
        n, s = self.images.shape[:2]
        c = self.images.shape[3] if self.images.ndim == 4 else 1
        flat = np.ascontiguousarray(self.images).reshape(-1)
        image = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(s * s * c), n, [None, pa.py_buffer(flat)]
        )
        return pa.Table.from_arrays(
            [
                image,
                pa.array(self.identity, pa.string()),
                pa.array(self.identity_index, pa.int32()),
                pa.array(self.gender, pa.int8()),
                pa.array([split] * n, pa.string()),
                pa.array(self.source_path, pa.string()),
                *self._group_arrays(n),
            ],
            schema=schema(s, c),
        )


    def _group_arrays(self, n: int) -> list[pa.Array]:
        group = self.group if self.group is not None else [None] * n
        ita = np.full(n, np.nan) if self.ita is None else np.asarray(self.ita, np.float64)
        return [pa.array(group, pa.string()),
                pa.array(ita.astype(np.float32), pa.float32(), mask=np.isnan(ita))]


def fingerprint(settings: dict[str, Any], splits: dict[str, SplitRows], raw: list[str]) -> str:
    """SHA-256 over the settings, every row's content and the input files' own hashes.

    The same input and settings give the same value on any machine; changing a pixel, a
    label, a setting or an input file changes it. Parquet file bytes are not hashed: they
    carry writer versions that say nothing about the data.
    """
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True).encode())
    for split in SPLITS:
        rows = splits[split]
        h.update(split.encode())
        h.update(np.ascontiguousarray(rows.images).tobytes())
        h.update("\n".join(rows.identity).encode())
        h.update(rows.gender.astype(np.int8).tobytes())
        h.update("\n".join(rows.source_path).encode())
        if rows.pairs is not None:
            for arr in (rows.pairs.a, rows.pairs.b, rows.pairs.same):
                h.update(np.ascontiguousarray(arr).tobytes())
        if rows.group is not None and any(g is not None for g in rows.group):
            # only when groups exist, so a dataset without them keeps its fingerprint
            h.update("\n".join(g or "" for g in rows.group).encode())
    h.update("\n".join(sorted(raw)).encode())
    return h.hexdigest()


def _is_legacy_dataset(folder: Path) -> bool:
    """A prepared dataset written by san-search 0.1 (no marker): its dataset.json."""
    info = json_file(folder / "dataset.json")
    return info is not None and "schema_version" in info and "fingerprint" in info


DATASET = OutputKind("prepared dataset", DataError, _is_legacy_dataset,
                     "dataset.json (with schema_version and fingerprint)")
SYNTH_FILES = OutputKind("synthetic face files", DataError)  # 0.1's look like a user's files


def check_output(out: Path, overwrite: bool, kind: OutputKind = DATASET) -> None:
    """Fail before any work when `out` exists and may not be replaced: `--overwrite`
    replaces only a folder with san-search's marker (or a 0.1 dataset's dataset.json)."""
    outputs.check_output(out, overwrite, kind)


def atomic_folder(out: Path, overwrite: bool, kind: OutputKind = DATASET
                  ) -> AbstractContextManager[Path]:
    """`outputs.atomic_folder` for a dataset folder (the default kind)."""
    return outputs.atomic_folder(out, overwrite, kind)


def _write_arrow(table: pa.Table, path: Path) -> None:
    """Write `table` as one uncompressed record batch, so a reader maps it as one chunk."""
    table = table.combine_chunks()
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def write_dataset(
    out: Path,
    splits: dict[str, SplitRows],
    prototypes: dict[str, np.ndarray],
    info: dict[str, Any],
    rejected: list[Rejection],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a prepared dataset folder atomically; returns its path."""
    out = Path(out).absolute()
    with atomic_folder(out, overwrite) as tmp:
        (tmp / "parquet").mkdir()
        (tmp / "arrow").mkdir()
        (tmp / "pairs").mkdir()
        for split in SPLITS:
            table = splits[split].table(split)
            for k, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_SHARD)):
                pq.write_table(
                    table.slice(start, ROWS_PER_SHARD),
                    tmp / "parquet" / f"{split}-{k:05d}.parquet",
                    compression="zstd",
                )
            _write_arrow(table, tmp / "arrow" / f"{split}.arrow")
            pairs = splits[split].pairs
            if pairs is not None:
                pq.write_table(
                    pa.table({"a": pairs.a, "b": pairs.b, "same": pairs.same}),
                    tmp / "pairs" / f"{split}.parquet",
                )
        np.savez(tmp / "prototypes.npz", **prototypes)  # type: ignore[arg-type]
        with (tmp / "rejected.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "reason"])
            for r in rejected:
                w.writerow([r.source, r.reason])
        (tmp / "dataset.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return out


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class SplitView:
    """One split's rows as read-only numpy views over a memory-mapped Arrow file."""

    name: str
    images: np.ndarray  # (N, S, S) gray or (N, S, S, 3) rgb uint8, read-only
    gender: np.ndarray  # (N,) int8
    identity_index: np.ndarray  # (N,) int32
    identity: pa.Array = field(repr=False)  # (N,) names, as Arrow strings
    source_path: pa.Array = field(repr=False)
    pairs: Pairs | None = None
    group: np.ndarray | None = field(default=None, repr=False)  # (N,) object: str or None
    ita: np.ndarray | None = field(default=None, repr=False)  # (N,) float32, nan: unmeasured

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def shard(self, rank: int, world_size: int, *, even: bool = True) -> SplitView:
        """Rows `rank::world_size`, as views (no copy). With `even`, every rank gets the same
        number of rows (the last `len % world_size` rows are dropped), so DDP ranks run the
        same number of steps. Pairs index the full split and are not carried over."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got rank={rank}")
        n = (len(self) // world_size) * world_size if even else len(self)
        sl = slice(rank, n, world_size)
        idx = np.arange(len(self))[sl]
        return SplitView(
            self.name,
            self.images[sl],
            self.gender[sl],
            self.identity_index[sl],
            self.identity.take(pa.array(idx)),
            self.source_path.take(pa.array(idx)),
            None,
            *_rows_of(idx, self.group, self.ita),
        )

    def identity_subset(self, fraction: float, seed: int = 0) -> SplitView:
        """The rows of a seeded random `fraction` of the identities, with the pairs whose two
        images both remain (re-indexed): a smaller split with the same kind of pairs, for
        cheap estimates (say, choosing a baseline's strength) before one full scoring."""
        ids = np.unique(self.identity_index)
        rng = np.random.default_rng(seed)
        keep_ids = rng.choice(ids, size=max(1, round(len(ids) * fraction)), replace=False)
        mask = np.isin(self.identity_index, keep_ids)
        idx = np.flatnonzero(mask)
        pairs = None
        if self.pairs is not None:
            remap = np.full(len(self), -1, dtype=np.int64)
            remap[idx] = np.arange(len(idx))
            keep = mask[self.pairs.a] & mask[self.pairs.b]
            pairs = Pairs(remap[self.pairs.a[keep]].astype(np.int32),
                          remap[self.pairs.b[keep]].astype(np.int32), self.pairs.same[keep])
        take = pa.array(idx)
        return SplitView(self.name, self.images[idx], self.gender[idx],
                         self.identity_index[idx], self.identity.take(take),
                         self.source_path.take(take), pairs,
                         *_rows_of(idx, self.group, self.ita))

    def torch_images(self) -> Any:
        """The images as a uint8 torch tensor (N, S, S[, 3]) sharing memory with the mapped file.

        The memory is read-only: convert (``.float() / 255``) before changing anything."""
        import warnings

        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # non-writable buffer
            return torch.from_numpy(self.images)


def _rows_of(idx: np.ndarray, *columns: np.ndarray | None) -> list[np.ndarray | None]:
    return [None if c is None else c[idx] for c in columns]


def _group_columns(table: pa.Table) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A split's `group` (object array) and `ita` (float32, nan = null) columns, or Nones for
    a dataset written before them."""
    if "group" not in table.column_names:
        return None, None
    group = np.array(table.column("group").to_pylist(), dtype=object)
    ita = table.column("ita").to_numpy(zero_copy_only=False).astype(np.float32)
    return group, ita


@dataclass(frozen=True)
class PreparedDataset:
    """An opened prepared dataset: `info` (dataset.json), `prototypes`, and one view per split."""

    path: Path
    info: dict[str, Any]
    prototypes: dict[str, np.ndarray]
    splits: dict[str, SplitView]

    @property
    def size(self) -> int:
        return int(self.info["size"])

    @property
    def color(self) -> str:
        """`gray` or `rgb` (a dataset written before colour records none: gray)."""
        return color_of(self.info)

    @property
    def channels(self) -> int:
        return channels(self.color)

    @property
    def fingerprint(self) -> str:
        return str(self.info["fingerprint"])

    def split(self, name: str) -> SplitView:
        if name not in self.splits:
            raise DataError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return self.splits[name]


def _rebuild_arrow(path: Path, split: str) -> Path:
    """Recreate `arrow/<split>.arrow` from the Parquet shards (atomically)."""
    shards = sorted((path / "parquet").glob(f"{split}-*.parquet"))
    if not shards:
        raise DataError(f"{path}: no Parquet shards for split {split!r} in {path / 'parquet'}")
    table = pa.concat_tables(pq.read_table(s) for s in shards)
    target = path / "arrow" / f"{split}.arrow"
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_suffix(f".tmp-{os.getpid()}-{time.monotonic_ns()}")
    _write_arrow(table, tmp)
    tmp.rename(target)
    return target


def open_dataset(path: str | Path) -> PreparedDataset:
    """Open a prepared dataset without copying its images (memory-mapped Arrow IPC)."""
    path = Path(path).absolute()
    meta = path / "dataset.json"
    if not meta.is_file():
        raise DataError(
            f"not a prepared dataset: {meta} is missing "
            "(create one with `san-search data prepare` or `san-search data synth`)"
        )
    info = json.loads(meta.read_text())
    if info.get("schema_version") != SCHEMA_VERSION:
        raise DataError(
            f"{meta}: schema_version {info.get('schema_version')} is not {SCHEMA_VERSION}; "
            "prepare the dataset again with this version"
        )
    size = int(info["size"])
    shape = (size, size, 3) if color_of(info) == "rgb" else (size, size)
    pixels = int(np.prod(shape))
    with np.load(path / "prototypes.npz") as npz:
        prototypes = {k: npz[k] for k in npz.files}
    views: dict[str, SplitView] = {}
    for split in SPLITS:
        arrow_path = path / "arrow" / f"{split}.arrow"
        if not arrow_path.is_file():
            arrow_path = _rebuild_arrow(path, split)
        table = ipc.open_file(pa.memory_map(str(arrow_path), "r")).read_all()
        if table.num_rows:
            table = table.combine_chunks()  # one chunk already: no copy
        image = table.column("image")
        n = table.num_rows
        if n and image.num_chunks == 1:
            buf = image.chunk(0).buffers()[1]
            offset = image.chunk(0).offset * pixels
            images = np.frombuffer(buf, dtype=np.uint8, count=n * pixels, offset=offset)
        else:
            images = np.zeros(0, dtype=np.uint8)
        images = images.reshape(n, *shape)
        pairs = None
        pairs_path = path / "pairs" / f"{split}.parquet"
        if pairs_path.is_file():
            pt = pq.read_table(pairs_path)
            pairs = Pairs(
                pt.column("a").to_numpy(), pt.column("b").to_numpy(), pt.column("same").to_numpy()
            )
        views[split] = SplitView(
            split,
            images,
            table.column("gender").to_numpy(),
            table.column("identity_index").to_numpy(),
            table.column("identity").combine_chunks(),
            table.column("source_path").combine_chunks(),
            pairs,
            *_group_columns(table),
        )
    return PreparedDataset(path, info, prototypes, views)
