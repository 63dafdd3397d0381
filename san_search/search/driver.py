"""The search driver (`san-search search`): check everything, create the parent run and the
search folder, then run Ray Tune + Optuna over the space (a one-worker trial trains in its
own, reused Tune process; a multi-worker one on Ray Train); or
resume a search whose driver died. The driver creates the parent run; the callback refreshes
it as trials finish; `_run` ends it (FINISHED, FAILED, or KILLED with the resume command)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from san_search import tracking
from san_search.atomic import write_atomic
from san_search.console import Log
from san_search.errors import SearchError
from san_search.raylocal import start_ray
from san_search.search.context import TrialContext
from san_search.search.front import TrialRow, TrialView, front_hypervolume, plain, trial_rows
from san_search.search.packing import check_packing
from san_search.search.record import (
    MOASHA_FILE,
    SPACE_FILE,
    SUMMARY_FILE,
    Baselines,
    SearchRecord,
    join_storage,
    storage_for,
)
from san_search.search.space import SearchSpace, load_search_space

if TYPE_CHECKING:
    from ray.tune import ResultGrid, Tuner

    from san_search.config import TrainResources
    from san_search.data.store import PreparedDataset
    from san_search.zoo.store import Zoo

Overrides = dict[str, dict[str, Any]]  # section -> key -> value
RESUME_TAG = "resume"  # the parent run's note on how to continue an interrupted search
TRIAL_MEMORY = 64 * 1024 * 1024  # bytes reserved for a trial's driver function
# Process-wide settings for Ray Tune, set by `configure_process` before Ray starts.
TUNE_ENVIRONMENT = {
    # Tune saves its experiment state (trials and the Optuna study) at most this often; a
    # SIGKILLed driver loses at most this much bookkeeping.
    "TUNE_GLOBAL_CHECKPOINT_S": "5",
    "RAY_AIR_NEW_OUTPUT": "0",
    # A trial whose loss turned NaN reports the error without objectives; it is then marked
    # failed (see ConstrainedOptunaSearch) instead of stopping the whole search.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # Ctrl-C / SIGTERM raise KeyboardInterrupt in the driver, which marks the parent run
    # KILLED with the resume command (Tune's own handler would return as if finished).
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
}


def configure_process() -> None:
    """The driver's start-up: Tune's environment settings (values already set win)."""
    for key, value in TUNE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def bind(space_path: Path, overrides: Mapping[str, Mapping[str, Any]], data: Path, zoo: Path
         ) -> tuple[SearchSpace, PreparedDataset, Zoo]:
    """The space checked against the dataset and zoo: (bound space, dataset, zoo)."""
    from san_search.data import open_dataset
    from san_search.data.groups import check_space_groups
    from san_search.zoo.store import open_zoo

    space = load_search_space(space_path, overrides)
    ds = open_dataset(data)
    z = open_zoo(zoo, expect=ds)
    check_space_groups(space, ds)  # group_weights and worst-group metrics need groups
    return space.bind(z, ds.size), ds, z


def check_trial_fits(space: SearchSpace, resources: Mapping[str, float]) -> None:
    """Ray waits forever for resources no node has: refuse before any trial."""
    from san_search.errors import CandidateError
    from san_search.training.candidate import check_resources

    try:
        check_resources(space.resources, dict(resources))
    except CandidateError as exc:
        raise SearchError(f"{space.path}: resources: {exc}") from None
    for res, amount in (space.resources.custom or {}).items():
        need = space.resources.num_workers * amount
        if resources.get(res, 0.0) < need:
            raise SearchError(
                f"{space.path}: resources: custom: a trial needs {need:g} {res!r}; the Ray "
                f"cluster has {resources.get(res, 0.0):g} (start nodes with "
                f"`ray start --resources '{{\"{res}\": N}}'`, or drop it from the space)")


def available_resources(ray_address: str | None) -> dict[str, float]:
    """The Ray resources a search would get, for `search --check`. A local run: what the
    local Ray that `start` launches would offer, computed without starting it (CPUs from
    os.cpu_count, GPUs that torch sees, memory as Ray reckons it: 70% of the memory available
    now, the rest going to its object store; no custom resources); a Ray already running in this
    process, or `ray_address`: the cluster's own `ray.cluster_resources()`."""
    import ray

    if ray.is_initialized():
        return dict(ray.cluster_resources())
    if ray_address is None:
        import torch

        return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count()),
                "memory": 0.7 * _available_memory()}
    started = _ray_init(ray_address)
    try:
        return dict(ray.cluster_resources())
    finally:
        if started:
            ray.shutdown()


def _available_memory() -> float:
    """Bytes of memory available now (MemAvailable where /proc/meminfo has it, else total)."""
    with contextlib.suppress(OSError, StopIteration, ValueError):
        with open("/proc/meminfo") as f:
            line = next(x for x in f if x.startswith("MemAvailable:"))
        return float(line.split()[1]) * 1024
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check(space_path: Path, overrides: Mapping[str, Mapping[str, Any]], data: Path, zoo: Path,
          ray_address: str | None = None
          ) -> tuple[SearchSpace, PreparedDataset, dict[str, float]]:
    """Every check `start` runs before its first trial, starting no trial: the space against
    the dataset and zoo, then a trial's resources against the Ray cluster it would use.
    Returns (bound space, dataset, the resources checked)."""
    space, ds, z = bind(space_path, overrides, data, zoo)
    check_packing(space, z, ds.size)
    resources = available_resources(ray_address)
    check_trial_fits(space, resources)
    return space, ds, resources


def _score_baselines(record: SearchRecord) -> Baselines:
    from san_search.data import open_dataset
    from san_search.zoo.pool import PoolScorer, baseline_curves, load_pool
    from san_search.zoo.store import open_zoo

    ds = open_dataset(record.data)
    z = open_zoo(record.zoo, expect=ds)
    return baseline_curves(PoolScorer(load_pool(z, "val"), ds.split("val")))


def _search_folder(out: str | Path, name: str | None) -> tuple[str, Path]:
    name = name or time.strftime("search-%Y%m%d-%H%M%S")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise SearchError(f"search name {name!r} may use letters, digits, '-' and '_'")
    folder = Path(out).absolute() / name
    if folder.exists():
        raise SearchError(f"search {name!r} already exists at {folder}: continue it with "
                          f"`san-search search --resume {name} --out {out}` or pick another "
                          "--name")
    return name, folder


def start(space_path: str | Path, data: str | Path, zoo: str | Path, *, out: str | Path,
          name: str | None = None, tracking_uri: str | None = None,
          experiment: str = "san-search", overrides: Overrides | None = None,
          ray_address: str | None = None, storage: str | None = None, log: Log = print
          ) -> dict[str, Any]:
    """Check everything, create the parent run and the search folder, run the search.
    `storage`: where Tune and Train write (default: the search folder); give a URI that
    every node reaches (s3://...) on a cluster without a shared disk."""
    overrides = overrides or {}
    space_path, data, zoo = Path(space_path), Path(data).absolute(), Path(zoo).absolute()
    space, ds, z = bind(space_path, overrides, data, zoo)  # every config error, before work
    check_packing(space, z, ds.size)  # trials sharing a GPU must fit in its memory
    name, folder = _search_folder(out, name)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    exp_id = tracking.setup(uri, experiment)  # unreachable server: fails here, in seconds
    started = _ray_init(ray_address)
    try:
        import ray

        check_trial_fits(space, ray.cluster_resources())
        client = tracking.client_for(uri)
        parent = client.create_run(exp_id, run_name=name, tags={
            tracking.KIND_TAG: "search", tracking.SEARCH_TAG: name,
            "data_fingerprint": ds.fingerprint, "zoo_fingerprint": z.fingerprint,
            "data": str(data), "zoo": str(zoo), "search_space": str(space_path.absolute()),
            "mlflow.note.content": space.description}).info.run_id
        with _before_start(client, parent, name, log):
            tracking.log_params(client, parent, {
                **space.describe(), "search_space": space_path.name,
                "data_fingerprint": ds.fingerprint, "zoo_fingerprint": z.fingerprint})
            client.log_artifact(parent, str(space_path))
            log(f"search {name}: {space.budget.trials} trials x up to {space.budget.epochs} "
                f"epochs, {space.budget.concurrency} at a time, sampler {space.sampler.name} (seed "
                f"{space.sampler.seed}), scheduler {space.scheduler.name}; folder {folder}")
            log(f"MLflow: experiment {experiment!r} ({uri}), parent run {parent}; runs: "
                f"{tracking.ui_url(uri, exp_id)}")
            record = SearchRecord(name, str(folder), str(space_path.absolute()), str(data),
                                  str(zoo), ds.fingerprint, uri, experiment, exp_id, parent,
                                  overrides, time.strftime("%Y-%m-%dT%H:%M:%S"),
                                  storage_for(storage, name))
            _create_folder(record, space_path, client)
        return _run(record, space, resume=False, log=log)
    finally:
        if started:
            import ray

            ray.shutdown()


@contextlib.contextmanager
def _before_start(client: tracking.Client, parent_run_id: str, name: str,
                  log: Log = print) -> Iterator[None]:
    """From the parent run's creation to the search folder's: an interrupt there leaves no
    folder, so the parent is marked KILLED with a note saying to start the search again."""
    try:
        yield
    except KeyboardInterrupt:
        note = (f"interrupted before the search started: nothing to resume; run the same "
                f"`san-search search` command again (the name {name!r} is free)")
        client.set_tag(parent_run_id, RESUME_TAG, note)
        client.set_terminated(parent_run_id, status="KILLED")
        log(note)
        raise


def _create_folder(record: SearchRecord, space_path: Path, client: tracking.Client) -> None:
    """The search folder: the space's copy, the record, the baselines (also logged)."""
    from san_search.search.record import BASELINES_FILE

    folder = Path(record.folder)
    folder.mkdir(parents=True)
    try:
        shutil.copyfile(space_path, folder / SPACE_FILE)
        record.save()
        baselines = _score_baselines(record)
        write_atomic(folder / BASELINES_FILE, json.dumps(baselines))
    except BaseException as exc:
        # Nothing ran yet: leave no half-made search behind (the name stays free).
        shutil.rmtree(folder, ignore_errors=True)
        if not isinstance(exc, KeyboardInterrupt):  # (an interrupt: see _before_start)
            client.set_terminated(record.parent_run_id, status="FAILED")
        raise
    client.log_dict(record.parent_run_id, baselines, BASELINES_FILE)


def resume(name: str, *, out: str | Path, ray_address: str | None = None,
           log: Log = print) -> dict[str, Any]:
    """Continue a search whose driver died: finished trials stay, the Optuna study and the
    trials come back from Tune's saved state, running trials continue from checkpoints."""
    folder = Path(out).absolute() / name
    record = SearchRecord.load(folder)
    record.check_resumable()
    space, ds, _ = bind(folder / SPACE_FILE, record.overrides, Path(record.data),
                        Path(record.zoo))
    if ds.fingerprint != record.data_fingerprint:
        raise SearchError(f"the dataset at {record.data} changed since the search started "
                          f"(fingerprint {ds.fingerprint} != {record.data_fingerprint})")
    # Killed after the folder was made but before Tune saved any state: no trial ran, so
    # the search starts now, under its own record and parent run.
    fresh = "://" not in record.storage_root and not (Path(record.storage_root) / "tune").is_dir()
    tracking.check_reachable(record.tracking_uri)
    started = _ray_init(ray_address)
    try:
        import ray

        check_trial_fits(space, ray.cluster_resources())
        tracking.client_for(record.tracking_uri).update_run(record.parent_run_id,
                                                            status="RUNNING")
        log(f"no trial had started: starting search {name} in {folder}" if fresh
            else f"resuming search {name} from {folder}")
        return _run(record, space, resume=not fresh, log=log)
    finally:
        if started:
            import ray

            ray.shutdown()


def _ray_init(address: str | None) -> bool:
    configure_process()
    return start_ray(address, log_to_driver=False)


def _tuner(record: SearchRecord, ctx: TrialContext, resume: bool) -> Tuner:
    from ray import tune

    from san_search.search.callback import SearchCallback
    from san_search.search.moasha import EpochBudget
    from san_search.search.sampler import ConstrainedOptunaSearch
    from san_search.search.trial import in_process, run_trial

    local = in_process(ctx)
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx),
                                    trial_resources(ctx.space.resources, local))
    if resume:
        return tune.Tuner.restore(join_storage(record.storage_root, "tune"),
                                  trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)
    budget = ctx.space.budget
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConstrainedOptunaSearch(ctx.space),
                                    num_samples=budget.trials,
                                    max_concurrent_trials=budget.concurrency,
                                    reuse_actors=local),
        run_config=tune.RunConfig(
            name="tune", storage_path=record.storage_root, verbose=0,
            callbacks=[SearchCallback(ctx)],
            stop=EpochBudget(budget.trial_epochs) if budget.trial_epochs else None,
            failure_config=tune.FailureConfig(
                max_failures=ctx.space.resources.max_failures if local else 0)))


def trial_resources(resources: TrainResources, local: bool) -> dict[str, float]:
    """What one Tune trial holds. A trial that trains in its own process (`local`) holds a
    worker's resources and is restarted by Tune (`max_failures`); one that waits on its Ray
    Train run holds no CPU (a CPU fraction per trial would leave, say, 0.98 of 2 CPUs and keep
    the second trial's 1-CPU worker out), and Ray Train restarts its workers. A local trial
    reserves `resources.memory_gb` when set, else a token TRIAL_MEMORY."""
    if local:
        return {"memory": TRIAL_MEMORY, **resources.per_worker()}
    return {"memory": TRIAL_MEMORY}


def _start_board(ctx: TrialContext, log: Log) -> Any:
    """The MO-ASHA board actor; the caller holds the handle while the search runs (an
    actor whose last handle goes is destroyed, named or not)."""
    import ray

    from san_search.search.moasha import start_board

    space = ctx.space
    board = start_board(ctx.board, space.metrics, space.modes, max_t=space.budget.epochs,
                        grace=space.scheduler.grace_epochs,
                        eta=space.scheduler.reduction_factor, violation=space.violation,
                        state_file=Path(ctx.folder) / MOASHA_FILE)
    log(f"MO-ASHA rungs at epochs {ray.get(board.rungs.remote())}, keeping the best "
        f"1/{space.scheduler.reduction_factor} by non-dominated rank")
    return board


def _run(record: SearchRecord, space: SearchSpace, *, resume: bool, log: Log) -> dict[str, Any]:
    ctx = TrialContext.of(record, space)
    client = tracking.client_for(record.tracking_uri)
    try:
        board = _start_board(ctx, log) if ctx.board else None
        grid = _tuner(record, ctx, resume).fit()
        del board  # held until every trial has asked it
    except KeyboardInterrupt:
        hint = record.resume_hint()
        client.set_tag(record.parent_run_id, RESUME_TAG, hint)
        client.set_terminated(record.parent_run_id, status="KILLED")
        for run in tracking.child_runs(record.tracking_uri, record.experiment_id,
                                       record.parent_run_id):
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, status="KILLED")
        log(f"interrupted; continue with: {hint}")
        raise
    except Exception:
        client.set_terminated(record.parent_run_id, status="FAILED")
        raise
    rows = trial_rows(space, _grid_trials(grid))
    tracking.tag_trials(record.tracking_uri, record.experiment_id, record.parent_run_id,
                        {r.trial_id: {tracking.FRONT_TAG: str(r.on_front).lower(),
                                      tracking.FEASIBLE_TAG: str(r.feasible).lower()}
                         for r in rows})
    # a resumed search that finished: the interrupted attempt's note no longer applies
    tracking.finish_run(client, record.parent_run_id, clear=(RESUME_TAG,))
    return _summarise(record, space, rows, log)


def _summarise(record: SearchRecord, space: SearchSpace, rows: list[TrialRow], log: Log
               ) -> dict[str, Any]:
    """The finished search: logged, written to summary.json, and returned (rows in their
    `to_dict` form)."""
    hv = front_hypervolume(space, rows)
    log(f"search {record.name} finished: {len(rows)} trials, "
        f"{sum(r.on_front for r in rows)} on the front, hypervolume {hv:.4f}; parent run "
        f"{record.parent_run_id}")
    flat = [r.to_dict() for r in rows]
    summary = {"name": record.name, "folder": record.folder,
               "experiment_id": record.experiment_id,
               "parent_run_id": record.parent_run_id, "hypervolume": hv, "rows": flat}
    write_atomic(Path(record.folder) / SUMMARY_FILE, json.dumps(
        {**summary, "rows": [{k: plain(v) for k, v in r.items()} for r in flat]}, indent=2))
    return summary


def _grid_trials(grid: ResultGrid) -> list[TrialView]:
    """Trial-like views of a ResultGrid (trial id, status, last result, config)."""
    out = []
    for i in range(len(grid)):
        res = grid[i]
        metrics = dict(res.metrics or {})
        status = "ERROR" if res.error is not None else "TERMINATED"
        out.append(TrialView(metrics.get("trial_id", ""), status, metrics, res.config or {}))
    return out


def parse_overrides(trials: int | None, epochs: int | None, concurrency: int | None,
                    sampler: str | None, seed: int | None, scheduler: str | None
                    ) -> Overrides:
    """Command-line options as overrides of the space's sections."""
    out: Overrides = {}
    if trials is not None:
        out.setdefault("budget", {})["trials"] = trials
    if epochs is not None:
        out.setdefault("budget", {})["epochs"] = epochs
    if concurrency is not None:
        out.setdefault("budget", {})["concurrency"] = concurrency
    if sampler is not None:  # another sampler: the file's sampler options may not apply
        out.setdefault("sampler", {}).update(name=sampler, options=None)
    if seed is not None:
        out.setdefault("sampler", {})["seed"] = seed
    if scheduler is not None:
        out.setdefault("scheduler", {})["name"] = scheduler
    return out
