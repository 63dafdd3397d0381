"""Opening a prepared dataset: zero-copy views, rank shards, torch views, Arrow rebuild."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from san_search.data import BuildOptions, open_dataset, synth
from san_search.errors import DataError


@pytest.fixture(scope="module")
def ds_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store") / "ds"
    synth(out, identities=30, images_per_identity=5, size=16, options=BuildOptions(pairs=20))
    return out


def test_images_are_readonly_views_of_the_mapped_file(ds_path: Path) -> None:
    ds = open_dataset(ds_path)
    tr = ds.split("train")
    assert tr.images.dtype == np.uint8 and tr.images.shape[1:] == (16, 16)
    assert not tr.images.flags.writeable and not tr.images.flags.owndata
    with pytest.raises(ValueError, match="read-only"):
        tr.images[0, 0, 0] = 1
    assert ds.size == 16 and len(ds.fingerprint) == 64


def test_shards_partition_the_split(ds_path: Path) -> None:
    tr = open_dataset(ds_path).split("train")
    shards = [tr.shard(r, 3) for r in range(3)]
    assert len({len(s) for s in shards}) == 1  # even: DDP ranks take the same steps
    assert sum(len(s) for s in shards) == len(tr) // 3 * 3
    for r, s in enumerate(shards):
        assert np.shares_memory(s.images, tr.images)
        assert np.array_equal(s.images, tr.images[r : len(tr) // 3 * 3 : 3])
        assert s.identity.to_pylist() == tr.identity.to_pylist()[r : len(tr) // 3 * 3 : 3]
    uneven = [tr.shard(r, 3, even=False) for r in range(3)]
    assert sum(len(s) for s in uneven) == len(tr)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 3\), got rank=3"):
        tr.shard(3, 3)


def test_identity_subset_keeps_whole_identities_and_their_pairs(ds_path: Path) -> None:
    test = open_dataset(ds_path).split("test")
    assert test.pairs is not None
    sub = test.identity_subset(0.5, seed=1)
    ids = set(sub.identity_index.tolist())
    assert len(ids) == round(len(set(test.identity_index.tolist())) * 0.5)
    assert len(sub) == int(np.isin(test.identity_index, list(ids)).sum())  # whole identities
    assert sub.pairs is not None and len(sub.pairs.a) > 0
    # every kept pair points at the same two images as a pair of the full split
    full = {(test.identity[a].as_py(), test.identity[b].as_py(), bool(s),
             test.images[a].tobytes(), test.images[b].tobytes())
            for a, b, s in zip(test.pairs.a, test.pairs.b, test.pairs.same, strict=True)}
    for a, b, s in zip(sub.pairs.a, sub.pairs.b, sub.pairs.same, strict=True):
        assert (sub.identity[a].as_py(), sub.identity[b].as_py(), bool(s),
                sub.images[a].tobytes(), sub.images[b].tobytes()) in full
    both = np.isin(test.identity_index[test.pairs.a], list(ids)) & np.isin(
        test.identity_index[test.pairs.b], list(ids))
    assert len(sub.pairs.a) == int(both.sum())
    assert set(test.identity_subset(0.5, seed=1).identity_index.tolist()) == ids  # seeded


def test_torch_view_shares_memory(ds_path: Path) -> None:
    import torch

    tr = open_dataset(ds_path).split("train")
    t = tr.torch_images()
    assert t.dtype == torch.uint8 and tuple(t.shape) == tr.images.shape
    assert t.data_ptr() == tr.images.ctypes.data


def test_arrow_cache_is_rebuilt_from_parquet(ds_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(ds_path, copy)
    shutil.rmtree(copy / "arrow")
    a, b = open_dataset(ds_path), open_dataset(copy)
    for s in ("train", "val", "test"):
        assert np.array_equal(a.split(s).images, b.split(s).images)
        assert np.array_equal(a.split(s).gender, b.split(s).gender)
    assert (copy / "arrow" / "train.arrow").is_file()


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not a prepared dataset: .*dataset\.json is missing"):
        open_dataset(tmp_path)


def test_unknown_split(ds_path: Path) -> None:
    with pytest.raises(DataError, match="unknown split 'dev'; choose one of train, val, test"):
        open_dataset(ds_path).split("dev")


# ---------------------------------------------------------------- overwrite safety


def _user_folder(path: Path) -> dict[str, bytes]:
    """A plain folder of a user's files (what --overwrite must never delete)."""
    (path / "holiday").mkdir(parents=True)
    files = {"notes.txt": b"mine", "holiday/beach.jpg": b"\xff\xd8 not really a jpeg"}
    for rel, data in files.items():
        (path / rel).write_bytes(data)
    return files


def _contents(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_overwrite_refuses_a_folder_the_tool_did_not_write(tmp_path: Path) -> None:
    from san_search.data.store import atomic_folder

    out = tmp_path / "photos"
    files = _user_folder(out)
    with pytest.raises(DataError) as err, atomic_folder(out, overwrite=True) as tmp:
        (tmp / "x").write_text("new")
    assert str(err.value).startswith(f"refusing to replace {out}: it has no .san-search-output "
                                     "marker file, nor the dataset.json")
    assert "nothing was changed" in str(err.value)
    assert _contents(out) == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no partial left


def test_written_folder_has_the_marker_and_overwrite_replaces_it(tmp_path: Path) -> None:
    import json

    from san_search.outputs import MARKER

    out = tmp_path / "ds"
    synth(out, identities=12, images_per_identity=3, size=16, options=BuildOptions(pairs=5))
    marker = json.loads((out / MARKER).read_text())
    assert marker["written_by"] == "san-search" and marker["kind"] == "prepared dataset"
    (out / "stale.txt").write_text("from the old output")
    synth(out, identities=13, images_per_identity=3, size=16, options=BuildOptions(pairs=5),
          overwrite=True)
    assert not (out / "stale.txt").exists() and (out / MARKER).is_file()
    assert open_dataset(out).info["identities"] == 13


def test_a_dataset_from_0_1_without_marker_can_be_overwritten(ds_path: Path,
                                                              tmp_path: Path) -> None:
    from san_search.outputs import MARKER

    old = tmp_path / "old"
    shutil.copytree(ds_path, old)
    (old / MARKER).unlink()  # as 0.1 wrote it: dataset.json is its signature
    synth(old, identities=12, images_per_identity=3, size=16, options=BuildOptions(pairs=5),
          overwrite=True)
    assert (old / MARKER).is_file() and open_dataset(old).info["identities"] == 12
    # a dataset.json that is not one (a user's own JSON) is no signature
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "dataset.json").write_text('{"name": "my photos"}')
    with pytest.raises(DataError, match="refusing to replace"):
        synth(fake, identities=12, images_per_identity=3, size=16, overwrite=True)
    assert _contents(fake) == {"dataset.json": b'{"name": "my photos"}'}


def test_a_half_written_folder_never_has_the_marker(tmp_path: Path) -> None:
    from san_search.data.store import atomic_folder
    from san_search.outputs import MARKER

    out = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="killed"), atomic_folder(out, False) as tmp:
        (tmp / "dataset.json").write_text("{}")
        assert not (tmp / MARKER).exists()
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_cli_prepare_and_synth_overwrite_refuse_a_users_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from san_search.cli import main
    from san_search.data import synth_files

    raw = synth_files(tmp_path / "raw", identities=12, images_per_identity=3, size=16)
    out = tmp_path / "mine"
    files = _user_folder(out)
    rc = main(["data", "prepare", "--format", "manifest", "--root", str(raw), "--out",
               str(out), "--size", "16", "--overwrite"])
    assert rc == 2
    assert f"error: refusing to replace {out}: it has no .san-search-output" in (
        capsys.readouterr().err)
    for args in (["--files"], []):
        rc = main(["data", "synth", "--out", str(out), "--identities", "12",
                   "--images-per-identity", "3", "--size", "16", "--overwrite", *args])
        assert rc == 2 and f"refusing to replace {out}" in capsys.readouterr().err
    assert _contents(out) == files
    # synth --files output has the marker, so it may be replaced
    rc = main(["data", "synth", "--files", "--out", str(raw), "--identities", "12",
               "--images-per-identity", "3", "--size", "16", "--overwrite"])
    assert rc == 0 and (raw / ".san-search-output").is_file()
