"""The test table's vocabulary and its plain-text form, shared by every part of the ensemble
that prints or stores one (selection, the card, the attacker): the row label and baseline
fields, `format_rows`, and `json_plain` for writing records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

METHOD = "method"  # a test-table row's label
SIGMA = "sigma"  # a baseline row's strength, its own field (not parsed from the label)
BASELINE = "baseline"  # a baseline row's kind: noise or blur (`zoo.pool.BASELINES`)
ADVANTAGE_MATCHER = "headline_matcher"  # the matcher a row's headline advantage is read at


def json_plain(v: Any) -> Any:
    """`json.dumps` default for numpy scalars and paths."""
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON: {type(v).__name__}")


def format_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], first: str) -> str:
    """A plain-text table: `first` as the row label, then `columns` (floats to 3 places)."""
    width = max([len(first), *(len(str(r[first])) for r in rows)])

    def cell(r: dict[str, Any], c: str) -> str:
        v = r.get(c, "-")
        if v is None:  # an advantage outside its baseline's range: never a number
            return OUT_OF_RANGE
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    # whole names: evaluators share prefixes
    widths = [max([len(c), 9, *(len(cell(r, c)) for r in rows)]) for c in columns]
    head = f"{first:<{width}} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths,
                                                                       strict=True))
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = [f"{cell(r, c):>{w}}" for c, w in zip(columns, widths, strict=True)]
        lines.append(f"{str(r[first]):<{width}} " + " ".join(cells))
    return "\n".join(lines)


OUT_OF_RANGE = "out of range"
