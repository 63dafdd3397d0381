"""The SAN autoencoders: every registered one at a tiny size (shapes, ranges), the paper
layout, image-size checks, skip connections and full-resolution output."""

from __future__ import annotations

import pytest
import torch

from san_search.models import create, list_models
from san_search.models.autoencoders import ImageSizeError

SIZE = 16


@pytest.mark.parametrize("name", list_models("autoencoder"))
def test_autoencoder_forward(name: str) -> None:
    torch.manual_seed(0)
    model = create("autoencoder", name, image_size=SIZE).eval()
    x = torch.rand(2, 1, SIZE, SIZE)
    same, opp = torch.rand(2, 1, SIZE, SIZE), torch.rand(2, 1, SIZE, SIZE)
    out_same, out_opp = model(x, same, opp)
    assert out_same.shape == out_opp.shape == (2, 1, SIZE, SIZE)
    assert float(out_opp.min()) >= 0 and float(out_opp.max()) <= 1
    assert not torch.equal(out_same, out_opp)  # the prototype changes the output


def test_san_paper_matches_the_paper_layout() -> None:
    m = create("autoencoder", "san_paper")
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (2, 8, (3, 3)), (8, 12, (3, 3)), (12, 256, (3, 3)), (256, 128, (3, 3)), (129, 1, (1, 1))
    ]


@pytest.mark.parametrize(("depth", "size"), [(3, 20), (5, 48), (2, 30)])
def test_size_must_divide(depth: int, size: int) -> None:
    with pytest.raises(ImageSizeError, match=rf"divisible by {2 ** depth}; got {size}"):
        create("autoencoder", "san_conv", depth=depth, image_size=size)
    model = create("autoencoder", "san_conv", depth=depth)
    x = torch.rand(1, 1, size, size)
    with pytest.raises(ImageSizeError, match="sizes that work"):
        model(x, x, x)


def test_skip_connections_change_the_graph() -> None:
    plain = create("autoencoder", "san_conv", depth=3, width=8)
    skip = create("autoencoder", "san_conv", depth=3, width=8, skip=True)
    assert sum(p.numel() for p in skip.parameters()) > sum(p.numel() for p in plain.parameters())
    x = torch.rand(1, 1, 32, 32)
    assert skip(x, x, x)[0].shape == (1, 1, 32, 32)


def test_san_conv_reaches_full_resolution() -> None:
    """The last decoder convolution runs at the input's resolution: a one-pixel change of the
    input changes the output at that pixel, not only a 2x2 block average of it."""
    torch.manual_seed(0)
    model = create("autoencoder", "san_conv", depth=2, width=4, skip=True).eval()
    x = torch.rand(1, 1, 16, 16)
    p = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        base = model(x, p, p)[0]
        x2 = x.clone()
        x2[0, 0, 5, 5] += 0.5
        diff = (model(x2, p, p)[0] - base).abs()[0, 0]
    block = diff[4:6, 4:6]
    assert float(diff[5, 5]) > 0 and not torch.allclose(block, block[0, 0].expand(2, 2))
