"""One candidate end to end (experiment.py) through the `train` and `evaluate` commands: what
fails before training (an unreachable MLflow, a bad candidate file, resources Ray does not
have) and the evaluate command's trade-off table."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from san_search.cli import main
from san_search.config import TrainResources
from san_search.training.trainer import CandidateError, SanTrainer
from tests.helpers import tiny_candidate


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


def test_impossible_resources_fail_instead_of_hanging() -> None:
    from san_search.training.candidate import check_resources

    with pytest.raises(CandidateError, match=r"needs 4 CPU \(2 worker\(s\)\); the Ray cluster has "
                                             r"2\. Lower num_workers"):
        check_resources(TrainResources(num_workers=2, cpus_per_worker=2.0), {"CPU": 2.0})
    with pytest.raises(CandidateError, match="needs 1 GPU .* has 0"):
        check_resources(TrainResources(use_gpu=True), {"CPU": 8.0})
    check_resources(TrainResources(num_workers=2, cpus_per_worker=1.0), {"CPU": 2.0})  # fits
    with pytest.raises(CandidateError, match=r"needs 6 GiB of memory \(2 worker\(s\)\); the Ray "
                                             r"cluster has 4\. Lower num_workers / memory_gb"):
        check_resources(TrainResources(num_workers=2, memory_gb=3.0),
                        {"CPU": 2.0, "memory": 4.0 * 2**30})
    check_resources(TrainResources(memory_gb=3.0), {"CPU": 2.0, "memory": 4.0 * 2**30})


def test_evaluate_command_prints_the_curve(problem: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data, zoo = problem
    t = SanTrainer(tiny_candidate(epochs=1), data, zoo)
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
