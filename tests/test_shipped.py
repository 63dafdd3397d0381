"""shipped: every shipped search space, zoo spec and candidate config is found by name, an
unknown name is refused naming the shipped ones, and the spaces are found in both layouts
(inside the installed package; beside it in a checkout)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from san_search import shipped
from san_search.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {  # what the wheel ships: the repository's files of each kind
    "space": REPO / "search_spaces",
    "zoo": REPO / "san_search" / "zoos",
    "candidate": REPO / "san_search" / "candidates",
}
LOOKUPS: dict[str, tuple[Callable[[], list[Path]], Callable[[str], Path]]] = {
    "space": (shipped.spaces, shipped.space),
    "zoo": (shipped.zoo_specs, shipped.zoo_spec),
    "candidate": (shipped.candidates, shipped.candidate),
}
SHIPPED = [(kind, p) for kind, folder in FOLDERS.items() for p in sorted(folder.glob("*.yaml"))]


def test_the_repository_ships_the_demo_and_the_defaults() -> None:
    names = {(kind, p.stem) for kind, p in SHIPPED}
    assert {("space", "demo"), ("space", "default"), ("zoo", "demo"), ("zoo", "default"),
            ("candidate", "default")} <= names


@pytest.mark.parametrize(("kind", "path"), SHIPPED, ids=[f"{k}-{p.stem}" for k, p in SHIPPED])
def test_every_shipped_file_is_found_by_name(kind: str, path: Path) -> None:
    listing, by_name = LOOKUPS[kind]
    assert by_name(path.stem) == path.resolve()
    assert path.resolve() in listing()


@pytest.mark.parametrize("kind", list(LOOKUPS))
def test_the_listing_is_exactly_the_shipped_files_sorted(kind: str) -> None:
    listing, _ = LOOKUPS[kind]
    assert listing() == sorted(p.resolve() for p in FOLDERS[kind].glob("*.yaml"))


def test_the_default_zoo_spec_and_candidate_need_no_name() -> None:
    assert shipped.zoo_spec() == FOLDERS["zoo"].resolve() / "default.yaml"
    assert shipped.candidate() == FOLDERS["candidate"].resolve() / "default.yaml"


@pytest.mark.parametrize("kind", list(LOOKUPS))
def test_an_unknown_name_is_refused_naming_the_shipped_ones(kind: str) -> None:
    _, by_name = LOOKUPS[kind]
    with pytest.raises(ConfigError, match="'nosuch': no such file, and not a shipped") as err:
        by_name("nosuch")
    listed = re.search(r"\(([^()]*)\)$", str(err.value))
    assert listed is not None
    assert listed.group(1).split(", ") == sorted(p.stem for p in FOLDERS[kind].glob("*.yaml"))


def test_an_unknown_space_keeps_the_message_the_cli_shows() -> None:
    with pytest.raises(ConfigError, match=r"search space 'nosuch': no such file, and not a "
                                          r"shipped space \(cpu32, cpu64, default, demo, "):
        shipped.space("nosuch")


# ------------------------------------------------------------------ the two layouts

def _load_copy(package: Path) -> ModuleType:
    """shipped.py copied into `package`, imported from there (its errors from the real one)."""
    package.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(shipped.__file__), package / "shipped.py")
    spec = importlib.util.spec_from_file_location("shipped_copy", package / "shipped.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules.pop("shipped_copy", None)
    return module


def _yaml(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / f"{n}.yaml").write_text("description: test\n")


def test_an_installed_package_finds_the_spaces_inside_itself(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    _yaml(site / "san_search" / "search_spaces", "inside")
    _yaml(site / "search_spaces", "beside")  # a stray top-level folder must not win
    copy = _load_copy(site / "san_search")
    found: Path = copy.SPACES
    assert found == (site / "san_search" / "search_spaces").resolve()
    assert [p.stem for p in copy.spaces()] == ["inside"]
    assert copy.space("inside").is_file()


def test_a_checkout_finds_the_spaces_beside_the_package(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _yaml(repo / "search_spaces", "beside")
    copy = _load_copy(repo / "san_search")
    found: Path = copy.SPACES
    assert found == (repo / "search_spaces").resolve()
    assert [p.stem for p in copy.spaces()] == ["beside"]
    with pytest.raises(ConfigError, match=r"not a shipped space \(beside\)"):
        copy.space("inside")


def test_no_spaces_at_all_says_where_it_looked(tmp_path: Path) -> None:
    copy = _load_copy(tmp_path / "empty" / "san_search")
    with pytest.raises(ConfigError, match=r"none found in .*search_spaces"):
        copy.space("demo")


# the words a space's header uses for the machine it was sized for
COMPUTE = re.compile(r"sized for (one GPU|a 2-core CPU machine|any CPU machine)", re.I)


@pytest.mark.parametrize("path", sorted(FOLDERS["space"].glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_space_states_the_compute_it_was_sized_for(path: Path) -> None:
    header = " ".join(line.lstrip("# ") for line in path.read_text().splitlines()
                      if line.startswith("#"))
    assert COMPUTE.search(header), f"{path.name}: its header names no machine it is sized for"


def test_the_colour_presets_are_shipped_and_default_is_the_gpu_default() -> None:
    assert {"cpu32", "cpu64", "gpu112", "default"} <= {p.stem for p in shipped.spaces()}
    head = shipped.space("default").read_text().splitlines()[0]
    assert "GPU default at 112 px colour" in head
    assert "64 px colour" in shipped.space("cpu64").read_text().splitlines()[0]
    assert "112 px colour" in shipped.space("gpu112").read_text().splitlines()[0]
