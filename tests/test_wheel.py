"""The installable package: an sdist and a wheel built from this tree (in a temporary copy),
the wheel installed with `--no-deps` into a fresh venv that borrows the current environment's
dependencies, and the installed `san-search` run outside the repository: help, the shipped
spaces listed and found, the demo's files present, and `search --check` on a shipped space
against a small zoo trained by the installed CLI itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SPACE_NAMES = sorted(p.stem for p in (REPO / "search_spaces").glob("*.yaml"))
PACKAGE_DATA = sorted(
    [f"san_search/search_spaces/{n}.yaml" for n in SPACE_NAMES]
    + [f"san_search/{p.relative_to(REPO / 'san_search').as_posix()}"
       for folder in ("zoos", "candidates")
       for p in (REPO / "san_search" / folder).glob("*.yaml")])
# Three aux models are all `search demo --check` needs (the demo space takes the zoo's whole
# aux pool); one epoch of a few images each: about 20 s with Ray's start-up.
TINY_ZOO = """\
defaults: {epochs: 1, batch_size: 32, lr: 0.003, images_per_epoch: 64, cpus: 0.5, gpus: 0}
models:
  - {name: gender_aux_a, kind: gender, arch: paper_cnn, role: aux}
  - {name: gender_aux_b, kind: gender, arch: paper_cnn, role: aux}
  - {name: matcher_aux_a, kind: matcher, arch: resnet10t, role: aux}
"""


@dataclass(frozen=True)
class Installed:
    venv: Path
    site: Path  # the venv's own site-packages
    wheel: Path
    sdist: Path
    cwd: Path  # outside the repository
    env: dict[str, str]

    def run(self, *args: str, ok: bool = True, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(args, cwd=self.cwd, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if ok and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def san_search(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.venv / "bin" / "san-search"), *args, ok=ok)


def _copy_source(dest: Path) -> Path:
    """The files git knows (tracked, or untracked and not ignored): what a clone builds from,
    without the checkout's build outputs, venvs and runs."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=REPO, capture_output=True,
                                check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"needs a git checkout to copy the source from: {exc}")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _build(src: Path, out: Path) -> tuple[Path, Path]:
    """An sdist from the source copy, then the wheel from that sdist (so the sdist must carry
    everything the wheel needs). No build isolation: nothing is downloaded."""
    sdist_dir, wheel_dir = out / "sdist", out / "wheel"
    name = subprocess.run(
        [sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
         "print(b.build_sdist(sys.argv[1]))", str(sdist_dir)],
        cwd=src, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    sdist = sdist_dir / name
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", "-w", str(wheel_dir), str(sdist)],
                   cwd=out, capture_output=True, text=True, check=True)
    (wheel,) = wheel_dir.glob("san_search-*.whl")
    return sdist, wheel


def _fresh_venv(venv: Path, wheel: Path) -> Path:
    """A venv with only the wheel installed; then a .pth lends it the current environment's
    packages (appended after its own site-packages, and without running the current
    environment's .pth files, so its editable san_search does not come along)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip())
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    here = sysconfig.get_paths()
    lent = dict.fromkeys([here["purelib"], here["platlib"]])
    (site / "zz_borrowed_env.pth").write_text("".join(f"{p}\n" for p in lent))
    return site


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    sdist, wheel = _build(_copy_source(root / "src"), root / "dist")
    venv = root / "venv"
    site = _fresh_venv(venv, wheel)
    cwd = root / "elsewhere"
    cwd.mkdir()
    assert not cwd.resolve().is_relative_to(REPO)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", VIRTUAL_ENV=str(venv),
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return Installed(venv, site.resolve(), wheel, sdist, cwd, env)


def test_the_sdist_and_the_wheel_carry_every_shipped_file(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
    assert set(PACKAGE_DATA) <= names
    assert not any(n.startswith("search_spaces/") for n in names)  # not a top-level package
    with tarfile.open(installed.sdist) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    assert {f"search_spaces/{n}.yaml" for n in SPACE_NAMES} <= members
    assert "setup.py" in members


def test_the_venv_imports_san_search_from_its_own_site_packages(installed: Installed) -> None:
    probe = ("import json, san_search, san_search.shipped as s, san_search.demo as d; "
             "print(json.dumps({'package': san_search.__file__, 'spaces': str(s.SPACES), "
             "'names': [p.stem for p in s.spaces()], 'demo_space': str(d.demo_space()), "
             "'demo_zoo': str(d.DEMO_ZOO), 'zoo': str(s.zoo_spec('demo')), "
             "'candidate': str(s.candidate('default'))}))")
    found = json.loads(installed.run(str(installed.venv / "bin" / "python"), "-c", probe)
                       .stdout.strip().splitlines()[-1])
    package = installed.site / "san_search"
    assert Path(found["package"]).resolve() == package / "__init__.py"
    assert Path(found["spaces"]) == package / "search_spaces"
    assert found["names"] == SPACE_NAMES
    for key in ("demo_space", "demo_zoo", "zoo", "candidate"):
        path = Path(found[key])
        assert path.is_relative_to(package) and path.is_file(), (key, path)
    assert Path(found["demo_space"]).name == "demo.yaml"
    assert Path(found["demo_zoo"]) == package / "zoos" / "demo.yaml"


def test_help_runs_outside_the_repository(installed: Installed) -> None:
    done = installed.san_search("--help")
    assert "search" in done.stdout and "demo" in done.stdout


def test_an_unknown_space_lists_the_shipped_ones(installed: Installed) -> None:
    done = installed.san_search("search", "nosuch", "--data", "d", "--zoo", "z", ok=False)
    assert done.returncode == 2, done.stderr
    assert f"not a shipped space ({', '.join(SPACE_NAMES)})" in done.stderr


def test_search_check_passes_on_the_shipped_demo_space(installed: Installed) -> None:
    data, zoo = installed.cwd / "data", installed.cwd / "zoo"
    installed.san_search("data", "synth", "--out", str(data), "--identities", "12",
                         "--images-per-identity", "4", "--size", "32")
    spec = installed.cwd / "tiny-zoo.yaml"
    spec.write_text(TINY_ZOO)
    installed.san_search("zoo", "train", "--zoo", str(spec), "--data", str(data),
                         "--out", str(zoo))
    done = installed.san_search("search", "demo", "--check", "--data", str(data),
                                "--zoo", str(zoo))
    first = done.stdout.splitlines()[0]
    assert first.startswith(str(installed.site / "san_search" / "search_spaces" / "demo.yaml"))
    assert f"OK against {zoo}" in first
    assert "parameters: width," in done.stdout
