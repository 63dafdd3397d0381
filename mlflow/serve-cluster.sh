#!/usr/bin/env bash
# The cluster's MLflow tracking server, on the Ray head node: PostgreSQL backend store
# (mlflow/setup-postgres.sh), artifacts in an S3-compatible store, proxied by the server so
# trials need no artifact credentials of their own. Bound to the private network: the
# cluster's security group admits no one from outside; reach the UI with an SSH tunnel.
#
#   MLFLOW_ARTIFACTS=s3://bucket/mlflow bash mlflow/serve-cluster.sh [--background]
#
# Settings: MLFLOW_BACKEND_URI (default: the URI setup-postgres.sh wrote),
# MLFLOW_ARTIFACTS (required: s3://...), MLFLOW_S3_ENDPOINT_URL (for MinIO, Ceph and other
# S3-compatible stores), MLFLOW_HOST (default: this node's private address), MLFLOW_PORT
# (5000), MLFLOW_WORKERS (2). Needs the `cluster` extra (psycopg2, boto3).
set -euo pipefail
BACKEND="${MLFLOW_BACKEND_URI:-$(cat "$HOME/.mlflow-backend-uri" 2>/dev/null || true)}"
: "${BACKEND:?set MLFLOW_BACKEND_URI=postgresql://USER:PASSWORD@HOST:5432/mlflow or run mlflow/setup-postgres.sh}"
: "${MLFLOW_ARTIFACTS:?set MLFLOW_ARTIFACTS=s3://BUCKET/mlflow}"
HOST="${MLFLOW_HOST:-$(hostname -I | awk '{print $1}')}"
PORT="${MLFLOW_PORT:-5000}"
export MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
ARGS=(server --backend-store-uri "$BACKEND" --artifacts-destination "$MLFLOW_ARTIFACTS"
      --host "$HOST" --port "$PORT" --workers "${MLFLOW_WORKERS:-2}")
if [ "${1:-}" = "--background" ]; then
  LOG="$HOME/mlflow-server.log"
  if bash "$(dirname "$0")/health.sh" "http://$HOST:$PORT" >/dev/null 2>&1; then
    echo "MLflow already serving on http://$HOST:$PORT"; exit 0
  fi
  nohup mlflow "${ARGS[@]}" >> "$LOG" 2>&1 &
  echo $! > "$HOME/mlflow-server.pid"
  for _ in $(seq 60); do
    bash "$(dirname "$0")/health.sh" "http://$HOST:$PORT" >/dev/null 2>&1 && {
      echo "MLflow serving on http://$HOST:$PORT (log $LOG)"; exit 0; }
    sleep 2
  done
  echo "MLflow did not answer on http://$HOST:$PORT within 120 s; see $LOG" >&2; exit 1
fi
exec mlflow "${ARGS[@]}"
