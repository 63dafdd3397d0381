"""SAN training: candidate checks, weights that change, exact resume from a checkpoint, NaN
losses, and the real Ray Train + MLflow path (two workers, a restart, checkpoints, resume) on a
tiny synthetic problem."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
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


def test_balanced_draws_each_gender_equally_often_and_keeps_group_weights() -> None:
    from san_search.training.trainer import balanced

    gender = np.array([1] * 76 + [0] * 24)  # LFW's train split is about 76% male
    p = balanced(gender)
    assert p.sum() == pytest.approx(1.0)
    assert p[gender == 1].sum() == pytest.approx(0.5)
    assert p[gender == 0].sum() == pytest.approx(0.5)
    draws = np.random.default_rng(0).choice(len(gender), size=20000, p=p)
    assert abs(gender[draws].mean() - 0.5) < 0.02
    # with group weights: within a gender the weights keep their ratio
    weights = np.where(np.arange(100) % 2 == 0, 3.0, 1.0)
    q = balanced(gender, weights / weights.sum())
    assert q[0] / q[1] == pytest.approx(3.0)  # two men, weights 3 and 1
    assert balanced(np.ones(5, int)) == pytest.approx(np.full(5, 0.2))  # one gender only


def test_a_residual_autoencoder_changes_its_input_by_at_most_its_bound() -> None:
    from san_search.models import create

    torch.manual_seed(0)
    model = create("autoencoder", "san_conv", depth=1, width=4, image_size=16, residual=0.1)
    x = torch.rand(3, 1, 16, 16)
    proto = torch.rand(1, 1, 16, 16).expand(3, 1, 16, 16)
    with torch.no_grad():
        same, opp = model(x, proto, 1 - proto)
    assert float((opp - x).abs().max()) <= 0.1 + 1e-6
    assert float((same - x).abs().max()) <= 0.1 + 1e-6
    assert float((opp - same).abs().max()) > 0  # the prototype still steers the change
    plain = create("autoencoder", "san_conv", depth=1, width=4, image_size=16)
    assert plain.residual == 0.0  # off by default: the paper's reconstruction


def test_a_candidate_checks_the_new_levers_naming_the_key() -> None:
    from san_search.config import CandidateConfig

    assert CandidateConfig().autoencoder_kwargs() == {"depth": 2, "width": 16, "skip": False}
    assert CandidateConfig(residual=0.2).autoencoder_kwargs()["residual"] == 0.2
    with pytest.raises(ValueError, match="key 'matcher_target': 'both' is not one of mean, opp"):
        CandidateConfig(matcher_target="both")
    with pytest.raises(ValueError, match=r"key 'residual' must be in \[0, 1\], got 2"):
        CandidateConfig(residual=2)
    with pytest.raises(ValueError, match="key 'residual' is for autoencoder san_conv"):
        CandidateConfig(autoencoder="san_paper", residual=0.1)
