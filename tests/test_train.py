"""SAN training and evaluation: the loss, candidate checks, resume, the evaluation helpers,
and the real Ray Train + MLflow path on a tiny synthetic problem."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from san_search.cli import main
from san_search.config import CandidateConfig, TrainResources
from san_search.data import open_dataset
from san_search.evaluate import (
    Pool,
    PoolScorer,
    gaussian_blur,
    gaussian_noise,
    privacy_at_utility,
)
from san_search.evaluators import MajorityGender
from san_search.losses import san_loss
from san_search.train import CandidateError, SanTrainer, load_san
from san_search.zoo import open_zoo


def _cfg(**kw: object) -> CandidateConfig:
    base = dict(aux_gender=("g_aux",), aux_matcher="m_aux", depth=2, width=4, epochs=2,
                images_per_epoch=64, batch_size=16, matcher_warmup=1)
    return CandidateConfig(**{**base, **kw})  # type: ignore[arg-type]


class _Fixed(nn.Module):
    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], 2)


class _Mean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # (B, 1): a one-dimensional "embedding"


def test_loss_terms_have_known_values() -> None:
    x = torch.full((2, 1, 4, 4), 0.5)
    out_same = torch.full((2, 1, 4, 4), 0.7)
    out_opp = torch.full((2, 1, 4, 4), 0.1)
    y = torch.tensor([1, 0])
    g = _Fixed([0.0, 0.0])  # uniform logits: every CE is log 2
    loss, terms = san_loss(x, y, out_same, out_opp, [g, g], None, w_rec=2.0, w_gender=1.0,
                           w_matcher=5.0)
    assert terms["loss_rec"] == pytest.approx(0.2)
    assert terms["loss_gender"] == pytest.approx(2 * np.log(2))
    assert terms["loss_matcher"] == 0.0  # warm-up: no matcher
    assert float(loss) == pytest.approx(2 * 0.2 + 2 * np.log(2))
    loss, terms = san_loss(x, y, out_same, out_opp, [g], _Mean(), w_rec=0, w_gender=0,
                           w_matcher=1.0, distance="mse")
    # mean embedding (0.7 + 0.1) / 2 = 0.4 against 0.5: squared distance 0.01
    assert terms["loss_matcher"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="unknown matcher distance 'l3'"):
        san_loss(x, y, out_same, out_opp, [g], _Mean(), w_rec=0, w_gender=0, w_matcher=1,
                 distance="l3")


def test_candidate_checks_fail_before_training(problem: tuple[Path, Path]) -> None:
    data, zoo = problem
    with pytest.raises(CandidateError, match="'g_val' has role 'val': SANs may only train "
                                             "against 'aux' models \\(aux gender models: g_aux"):
        SanTrainer(_cfg(aux_gender=("g_aux", "g_val")), data, zoo)
    with pytest.raises(CandidateError, match="no matcher model 'nope' in zoo"):
        SanTrainer(_cfg(aux_matcher="nope"), data, zoo)
    with pytest.raises(CandidateError, match="divisible by 32; got 16"):
        SanTrainer(_cfg(depth=5), data, zoo)


def test_training_changes_weights_and_resume_is_exact(problem: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    data, zoo = problem
    torch.set_num_threads(1)
    straight = SanTrainer(_cfg(), data, zoo)
    before = {k: v.clone() for k, v in straight.model.state_dict().items()}
    straight.train_epoch()
    assert any(not torch.equal(v, before[k]) for k, v in straight.model.state_dict().items())
    straight.save(tmp_path)
    m2 = straight.train_epoch()  # epoch 2: the matcher term is on
    assert m2["loss_matcher"] > 0

    resumed = SanTrainer(_cfg(), data, zoo)
    resumed.load(tmp_path)
    assert resumed.epoch == 1
    resumed.train_epoch()
    for k, v in straight.model.state_dict().items():
        assert torch.allclose(v, resumed.model.state_dict()[k], atol=1e-6), k
    model, cfg = load_san(tmp_path)
    assert cfg == _cfg() and isinstance(model, nn.Module)


def test_nan_loss_is_an_error(problem: tuple[Path, Path]) -> None:
    data, zoo = problem
    t = SanTrainer(_cfg(), data, zoo)
    with torch.no_grad():
        next(t.model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 1"):
        t.train_epoch()


class _PixelMatcher:
    """Raw centre pixels, standardised: weak, but above chance on synthetic faces."""

    name, role = "pixels", "val"

    def embed(self, images: np.ndarray) -> np.ndarray:
        f = np.asarray(images, np.float64)[:, 4:12, 4:12].reshape(len(images), -1)
        f = (f - f.mean(1, keepdims=True)) / (f.std(1, keepdims=True) + 1e-9)
        return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)


def test_scorer_identity_noise_blur(problem: tuple[Path, Path]) -> None:
    data, _ = problem
    ds = open_dataset(data)
    val = ds.split("val")
    pool = Pool("val", [MajorityGender(0.5)], [_PixelMatcher()])
    scorer = PoolScorer(pool, val)
    assert scorer.original_auc["pixels"] > 0.5  # the matcher carries identity
    same = scorer.score(val.images)
    assert same["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert same["utility_mean"] == pytest.approx(1.0)  # original vs original
    assert same["privacy_mean"] == 1.0  # a constant classifier is at chance
    x = scorer.original
    noisy = gaussian_noise(0.3)(x)
    assert noisy.shape == x.shape and noisy.min() >= 0 and noisy.max() <= 1
    assert scorer.score(noisy)["ssim"] < 0.5
    blurred = gaussian_blur(2.0)(x)
    assert abs(float(blurred.mean()) - float(x.mean())) < 0.01  # blur keeps the mean
    assert blurred.std() < x.std()


def test_privacy_at_matched_utility_interpolates() -> None:
    curve = [{"utility_mean": 1.0, "privacy_mean": 0.1},
             {"utility_mean": 0.5, "privacy_mean": 0.5},
             {"utility_mean": 0.0, "privacy_mean": 0.9}]
    assert privacy_at_utility(curve, 0.75) == pytest.approx(0.3)
    assert privacy_at_utility(curve, 0.25) == pytest.approx(0.7)
    assert privacy_at_utility(curve, 2.0) == pytest.approx(0.1)  # clamped


def test_unreachable_mlflow_fails_before_training(problem: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data, zoo = problem
    cand = tmp_path / "c.yaml"
    cand.write_text("aux_gender: [g_aux]\naux_matcher: m_aux\nepochs: 1\n")
    t0 = time.perf_counter()
    rc = main(["train", "--data", str(data), "--zoo", str(zoo), "--config", str(cand),
               "--tracking-uri", "http://127.0.0.1:9", "--out", str(tmp_path / "runs")])
    assert rc == 2 and time.perf_counter() - t0 < 15
    assert "MLflow tracking server http://127.0.0.1:9 is unreachable" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_candidate_yaml_errors(problem: tuple[Path, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    data, zoo = problem
    cand = tmp_path / "c.yaml"
    cand.write_text("aux_gender: [g_aux]\nlearning_rate: 0.1\n")
    rc = main(["train", "--data", str(data), "--zoo", str(zoo), "--config", str(cand)])
    assert rc == 2
    assert f"{cand}: unknown key 'learning_rate'" in capsys.readouterr().err
    cand.write_text("aux_gender: g_val\naux_matcher: m_aux\n")
    rc = main(["train", "--data", str(data), "--zoo", str(zoo), "--config", str(cand),
               "--tracking-uri", str(tmp_path / "store")])
    assert rc == 2 and "SANs may only train against 'aux' models" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_train_two_workers_checkpoints_resume_and_mlflow(
        problem: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    import mlflow
    from san_search.experiment import run_candidate
    from san_search.train import fit

    data, zoo = problem
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The first worker group dies after its first checkpoint: Ray restarts it from there.
    monkeypatch.setenv("SAN_SEARCH_FAIL_AFTER_EPOCH", "1")
    cfg = _cfg(aux_gender=("g_aux", "g_aux2"))
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


def test_impossible_resources_fail_instead_of_hanging() -> None:
    from san_search.experiment import check_resources

    with pytest.raises(CandidateError, match=r"needs 4 CPU \(2 worker\(s\)\); the Ray cluster has "
                                             r"2\. Lower num_workers"):
        check_resources(TrainResources(num_workers=2, cpus_per_worker=2.0), {"CPU": 2.0})
    with pytest.raises(CandidateError, match="needs 1 GPU .* has 0"):
        check_resources(TrainResources(use_gpu=True), {"CPU": 8.0})
    check_resources(TrainResources(num_workers=2, cpus_per_worker=1.0), {"CPU": 2.0})  # fits


def test_evaluate_command_prints_the_curve(problem: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data, zoo = problem
    t = SanTrainer(_cfg(epochs=1), data, zoo)
    t.train_epoch()
    t.save(tmp_path)
    assert main(["evaluate", str(tmp_path), "--data", str(data), "--zoo", str(zoo),
                 "--role", "aux"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("aux pool")
    rows = [line.split() for line in out[2:7]]
    assert [r[0] for r in rows] == ["0.00", "0.25", "0.50", "0.75", "1.00"]
    assert rows[0][2] == "1.000" and rows[0][3] == "1.000"  # alpha 0: the originals
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path), "--data", str(data), "--zoo", str(zoo),
              "--role", "test"])
