"""The face matchers: every registered one at a tiny size gives unit-length embeddings."""

from __future__ import annotations

import pytest
import torch

from san_search.models import create, list_models
from san_search.models.pretrained import source_for_arch

SIZE = 16


# (pretrained architectures have their own tests: tests/models/test_pretrained_*.py)
@pytest.mark.parametrize("name", [n for n in list_models("matcher") if source_for_arch(n) is None])
def test_matcher_forward(name: str) -> None:
    model = create("matcher", name, image_size=SIZE).eval()
    with torch.no_grad():
        emb = model(torch.rand(3, 1, SIZE, SIZE))
    assert emb.shape == (3, 128)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
