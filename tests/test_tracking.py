"""tracking: the store a run goes to, how its experiment presents itself in the UI, and the runs
it writes and reads back (child, report and epoch logging, downloads)."""

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


def test_epoch_logger_outside_ray_starts_no_ray(tmp_path: Path) -> None:
    """Outside a Ray worker there is no node to record; asking Ray for one would start a
    local Ray instance as a side effect (and leave it running for whatever comes next)."""
    import ray

    assert not ray.is_initialized()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = tracking.setup(uri, "no-ray")
    client = tracking.client_for(uri)
    run_id = client.create_run(exp_id).info.run_id
    tracking.EpochLogger(uri, run_id)({"epoch": 1, "loss": 0.5})
    assert not ray.is_initialized()
    assert "san_search.node_id" not in client.get_run(run_id).data.tags


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


def _artifact_paths(client: tracking.Client, run_id: str, path: str | None = None) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id, path)}


def test_a_child_run_is_logged_from_plain_data_and_finished(tmp_path: Path) -> None:
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = tracking.setup(uri, "child")
    client = tracking.client_for(uri)
    parent = client.create_run(exp_id).info.run_id
    fig = plt.figure()
    run_id = tracking.log_child_run(
        uri, exp_id, parent, run_name="s-ensemble", tags={tracking.KIND_TAG: "ensemble"},
        params={"seed": 3, "policy": "random"}, metrics={"test_x": 0.25},
        tables={"t.json": {"a": [1, 2], "b": ["x", None]}}, figures={"f.png": fig})
    run = tracking.get_run(uri, run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "s-ensemble"
    assert run.data.tags[tracking.PARENT_TAG] == parent
    assert run.data.tags[tracking.KIND_TAG] == "ensemble"
    assert run.data.params == {"seed": "3", "policy": "random"}
    assert run.data.metrics == {"test_x": 0.25}
    assert {"t.json", "f.png"} <= _artifact_paths(client, run_id)
    assert {"path": "t.json", "type": "table"} in json.loads(
        run.data.tags["mlflow.loggedArtifacts"])
    assert not plt.fignum_exists(fig.number)  # closed once logged
    assert [r.info.run_id for r in tracking.child_runs(uri, exp_id, parent)] == [run_id]


def test_a_report_run_is_a_top_level_run_of_its_experiment(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = tracking.log_report_run(
        uri, "reports", run_name="zoo-report", kind="zoo_report", params={"test_images": 12},
        metrics={"gender.g.auc": 0.75}, tables={"r.json": {"model": ["g"], "auc": [0.75]}},
        texts={"r.txt": "table", "context.json": "{}"})
    run = tracking.get_run(uri, run_id)
    assert run.info.run_name == "zoo-report" and run.info.status == "FINISHED"
    assert tracking.PARENT_TAG not in run.data.tags
    assert run.data.tags[tracking.KIND_TAG] == "zoo_report"
    assert run.data.params == {"test_images": "12"}
    assert run.data.metrics == {"gender.g.auc": 0.75}
    client = tracking.client_for(uri)
    assert client.get_experiment(run.info.experiment_id).name == "reports"
    assert {"r.json", "r.txt", "context.json"} <= _artifact_paths(client, run_id)


def test_a_runs_artifact_folder_is_downloaded_back(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = tracking.setup(uri, "download")
    client = tracking.client_for(uri)
    run_id = client.create_run(exp_id).info.run_id
    src = tmp_path / "weights"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"\x00weights")
    client.log_artifacts(run_id, str(src), artifact_path="weights")
    dst = tmp_path / "cache" / run_id
    got = tracking.download_artifacts(uri, run_id, "weights", dst)
    assert got == dst / "weights"
    assert (dst / "weights" / "model.safetensors").read_bytes() == b"\x00weights"


def test_ui_url_opens_the_model_training_runs_page() -> None:
    """MLflow 3.17's UI starts in its GenAI workflow unless the address asks otherwise."""
    assert tracking.ui_url("http://127.0.0.1:5000/", "3") == \
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert tracking.ui_url("https://mlflow.example") == \
        "https://mlflow.example/#/experiments?workflowType=machine_learning"
    assert tracking.ui_url("sqlite:////tmp/m.db", "3") == "sqlite:////tmp/m.db"
