"""Synthetic faces: seeded, the dataset format, and gender learnable but not trivially."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from san_search.data import BuildOptions, open_dataset, synth
from san_search.data.synth import generate
from san_search.errors import DataError


def test_generate_is_seeded() -> None:
    a = generate(8, 3, 32, seed=4)
    b = generate(8, 3, 32, seed=4)
    c = generate(8, 3, 32, seed=5)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert not np.array_equal(a[0], c[0])
    images, names, gender, _ = a
    assert images.shape == (24, 32, 32) and images.dtype == np.uint8
    assert names[:3] == ["synth_00000"] * 3 and set(np.unique(gender)) <= {0, 1}


def test_images_of_one_person_vary() -> None:
    images, _, _, _ = generate(6, 4, 32, seed=0)
    same_person = images[0:4].astype(float)
    assert np.abs(same_person[0] - same_person[1]).mean() > 2  # pose, light, noise differ
    assert images.std() > 20  # not a blank canvas


def test_bad_arguments() -> None:
    with pytest.raises(DataError, match="--identities must be at least 6"):
        generate(3, 4, 32, seed=0)
    with pytest.raises(DataError, match="--images-per-identity must be at least 2"):
        generate(10, 1, 32, seed=0)
    with pytest.raises(DataError, match="--size must be a positive even number"):
        generate(10, 2, 31, seed=0)


def _pixel_auc(x: np.ndarray, pairs_a: np.ndarray, pairs_b: np.ndarray,
               same: np.ndarray) -> float:
    f = x.reshape(len(x), -1).astype(np.float64)
    f = (f - f.mean(1, keepdims=True)) / (f.std(1, keepdims=True) + 1e-9)
    score = (f[pairs_a] * f[pairs_b]).mean(1)
    pos, neg = score[same], score[~same]
    return float((pos[:, None] > neg[None, :]).mean())


@pytest.mark.slow
def test_gender_is_learnable_but_not_trivial_and_identity_carries(tmp_path: Path) -> None:
    import torch
    from torch import nn

    synth(tmp_path / "s", identities=300, images_per_identity=10, size=32,
          options=BuildOptions(seed=0, pairs=300))
    ds = open_dataset(tmp_path / "s")

    def tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        v = ds.split(split)
        return (v.torch_images().float().unsqueeze(1) / 255.0,
                torch.from_numpy(v.gender.astype(np.int64)))

    xtr, ytr = tensors("train")
    xte, yte = tensors("test")
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for cin, cout in ((1, 16), (16, 32), (32, 64)):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                   nn.MaxPool2d(2)]
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 2))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    best = 0.0
    for _ in range(8):
        model.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 64):
            b = perm[i : i + 64]
            loss = nn.functional.cross_entropy(model(xtr[b]), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            best = max(best, (model(xte).argmax(1) == yte).float().mean().item())
    # The design: overlapping gender cues, Bayes accuracy about 92%.
    assert 0.8 <= best <= 0.96, best
    # Identity: raw pixel correlation of the face centre (backgrounds vary per image)
    # already separates genuine from impostor pairs better than chance.
    v = ds.split("test")
    assert v.pairs is not None
    assert _pixel_auc(v.images[:, 8:24, 8:24], v.pairs.a, v.pairs.b, v.pairs.same) > 0.6
