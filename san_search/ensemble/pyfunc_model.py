"""The MLflow pyfunc face of an exported ensemble, logged as "models from code": MLflow
stores this file, not a pickled object. `predict` takes uint8 or float faces of the
ensemble's colour mode, (N, S, S) gray or (N, S, S, 3) rgb (manifest `preprocessing.color`),
or a DataFrame of N rows of S*S (rgb: S*S*3, R, G, B interleaved) pixels, and returns the
perturbed faces in the same shape, float32 in [0, 1]. Params: `policy` (random | chain) and
`backend` (torch | onnx), both optional.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlflow.pyfunc import PythonModel

import mlflow


class SanEnsembleModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from san_search.ensemble.serving import load_ensemble

        self.folder = context.artifacts["ensemble"]
        self.loaded = {"torch": load_ensemble(self.folder, "torch")}  # verifies every hash

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None
                ) -> np.ndarray:
        from san_search.ensemble.serving import load_ensemble

        params = params or {}
        backend = params.get("backend") or "torch"
        if backend not in self.loaded:
            self.loaded[backend] = load_ensemble(self.folder, backend)
        ens = self.loaded[backend]
        x = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
        x = x.reshape(-1, *ens.face_shape)
        return ens.runtime.perturb(x, params.get("policy") or None)


mlflow.models.set_model(SanEnsembleModel())
