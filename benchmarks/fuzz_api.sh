#!/usr/bin/env bash
# Fuzz the running API from its own OpenAPI document with schemathesis (bounded), against a
# real `anomaly serve` on a free loopback port; fails on any 5xx answer.
#   benchmarks/fuzz_api.sh [MAX_EXAMPLES per operation, default 50]
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLES="${1:-50}"
PY=.venv/bin/python
WORK="$(mktemp -d)"
PORT="$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
STORE="${ANOMALY_FUZZ_STORE:-}"
if [ -z "$STORE" ]; then
  STORE="$WORK/store"
  $PY -c "
import numpy as np, sys
from service.testing import build_store, make_part
rng = np.random.default_rng(0)
build_store(sys.argv[1], 'tiny', [make_part(rng) for _ in range(8)])" "$STORE"
fi
setsid $PY -m anomaly.cli.main serve --port "$PORT" --workers 1 --store "$STORE" \
  --db-url "sqlite:///$WORK/records.sqlite" --instance "$WORK/inst" >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM -- -$SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 300); do
  curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 1
done
.venv/bin/schemathesis run "http://127.0.0.1:$PORT/api/v1/openapi.json" \
  --checks not_a_server_error --max-examples "$EXAMPLES" --mode all --request-timeout 120 \
  --seed 1 --phases examples,coverage,fuzzing
