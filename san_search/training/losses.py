"""The SAN loss of the ICB 2018 recipe, as a pure function of the outputs and the frozen
auxiliaries:

    L = w_rec·L1(x, out_same)
      + w_gender·mean_g[CE(g(out_same), y) + CE(g(out_opp), 1 - y)]
      + w_matcher·d((f(out_same) + f(out_opp)) / 2, f(x))

with d the squared Euclidean distance (`mse`, the paper) or 1 - cosine (`cosine`); the
matcher term is off during the warm-up epochs, and may be scored on the first
`matcher_fraction` of the (shuffled) batch only.

`gender_target` chooses what the privacy output is pushed towards. `flip` (the paper):
CE(g(out_opp), 1 - y), each face to the other gender. `neutral`: `neutral_loss`, a
batch-level term that makes the two genders' score distributions match. Privacy is a
symmetric AUC, so a consistently flipped face is as revealing as the original; a per-sample
target of 0.5 can be met while the ranking that AUC reads survives. The neutral term reads
like the metric: (2·softAUC - 1)², on standardised scores. `same_gender` False drops the
CE(g(out_same), y) term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from san_search.config import GENDER_TARGETS


def matcher_distance(emb: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mse":
        return (emb - target).pow(2).sum(dim=1).mean()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(emb, target, dim=1)).mean()
    raise ValueError(f"unknown matcher distance {kind!r}; choose mse or cosine")


NEUTRAL_TEMPERATURE = 0.1  # of the soft AUC, on standardised scores


def male_margin(logits: torch.Tensor) -> torch.Tensor:
    """A gender classifier's (N, 2) logits as one male score per face."""
    return logits[:, 1] - logits[:, 0]


def neutral_loss(scores: torch.Tensor, y: torch.Tensor,
                 temperature: float = NEUTRAL_TEMPERATURE) -> torch.Tensor:
    """(2·softAUC - 1)² of `scores` between the genders `y` (1 = male): 0 when the two
    genders' scores are distributed alike, up to 1 as they separate, either way round.
    softAUC is the mean over (male, female) pairs of sigmoid((s_m - s_f) / temperature) on
    scores standardised over the batch, so the loss does not depend on the scores' scale or
    offset. A batch with one gender only gives 0 (nothing to compare)."""
    y = y.bool()
    if bool(y.all()) or not bool(y.any()):
        return scores.sum() * 0.0
    z = (scores - scores.mean()) / (scores.std() + 1e-6)
    auc = torch.sigmoid((z[y][:, None] - z[~y][None, :]) / temperature).mean()
    return (2.0 * auc - 1.0) ** 2


def san_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    out_same: torch.Tensor,
    out_opp: torch.Tensor,
    genders: Sequence[nn.Module],
    matcher: nn.Module | None,
    *,
    w_rec: float,
    w_gender: float,
    w_matcher: float,
    distance: str = "mse",
    matcher_fraction: float = 1.0,
    gender_target: str = "flip",
    same_gender: bool = True,
    matcher_target: str = "mean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its terms. `y` is the true gender (1 = male); `matcher` None = warm-up."""
    if gender_target not in GENDER_TARGETS:
        raise ValueError(f"unknown gender target {gender_target!r}; choose "
                         f"{' or '.join(GENDER_TARGETS)}")
    rec = F.l1_loss(out_same, x)
    g_terms = []
    for g in genders:
        opp = g(out_opp)
        term = (F.cross_entropy(opp, 1 - y) if gender_target == "flip"
                else neutral_loss(male_margin(opp), y))
        if same_gender:
            term = term + F.cross_entropy(g(out_same), y)
        g_terms.append(term)
    gender = torch.stack(g_terms).mean()
    total = w_rec * rec + w_gender * gender
    terms = {"loss_rec": rec.item(), "loss_gender": gender.item(), "loss_matcher": 0.0}
    if matcher is not None and w_matcher > 0:
        k = max(1, math.ceil(matcher_fraction * x.shape[0]))
        with torch.no_grad():
            target = matcher(x[:k])
        if matcher_target == "opp":  # the output that ships
            emb = matcher(out_opp[:k])
        elif matcher_target == "mean":
            emb = (matcher(out_same[:k]) + matcher(out_opp[:k])) / 2
        else:
            raise ValueError(f"unknown matcher target {matcher_target!r}; choose mean or opp")
        m = matcher_distance(emb, target, distance)
        total = total + w_matcher * m
        terms["loss_matcher"] = m.item()
    terms["loss"] = total.item()
    return total, terms
