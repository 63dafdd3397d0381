"""tracking: the store a run goes to, and how its experiment presents itself in the UI."""

from __future__ import annotations

from pathlib import Path

from san_search import tracking


def test_relative_sqlite_uri_becomes_absolute(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking.resolve_tracking_uri("sqlite:///x.db") == f"sqlite:///{tmp_path / 'x.db'}"


def test_new_experiment_opens_on_training_runs(tmp_path: Path) -> None:
    """The MLflow UI shows an untagged experiment in its GenAI view; ours is tagged as model
    development, and a kind the user picked later is left alone."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = tracking.setup(uri, "kinds")
    client = tracking.client_for(uri)
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == \
        "custom_model_development"
    client.set_experiment_tag(exp_id, "mlflow.experimentKind", "genai_development")
    assert tracking.setup(uri, "kinds") == exp_id
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "genai_development"


def test_epoch_logger_is_a_picklable_hook_that_logs_each_epoch(tmp_path: Path) -> None:
    import pickle

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = tracking.setup(uri, "epochs")
    client = tracking.client_for(uri)
    run_id = client.create_run(exp_id).info.run_id
    hook = pickle.loads(pickle.dumps(tracking.EpochLogger(uri, run_id)))  # as Ray ships it
    hook({"epoch": 1, "loss": 0.5, "val_ssim": float("nan"), "early_stopped": True})
    hook({"epoch": 2, "loss": 0.25})
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == \
        [(1, 0.5), (2, 0.25)]
    assert client.get_metric_history(run_id, "val_ssim") == []  # NaN is not logged
    assert client.get_metric_history(run_id, "early_stopped") == []  # nor are flags


def test_a_trials_child_run_is_found_again_and_an_orphan_replaced(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = tracking.setup(uri, "children")
    client = tracking.client_for(uri)
    parent = client.create_run(exp_id).info.run_id

    def child(params: dict[str, str]) -> str:
        return tracking.open_child(client, exp_id, parent, "t1", run_name="s-tt1",
                                   tags={tracking.SEARCH_TAG: "s"}, params=params)

    first = child({"lr": "0.1"})
    client.set_terminated(first, status="KILLED")
    assert child({"lr": "0.1"}) == first  # a restored trial keeps its run
    assert client.get_run(first).info.status == "RUNNING"
    other = child({"lr": "0.2"})  # same trial id, other params: the orphan goes
    assert other != first and client.get_run(first).info.lifecycle_stage == "deleted"
    tracking.fail_run(client, other, "x" * 6000)
    run = client.get_run(other)
    assert run.info.status == "FAILED" and len(run.data.tags["error"]) == tracking.MAX_TAG
