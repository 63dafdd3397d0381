"""The runs this tool writes: its tags, a search's child runs (created, found again, failed,
finished), params, metrics, tables, figures and texts, per-epoch logging from a Train worker
(`EpochLogger`, a picklable epoch hook), a candidate's artefacts, the search parent run's
front, an ensemble's child run, a report's top-level run, and artefacts downloaded back."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from san_search.tracking.store import Client, Run, client_for, setup

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Tags this tool sets on its runs (one spelling, read back by resume and selection).
TRIAL_TAG = "san_search.trial_id"  # a candidate's Tune trial id
SEARCH_TAG = "san_search.search"  # the search a run belongs to
FINALIZED_TAG = "san_search.finalized"  # "1" once a candidate's final curve is logged
KIND_TAG = "san_search.kind"  # search | candidate | ensemble | zoo
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: nests a child run under its parent
ERROR_TAG = "error"  # why a run failed (the exception, cut to MAX_TAG)
EPOCHS_TAG = "san_search.epochs_trained"
# Filters for the UI's search box: a finished search tags every candidate run with whether it
# is on the Pareto front and meets the constraints; `ensemble select` tags its members.
FRONT_TAG = "san_search.front"  # "true" | "false"
FEASIBLE_TAG = "san_search.feasible"  # "true" | "false"
MEMBER_TAG = "san_search.ensemble_member"  # "true" on the chosen members
MAX_TAG = 5000  # characters of an error message kept in a tag

# A table as MLflow's table artefacts hold it: column name -> values.
Table = Mapping[str, Sequence[object]]
# A metric or param value as callers hand it over (params are logged as their str()).
Scalar = str | int | float | bool | None


def find_child(client: Client, experiment_id: str, parent_run_id: str, trial_id: str
               ) -> Run | None:
    """The child run of a search's parent run for one Tune trial, or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and "
                      f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        max_results=5)
    return runs[0] if runs else None


def child_runs(uri: str, experiment_id: str, parent_run_id: str) -> list[Run]:
    """Every child run of a parent run (a search's candidates and ensembles)."""
    return list(client_for(uri).search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        max_results=10000))


def metric_key(*parts: str) -> str:
    """MLflow metric names: dot-joined, characters MLflow accepts."""
    key = ".".join(parts)
    return "".join(c if c.isalnum() or c in "._-/ " else "_" for c in key)


def flat_params(prefix: str, values: Mapping[str, object]) -> dict[str, str]:
    return {f"{prefix}.{k}": str(v) for k, v in values.items()}


def replace_table(client: Client, run_id: str, data: Table, artifact_file: str) -> None:
    """Write a table artifact the way `log_table` does (JSON, pandas split orient, listed in
    the run's table tag so the UI shows it) but replacing, not appending to, an earlier
    version: a search refreshes its front table as trials finish."""
    import json
    import tempfile

    import pandas as pd
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        pd.DataFrame(data).to_json(path, orient="split", index=False, date_format="iso")
        folder = str(Path(artifact_file).parent)
        client.log_artifact(run_id, str(path), None if folder == "." else folder)
    tags = client.get_run(run_id).data.tags
    listed = json.loads(tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
    entry = {"path": artifact_file, "type": "table"}
    if entry not in listed:
        client.set_tag(run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps([*listed, entry]))


# ------------------------------------------------------------------ runs of this tool

def tag_trials(uri: str, experiment_id: str, parent_run_id: str,
               tags: Mapping[str, Mapping[str, str]]) -> int:
    """Set `tags[trial_id]` on each child run of the search (found by its trial tag); returns
    how many runs were tagged. What makes the UI's filters work, e.g.
    `tags.san_search.front = "true"`."""
    client = client_for(uri)
    done = 0
    for run in child_runs(uri, experiment_id, parent_run_id):
        wanted = tags.get(run.data.tags.get(TRIAL_TAG, ""))
        for key, value in (wanted or {}).items():
            client.set_tag(run.info.run_id, key, value)
        done += bool(wanted)
    return done


def tag_runs(uri: str, tags: Mapping[str, Mapping[str, str]]) -> None:
    """Set `tags[run_id]` on each run named."""
    client = client_for(uri)
    for run_id, pairs in tags.items():
        for key, value in pairs.items():
            client.set_tag(run_id, key, value)


def finish_run(client: Client, run_id: str, *, clear: tuple[str, ...] = ()) -> None:
    """End a run FINISHED, first removing the tags in `clear` that it holds (a note such as
    `resume` that an interrupted attempt left, and that no longer applies)."""
    held = client.get_run(run_id).data.tags
    for key in clear:
        if key in held:
            client.delete_tag(run_id, key)
    client.set_terminated(run_id, status="FINISHED")


def fail_run(client: Client, run_id: str, message: str) -> None:
    """Mark a run FAILED with the reason in its `error` tag."""
    client.set_tag(run_id, ERROR_TAG, message[:MAX_TAG])
    client.set_terminated(run_id, status="FAILED")


def log_params(client: Client, run_id: str, params: Mapping[str, Scalar]) -> None:
    """Params, each logged as its str()."""
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])


def open_child(client: Client, experiment_id: str, parent_run_id: str, trial_id: str, *,
               run_name: str, tags: Mapping[str, str], params: Mapping[str, str]) -> str:
    """The child run of one search trial: found again by trial id (a restored trial keeps
    its run) or created; returns its run id, RUNNING (unless already finalised)."""
    run = find_child(client, experiment_id, parent_run_id, trial_id)
    if run is not None and any(run.data.params.get(k) != v for k, v in params.items()):
        # A child created just before the driver was killed, for a trial the restored search
        # never recorded: its id was handed out again. Drop the orphan.
        client.delete_run(run.info.run_id)
        run = None
    if run is None:
        run = client.create_run(experiment_id, run_name=run_name, tags={
            PARENT_TAG: parent_run_id, TRIAL_TAG: trial_id, **tags})
        log_params(client, run.info.run_id, params)
    elif run.data.tags.get(FINALIZED_TAG) != "1":
        # A finalised run is done for good (a trial restarted after its final curve only
        # hands its last report to Tune again): it stays FINISHED.
        client.update_run(run.info.run_id, status="RUNNING")
    return str(run.info.run_id)


@contextmanager
def candidate_run(uri: str, experiment_id: str, name: str, tags: Mapping[str, str],
                  params: Mapping[str, str]) -> Iterator[str]:
    """A top-level candidate run (`san-search train`): FINISHED when the block ends, FAILED
    with the error when it raises."""
    client = client_for(uri)
    run_id = client.create_run(experiment_id, run_name=name,
                               tags={KIND_TAG: "candidate", **tags}).info.run_id
    log_params(client, run_id, params)
    try:
        yield str(run_id)
    except BaseException as exc:
        fail_run(client, run_id, f"{type(exc).__name__}: {exc}")
        raise
    client.set_terminated(run_id, status="FINISHED")


@dataclass
class EpochLogger:
    """An epoch hook for the Train loop (rank 0): each epoch's metrics straight into the
    candidate's run, as they happen. Picklable: Ray ships it to the worker, where the client
    is made on first use, and the run is tagged with the node that trains it."""

    tracking_uri: str
    run_id: str
    _client: Client | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, object]:
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id, "_client": None}

    def __call__(self, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        if self._client is None:
            self._client = client_for(self.tracking_uri)
            self._tag_node(self._client)
        step, now = int(metrics["epoch"]), int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)
                 and np.isfinite(v)]
        self._client.log_batch(self.run_id, metrics=batch)

    def _tag_node(self, client: Client) -> None:
        """Where rank 0 trains: shows which node of a cluster ran the candidate. Outside Ray
        there is nothing to record (and asking would start a local Ray)."""
        import ray

        if not ray.is_initialized():
            return
        try:
            node = {"san_search.node_id": ray.get_runtime_context().get_node_id(),
                    "san_search.node_ip": ray.util.get_node_ip_address()}
            for k, v in node.items():
                client.set_tag(self.run_id, k, v)
        except Exception:  # noqa: S110 (a tag is not worth failing a trial over)
            pass


def log_metrics(client: Client, run_id: str, metrics: Mapping[str, float], step: int = 0
                ) -> None:
    """Metrics at one step, in one batch, timestamped now."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def log_figure(client: Client, run_id: str, figure: Figure, artifact_file: str) -> None:
    """A matplotlib figure as a PNG artefact; the figure is closed once logged."""
    import matplotlib.pyplot as plt

    client.log_figure(run_id, figure, artifact_file)
    plt.close(figure)


def log_candidate(client: Client, run_id: str, *, tables: Mapping[str, Table],
                  figures: Mapping[str, Figure], images: Mapping[str, np.ndarray],
                  weights: str | Path, metrics: Mapping[str, float]) -> None:
    """A candidate's final artefacts: tables (MLflow's table JSON, replaced: a final
    evaluation that a killed driver cut short runs again on resume, and `log_table` would
    append its rows), figures (closed after logging), images, the weights folder and
    metrics."""
    for name, table in tables.items():
        replace_table(client, run_id, table, name)
    for name, fig in figures.items():
        log_figure(client, run_id, fig, name)
    for name, image in images.items():
        client.log_image(run_id, image, artifact_file=name)
    client.log_artifacts(run_id, str(weights), artifact_path="weights")
    log_metrics(client, run_id, metrics)


def log_front(client: Client, parent_run_id: str, *, trials: Table, front: Table,
              figure: Figure, metrics: Mapping[str, float], step: int) -> None:
    """A search parent run's refresh: the trials and Pareto-front tables (replaced, not
    appended), the front figure, and metrics such as the hypervolume at `step`."""
    replace_table(client, parent_run_id, trials, "trials.json")
    replace_table(client, parent_run_id, front, "pareto_front.json")
    log_figure(client, parent_run_id, figure, "pareto_front.png")
    for k, v in metrics.items():
        client.log_metric(parent_run_id, k, float(v), step=step)


def log_child_run(uri: str, experiment_id: str, parent_run_id: str, *, run_name: str,
                  tags: Mapping[str, str], params: Mapping[str, Scalar],
                  metrics: Mapping[str, float], tables: Mapping[str, Table],
                  figures: Mapping[str, Figure]) -> str:
    """A finished child run under `parent_run_id` (an ensemble's record): tags, params,
    metrics at step 0, tables (MLflow's table JSON) and figures; returns its run id."""
    client = client_for(uri)
    run_id = client.create_run(experiment_id, run_name=run_name,
                               tags={PARENT_TAG: parent_run_id, **tags}).info.run_id
    log_params(client, run_id, params)
    log_metrics(client, run_id, metrics)
    for name, table in tables.items():
        replace_table(client, run_id, table, name)
    for name, fig in figures.items():
        log_figure(client, run_id, fig, name)
    client.set_terminated(run_id, "FINISHED")
    return str(run_id)


def log_report_run(uri: str | None, experiment: str, *, run_name: str, kind: str,
                   params: Mapping[str, Scalar], metrics: Mapping[str, float],
                   tables: Mapping[str, Table], texts: Mapping[str, str]) -> str:
    """A top-level run in `experiment` (set up, created if missing) that records a report:
    its kind tag, params, metrics, tables and text files; returns its run id."""
    import mlflow

    setup(uri, experiment)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tag(KIND_TAG, kind)
        mlflow.log_params(dict(params))
        for k, v in metrics.items():
            mlflow.log_metric(k, float(v))
        for name, table in tables.items():
            mlflow.log_table(dict(table), artifact_file=name)
        for name, text in texts.items():
            mlflow.log_text(text, name)
        return str(run.info.run_id)


def get_run(uri: str, run_id: str) -> Run:
    """A run as the store has it now (status, tags, params, metrics)."""
    return client_for(uri).get_run(run_id)


def download_artifacts(uri: str, run_id: str, artifact_path: str, dst: Path) -> Path:
    """A run's artefact (file or folder) into `dst` (created), without MLflow's per-file
    progress bar; returns the local path."""
    import os

    # MLflow draws a progress bar per downloaded artefact: noise in a CLI that downloads many.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=artifact_path, dst_path=str(dst), tracking_uri=uri))
