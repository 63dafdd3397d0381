"""Plain helpers that several test files share (fixtures live in conftest.py): a tiny SAN
candidate for the synthetic problem."""

from __future__ import annotations

from san_search.config import CandidateConfig


def tiny_candidate(**kw: object) -> CandidateConfig:
    """A candidate small enough to train in seconds on the `problem` fixture's data and zoo."""
    base = dict(aux_gender=("g_aux",), aux_matcher="m_aux", depth=2, width=4, epochs=2,
                images_per_epoch=64, batch_size=16, matcher_warmup=1)
    return CandidateConfig(**{**base, **kw})  # type: ignore[arg-type]

