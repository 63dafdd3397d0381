"""The SAN loss of the ICB 2018 recipe, as a pure function of the outputs and the frozen
auxiliaries:

    L = w_rec·L1(x, out_same)
      + w_gender·mean_g[CE(g(out_same), y) + CE(g(out_opp), 1 - y)]
      + w_matcher·d((f(out_same) + f(out_opp)) / 2, f(x))

with d the squared Euclidean distance (`mse`, the paper) or 1 - cosine (`cosine`); the
matcher term is off during the warm-up epochs, and may be scored on the first
`matcher_fraction` of the (shuffled) batch only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def matcher_distance(emb: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mse":
        return (emb - target).pow(2).sum(dim=1).mean()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(emb, target, dim=1)).mean()
    raise ValueError(f"unknown matcher distance {kind!r}; choose mse or cosine")


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
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its terms. `y` is the true gender (1 = male); `matcher` None = warm-up."""
    rec = F.l1_loss(out_same, x)
    g_terms = [F.cross_entropy(g(out_same), y) + F.cross_entropy(g(out_opp), 1 - y)
               for g in genders]
    gender = torch.stack(g_terms).mean()
    total = w_rec * rec + w_gender * gender
    terms = {"loss_rec": rec.item(), "loss_gender": gender.item(), "loss_matcher": 0.0}
    if matcher is not None and w_matcher > 0:
        k = max(1, math.ceil(matcher_fraction * x.shape[0]))
        with torch.no_grad():
            target = matcher(x[:k])
        mean_emb = (matcher(out_same[:k]) + matcher(out_opp[:k])) / 2
        m = matcher_distance(mean_emb, target, distance)
        total = total + w_matcher * m
        terms["loss_matcher"] = m.item()
    terms["loss"] = total.item()
    return total, terms
