"""Every registered model: a forward pass at a tiny size, shapes and ranges; registry errors."""

from __future__ import annotations

import pytest
import torch

from san_search.models import UnknownModelError, create, list_models
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


@pytest.mark.parametrize("name", list_models("gender"))
def test_gender_forward(name: str) -> None:
    model = create("gender", name, image_size=SIZE).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 1, SIZE, SIZE))
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", list_models("matcher"))
def test_matcher_forward(name: str) -> None:
    model = create("matcher", name, image_size=SIZE).eval()
    with torch.no_grad():
        emb = model(torch.rand(3, 1, SIZE, SIZE))
    assert emb.shape == (3, 128)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)


def test_registries_are_full() -> None:
    assert {"san_paper", "san_conv"} <= set(list_models("autoencoder"))
    assert len(list_models("gender")) >= 5 and "paper_cnn" in list_models("gender")
    assert len(list_models("matcher")) >= 3


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown gender model 'resnet10'; did you mean "
                                                r"resnet10t, "):
        create("gender", "resnet10")
    with pytest.raises(UnknownModelError, match="unknown model kind 'vae'"):
        list_models("vae")


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


def test_registry_imports_no_model_family() -> None:
    """The families import the registry (to register); the registry never imports them back,
    and `san_search.models` is what loads every family."""
    import ast
    from pathlib import Path

    import san_search.models
    from san_search.models import registry

    def imported(module: object) -> set[str]:
        tree = ast.parse(Path(str(getattr(module, "__file__", ""))).read_text())
        names = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {f"{n.module}.{a.name}" for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) for a in n.names}
        return names

    families = {"san_search.models.autoencoders", "san_search.models.gender",
                "san_search.models.matchers"}
    assert not imported(registry) & families
    assert families <= imported(san_search.models)
    assert {"paper_cnn", "resnet10t"} <= set(list_models("gender"))
    assert "san_conv" in list_models("autoencoder") and "resnet10t" in list_models("matcher")
