#!/usr/bin/env bash
# Exit 0 when the MLflow server at $MLFLOW_TRACKING_URI (default http://127.0.0.1:5000)
# answers /health within 5 seconds.
set -euo pipefail
URI="${1:-${MLFLOW_TRACKING_URI:-http://127.0.0.1:5000}}"
python3 - "$URI" <<'PY'
import sys, urllib.request
uri = sys.argv[1].rstrip("/")
try:
    with urllib.request.urlopen(uri + "/health", timeout=5) as r:
        print(f"{uri}: {r.status} {r.read().decode().strip()}")
        sys.exit(0 if r.status == 200 else 1)
except Exception as exc:
    print(f"{uri}: unreachable ({exc})", file=sys.stderr)
    sys.exit(1)
PY
