"""MLflow has one home: only the `tracking` package (and the pyfunc model class, which must
subclass MLflow's) import it, at any depth (inside functions and TYPE_CHECKING blocks too)."""

from __future__ import annotations

import ast
from pathlib import Path

import san_search

PACKAGE = Path(san_search.__file__).parent
ALLOWED = {"san_search.ensemble.pyfunc_model"}  # besides san_search.tracking and its modules


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_mlflow(source: str) -> bool:
    """True when the module imports mlflow anywhere: `import mlflow[.x]`, `from mlflow[.x]
    import ...`, or `__import__`/`importlib.import_module` of an mlflow name."""
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("__import__", "import_module") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        if any(n == "mlflow" or n.startswith("mlflow.") for n in names):
            return True
    return False


def mlflow_importers() -> set[str]:
    return {module_name(p) for p in sorted(PACKAGE.rglob("*.py"))
            if imports_mlflow(p.read_text(encoding="utf-8"))}


def test_only_tracking_and_the_pyfunc_model_import_mlflow() -> None:
    importers = mlflow_importers()
    outside = {m for m in importers
               if m not in ALLOWED and m != "san_search.tracking"
               and not m.startswith("san_search.tracking.")}
    assert not outside, f"modules importing mlflow outside san_search.tracking: {sorted(outside)}"
    assert importers >= ALLOWED  # the scan sees real imports (not vacuously empty)
    assert any(m.startswith("san_search.tracking") for m in importers)


def test_the_scan_finds_every_spelling_of_an_import() -> None:
    found = [
        "import mlflow",
        "import mlflow.pyfunc as p",
        "from mlflow.tracking import MlflowClient",
        "def f():\n    from mlflow.entities import Metric",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mlflow import Run",
        "import importlib\nimportlib.import_module('mlflow.artifacts')",
        "__import__('mlflow')",
    ]
    for source in found:
        assert imports_mlflow(source), source
    for source in ("import mlflowish", "from san_search import tracking",
                   "from .mlflow import x", "x = 'mlflow'"):
        assert not imports_mlflow(source), source
