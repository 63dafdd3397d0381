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
