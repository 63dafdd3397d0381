"""The ensemble: choosing a diverse set of SANs from a finished search, shipping it, serving it.

Three parts, each importable without the others above it:

  selection      pure decisions on arrays: the objective J, the member search, the two simple
                 rules it is compared with, hypervolume shares, the matched noise strength.
                 No I/O, no MLflow, no torch.
  scoring,       the `san-search ensemble select` step: candidates loaded from the search
  orchestration  folder and MLflow and scored on the val pool (`scoring`), the test-pool
                 report, then `select(...)`, the `Selection` record (selection.json), its
                 MLflow run and trade-off figure (`orchestration`).
  serving        what a user of an exported ensemble needs: the runtime (policies, torch and
                 ONNX members) and the verified loader of an export folder. `perturb` and the
                 MLflow pyfunc model import this module alone.

`export` writes an export folder from a `Selection` (weights, ONNX, manifest with SHA-256,
model card), verifies it through `serving`, and registers it in the MLflow Model Registry.

This file imports nothing, so that importing `san_search.ensemble.serving` does not bring
the selection code with it.
"""
