"""search.trial: the final evaluation of a completed trial."""

from __future__ import annotations

from pathlib import Path

from san_search.search import load_search_space
from tests.search.spaces import SMOKE, write_space


def test_final_curve_false_ends_the_child_run_with_per_epoch_metrics_only(
        tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from san_search.search import TrialContext, finalize_trial
    from san_search.tracking import FINALIZED_TAG, TRIAL_TAG

    text = SMOKE.replace("budget: {trials: 4", "budget: {final_curve: false, trials: 4")
    space = load_search_space(write_space(tmp_path, text))
    assert space.budget.final_curve is False
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("s", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp).info.run_id
    child = client.create_run(exp, tags={"mlflow.parentRunId": parent, TRIAL_TAG: "t1"})
    ctx = TrialContext(name="s", folder=str(tmp_path), space=space, storage=str(tmp_path),
                       data="", zoo="", data_fingerprint="", tracking_uri=uri,
                       experiment_id=exp, parent_run_id=parent, baselines=None)
    out = finalize_trial(ctx, "t1", str(tmp_path / "no-checkpoint"), 2)
    assert out == {"trial_id": "t1", "skipped": True}
    run = client.get_run(child.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["san_search.epochs_trained"] == "2"
    assert FINALIZED_TAG not in run.data.tags  # so it cannot join an ensemble
    assert client.list_artifacts(child.info.run_id) == []
