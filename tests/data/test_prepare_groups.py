"""`data prepare` stores each image's skin-tone group and ITA: measured on the colour source
(also for the grayscale dataset it writes), or taken from a manifest's `group` column; old
datasets without the columns still open."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from san_search.data import BuildOptions, open_dataset, prepare
from san_search.data.groups import ita, lab_to_srgb
from san_search.data.prepare import summary_table
from san_search.data.splits import SPLITS

# Two skin colours of known Lab: ITA 48 (light) and -39.8 (dark).
LIGHT, DARK = (70.0, 12.0, 18.0), (35.0, 12.0, 18.0)


def _quiet(_: str) -> None:
    pass


def _colour_manifest(root: Path, *, group_column: bool = False) -> Path:
    """24 identities x 3 PNGs of 32 px: even identities light skin, odd ones dark; genders
    alternate in pairs. With `group_column`, the manifest names groups of its own."""
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        lab = LIGHT if i % 2 == 0 else DARK
        base = lab_to_srgb(np.array(lab)) * 255
        for k in range(3):
            px = np.clip(base + rng.normal(0, 2, (32, 32, 3)), 0, 255).astype(np.uint8)
            name = f"p{i:02d}_{k}.png"
            Image.fromarray(px, "RGB").save(root / name)
            rows.append({"path": name, "identity": f"p{i:02d}", "gender": "MF"[(i // 2) % 2],
                         **({"group": "A" if i % 2 == 0 else "B"} if group_column else {})})
    with (root / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root / "manifest.csv"


def test_prepare_stores_ita_groups_from_the_colour_source(tmp_path: Path) -> None:
    manifest = _colour_manifest(tmp_path / "raw")
    out = tmp_path / "ds"
    info = prepare("manifest", manifest, out, size=16, color="gray",
                   options=BuildOptions(pairs=10),
                   workers=1, progress=_quiet)
    ds = open_dataset(out)
    assert ds.split("train").images.ndim == 3  # the dataset itself stays grayscale
    seen = 0
    for s in SPLITS:
        v = ds.split(s)
        assert v.group is not None and v.ita is not None
        for name, g, value in zip(v.identity.to_pylist(), v.group, v.ita, strict=True):
            light = int(name[1:]) % 2 == 0
            assert g == ("light" if light else "dark")
            assert abs(value - ita(np.array(LIGHT if light else DARK))) < 2.0
            seen += 1
    assert seen == 72
    tr = ds.split("train")
    assert tr.group is not None
    half = tr.shard(1, 2)
    assert list(half.group) == list(tr.group[1 : 2 * len(half) : 2])  # type: ignore[arg-type]
    sub = tr.identity_subset(0.5, seed=1)
    assert sub.group is not None and len(sub.group) == len(sub) < len(tr)
    assert info["groups"]["source"] == "ita"
    sizes = info["groups"]["sizes"]
    assert sum(c["female"] + c["male"] for s in SPLITS for c in sizes[s].values()) == 72
    assert sum(sizes[s].get("dark", {}).get("male", 0) for s in SPLITS) == 18
    assert json.loads((out / "dataset.json").read_text())["groups"] == info["groups"]
    assert "skin-tone groups (ita): light 36 (18 f / 18 m), dark 36 (18 f / 18 m)" in \
        summary_table(info)
    # the columns are in the Parquet of record too
    table = pq.read_table(next((out / "parquet").glob("train-*.parquet")))
    assert set(table.column("group").to_pylist()) == {"light", "dark"}


def test_manifest_group_column_replaces_the_ita_bins(tmp_path: Path) -> None:
    manifest = _colour_manifest(tmp_path / "raw", group_column=True)
    info = prepare("manifest", manifest, tmp_path / "ds", size=16,
                   options=BuildOptions(pairs=10), workers=1, progress=_quiet)
    v = open_dataset(tmp_path / "ds").split("test")
    assert v.group is not None and set(v.group) <= {"A", "B"}
    assert v.ita is not None and not np.isnan(v.ita).any()  # the ITA is still measured
    assert info["groups"]["source"] == "manifest"


def test_grayscale_source_gets_no_groups(synth_files_dir: Path, tmp_path: Path) -> None:
    info = prepare("manifest", synth_files_dir, tmp_path / "ds", size=16,
                   options=BuildOptions(pairs=5), workers=1, progress=_quiet)
    assert "groups" not in info
    v = open_dataset(tmp_path / "ds").split("val")
    assert v.group is not None and all(g is None for g in v.group)
    assert v.ita is not None and np.isnan(v.ita).all()
    assert "skin-tone groups: none" in summary_table(info)


def _drop_group_columns(out: Path) -> None:
    """Rewrite a dataset's files as a dataset written before the group columns."""
    for p in [*(out / "parquet").glob("*.parquet")]:
        pq.write_table(pq.read_table(p).drop_columns(["group", "ita"]), p)
    for p in (out / "arrow").glob("*.arrow"):
        table = ipc.open_file(pa.memory_map(str(p), "r")).read_all().drop_columns(
            ["group", "ita"])
        p.unlink()
        with pa.OSFile(str(p), "wb") as sink, ipc.new_file(sink, table.schema) as w:
            w.write_table(table)


@pytest.mark.parametrize("arrow", [True, False])
def test_dataset_without_group_columns_still_opens(tmp_path: Path, arrow: bool) -> None:
    manifest = _colour_manifest(tmp_path / "raw")
    out = tmp_path / "ds"
    prepare("manifest", manifest, out, size=16, options=BuildOptions(pairs=10), workers=1,
            progress=_quiet)
    _drop_group_columns(out)
    if not arrow:
        for p in (out / "arrow").glob("*.arrow"):
            p.unlink()  # rebuilt from the Parquet shards
    ds = open_dataset(out)
    v = ds.split("train")
    assert v.group is None and v.ita is None
    assert len(v.shard(0, 2)) == len(v) // 2 and v.shard(0, 2).group is None
