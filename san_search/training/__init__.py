"""Training one SAN candidate: the loss (`losses`), the per-worker loop and checkpoints
(`trainer`), device options (`device`), and one candidate end to end on Ray Train with its
MLflow run (`candidate`)."""
