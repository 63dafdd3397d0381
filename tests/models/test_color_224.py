"""Colour at the SAN papers' size: an autoencoder, an own gender classifier, an own matcher and
a pretrained wrapper run forward and backward on (2, 3, 224, 224) RGB in CPU-sized form (tiny
widths, batch 2); the evaluators that judge them take the same images; the colour plumbing
(`san_search.images`) round-trips and the prototype combiner stays per channel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from san_search.images import from_nchw, luminance, to_nchw
from san_search.models import create
from san_search.models.pretrained.base import Preprocess, PretrainedNet
from san_search.zoo.evaluators import TorchGender, TorchMatcher, rgb_chips

SIZE = 224


def _batch(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _backward(out: torch.Tensor, x: torch.Tensor, model: nn.Module) -> None:
    out.float().pow(2).mean().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def test_autoencoder_runs_forward_and_backward_at_224_rgb() -> None:
    model = create("autoencoder", "san_conv", depth=2, width=2, image_size=SIZE, channels=3)
    x = _batch().requires_grad_(True)
    protos = torch.rand(2, 2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    same, opp = model(x, protos[0], protos[1])
    assert same.shape == opp.shape == (2, 3, SIZE, SIZE)
    assert float(opp.detach().min()) >= 0 and float(opp.detach().max()) <= 1
    _backward(same + opp, x, model)


def test_the_paper_autoencoder_takes_rgb_too() -> None:
    model = create("autoencoder", "san_paper", image_size=32, channels=3)
    x = torch.rand(2, 3, 32, 32)
    assert model(x, x, x)[1].shape == (2, 3, 32, 32)


def test_the_prototype_combiner_is_per_channel() -> None:
    """Output channel c sees the decoder features and channel c of the prototype only."""
    torch.manual_seed(0)
    model = create("autoencoder", "san_conv", depth=1, width=4, channels=3).eval()
    x, same, opp = torch.rand(3, 1, 3, 16, 16).unbind(0)
    other = opp.clone()
    other[:, 1] = 1 - other[:, 1]  # change the green prototype channel only
    with torch.no_grad():
        a, b = model(x, same, opp)[1], model(x, same, other)[1]
    assert torch.equal(a[:, [0, 2]], b[:, [0, 2]])
    assert float((a[:, 1] - b[:, 1]).abs().max()) > 1e-4


def test_a_gray_autoencoder_keeps_its_weights_names_and_shapes() -> None:
    """Gray checkpoints written before colour load unchanged: same keys, same shapes."""
    model = create("autoencoder", "san_conv", depth=2, width=8)
    state = model.state_dict()
    assert "combiner_mask" not in state
    assert tuple(state["combiner.weight"].shape) == (1, 8 + 1, 1, 1)
    assert tuple(state["enc.0.0.weight"].shape) == (8, 2, 3, 3)


@pytest.mark.parametrize(("kind", "arch"), [("gender", "paper_cnn"), ("gender", "resnet10t"),
                                            ("matcher", "regnetx_002")])
def test_own_classifier_and_matcher_run_forward_and_backward_at_224_rgb(kind: str,
                                                                        arch: str) -> None:
    torch.manual_seed(0)
    model = create(kind, arch, image_size=SIZE, channels=3)
    x = _batch().requires_grad_(True)
    out = model(x)
    assert out.shape == ((2, 2) if kind == "gender" else (2, 128))
    _backward(out, x, model)


def test_a_pretrained_wrapper_runs_forward_and_backward_at_224_rgb() -> None:
    core = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 8))
    model = PretrainedNet(core, Preprocess(size=112, mean=(127.5,) * 3, std=(128.0,) * 3),
                          "matcher")
    x = _batch().requires_grad_(True)
    out = model(x)
    assert out.shape == (2, 8)
    _backward(out, x, model)


def test_pretrained_preprocessing_passes_rgb_unchanged_and_flips_for_bgr() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(Preprocess(size=16)(x), x, atol=1e-6)  # mean 0, std 255: x itself
    assert torch.allclose(Preprocess(size=16, channels="bgr")(x), x.flip(1), atol=1e-6)
    gray = torch.rand(2, 1, 16, 16)
    assert torch.allclose(Preprocess(size=16)(gray), gray.expand(-1, 3, -1, -1), atol=1e-6)


def test_the_evaluators_take_rgb_at_224() -> None:
    torch.manual_seed(0)
    images = (np.random.default_rng(0).random((3, SIZE, SIZE, 3)) * 255).astype(np.uint8)
    g = TorchGender("g", "val", create("gender", "paper_cnn", image_size=SIZE, channels=3))
    m = TorchMatcher("m", "val", create("matcher", "regnetx_002", image_size=SIZE, channels=3))
    assert g.male_score(images).shape == (3,)
    e = m.embed(images)
    assert e.shape == (3, 128)
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)


def test_third_party_chips_keep_colour_and_repeat_gray() -> None:
    red = np.zeros((1, 8, 8, 3), np.uint8)
    red[..., 0] = 255
    chips = rgb_chips(red, 16)
    assert chips.shape == (1, 16, 16, 3)
    assert (chips[..., 0] == 255).all() and (chips[..., 1:] == 0).all()
    gray = np.full((1, 8, 8), 100, np.uint8)
    g = rgb_chips(gray, 16)
    assert g.shape == (1, 16, 16, 3) and (g == 100).all()


def test_to_nchw_and_back_round_trips_both_modes() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.random((2, 4, 4, 3)).astype(np.float32)
    gray = rng.random((2, 4, 4)).astype(np.float32)
    t = to_nchw(rgb)
    assert t.shape == (2, 3, 4, 4) and torch.equal(t[:, 1], torch.from_numpy(rgb[..., 1]))
    assert np.array_equal(from_nchw(t), rgb)
    assert to_nchw(gray).shape == (2, 1, 4, 4)
    assert np.array_equal(from_nchw(to_nchw(gray)), gray)
    assert to_nchw(np.full((1, 2, 2), 255, np.uint8)).max() == 1.0
    with pytest.raises(ValueError, match=r"\(N, S, S\) gray or \(N, S, S, 3\) rgb"):
        to_nchw(np.zeros((1, 4, 4, 2), np.float32))


def test_luminance_is_bt601() -> None:
    px = np.array([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]], np.float32)
    assert np.allclose(luminance(px), [[[0.299, 0.587, 0.114]]])
