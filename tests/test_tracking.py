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
