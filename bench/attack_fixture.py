"""The adaptive attacker's figures when no LFW export exists: the ensemble test fixtures
(tests/conftest.py `problem`, tests/ensemble/conftest.py `exported`: a synthetic 16 px set,
a tiny zoo, two one-epoch SANs) built under OUT, then `san-search attack` with the default
budget. Usage: python bench/attack_fixture.py OUT"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from safetensors.torch import save

from san_search.cli import main
from san_search.config import ModelSpec
from san_search.data import BuildOptions, open_dataset, synth
from san_search.ensemble.export import export_ensemble
from san_search.ensemble.orchestration import Selection
from san_search.ensemble.scoring import best_predictor, test_report
from san_search.training.trainer import load_san
from san_search.zoo.store import add_model, open_zoo, train_model
from tests.conftest import TINY
from tests.ensemble.conftest import _train_member


def build(root: Path) -> tuple[Path, Path, Path]:
    data, zoo_dir = root / "data", root / "zoo"
    synth(data, identities=40, images_per_identity=6, size=16, options=BuildOptions(pairs=60))
    for name, kind, arch, role in [
        ("g_aux", "gender", "paper_cnn", "aux"), ("g_aux2", "gender", "regnetx_002", "aux"),
        ("g_val", "gender", "paper_cnn", "val"), ("m_aux", "matcher", "regnetx_002", "aux"),
        ("m_val", "matcher", "resnet10t", "val"), ("g_test", "gender", "paper_cnn", "test"),
        ("m_test", "matcher", "regnetx_002", "test")]:
        model, meta = train_model(ModelSpec(name=name, kind=kind, arch=arch, role=role,
                                            **TINY), data, log=lambda _: None)
        add_model(zoo_dir, save(model.state_dict()), meta, str(data))
    ckpts = [_train_member(data, zoo_dir, root / f"m{i}", 4 * (i + 1), i) for i in range(2)]
    ds = open_dataset(data)
    zoo = open_zoo(zoo_dir, ds.fingerprint)
    predictor = best_predictor(zoo)
    table, cmc = test_report(ckpts, 0, ds, zoo, predictor, 0, False, log=lambda _: None)
    val = {"privacy_mean": 0.3, "utility_mean": 0.7, "ssim": 0.8}
    members = [{"name": f"m{i}", "run_id": f"run{i}", "checkpoint": str(c),
                "config": load_san(c)[1].to_dict(), "val": val} for i, c in enumerate(ckpts)]
    sel = Selection("fixture", members, predictor, "random", 0, str(data), str(zoo_dir),
                    ds.fingerprint, "", "", "", "", {"size": 2}, [], table,
                    [{"name": "m0", **val}], "now", cmc)
    return export_ensemble(sel, root / "export", log=lambda _: None), data, zoo_dir


if __name__ == "__main__":
    out = Path(sys.argv[1])
    t0 = time.perf_counter()
    export, data, zoo_dir = build(out)
    print(f"fixtures built in {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    rc = main(["attack", "--ensemble", str(export), "--data", str(data), "--zoo", str(zoo_dir)])
    print(f"attack: rc {rc} in {time.perf_counter() - t0:.0f} s")
