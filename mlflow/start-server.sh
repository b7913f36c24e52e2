#!/usr/bin/env bash
# The scale-out MLflow tracking server: PostgreSQL backend store, S3 artifact store, artifacts
# proxied by the server (clients need no S3 credentials of their own).
#
# Configuration comes from the environment only (credentials never live in this repository):
#   MLFLOW_BACKEND_STORE_URI      postgresql+psycopg://user@host:5432/mlflow   (required)
#   MLFLOW_ARTIFACTS_DESTINATION  s3://bucket/mlflow                            (required)
#   MLFLOW_S3_ENDPOINT_URL        S3-compatible endpoint (omit for AWS S3)
#   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION   read by boto3
#   PGPASSWORD                    if the database needs a password (libpq reads it)
#   MLFLOW_HOST (127.0.0.1), MLFLOW_PORT (5000), MLFLOW_WORKERS (2), MLFLOW_ALLOWED_HOSTS
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION (false here): MLflow 3's job runner for its GenAI features
#     (trace roll-ups, prompt optimisation), which metagan does not use: seven more Python
#     processes (about 250 MB each) that import MLflow at every start
# Clients then set MLFLOW_TRACKING_URI=http://$MLFLOW_HOST:$MLFLOW_PORT (see mlflow/scaleout.env).
set -euo pipefail
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI, e.g. postgresql+psycopg://mlflow@db:5432/mlflow}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION, e.g. s3://metagan/mlflow}"
host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"
args=(--backend-store-uri "$MLFLOW_BACKEND_STORE_URI"
      --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts
      --host "$host" --port "$port" --workers "${MLFLOW_WORKERS:-2}")
if [[ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]]; then
  args+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS")
fi
# A fresh database gets its schema on first start; after upgrading MLflow, back the database up
# and run `mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"` (docs/DEPLOY.md).
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
exec mlflow server "${args[@]}"
