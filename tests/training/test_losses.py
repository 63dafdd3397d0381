"""The SAN loss: each term at a hand-computed value, the matcher warm-up, the distances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from san_search.training.losses import san_loss


class _Fixed(nn.Module):
    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], 2)


class _Mean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # (B, 1): a one-dimensional "embedding"


def test_loss_terms_have_known_values() -> None:
    x = torch.full((2, 1, 4, 4), 0.5)
    out_same = torch.full((2, 1, 4, 4), 0.7)
    out_opp = torch.full((2, 1, 4, 4), 0.1)
    y = torch.tensor([1, 0])
    g = _Fixed([0.0, 0.0])  # uniform logits: every CE is log 2
    loss, terms = san_loss(x, y, out_same, out_opp, [g, g], None, w_rec=2.0, w_gender=1.0,
                           w_matcher=5.0)
    assert terms["loss_rec"] == pytest.approx(0.2)
    assert terms["loss_gender"] == pytest.approx(2 * np.log(2))
    assert terms["loss_matcher"] == 0.0  # warm-up: no matcher
    assert float(loss) == pytest.approx(2 * 0.2 + 2 * np.log(2))
    loss, terms = san_loss(x, y, out_same, out_opp, [g], _Mean(), w_rec=0, w_gender=0,
                           w_matcher=1.0, distance="mse")
    # mean embedding (0.7 + 0.1) / 2 = 0.4 against 0.5: squared distance 0.01
    assert terms["loss_matcher"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="unknown matcher distance 'l3'"):
        san_loss(x, y, out_same, out_opp, [g], _Mean(), w_rec=0, w_gender=0, w_matcher=1,
                 distance="l3")


class _Counting(nn.Module):
    """A one-dimensional "embedding" (the image mean) that counts the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return x.mean(dim=(2, 3))


def test_matcher_fraction_scores_the_first_share_of_the_batch() -> None:
    x = torch.full((8, 1, 4, 4), 0.5)
    out_same = torch.cat([torch.full((2, 1, 4, 4), 0.7), torch.full((6, 1, 4, 4), 0.5)])
    out_opp = torch.cat([torch.full((2, 1, 4, 4), 0.1), torch.full((6, 1, 4, 4), 0.5)])
    y = torch.ones(8, dtype=torch.long)
    g, m = _Fixed([0.0, 0.0]), _Counting()
    _, whole = san_loss(x, y, out_same, out_opp, [g], m, w_rec=0, w_gender=0, w_matcher=1.0)
    assert m.seen == 24 and whole["loss_matcher"] == pytest.approx(0.01 * 2 / 8)
    m.seen = 0
    # a quarter of 8 = the first 2 images: the matcher sees 3 x 2 images, and only those count
    _, part = san_loss(x, y, out_same, out_opp, [g], m, w_rec=0, w_gender=0, w_matcher=1.0,
                       matcher_fraction=0.25)
    assert m.seen == 6 and part["loss_matcher"] == pytest.approx(0.01)


# ------------------------------------------------------------------ the neutral target


def test_neutral_loss_is_zero_when_the_genders_scores_match() -> None:
    from san_search.training.losses import neutral_loss

    s = torch.tensor([0.3, -1.2, 2.0, 0.7])
    scores = torch.cat([s, s])  # the same scores for both genders
    y = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    assert float(neutral_loss(scores, y)) == pytest.approx(0.0, abs=1e-7)


def test_neutral_loss_grows_as_the_genders_separate_whatever_their_scale() -> None:
    from san_search.training.losses import neutral_loss

    rng = torch.Generator().manual_seed(0)
    base = torch.randn(64, generator=rng)
    y = torch.arange(64) % 2
    values = [float(neutral_loss(base + d * y, y)) for d in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(b > a for a, b in zip(values, values[1:], strict=False))
    assert values[-1] > 0.9  # far apart: close to its maximum of 1
    # flipped is as revealing as separated: the loss reads |2 AUC - 1|, not which way
    assert float(neutral_loss(base - 2.0 * y, y)) == pytest.approx(
        float(neutral_loss(base + 2.0 * y, y)), abs=0.1)
    for scale, shift in ((1000.0, 0.0), (0.001, 5.0)):
        assert float(neutral_loss(scale * (base + y) + shift, y)) == pytest.approx(
            float(neutral_loss(base + y, y)), rel=1e-4)


def test_neutral_target_replaces_the_flip_term_and_same_gender_can_be_dropped() -> None:
    x = torch.full((4, 1, 4, 4), 0.5)
    y = torch.tensor([1, 0, 1, 0])
    g = _Fixed([0.0, 0.0])  # every face the same score: the genders match, CE is log 2
    _, flip = san_loss(x, y, x, x, [g], None, w_rec=0.0, w_gender=1.0, w_matcher=0.0)
    assert flip["loss_gender"] == pytest.approx(2 * np.log(2))
    _, neutral = san_loss(x, y, x, x, [g], None, w_rec=0.0, w_gender=1.0, w_matcher=0.0,
                          gender_target="neutral")
    assert neutral["loss_gender"] == pytest.approx(np.log(2))  # same-gender CE + 0
    _, alone = san_loss(x, y, x, x, [g], None, w_rec=0.0, w_gender=1.0, w_matcher=0.0,
                        gender_target="neutral", same_gender=False)
    assert alone["loss_gender"] == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="unknown gender target 'blend'"):
        san_loss(x, y, x, x, [g], None, w_rec=0.0, w_gender=1.0, w_matcher=0.0,
                 gender_target="blend")


def test_a_candidate_refuses_an_unknown_gender_target_naming_the_key() -> None:
    from san_search.config import CandidateConfig

    with pytest.raises(ValueError, match="key 'gender_target': 'opposite' is not one of "
                                         "flip, neutral"):
        CandidateConfig(gender_target="opposite")


def test_the_matcher_term_can_keep_the_shipped_output_alone() -> None:
    x = torch.full((2, 1, 4, 4), 0.5)
    out_same = torch.full((2, 1, 4, 4), 0.7)
    out_opp = torch.full((2, 1, 4, 4), 0.1)
    y = torch.tensor([1, 0])
    g = _Fixed([0.0, 0.0])  # the gender term is weighted 0 here
    # _Mean embeds an image as its mean: f(x) = 0.5, f(out_same) = 0.7, f(out_opp) = 0.1
    _, mean = san_loss(x, y, out_same, out_opp, [g], _Mean(), w_rec=0, w_gender=0,
                       w_matcher=1.0, distance="mse")
    assert mean["loss_matcher"] == pytest.approx((0.4 - 0.5) ** 2)  # the paper's mean: 0.4
    _, opp = san_loss(x, y, out_same, out_opp, [g], _Mean(), w_rec=0, w_gender=0,
                      w_matcher=1.0, distance="mse", matcher_target="opp")
    assert opp["loss_matcher"] == pytest.approx((0.1 - 0.5) ** 2)
    with pytest.raises(ValueError, match="unknown matcher target 'same'"):
        san_loss(x, y, out_same, out_opp, [g], _Mean(), w_rec=0, w_gender=0, w_matcher=1.0,
                 matcher_target="same")
