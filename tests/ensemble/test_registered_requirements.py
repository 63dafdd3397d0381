"""The registered MLflow model declares its real requirements: it loads and predicts in a
subprocess where only the declared distributions (and what they depend on) can be imported.

No network, so no fresh virtual environment: the subprocess installs an import hook that
refuses every top-level module of an installed distribution outside that closure, which is
what a fresh environment built from `requirements.txt` would lack."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from san_search.ensemble.orchestration import Selection

# Runs in the subprocess: argv = model uri, tracking uri, requirements.txt, input .npy, output.
LOADER = textwrap.dedent('''
    import importlib.metadata as md
    import re
    import sys

    from packaging.requirements import Requirement

    uri, tracking, reqs_file, x_file, out_file = sys.argv[1:]

    def norm(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    allowed, todo = set(), []
    for line in open(reqs_file).read().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            todo.append(Requirement(line).name)
    while todo:
        name = norm(todo.pop())
        if name in allowed:
            continue
        allowed.add(name)
        try:
            needs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for r in map(Requirement, needs):
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)

    owners = md.packages_distributions()
    blocked = {top for top, dists in owners.items()
               if not any(norm(d) in allowed for d in dists)}

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                # what a package that is not installed raises (torch catches exactly this
                # one for its optional imports, e.g. colorama)
                raise ModuleNotFoundError(f"{name} is not among the declared requirements",
                                          name=name)
            return None

    sys.meta_path.insert(0, Refuse())

    import numpy as np
    import mlflow

    mlflow.set_tracking_uri(tracking)
    model = mlflow.pyfunc.load_model(uri)
    np.save(out_file, np.asarray(model.predict(np.load(x_file))))
    print("blocked", len(blocked), "allowed", len(allowed))
''')


def _run_loader(uri: str, tracking: str, reqs: Path, x: np.ndarray, tmp: Path
                ) -> tuple[subprocess.CompletedProcess[str], Path]:
    script, x_file, out_file = tmp / "load.py", tmp / "x.npy", tmp / "y.npy"
    script.write_text(LOADER)
    np.save(x_file, x)
    proc = subprocess.run([sys.executable, str(script), uri, tracking, str(reqs), str(x_file),
                           str(out_file)], capture_output=True, text=True, timeout=600)
    return proc, out_file


@pytest.mark.slow
def test_registered_model_loads_with_only_its_declared_requirements(
        exported: tuple[Path, Selection], tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    import mlflow
    from san_search.ensemble.export import register
    from san_search.ensemble.serving import load_ensemble

    out, _ = exported
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("reqs", artifact_location=(tmp_path / "art").as_uri())
    run_id = client.create_run(exp).info.run_id
    got = register(out, uri, run_id, "reqs-ensemble", log=lambda _: None)
    mlflow.set_tracking_uri(uri)
    reqs = Path(mlflow.pyfunc.get_model_dependencies(got["uri"]))
    x = np.random.default_rng(3).integers(0, 256, (4, 16, 16), dtype=np.uint8)
    proc, y_file = _run_loader(got["uri"], uri, reqs, x, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.array_equal(np.load(y_file), load_ensemble(out).runtime.perturb(x))

    # the check can fail: without the san-search line (the 0.2.0 bug) the model cannot load
    stripped = tmp_path / "stripped.txt"
    stripped.write_text("\n".join(r for r in reqs.read_text().splitlines()
                                  if not r.startswith("san-search")))
    proc, _ = _run_loader(got["uri"], uri, stripped, x, tmp_path)
    assert proc.returncode != 0
    assert "san_search is not among the declared requirements" in proc.stderr, json.dumps(
        proc.stderr[-2000:])
