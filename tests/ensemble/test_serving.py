"""Serving an export: the two policies on a toy runtime, the round trip from checkpoints
to an export folder on both backends, the refusal of a changed file, and the rule that the
serving side (`perturb`, the pyfunc model) never imports the selection code."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from san_search.ensemble.orchestration import Selection
from san_search.ensemble.serving import EnsembleRuntime, member_index
from san_search.errors import EnsembleError

# ------------------------------------------------------------------ policies

def _toy_runtime(policy: str) -> EnsembleRuntime:
    def add(c: float):  # type: ignore[no-untyped-def]
        return lambda x, same, opp: np.clip(x + c + 0 * same, 0, 1)

    return EnsembleRuntime([add(0.1), add(0.2), add(0.3)], lambda x: x.mean(axis=(1, 2, 3)),
                           {"female": np.zeros((4, 4), np.float32),
                            "male": np.ones((4, 4), np.float32)}, policy, seed=7)


def test_random_policy_is_a_function_of_the_image_alone() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 150, (40, 4, 4), dtype=np.uint8)  # + 0.3 stays below 1
    rt = _toy_runtime("random")
    out = rt.perturb(imgs)
    assert np.array_equal(out, rt.perturb(imgs))  # deterministic
    perm = rng.permutation(40)
    assert np.array_equal(rt.perturb(imgs[perm]), out[perm])  # position does not matter
    idx = rt.assignment(imgs)
    assert set(idx) == {0, 1, 2}  # 40 images spread over all three members
    added = np.round((out - imgs / 255.0).mean(axis=(1, 2)), 4)
    assert np.allclose(added, (idx + 1) * 0.1, atol=1e-4)
    assert member_index(imgs[0], 3, 7) != member_index(imgs[0], 3, 8) or \
        member_index(imgs[1], 3, 7) != member_index(imgs[1], 3, 8) or \
        member_index(imgs[2], 3, 7) != member_index(imgs[2], 3, 8)  # the seed matters


def test_chain_policy_applies_every_member_in_order() -> None:
    imgs = np.full((3, 4, 4), 10, dtype=np.uint8)
    out = _toy_runtime("chain").perturb(imgs)
    assert np.allclose(out, 10 / 255 + 0.6, atol=1e-6)
    with pytest.raises(ValueError, match="takes 4x4"):
        _toy_runtime("chain").perturb(np.zeros((1, 5, 5), np.uint8))
    with pytest.raises(ValueError, match="not one of random, chain"):
        _toy_runtime("shuffle")

# ------------------------------------------------------------------ an export folder

def test_round_trip_gives_the_checkpoints_outputs_on_both_backends(
        exported: tuple[Path, Selection], problem: tuple[Path, Path]) -> None:
    from san_search.data import open_dataset
    from san_search.ensemble.scoring import torch_runtime
    from san_search.ensemble.serving import load_ensemble
    from san_search.zoo.store import open_zoo

    out, sel = exported
    data, zoo_dir = problem
    ds = open_dataset(data)
    x = ds.split("test").images
    direct = torch_runtime([Path(m["checkpoint"]) for m in sel.members], open_zoo(zoo_dir),
                           sel.predictor, ds.prototypes, "random", 0)
    for policy in ("random", "chain"):
        want = direct.perturb(x, policy)
        got = load_ensemble(out, "torch").runtime.perturb(x, policy)
        assert np.array_equal(got, want)
        onnx = load_ensemble(out, "onnx").runtime.perturb(x, policy)
        assert float(np.abs(onnx - want).max()) < 1e-3
    # the two members really differ, so the policy matters
    assert not np.allclose(direct.perturb(x, "random"), direct.perturb(x, "chain"))


def test_a_tampered_file_is_refused(exported: tuple[Path, Selection], tmp_path: Path) -> None:
    import shutil

    from san_search.ensemble.serving import load_ensemble

    src, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    w = copy / "members" / "member_1.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-1] ^= 0x01
    w.write_bytes(bytes(raw))
    with pytest.raises(EnsembleError, match=r"member_1\.safetensors: SHA-256 does not match"):
        load_ensemble(copy)
    (copy / "members" / "member_1.safetensors").unlink()
    with pytest.raises(EnsembleError, match=r"member_1\.safetensors: listed .* but missing"):
        load_ensemble(copy, "onnx")


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_file_the_manifest_does_not_list_is_refused_not_a_keyerror(
        exported: tuple[Path, Selection], tmp_path: Path, backend: str) -> None:
    """A manifest whose `files` leave out a member's weights (or ONNX): that file would load
    unverified; the torch backend raised a bare KeyError."""
    import json
    import shutil

    from san_search.ensemble.serving import load_ensemble

    src, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    key = "weights" if backend == "torch" else "onnx"
    name = manifest["members"][1][key]
    del manifest["files"][name]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EnsembleError, match=rf"manifest.json: members\[1\]\.{key} names "
                                            rf"'{name}', which its files do not list"):
        load_ensemble(copy, backend)



# ------------------------------------------------------------------ what serving imports

PACKAGE = Path(__file__).resolve().parents[2] / "san_search"
CHOOSING = {"san_search.ensemble.selection", "san_search.ensemble.scoring",
            "san_search.ensemble.orchestration", "san_search.ensemble.export"}


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split(".")[1:])
    if not rel.parts:
        return PACKAGE / "__init__.py"
    for p in (PACKAGE / rel.with_suffix(".py"), PACKAGE / rel / "__init__.py"):
        if p.is_file():
            return p
    return None


def _san_imports(name: str) -> set[str]:
    """Every san_search module `name` imports, at module level or inside functions, with
    the packages each of them runs on import."""
    path = _module_file(name)
    assert path is not None, name
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("san_search")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("san_search"):
            mod = str(node.module)
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names
                      if _module_file(f"{mod}.{a.name}") is not None}
    parents = {".".join(m.split(".")[:i]) for m in found for i in range(2, m.count(".") + 1)}
    return {m for m in found | parents if _module_file(m) is not None and m != "san_search"}


def _reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += sorted(_san_imports(name) - seen)
    return seen


@pytest.mark.parametrize("module", ["san_search.ensemble.perturb",
                                    "san_search.ensemble.pyfunc_model",
                                    "san_search.ensemble.serving"])
def test_the_serving_side_never_imports_the_selection_code(module: str) -> None:
    reached = _reachable(module)
    assert "san_search.ensemble.serving" in reached
    assert not reached & CHOOSING, sorted(reached & CHOOSING)


def test_the_import_walk_sees_imports_inside_functions() -> None:
    # the check above would pass vacuously if it missed lazy imports: export's are lazy too
    assert "san_search.training.trainer" in _reachable("san_search.ensemble.export")
    assert _reachable("san_search.cli") >= CHOOSING


def test_models_registered_by_0_1_still_find_their_loader() -> None:
    """A registered model keeps the model code it was logged with; 0.1's imported
    `san_search.export.load_ensemble` (seen failing with ModuleNotFoundError on 0.2)."""
    import importlib

    from san_search.ensemble.serving import load_ensemble

    assert importlib.import_module("san_search.export").load_ensemble is load_ensemble
