"""Files that ship with san-search: the search spaces (`search_spaces/`), the zoo specs
(`zoos/`) and the candidate configs (`candidates/`), found by name. The one place that knows
where they live, in a source checkout and in an installed wheel alike.

`search_spaces/` stays at the top of the repository; the wheel carries it as
`san_search/search_spaces/` (setup.py maps the package `san_search.search_spaces` onto the
folder). So: inside the package when installed from a wheel or sdist, else beside the package
(a source checkout, an editable install). Files are found beside `__file__` rather than through
`importlib.resources.files("san_search.search_spaces")`: callers open them by path, and under
an editable install that mapped subpackage does not import (setuptools' editable finder), nor
should a checkout on PYTHONPATH pick up another checkout's folder through it."""

from __future__ import annotations

from pathlib import Path

from san_search.errors import ConfigError

PACKAGE = Path(__file__).resolve().parent
INSTALLED_SPACES = PACKAGE / "search_spaces"
CHECKOUT_SPACES = PACKAGE.parent / "search_spaces"
SPACES = INSTALLED_SPACES if INSTALLED_SPACES.is_dir() else CHECKOUT_SPACES
ZOOS = PACKAGE / "zoos"
CANDIDATES = PACKAGE / "candidates"


def _listed(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.yaml"))


def _by_name(what: str, kind: str, folder: Path, name: str) -> Path:
    found = {p.stem: p for p in _listed(folder)}
    if name not in found:
        raise ConfigError(f"{what} {name!r}: no such file, and not a shipped {kind} "
                          f"({', '.join(found) or f'none found in {folder}'})")
    return found[name]


def spaces() -> list[Path]:
    """The shipped search spaces, sorted by name."""
    return _listed(SPACES)


def space(name: str) -> Path:
    """A shipped search space by name (`default`, `demo`, ...)."""
    return _by_name("search space", "space", SPACES, name)


def zoo_specs() -> list[Path]:
    """The shipped zoo specs, sorted by name."""
    return _listed(ZOOS)


def zoo_spec(name: str = "default") -> Path:
    """A shipped zoo spec by name (`zoos/<name>.yaml`)."""
    return _by_name("zoo spec", "zoo spec", ZOOS, name)


def candidates() -> list[Path]:
    """The shipped candidate configs, sorted by name."""
    return _listed(CANDIDATES)


def candidate(name: str = "default") -> Path:
    """A shipped candidate config by name (`candidates/<name>.yaml`)."""
    return _by_name("candidate config", "candidate config", CANDIDATES, name)
