"""The multi-objective search (`san-search search`): Ray Tune + Optuna over a search space,
one Ray Train run per trial, one MLflow parent run per search and one child run per trial.

Layout of a search folder (`<out>/<name>/`):
  search.json     what to resume: space, data, zoo, tracking URI, experiment, parent run
  space.yaml      the search-space file as it was when the search started
  baselines.json  noise and blur curves on the val pool, scored once for every trial
  moasha.json     the early-stopping scheduler's rung records
  tune/           Ray Tune's experiment state (trials, the Optuna study)
  train/<trial>/  Ray Train runs: each trial's checkpoints

With `--storage URI` (say s3://bucket/searches, for a cluster whose nodes share no disk),
tune/ and train/ go to <URI>/<name>/ instead; the rest stays in the local folder.

Who writes what to MLflow:
  - the driver creates the parent run and, as trials finish, refreshes its Pareto table and
    figure and its hypervolume metric;
  - a trial creates its child run (found again by trial id on resume, so no duplicates),
    its Train worker logs per-epoch metrics live, and a trial that raises marks it FAILED
    with the error;
  - when a trial completes (all epochs, or stopped early by MO-ASHA) the driver starts a
    small Ray task that scores the final trade-off curve and logs the curve table and
    figure, the image grid and the weights into the child run, then ends it FINISHED.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from san_search.atomic import write_atomic
from san_search.config import ConfigError
from san_search.console import Log
from san_search.errors import SearchError
from san_search.pareto import front_mask, hypervolume, oriented
from san_search.search_space import SearchSpace, load_search_space
from san_search.tracking import (
    FINALIZED_TAG,
    SEARCH_TAG,
    TRIAL_TAG,
    child_runs,
    client_for,
    find_child,
    replace_table,
)

SEARCH_FILE = "search.json"
SPACE_FILE = "space.yaml"
BASELINES_FILE = "baselines.json"
TRIAL_MEMORY = 64 * 1024 * 1024  # bytes reserved for a trial's driver function
# Tune saves its experiment state (trials and the Optuna study) at most this often; a
# SIGKILLed driver loses at most this much bookkeeping.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# A trial whose loss turned NaN reports the error without objectives; it is then marked
# failed (see ConstrainedOptunaSearch) instead of stopping the whole search.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
# Ctrl-C / SIGTERM raise KeyboardInterrupt in the driver, which marks the parent run KILLED
# with the resume command (Tune's own handler would return as if the search had finished).
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")



@dataclasses.dataclass
class SearchRecord:
    """What `--resume` needs, saved as search.json."""

    name: str
    folder: str
    space_file: str  # the original path, for the record; the copy is space.yaml
    data: str
    zoo: str
    data_fingerprint: str
    tracking_uri: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    overrides: dict[str, dict[str, Any]]
    created: str
    storage: str = ""  # where tune/ and train/ live: "" = the folder itself

    @property
    def storage_root(self) -> str:
        return self.storage or self.folder

    def save(self) -> None:
        write_atomic(Path(self.folder) / SEARCH_FILE,
                     json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path) -> SearchRecord:
        path = folder / SEARCH_FILE
        if not path.is_file():
            raise SearchError(f"no search to resume at {folder} ({SEARCH_FILE} missing)")
        return cls(**json.loads(path.read_text()))


# ------------------------------------------------------------------ Optuna with constraints

class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that tells the study each trial's constraint violations (read by the
    TPE / NSGA / GP samplers) and treats a result without finite
    objectives (a NaN loss report) as a failed trial."""

    def __init__(self, space: SearchSpace) -> None:
        from san_search.search_space import DefineByRun, make_sampler

        super().__init__(space=DefineByRun(space), metric=space.metrics, mode=space.modes,
                         sampler=make_sampler(space))
        self._san_space = space

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        space = self._san_space
        ot_trial = self._ot_trials.get(trial_id)
        if result and ot_trial is not None and trial_id not in self._completed_trials:
            for c in space.constraints:
                if c.metric in result and np.isfinite(result[c.metric]):
                    # Optuna's convention: feasible when <= 0.
                    ot_trial.set_constraint(c.metric, c.violation(float(result[c.metric])))
            if any(m not in result or not np.isfinite(result[m]) for m in space.metrics):
                result, error = None, True
        super().on_trial_complete(trial_id, result=result, error=error)


def _trial_number(trial_id: str) -> str:
    """Tune's trial id (8 hex digits), the label in tables and child run names."""
    return trial_id


# ------------------------------------------------------------------ one trial

def run_trial(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """The Tune function trainable: one candidate trained by a Ray Train `TorchTrainer`
    whose reports become this trial's results."""
    import ray.tune
    from mlflow.entities import Param

    from san_search.train import fit

    space: SearchSpace = settings["space"]
    ctx = ray.tune.get_context()
    trial_id = ctx.get_trial_id()
    cfg = space.candidate(config)
    params = {k: str(v) for k, v in cfg.as_params().items()}
    client = client_for(settings["tracking_uri"])
    run = find_child(client, settings["experiment_id"], settings["parent_run_id"], trial_id)
    if run is not None and any(run.data.params.get(k) != v for k, v in params.items()):
        # A child created just before the driver was killed, for a trial the restored search
        # never recorded: its id was handed out again. Drop the orphan.
        client.delete_run(run.info.run_id)
        run = None
    if run is None:
        run = client.create_run(
            settings["experiment_id"],
            run_name=f"{settings['name']}-t{_trial_number(trial_id)}",
            tags={"mlflow.parentRunId": settings["parent_run_id"], TRIAL_TAG: trial_id,
                  SEARCH_TAG: settings["name"], "san_search.kind": "candidate",
                  "data_fingerprint": settings["data_fingerprint"]})
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
    else:
        client.update_run(run.info.run_id, status="RUNNING")
    run_id = run.info.run_id
    early = None
    if settings.get("board"):
        early = {"board": settings["board"], "trial_id": trial_id,
                 "rungs": settings["rungs"]}
    try:
        fit(cfg, settings["data"], settings["zoo"],
            storage_path=join_storage(settings["storage"], "train"), name=trial_id,
            max_failures=space.resources.max_failures,
            extra_resources=space.resources.custom,
            mlflow_run=(settings["tracking_uri"], run_id), in_tune=True, early_stop=early)
    except BaseException as exc:
        client.set_tag(run_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(run_id, status="FAILED")
        raise


def finalize_trial(settings: dict[str, Any], trial_id: str, checkpoint: str, epochs: int
                   ) -> dict[str, Any]:
    """Final trade-off curve of a completed trial into its child run (run as a Ray task)."""
    import mlflow
    from san_search.experiment import final_evaluation, log_candidate_artifacts

    client = client_for(settings["tracking_uri"])
    run = find_child(client, settings["experiment_id"], settings["parent_run_id"], trial_id)
    if run is None:
        return {"trial_id": trial_id, "error": "no child run"}
    run_id = run.info.run_id
    if run.data.tags.get(FINALIZED_TAG) == "1":
        return {"trial_id": trial_id, "skipped": True}
    space = settings["space"]
    if not space.budget.final_curve:  # per-epoch metrics only (benchmarks, quick looks)
        client.set_tag(run_id, "san_search.epochs_trained", str(epochs))
        client.set_tag(run_id, "san_search.final_curve", "skipped (budget.final_curve: false)")
        client.set_terminated(run_id, status="FINISHED")
        return {"trial_id": trial_id, "skipped": True}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "checkpoint"
            fetch_checkpoint(checkpoint, settings["storage"], local)
            ev = final_evaluation(local, settings["data"], settings["zoo"],
                                  baselines=settings["baselines"])
            mlflow.set_tracking_uri(settings["tracking_uri"])
            with mlflow.start_run(run_id=run_id):
                log_candidate_artifacts(ev, local, run.info.run_name)
                mlflow.set_tags({"san_search.epochs_trained": str(epochs),
                                 "san_search.checkpoint": checkpoint,
                                 "san_search.stopped_early":
                                     str(epochs < settings["space"].budget.epochs).lower(),
                                 FINALIZED_TAG: "1"})
    except Exception as exc:
        client.set_tag(run_id, "error", f"final evaluation: {type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(run_id, status="FAILED")
        return {"trial_id": trial_id, "error": str(exc)}
    return {"trial_id": trial_id, "final": ev.curve[-1]}


def join_storage(root: str, *parts: str) -> str:
    """A path under the search's storage: a local folder or a URI such as s3://b/p."""
    return "/".join([root.rstrip("/"), *parts])


def fetch_checkpoint(checkpoint: str, storage: str, dest: Path) -> None:
    """Copy a trial's checkpoint folder to `dest`. Ray reports checkpoints on remote storage
    without the scheme (bucket/path); the search's storage URI supplies it."""
    if "://" in storage and "://" not in checkpoint:
        checkpoint = f"{storage.split('://', 1)[0]}://{checkpoint}"
    if "://" in checkpoint:
        import pyarrow.fs

        dest.mkdir(parents=True)
        pyarrow.fs.copy_files(checkpoint, str(dest))
    else:
        shutil.copytree(checkpoint, dest)


# ------------------------------------------------------------------ driver-side callback

class SearchCallback(Callback):
    """Tune callback in the driver: the live table, the parent's Pareto table and figure,
    and the final evaluation of each completed trial. Tune pickles it with the experiment,
    so runtime state is rebuilt lazily."""

    def __init__(self, settings: dict[str, Any], interval: float = 15.0) -> None:
        self.settings, self.interval = settings, interval
        self._runtime: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings, "interval": self.interval, "_runtime": None}

    # --------------------------------------------------------- state
    @property
    def rt(self) -> dict[str, Any]:
        if self._runtime is None:
            self._runtime = {"printed": 0.0, "pending": {}, "reconciled": False}
        return self._runtime

    # --------------------------------------------------------- Tune hooks
    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if not self.rt["reconciled"]:
            self.rt["reconciled"] = True
            self._reconcile(trials)
        self._collect(block=False)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                        result: dict[str, Any], **info: Any) -> None:
        if time.monotonic() - self.rt["printed"] > self.interval:
            self._print(trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                          **info: Any) -> None:
        self._finalize(trial)
        self._refresh_parent(trials)
        self._print(trials)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any,
                       **info: Any) -> None:
        self._mark_failed(trial)
        self._refresh_parent(trials)
        self._print(trials)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._collect(block=True)
        self._refresh_parent(trials)
        self._print(trials)

    # --------------------------------------------------------- work
    def _finalize(self, trial: Any) -> None:
        import ray

        last = trial.last_result or {}
        ckpt = last.get("checkpoint_path")
        if not ckpt or not all(m in last for m in self.settings["space"].metrics):
            return
        task = ray.remote(finalize_trial).options(num_cpus=0, max_retries=1)
        ref = task.remote(self.settings, trial.trial_id, ckpt, int(last["epoch"]))
        self.rt["pending"][trial.trial_id] = ref

    def _collect(self, block: bool) -> None:
        import ray

        pending = self.rt["pending"]
        if not pending:
            return
        refs = list(pending.values())
        done, _ = ray.wait(refs, num_returns=len(refs),
                           timeout=None if block else 0)
        for tid, ref in list(pending.items()):
            if ref in done:
                out = ray.get(ref)
                if out.get("error"):
                    print(f"final evaluation of trial {_trial_number(tid)} failed: "
                          f"{out['error']}", flush=True)
                del pending[tid]

    def _reconcile(self, trials: list[Any]) -> None:
        """After a resume: trials that completed before the driver died but whose
        final evaluation never reached MLflow get it now."""
        client = client_for(self.settings["tracking_uri"])
        for t in trials:
            if t.status != "TERMINATED":
                continue
            run = find_child(client, self.settings["experiment_id"],
                             self.settings["parent_run_id"], t.trial_id)
            if run is not None and run.data.tags.get(FINALIZED_TAG) != "1":
                self._finalize(t)

    def _mark_failed(self, trial: Any) -> None:
        client = client_for(self.settings["tracking_uri"])
        run = find_child(client, self.settings["experiment_id"],
                         self.settings["parent_run_id"], trial.trial_id)
        if run is None or run.info.status == "FAILED":
            return
        message = ""
        if trial.error_file and os.path.isfile(trial.error_file):
            message = Path(trial.error_file).read_text()[-5000:]
        client.set_tag(run.info.run_id, "error", message or "trial failed")
        client.set_terminated(run.info.run_id, status="FAILED")

    def _refresh_parent(self, trials: list[Any]) -> None:
        try:
            refresh_parent(self.settings, trial_rows(self.settings["space"], trials))
        except Exception as exc:  # the search goes on; the next refresh retries
            print(f"could not refresh the parent run's front: {exc}", flush=True)

    def _print(self, trials: list[Any]) -> None:
        self.rt["printed"] = time.monotonic()
        print(format_table(trial_rows(self.settings["space"], trials)), flush=True)



# ------------------------------------------------------------------ the front

def trial_rows(space: SearchSpace, trials: list[Any]) -> list[dict[str, Any]]:
    """One row per trial: state, epoch, objectives, SSIM, feasibility, on the front or not."""
    rows = []
    for t in sorted(trials, key=lambda t: t.trial_id):
        last = t.last_result or {}
        row: dict[str, Any] = {"trial": _trial_number(t.trial_id), "trial_id": t.trial_id,
                               "state": t.status, "epoch": int(last.get("epoch", 0) or 0)}
        for m in dict.fromkeys([*space.metrics, "val_ssim"]):
            v = last.get(m)
            row[m] = float(v) if isinstance(v, (int, float)) else float("nan")
        row["violation"] = space.violation(last) if last else float("nan")
        row["feasible"] = bool(row["violation"] == 0)
        rate = last.get("images_per_s")
        row["images_per_s"] = float(rate) if isinstance(rate, (int, float)) else float("nan")
        if t.status == "ERROR" or last.get("non_finite_loss"):
            row["state"] = "ERROR"
        for k, v in (t.config or {}).items():
            row[f"param.{k}"] = v
        rows.append(row)
    scored = [i for i, r in enumerate(rows)
              if r["state"] != "ERROR" and all(np.isfinite(r[m]) for m in space.metrics)]
    mask = np.zeros(len(rows), dtype=bool)
    if scored:
        pts = oriented([[rows[i][m] for m in space.metrics] for i in scored], space.modes)
        viol = np.array([rows[i]["violation"] for i in scored])
        mask[scored] = front_mask(pts, np.nan_to_num(viol, nan=1.0))
    for r, on in zip(rows, mask, strict=True):
        r["on_front"] = bool(on)
    return rows


def reference_point(space: SearchSpace) -> list[float]:
    """Every trial metric lies in [0, 1]: the worst corner (0 for max, 1 for min, oriented)."""
    return [0.0 if m == "max" else -1.0 for m in space.modes]


def front_hypervolume(space: SearchSpace, rows: list[dict[str, Any]]) -> float:
    front = [r for r in rows if r["on_front"]]
    if not front:
        return 0.0
    pts = oriented([[r[m] for m in space.metrics] for r in front], space.modes)
    return hypervolume(pts, reference_point(space))


def format_table(rows: list[dict[str, Any]]) -> str:
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    head = (f"[{time.strftime('%H:%M:%S')}] trials: "
            + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
            + f"; on the front: {sum(r['on_front'] for r in rows)}")
    lines = [head, f"{'trial':>6} {'state':<10} {'epoch':>5} {'privacy':>8} {'utility':>8} "
             f"{'SSIM':>6}  front"]
    def num(v: float, width: int) -> str:
        return f"{v:{width}.3f}" if np.isfinite(v) else f"{'-':>{width}}"

    for r in rows:
        infeasible = np.isfinite(r["violation"]) and not r["feasible"]
        lines.append(f"{r['trial']:>6} {r['state']:<10} {r['epoch']:>5} "
                     f"{num(r.get('val_privacy_mean', np.nan), 8)} "
                     f"{num(r.get('val_utility_mean', np.nan), 8)} "
                     f"{num(r.get('val_ssim', np.nan), 6)}  {'*' if r['on_front'] else ''}"
                     f"{' (infeasible)' if infeasible else ''}")
    return "\n".join(lines)


def front_figure(space: SearchSpace, rows: list[dict[str, Any]],
                 baselines: dict[str, list[dict[str, float]]] | None, title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, y_key = space.metrics[1], space.metrics[0]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    done = [r for r in rows if np.isfinite(r[x_key]) and np.isfinite(r[y_key])]
    other = [r for r in done if not r["on_front"]]
    front = sorted((r for r in done if r["on_front"]), key=lambda r: r[x_key])
    ax.scatter([r[x_key] for r in other], [r[y_key] for r in other], c="0.6", s=18,
               label="trials")
    ax.plot([r[x_key] for r in front], [r[y_key] for r in front], "o-", c="C3",
            label="Pareto front")
    for r in front:
        ax.annotate(r["trial"], (r[x_key], r[y_key]), fontsize=7, textcoords="offset points",
                    xytext=(3, 3))
    if baselines and {x_key, y_key} == {"val_privacy_mean", "val_utility_mean"}:
        for name, style in (("noise", "s--"), ("blur", "^--")):
            pts = baselines[name]
            ax.plot([p["utility_mean"] for p in pts], [p["privacy_mean"] for p in pts], style,
                    label=f"Gaussian {name}", alpha=0.7)
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def refresh_parent(settings: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Pareto table (every trial, with `on_front`) and figure, and the hypervolume."""
    import matplotlib.pyplot as plt

    space: SearchSpace = settings["space"]
    client = client_for(settings["tracking_uri"])
    parent = settings["parent_run_id"]
    child = {r.data.tags.get(TRIAL_TAG): r.info.run_id
             for r in child_runs(settings["tracking_uri"], settings["experiment_id"], parent)}
    columns = sorted({k for r in rows for k in r})
    table = {c: [_plain(r.get(c)) for r in rows] for c in columns}
    table["run_id"] = [child.get(r["trial_id"], "") for r in rows]
    replace_table(client, parent, table, "trials.json")
    front = [i for i, r in enumerate(rows) if r["on_front"]]
    replace_table(client, parent, {c: [table[c][i] for i in front] for c in table},
                  "pareto_front.json")
    baselines = settings.get("baselines")
    fig = front_figure(space, rows, baselines, f"search {settings['name']}")
    client.log_figure(parent, fig, "pareto_front.png")
    plt.close(fig)
    finished = sum(r["state"] in ("TERMINATED", "ERROR") for r in rows)
    client.log_metric(parent, "hypervolume", front_hypervolume(space, rows), step=finished)
    client.log_metric(parent, "front_size", float(len(front)), step=finished)
    client.log_metric(parent, "trials_finished", float(finished), step=finished)


def _plain(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return v


# ------------------------------------------------------------------ driver

def _settings(record: SearchRecord, space: SearchSpace) -> dict[str, Any]:
    base_file = Path(record.folder) / BASELINES_FILE
    return {"name": record.name, "folder": record.folder, "space": space,
            "storage": record.storage_root,
            "baselines": json.loads(base_file.read_text()) if base_file.is_file() else None,
            "data": record.data, "zoo": record.zoo, "data_fingerprint": record.data_fingerprint,
            "tracking_uri": record.tracking_uri, "experiment_id": record.experiment_id,
            "parent_run_id": record.parent_run_id}


def _trainable(settings: dict[str, Any]) -> Any:
    from ray import tune

    # The trial function only waits on its Train run: it holds no CPU (a CPU fraction per
    # trial would leave, say, 0.98 of 2 CPUs and keep the second trial's 1-CPU worker out).
    return tune.with_resources(tune.with_parameters(run_trial, settings=settings),
                               {"memory": TRIAL_MEMORY})


def _bind(space_path: Path, overrides: dict[str, dict[str, Any]], data: Path, zoo: Path
          ) -> tuple[SearchSpace, Any, Any]:
    from san_search.data import open_dataset
    from san_search.zoo import open_zoo

    space = load_search_space(space_path, overrides)
    ds = open_dataset(data)
    z = open_zoo(zoo, expect_fingerprint=ds.fingerprint)
    return space.bind(z, ds.size), ds, z


def _check_trial_fits(space: SearchSpace, resources: dict[str, float]) -> None:
    from san_search.experiment import check_resources

    cfg = space.candidate({})
    check_resources(cfg, resources)
    for res, amount in (space.resources.custom or {}).items():
        need = cfg.num_workers * amount
        if resources.get(res, 0.0) < need:
            raise SearchError(
                f"{space.path}: resources: custom: a trial needs {need:g} {res!r}; the Ray "
                f"cluster has {resources.get(res, 0.0):g} (start nodes with "
                f"`ray start --resources '{{\"{res}\": N}}'`, or drop it from the space)")


def _score_baselines(record: SearchRecord) -> dict[str, list[dict[str, float]]]:
    from san_search.data import open_dataset
    from san_search.evaluate import PoolScorer, baseline_curves, load_pool
    from san_search.zoo import open_zoo

    ds = open_dataset(record.data)
    z = open_zoo(record.zoo, expect_fingerprint=ds.fingerprint)
    return baseline_curves(PoolScorer(load_pool(z, "val"), ds.split("val")))


def start(space_path: str | Path, data: str | Path, zoo: str | Path, *, out: str | Path,
          name: str | None = None, tracking_uri: str | None = None,
          experiment: str = "san-search", overrides: dict[str, dict[str, Any]] | None = None,
          ray_address: str | None = None, storage: str | None = None, log: Log = print
          ) -> dict[str, Any]:
    """Check everything, create the parent run and the search folder, run the search.
    `storage`: where Tune and Train write (default: the search folder); give a URI that
    every node reaches (s3://...) on a cluster without a shared disk."""
    from san_search import tracking

    overrides = overrides or {}
    space_path, data, zoo = Path(space_path), Path(data).absolute(), Path(zoo).absolute()
    space, ds, z = _bind(space_path, overrides, data, zoo)  # every config error, before work
    name = name or time.strftime("search-%Y%m%d-%H%M%S")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise SearchError(f"search name {name!r} may use letters, digits, '-' and '_'")
    folder = Path(out).absolute() / name
    if folder.exists():
        raise SearchError(f"search {name!r} already exists at {folder}: continue it with "
                          f"`san-search search --resume {name} --out {out}` or pick another "
                          "--name")
    uri = tracking.resolve_tracking_uri(tracking_uri)
    exp_id = tracking.setup(uri, experiment)  # unreachable server: fails here, in seconds
    started = _ray_init(ray_address)
    try:
        import ray

        _check_trial_fits(space, ray.cluster_resources())
        client = client_for(uri)
        parent = client.create_run(exp_id, run_name=name, tags={
            "san_search.kind": "search", SEARCH_TAG: name,
            "data_fingerprint": ds.fingerprint, "zoo_fingerprint": z.data_fingerprint,
            "data": str(data), "zoo": str(zoo), "search_space": str(space_path.absolute()),
            "mlflow.note.content": space.description})
        from mlflow.entities import Param

        client.log_batch(parent.info.run_id, params=[
            Param(k, str(v)) for k, v in {**space.describe(), "search_space": space_path.name,
                                          "data_fingerprint": ds.fingerprint,
                                          "zoo_fingerprint": z.data_fingerprint}.items()])
        client.log_artifact(parent.info.run_id, str(space_path))
        log(f"search {name}: {space.budget.trials} trials x up to {space.budget.epochs} epochs, "
            f"{space.budget.concurrency} at a time, sampler {space.sampler.name} (seed "
            f"{space.sampler.seed}), scheduler {space.scheduler.name}; folder {folder}")
        log(f"MLflow: experiment {experiment!r} ({uri}), parent run {parent.info.run_id}")
        folder.mkdir(parents=True)
        try:
            shutil.copyfile(space_path, folder / SPACE_FILE)
            record = SearchRecord(name, str(folder), str(space_path.absolute()), str(data),
                                  str(zoo), ds.fingerprint, uri, experiment, exp_id,
                                  parent.info.run_id, overrides,
                                  time.strftime("%Y-%m-%dT%H:%M:%S"),
                                  _storage(storage, name))
            record.save()
            baselines = _score_baselines(record)
            (folder / BASELINES_FILE).write_text(json.dumps(baselines))
        except BaseException:
            # Nothing ran yet: leave no half-made search behind (the name stays free).
            shutil.rmtree(folder, ignore_errors=True)
            client.set_terminated(parent.info.run_id, status="FAILED")
            raise
        client.log_dict(parent.info.run_id, baselines, BASELINES_FILE)
        return _run(record, space, resume=False, log=log)
    finally:
        if started:
            import ray

            ray.shutdown()


def _storage(storage: str | None, name: str) -> str:
    if not storage:
        return ""
    if "://" in storage:
        return join_storage(storage, name)
    return str(Path(storage).absolute() / name)


def resume(name: str, *, out: str | Path, ray_address: str | None = None,
           log: Log = print) -> dict[str, Any]:
    """Continue a search whose driver died: finished trials stay, the Optuna study and the
    trials come back from Tune's saved state, running trials continue from checkpoints."""
    from san_search import tracking

    folder = Path(out).absolute() / name
    record = SearchRecord.load(folder)
    space, ds, _ = _bind(folder / SPACE_FILE, record.overrides, Path(record.data),
                         Path(record.zoo))
    if ds.fingerprint != record.data_fingerprint:
        raise SearchError(f"the dataset at {record.data} changed since the search started "
                          f"(fingerprint {ds.fingerprint} != {record.data_fingerprint})")
    if "://" not in record.storage_root and not (Path(record.storage_root) / "tune").is_dir():
        raise SearchError(f"{folder} has no Ray Tune state (tune/): the search never started "
                          "a trial; start it again under a new name")
    tracking.check_reachable(record.tracking_uri)
    started = _ray_init(ray_address)
    try:
        import ray

        _check_trial_fits(space, ray.cluster_resources())
        client_for(record.tracking_uri).update_run(record.parent_run_id, status="RUNNING")
        log(f"resuming search {name} from {folder}")
        return _run(record, space, resume=True, log=log)
    finally:
        if started:
            import ray

            ray.shutdown()


def _ray_init(address: str | None) -> bool:
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address or "local", include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    return True


def _run(record: SearchRecord, space: SearchSpace, *, resume: bool, log: Log) -> dict[str, Any]:
    import ray
    from ray import tune

    from san_search.moasha import EpochBudget, rungs, start_board

    settings = _settings(record, space)
    if space.scheduler.name == "mo_asha":
        settings["board"] = f"moasha-{record.parent_run_id}"
        settings["rungs"] = rungs(space.scheduler.grace_epochs,
                                  space.scheduler.reduction_factor, space.budget.epochs)
    folder = Path(record.folder)
    client = client_for(record.tracking_uri)
    try:
        if space.scheduler.name == "mo_asha":
            board = start_board(settings["board"], space.metrics, space.modes,
                                max_t=space.budget.epochs, grace=space.scheduler.grace_epochs,
                                eta=space.scheduler.reduction_factor,
                                violation=space.violation, state_file=folder / "moasha.json")
            log(f"MO-ASHA rungs at epochs {ray.get(board.rungs.remote())}, keeping the best "
                f"1/{space.scheduler.reduction_factor} by non-dominated rank")
        if resume:
            tuner = tune.Tuner.restore(join_storage(record.storage_root, "tune"),
                                       trainable=_trainable(settings),
                                       resume_unfinished=True, resume_errored=False,
                                       restart_errored=False)
        else:
            tuner = tune.Tuner(
                _trainable(settings),
                tune_config=tune.TuneConfig(
                    search_alg=ConstrainedOptunaSearch(space),
                    num_samples=space.budget.trials,
                    max_concurrent_trials=space.budget.concurrency, reuse_actors=False),
                run_config=tune.RunConfig(
                    name="tune", storage_path=record.storage_root, verbose=0,
                    callbacks=[SearchCallback(settings)],
                    stop=EpochBudget(space.budget.trial_epochs) if space.budget.trial_epochs
                    else None,
                    failure_config=tune.FailureConfig(max_failures=0)),
            )
        grid = tuner.fit()
    except KeyboardInterrupt:
        hint = f"san-search search --resume {record.name} --out {Path(record.folder).parent}"
        client.set_tag(record.parent_run_id, "resume", hint)
        client.set_terminated(record.parent_run_id, status="KILLED")
        for run in child_runs(record.tracking_uri, record.experiment_id, record.parent_run_id):
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, status="KILLED")
        log(f"interrupted; continue with: {hint}")
        raise
    except Exception:
        client.set_terminated(record.parent_run_id, status="FAILED")
        raise
    rows = trial_rows(space, [r for r in _grid_trials(grid)])
    hv = front_hypervolume(space, rows)
    client.set_terminated(record.parent_run_id, status="FINISHED")
    front = [r for r in rows if r["on_front"]]
    log(f"search {record.name} finished: {len(rows)} trials, {len(front)} on the front, "
        f"hypervolume {hv:.4f}; parent run {record.parent_run_id}")
    summary = {"name": record.name, "folder": record.folder,
               "parent_run_id": record.parent_run_id, "hypervolume": hv, "rows": rows}
    (folder / "summary.json").write_text(json.dumps(
        {**summary, "rows": [{k: _plain(v) for k, v in r.items()} for r in rows]}, indent=2))
    return summary


def _grid_trials(grid: Any) -> list[Any]:
    """Trial-like views of a ResultGrid (trial id, status, last result, config)."""
    out = []
    for res in grid:
        metrics = dict(res.metrics or {})
        status = "ERROR" if res.error is not None else "TERMINATED"
        out.append(_TrialView(metrics.get("trial_id", ""), status, metrics, res.config or {}))
    return out


@dataclasses.dataclass
class _TrialView:
    trial_id: str
    status: str
    last_result: dict[str, Any]
    config: dict[str, Any]


def parse_overrides(trials: int | None, epochs: int | None, concurrency: int | None,
                    sampler: str | None, seed: int | None, scheduler: str | None
                    ) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
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


__all__ = ["ConfigError", "SearchError", "resume", "start"]
