"""Files that ship with san-search: the search spaces (`search_spaces/`), the zoo specs
(`zoos/`) and the candidate configs (`candidates/`), found by name. The one place that knows
where they live, in a source checkout and in an installed wheel alike."""

from __future__ import annotations

from pathlib import Path

from san_search.errors import ConfigError

PACKAGE = Path(__file__).resolve().parent
SPACES = PACKAGE.parent / "search_spaces"


def spaces() -> list[Path]:
    """The shipped search spaces, sorted by name."""
    return sorted(SPACES.glob("*.yaml"))


def space(name: str) -> Path:
    """A shipped search space by name (`default`, `demo`, ...)."""
    found = {p.stem: p for p in spaces()}
    if name not in found:
        raise ConfigError(f"search space {name!r}: no such file, and not a shipped space "
                          f"({', '.join(found) or 'none found'})")
    return found[name]


def zoo_spec(name: str = "default") -> Path:
    """A shipped zoo spec (`zoos/<name>.yaml`)."""
    return PACKAGE / "zoos" / f"{name}.yaml"


def candidate(name: str = "default") -> Path:
    """A shipped candidate config (`candidates/<name>.yaml`)."""
    return PACKAGE / "candidates" / f"{name}.yaml"
