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


def test_trial_done_is_the_last_epoch_an_early_stop_or_a_non_finite_loss() -> None:
    from san_search.search.finalize import trial_done

    assert not trial_done({"epoch": 1}, 2)
    assert trial_done({"epoch": 2}, 2)
    assert trial_done({"epoch": 3}, 2)
    assert not trial_done({"epoch": 1, "early_stopped": 0.0}, 2)
    assert trial_done({"epoch": 1, "early_stopped": 1.0}, 2)
    assert trial_done({"epoch": 1, "non_finite_loss": "loss is nan at epoch 1"}, 2)
    assert not trial_done({}, 2)


def test_previous_result_is_none_without_a_train_run(tmp_path: Path) -> None:
    from san_search.search.trial import previous_result

    space = load_search_space(write_space(tmp_path, SMOKE))
    cfg = space.candidate({"w_rec": 2.0, "width": 4, "aux_gender": "a", "aux_matcher": "m"})
    assert previous_result(str(tmp_path / "train"), "t1", cfg) is None
    (tmp_path / "train" / "t1").mkdir(parents=True)  # killed before its first checkpoint
    assert previous_result(str(tmp_path / "train"), "t1", cfg) is None


def _store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    from san_search.search import TrialContext

    space = load_search_space(write_space(tmp_path, SMOKE))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("s", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp).info.run_id
    ctx = TrialContext(name="s", folder=str(tmp_path), space=space, storage=str(tmp_path),
                       data="", zoo="", data_fingerprint="", tracking_uri=uri,
                       experiment_id=exp, parent_run_id=parent, baselines=None)
    return client, ctx


def test_a_finalised_run_stays_finished_when_its_trial_is_restarted(tmp_path: Path) -> None:
    """A trial restarted after its final curve (the driver died before Tune saved it as
    finished) reopens its run and is finalised again: the run must end FINISHED, not stay
    RUNNING or KILLED."""
    from san_search import tracking
    from san_search.search import finalize_trial

    client, ctx = _store(tmp_path)
    child = client.create_run(ctx.experiment_id, tags={
        tracking.PARENT_TAG: ctx.parent_run_id, tracking.TRIAL_TAG: "t1",
        tracking.FINALIZED_TAG: "1"}).info.run_id
    tracking.log_params(client, child, {"lr": "0.1"})
    client.set_terminated(child, status="FINISHED")
    assert tracking.open_child(client, ctx.experiment_id, ctx.parent_run_id, "t1",
                               run_name="s-tt1", tags={}, params={"lr": "0.1"}) == child
    assert client.get_run(child).info.status == "FINISHED"
    client.set_terminated(child, status="KILLED")  # as an older driver's interrupt left it
    out = finalize_trial(ctx, "t1", str(tmp_path / "ckpt"), 2)
    assert out == {"trial_id": "t1", "skipped": True}
    assert client.get_run(child).info.status == "FINISHED"


def test_the_resumed_callback_leaves_no_run_running(tmp_path: Path) -> None:
    """What a killed driver leaves: a failed trial's run still RUNNING, a run of a trial
    Tune's saved state never recorded, a finished trial with nothing to score. The first
    hook of the resumed driver settles each; a finalised run is left alone."""
    from types import SimpleNamespace

    from san_search import tracking
    from san_search.search.callback import SearchCallback

    client, ctx = _store(tmp_path)

    def child(tid: str, **tags: str) -> str:
        return str(client.create_run(ctx.experiment_id, tags={
            tracking.PARENT_TAG: ctx.parent_run_id, tracking.TRIAL_TAG: tid,
            **tags}).info.run_id)

    failed, orphan, empty = child("t1"), child("t9"), child("t3")
    done = child("t2", **{tracking.FINALIZED_TAG: "1"})
    client.set_terminated(done, status="FINISHED")

    def trial(tid: str, status: str) -> SimpleNamespace:
        return SimpleNamespace(trial_id=tid, status=status, last_result={"epoch": 0},
                               config={}, error_file=None)

    cb = SearchCallback(ctx)
    cb.on_experiment_end([trial("t1", "ERROR"), trial("t2", "TERMINATED"),  # type: ignore[list-item]
                          trial("t3", "TERMINATED")])
    assert client.get_run(failed).info.status == "FAILED"
    assert client.get_run(orphan).info.lifecycle_stage == "deleted"
    run = client.get_run(empty)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "the trial ended without a checkpointed epoch to score"
    assert client.get_run(done).info.status == "FINISHED"


def test_finalising_a_trial_again_replaces_its_tables(tmp_path: Path) -> None:
    """A final evaluation cut short by a killed driver runs again on resume: its tables
    must hold one copy of the curve, not the first attempt's rows plus the second's."""
    import json

    from san_search import tracking

    client, ctx = _store(tmp_path)
    run_id = client.create_run(ctx.experiment_id).info.run_id
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"x")
    curve = {"alpha": [0.0, 0.5, 1.0], "privacy": [0.1, 0.2, 0.3]}
    for _ in range(2):
        tracking.log_candidate(client, run_id, tables={"trade_off_curve.json": curve},
                               figures={}, images={}, weights=weights,
                               metrics={"final_privacy": 0.3})
    local = client.download_artifacts(run_id, "trade_off_curve.json", str(tmp_path / "dl"))
    table = json.loads(Path(local).read_text())
    assert table["columns"] == ["alpha", "privacy"]
    assert [row[0] for row in table["data"]] == [0.0, 0.5, 1.0]


def test_the_driver_starts_no_final_curve_task_for_a_trial_that_scored_its_own(
        tmp_path: Path) -> None:
    """A one-worker trial logs its final curve before it ends; the callback must not score
    it again in a Ray task (Ray is not even started here: a task would start it)."""
    from types import SimpleNamespace

    import ray

    from san_search import tracking
    from san_search.search.callback import SearchCallback
    from san_search.search.finalize import FINAL_CURVE_TAG

    client, ctx = _store(tmp_path)
    scored = client.create_run(ctx.experiment_id, tags={
        tracking.PARENT_TAG: ctx.parent_run_id, tracking.TRIAL_TAG: "t1",
        tracking.FINALIZED_TAG: "1"}).info.run_id
    client.set_terminated(scored, status="FINISHED")
    skipped = client.create_run(ctx.experiment_id, tags={
        tracking.PARENT_TAG: ctx.parent_run_id, tracking.TRIAL_TAG: "t2",
        FINAL_CURVE_TAG: "skipped (budget.final_curve: false)"}).info.run_id
    client.set_terminated(skipped, status="FINISHED")
    last = {"epoch": 2, "checkpoint_path": str(tmp_path / "c"),
            **dict.fromkeys(ctx.space.metrics, 0.5)}
    cb = SearchCallback(ctx)
    for tid in ("t1", "t2"):
        cb._finalize(SimpleNamespace(trial_id=tid, last_result=last))  # type: ignore[arg-type]
    assert cb.rt.pending == {} and not ray.is_initialized()
    assert client.get_run(scored).info.status == "FINISHED"


def test_a_one_worker_trial_holds_its_worker_and_a_ray_train_trial_only_waits() -> None:
    from san_search.config import TrainResources
    from san_search.search.driver import TRIAL_MEMORY, trial_resources

    one = TrainResources(num_workers=1, cpus_per_worker=0.5, use_gpu=True,
                         gpus_per_worker=0.25, custom={"slot": 1.0})
    assert trial_resources(one, local=True) == {
        "CPU": 0.5, "GPU": 0.25, "slot": 1.0, "memory": TRIAL_MEMORY}
    assert trial_resources(TrainResources(num_workers=2), local=False) == {
        "memory": TRIAL_MEMORY}
    # memory_gb reserves that much RAM per trial, so Ray runs only as many as fit a node
    big = TrainResources(num_workers=1, cpus_per_worker=1.0, memory_gb=3.5)
    assert trial_resources(big, local=True) == {"CPU": 1.0, "memory": 3.5 * 2**30}
    assert big.per_worker() == {"CPU": 1.0, "memory": 3.5 * 2**30}
