"""Search-space files for the search tests: the shipped smoke space as text, and a writer
for edited copies."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMOKE = (REPO / "search_spaces" / "smoke.yaml").read_text()


def write_space(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    """`text` as a space file in `tmp_path`."""
    path = tmp_path / name
    path.write_text(text)
    return path
