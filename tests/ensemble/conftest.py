"""The ensemble tests' shared export: two small SANs trained on the session's synthetic
problem, their test report, and the export folder, built once for every test file here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from san_search.ensemble.orchestration import Selection


def _train_member(data: Path, zoo: Path, folder: Path, width: int, seed: int) -> Path:
    from san_search.config import CandidateConfig
    from san_search.training.trainer import SanTrainer

    cfg = CandidateConfig(autoencoder="san_conv", depth=1, width=width,
                          aux_gender=("g_aux",), aux_matcher="m_aux", batch_size=16,
                          epochs=1, images_per_epoch=32, seed=seed)
    t = SanTrainer(cfg, data, zoo)
    t.train_epoch()
    folder.mkdir(parents=True)
    t.save(folder)
    return folder


@pytest.fixture(scope="package")
def exported(problem: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, Selection]:
    from san_search.data import open_dataset
    from san_search.ensemble.export import export_ensemble
    from san_search.ensemble.scoring import best_predictor, test_report
    from san_search.zoo.store import open_zoo

    data, zoo_dir = problem
    root = tmp_path_factory.mktemp("ensemble")
    ckpts = [_train_member(data, zoo_dir, root / f"m{i}", 4 * (i + 1), i) for i in range(2)]
    ds = open_dataset(data)
    zoo = open_zoo(zoo_dir, expect_fingerprint=ds.fingerprint)
    predictor = best_predictor(zoo)
    table, cmc = test_report(ckpts, 0, ds, zoo, predictor, seed=0, third_party=False,
                        log=lambda _: None)
    val = {"privacy_mean": 0.3, "utility_mean": 0.7, "ssim": 0.8}
    from san_search.training.trainer import load_san

    members = [{"name": f"m{i}", "run_id": f"run{i}", "checkpoint": str(c),
                "config": load_san(c)[1].to_dict(), "val": val}
               for i, c in enumerate(ckpts)]
    sel = Selection("unit", members, predictor, "random", 0, str(data), str(zoo_dir),
                    ds.fingerprint, "", "", "", "", {"size": 2}, [], table,
                    [{"name": "m0", **val}], "now", cmc)
    out = export_ensemble(sel, root / "export", log=lambda _: None)
    return out, sel


@pytest.fixture(scope="package")
def lfw_framed(exported: tuple[Path, Selection], tmp_path_factory: pytest.TempPathFactory
               ) -> Path:
    """The shared export, its manifest saying its faces were cut as LFW's are (a centred
    crop of 0.5 of the shorter side), so a face's square is about half a 250 px photo."""
    folder = tmp_path_factory.mktemp("lfw-framed") / "export"
    shutil.copytree(exported[0], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["preprocessing"]["crop"] = 0.5
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder
