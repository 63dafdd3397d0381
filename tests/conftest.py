"""Shared fixtures: real LFW subsets from ../shared and small synthetic sets, all built in
temporary folders (nothing from ../shared is copied into the project)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "SAN_SEARCH_CACHE" not in os.environ:  # baseline sweeps cached per test session, not in ~
    import tempfile

    os.environ["SAN_SEARCH_CACHE"] = tempfile.mkdtemp(prefix="san-search-cache-")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_ray_left_running(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Every test leaves Ray as it found it: a Ray instance left initialised makes the next
    test's own `ray.init` fail, far from the cause (this once hid behind test order)."""
    import sys

    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail(f"{request.node.nodeid} left Ray initialised; shut it down in the test")


def shared_dir() -> Path:
    return Path(os.environ.get("SAN_SEARCH_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    root = shared_dir() / "datasets" / "lfw"
    if not (root / "male_names.txt").is_file():
        pytest.skip(f"real LFW not found at {root} (set SAN_SEARCH_SHARED)")
    return root


def _people(root: Path) -> list[tuple[str, list[Path]]]:
    images = root / "lfw-deepfunneled"
    return [(d.name, sorted(d.iterdir())) for d in sorted(images.iterdir()) if d.is_dir()]


def make_lfw_subset(lfw_root: Path, dest: Path, *, women: int, men: int,
                    singles: int = 6) -> Path:
    """An LFW-layout tree of symlinks to real images: `women` + `men` people with 2+ images
    (at most 6 each) and `singles` one-image people; gender lists filtered to them."""
    males = set((lfw_root / "male_names.txt").read_text().split())
    females = set((lfw_root / "female_names.txt").read_text().split())
    chosen: list[tuple[str, list[Path]]] = []
    want = {"f": women, "m": men}
    n_single = 0
    for name, files in _people(lfw_root):
        first = files[0].name
        g = "m" if first in males and first not in females else (
            "f" if first in females and first not in males else None)
        if g is None:
            continue
        if len(files) >= 2 and want[g] > 0:
            want[g] -= 1
            chosen.append((name, files[:6]))
        elif len(files) == 1 and n_single < singles:
            n_single += 1
            chosen.append((name, files))
        if not any(want.values()) and n_single >= singles:
            break
    img_root = dest / "lfw-deepfunneled"
    listed_m, listed_f = [], []
    for name, files in chosen:
        (img_root / name).mkdir(parents=True)
        for f in files:
            (img_root / name / f.name).symlink_to(f)
            (listed_m if f.name in males else listed_f).append(f.name)
    # CRLF, as the published lists are.
    (dest / "male_names.txt").write_bytes(("\r\n".join(listed_m) + "\r\n").encode())
    (dest / "female_names.txt").write_bytes(("\r\n".join(listed_f) + "\r\n").encode())
    return dest


@pytest.fixture
def lfw_subset(lfw_root: Path, tmp_path: Path) -> Path:
    return make_lfw_subset(lfw_root, tmp_path / "lfw", women=10, men=14)


@pytest.fixture(scope="session")
def synth_files_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from san_search.data import synth_files

    return synth_files(tmp_path_factory.mktemp("synthraw") / "faces", identities=24,
                       images_per_identity=4, size=32, seed=3)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real `mlflow server` process (mlflow/serve-local.sh) on 127.0.0.1; stopped after."""
    import subprocess
    import sys
    import time
    import urllib.request

    from san_search.tracking import free_port

    port = free_port(0)
    folder = tmp_path_factory.mktemp("mlflow-server")
    env = {**os.environ, "MLFLOW_PORT": str(port), "MLFLOW_DIR": str(folder),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(["bash", str(REPO / "mlflow" / "serve-local.sh")], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # a loaded 2-core machine can take over a minute
    try:
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (folder / "server.log").read_text()[-2000:]
                raise RuntimeError(f"mlflow server did not start: {tail}")
            time.sleep(0.5)
        yield uri
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


TINY = {"epochs": 1, "batch_size": 32, "images_per_epoch": 96, "cpus": 1.0}


@pytest.fixture(scope="session")
def problem(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic dataset and a zoo with aux, val and test models, trained without Ray."""
    from safetensors.torch import save

    from san_search.config import ModelSpec
    from san_search.data import BuildOptions, synth
    from san_search.zoo.store import add_model, train_model

    root = tmp_path_factory.mktemp("train")
    data = root / "data"
    synth(data, identities=40, images_per_identity=6, size=16, options=BuildOptions(pairs=60))
    zoo = root / "zoo"
    for name, kind, arch, role in [
        ("g_aux", "gender", "paper_cnn", "aux"), ("g_aux2", "gender", "regnetx_002", "aux"),
        ("g_val", "gender", "paper_cnn", "val"), ("m_aux", "matcher", "regnetx_002", "aux"),
        ("m_val", "matcher", "resnet10t", "val"), ("g_test", "gender", "paper_cnn", "test"),
        ("m_test", "matcher", "regnetx_002", "test"),
    ]:
        spec = ModelSpec(name=name, kind=kind, arch=arch, role=role, **TINY)  # type: ignore[arg-type]
        model, meta = train_model(spec, data, log=lambda _: None)
        add_model(zoo, save(model.state_dict()), meta, str(data))
    return data, zoo
