"""The MLflow Model Registry: a models-from-code pyfunc model logged into an existing run,
registered under a name, its new version tagged, described and pointed at by an alias."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from san_search.tracking.store import client_for


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version: its number and the URI of the logged model."""

    version: str
    model_uri: str


@dataclass(frozen=True)
class PyfuncModel:
    """What is logged: the model's code file (models-from-code: nothing pickled), its
    artefacts (name -> local path), an input example and its output (the signature is
    inferred from them), the default inference params, and its pip requirements."""

    code: Path
    artifacts: Mapping[str, str]
    example_input: np.ndarray
    example_output: np.ndarray
    params: Mapping[str, str]
    pip_requirements: Sequence[str]


def register_pyfunc(uri: str, run_id: str, model: PyfuncModel, *, name: str, alias: str,
                    artifact_name: str, tags: Mapping[str, str], description: str
                    ) -> RegisteredVersion:
    """Log `model` under `artifact_name` into run `run_id`, register it as `name`, tag and
    describe the new version, and point `alias` at it."""
    from mlflow.models import infer_signature

    import mlflow

    signature = infer_signature(model.example_input, model.example_output,
                                params=dict(model.params))
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=artifact_name, python_model=str(model.code), artifacts=dict(model.artifacts),
            signature=signature, registered_model_name=name,
            pip_requirements=list(model.pip_requirements))
    client = client_for(uri)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, alias, version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=description)
    return RegisteredVersion(version, str(info.model_uri))
