#!/usr/bin/env bash
# PostgreSQL as MLflow's backend store on the cluster's head node (Ubuntu), idempotent:
# installs the server if missing, creates the role and database if missing, listens on
# localhost only (the MLflow server is its only client). Credentials: MLFLOW_DB_USER,
# MLFLOW_DB_PASSWORD (generated once into ~/.mlflow-db-password), MLFLOW_DB_NAME.
set -euo pipefail
DB_USER="${MLFLOW_DB_USER:-mlflow}"
DB_NAME="${MLFLOW_DB_NAME:-mlflow}"
PASS_FILE="$HOME/.mlflow-db-password"
if [ -z "${MLFLOW_DB_PASSWORD:-}" ]; then
  [ -s "$PASS_FILE" ] || (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$PASS_FILE")
  MLFLOW_DB_PASSWORD="$(cat "$PASS_FILE")"
fi
if ! command -v psql >/dev/null; then
  sudo apt-get update -q
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
fi
sudo systemctl enable --now postgresql
psql_admin() { sudo -u postgres psql -v ON_ERROR_STOP=1 -tAc "$1"; }
if [ "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname='$DB_USER'")" != "1" ]; then
  psql_admin "CREATE ROLE \"$DB_USER\" LOGIN PASSWORD '$MLFLOW_DB_PASSWORD'"
fi
if [ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname='$DB_NAME'")" != "1" ]; then
  psql_admin "CREATE DATABASE \"$DB_NAME\" OWNER \"$DB_USER\""
fi
URI="postgresql://$DB_USER:$MLFLOW_DB_PASSWORD@127.0.0.1:5432/$DB_NAME"
(umask 077; echo "$URI" > "$HOME/.mlflow-backend-uri")
echo "PostgreSQL ready: database $DB_NAME, role $DB_USER (URI in ~/.mlflow-backend-uri)"
