#!/usr/bin/env bash
# A local MLflow tracking server: SQLite backend, local artifact folder, 127.0.0.1 only.
set -euo pipefail
PORT="${MLFLOW_PORT:-5000}"
DIR="$(realpath -m "${MLFLOW_DIR:-./mlflow-server}")"
mkdir -p "$DIR/artifacts"
export MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
exec mlflow server \
  --backend-store-uri "sqlite:///$DIR/mlflow.db" \
  --artifacts-destination "$DIR/artifacts" \
  --host 127.0.0.1 --port "$PORT" --workers 1
