"""MLflow, in one place: the only package that imports it (besides the pyfunc model class in
`pyfunc_model.py`, which must subclass MLflow's). `store`: where runs go, experiments, the
client and a local server; `runs`: this tool's tags, child runs, params, metrics, tables,
figures, epoch logging, candidate artefacts and downloads; `models`: the Model Registry.
Every public name is re-exported here: callers write `from san_search import tracking`."""

from san_search.errors import TrackingError
from san_search.tracking.models import PyfuncModel, RegisteredVersion, register_pyfunc
from san_search.tracking.runs import (
    EPOCHS_TAG,
    ERROR_TAG,
    FEASIBLE_TAG,
    FINALIZED_TAG,
    FRONT_TAG,
    KIND_TAG,
    MAX_TAG,
    MEMBER_TAG,
    PARENT_TAG,
    SEARCH_TAG,
    TRIAL_TAG,
    EpochLogger,
    Scalar,
    Table,
    candidate_run,
    child_runs,
    download_artifacts,
    fail_run,
    find_child,
    finish_run,
    flat_params,
    get_run,
    log_candidate,
    log_child_run,
    log_figure,
    log_front,
    log_metrics,
    log_params,
    log_report_run,
    metric_key,
    open_child,
    replace_table,
    tag_runs,
    tag_trials,
)
from san_search.tracking.store import (
    EXPERIMENT_KIND,
    Client,
    LocalServer,
    Run,
    artifact_location,
    check_reachable,
    client_for,
    free_port,
    healthy,
    resolve_tracking_uri,
    serve_local,
    setup,
    ui_url,
)

__all__ = [
    "Client", "EPOCHS_TAG", "ERROR_TAG", "EXPERIMENT_KIND", "EpochLogger", "FEASIBLE_TAG",
    "FINALIZED_TAG", "FRONT_TAG", "KIND_TAG", "LocalServer", "MAX_TAG", "MEMBER_TAG",
    "PARENT_TAG", "PyfuncModel", "RegisteredVersion", "Run", "SEARCH_TAG", "Scalar", "TRIAL_TAG",
    "Table", "TrackingError", "artifact_location", "candidate_run", "check_reachable",
    "child_runs", "client_for", "download_artifacts", "fail_run", "find_child", "finish_run",
    "flat_params", "free_port", "get_run", "healthy", "log_candidate", "log_child_run",
    "log_figure", "log_front", "log_metrics", "log_params", "log_report_run", "metric_key",
    "open_child", "register_pyfunc", "replace_table", "resolve_tracking_uri", "serve_local",
    "setup", "tag_runs", "tag_trials", "ui_url",
]
