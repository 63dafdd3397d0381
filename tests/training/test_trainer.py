"""SAN training: candidate checks, weights that change, exact resume from a checkpoint, NaN
losses, and the real Ray Train + MLflow path (two workers, a restart, checkpoints, resume) on a
tiny synthetic problem."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from san_search.config import TrainResources
from san_search.data import open_dataset
from san_search.training.trainer import CandidateError, SanTrainer, load_san
from san_search.zoo.store import open_zoo
from tests.helpers import tiny_candidate


def test_candidate_checks_fail_before_training(problem: tuple[Path, Path]) -> None:
    data, zoo = problem
    with pytest.raises(CandidateError, match="'g_val' has role 'val': SANs may only train "
                                             "against 'aux' models \\(aux gender models: g_aux"):
        SanTrainer(tiny_candidate(aux_gender=("g_aux", "g_val")), data, zoo)
    with pytest.raises(CandidateError, match="no matcher model 'nope' in zoo"):
        SanTrainer(tiny_candidate(aux_matcher="nope"), data, zoo)
    with pytest.raises(CandidateError, match="divisible by 32; got 16"):
        SanTrainer(tiny_candidate(depth=5), data, zoo)


def test_training_changes_weights_and_resume_is_exact(problem: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    data, zoo = problem
    torch.set_num_threads(1)
    straight = SanTrainer(tiny_candidate(), data, zoo)
    before = {k: v.clone() for k, v in straight.model.state_dict().items()}
    straight.train_epoch()
    assert any(not torch.equal(v, before[k]) for k, v in straight.model.state_dict().items())
    straight.save(tmp_path)
    m2 = straight.train_epoch()  # epoch 2: the matcher term is on
    assert m2["loss_matcher"] > 0

    resumed = SanTrainer(tiny_candidate(), data, zoo)
    resumed.load(tmp_path)
    assert resumed.epoch == 1
    resumed.train_epoch()
    for k, v in straight.model.state_dict().items():
        assert torch.allclose(v, resumed.model.state_dict()[k], atol=1e-6), k
    model, cfg = load_san(tmp_path)
    assert cfg == tiny_candidate() and isinstance(model, nn.Module)


def test_nan_loss_is_an_error(problem: tuple[Path, Path]) -> None:
    data, zoo = problem
    t = SanTrainer(tiny_candidate(), data, zoo)
    with torch.no_grad():
        next(t.model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 1"):
        t.train_epoch()


@pytest.mark.slow
def test_ray_train_two_workers_checkpoints_resume_and_mlflow(
        problem: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    import mlflow
    from san_search.training.candidate import run_candidate
    from san_search.training.trainer import fit

    data, zoo = problem
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The first worker group dies after its first checkpoint: Ray restarts it from there.
    monkeypatch.setenv("SAN_SEARCH_FAIL_AFTER_EPOCH", "1")
    cfg = tiny_candidate(aux_gender=("g_aux", "g_aux2"))
    resources = TrainResources(num_workers=2, cpus_per_worker=0.5, max_failures=1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        summary = run_candidate(cfg, data, zoo, tracking_uri=uri, experiment="t",
                                out=tmp_path / "runs", name="cand", resources=resources,
                                log=lambda _: None)
        run_dir = tmp_path / "runs" / "cand"
        checkpoints = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())
        assert len(checkpoints) == 2  # one per epoch (num_to_keep=2)
        for c in checkpoints:
            assert {p.name for p in c.iterdir()} >= {"model.safetensors",
                                                     "optimizer.safetensors", "trainer.json"}
        last = max(checkpoints, key=lambda c: json.loads((c / "trainer.json").read_text())["epoch"])
        assert json.loads((last / "trainer.json").read_text())["epoch"] == 2

        mlflow.set_tracking_uri(uri)
        run = mlflow.get_run(summary["run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.params["aux_gender"] == "g_aux+g_aux2"  # one spelling everywhere
        assert run.data.tags["data_fingerprint"] == open_dataset(data).fingerprint
        history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_privacy_mean")
        assert [m.step for m in history] == [1, 2]
        arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
        assert {"trade_off_curve.json", "trade_off_curve.png", "originals_vs_perturbed.png",
                "weights", "baseline_noise.json", "baseline_blur.json"} <= arts
        local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                    artifact_path="trade_off_curve.json",
                                                    dst_path=str(tmp_path / "dl"))
        table = json.loads(Path(local).read_text())
        assert [row[0] for row in table["data"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
        assert table["data"][0][4] == pytest.approx(1.0)  # alpha 0: full utility

        # Resume from the last checkpoint to a third epoch: only epoch 3 is trained.
        monkeypatch.delenv("SAN_SEARCH_FAIL_AFTER_EPOCH")
        more = dataclasses.replace(cfg, epochs=3)
        result = fit(more, data, zoo, storage_path=tmp_path / "runs", name="cand-more",
                     resources=TrainResources(max_failures=0), resume_from=last)
        assert result.metrics_dataframe["epoch"].tolist() == [3]
        with result.checkpoint.as_directory() as c:
            assert json.loads((Path(c) / "trainer.json").read_text())["epoch"] == 3
    finally:
        ray.shutdown()
    assert os.environ.get("SAN_SEARCH_FAIL_AFTER_EPOCH") is None
    assert open_zoo(zoo).names("gender", "aux") == ["g_aux", "g_aux2"]
