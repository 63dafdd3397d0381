"""The gender classifiers: every registered one at a tiny size gives finite (B, 2) logits."""

from __future__ import annotations

import pytest
import torch

from san_search.models import create, list_models
from san_search.models.pretrained import source_for_arch

SIZE = 16


# (pretrained architectures have their own tests: tests/models/test_pretrained_*.py)
@pytest.mark.parametrize("name", [n for n in list_models("gender") if source_for_arch(n) is None])
def test_gender_forward(name: str) -> None:
    model = create("gender", name, image_size=SIZE).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 1, SIZE, SIZE))
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
