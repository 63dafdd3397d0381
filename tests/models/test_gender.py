"""The gender classifiers: every registered one at a tiny size gives finite (B, 2) logits."""

from __future__ import annotations

import pytest
import torch

from san_search.models import create, list_models

SIZE = 16


@pytest.mark.parametrize("name", list_models("gender"))
def test_gender_forward(name: str) -> None:
    model = create("gender", name, image_size=SIZE).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 1, SIZE, SIZE))
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
