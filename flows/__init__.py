"""Prefect flows: thin glue over the ``metagan`` library (no torch code here)."""

import os

# Prefect's ephemeral API server gets 20 s to start by default; on a busy 2-core machine (a
# training job beside it, or CI) that is not enough, and every flow would fail before it ran.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# no network here or in CI; the telemetry call only logs an error
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
