#!/usr/bin/env bash
# Fuzz the running API from its own OpenAPI document with schemathesis (bounded), against a
# real `anomaly serve` on a free loopback port; fails on any 5xx answer.
#   benchmarks/fuzz_api.sh [MAX_EXAMPLES per operation, default 50]
# Records go to SQLite in a temporary folder, or to ANOMALY_FUZZ_DB_URL (e.g. the test PostgreSQL,
# postgresql://root@127.0.0.1:5432/test) in a schema of their own, dropped afterwards.
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
DB_URL="${ANOMALY_FUZZ_DB_URL:-sqlite:///$WORK/records.sqlite}"
SCHEMA_ARGS=()
SCHEMA=""
if [[ "$DB_URL" == postgres* ]]; then
  SCHEMA="anomaly_fuzz_$(date +%s)"
  SCHEMA_ARGS=(--db-schema "$SCHEMA")
fi
drop_schema() {
  [ -n "$SCHEMA" ] || return 0
  $PY - "$DB_URL" "$SCHEMA" <<'PY'
import sys
import sqlalchemy as sa
from service.db import normalize_url
engine = sa.create_engine(normalize_url(sys.argv[1]))
with engine.begin() as conn:
    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{sys.argv[2]}" CASCADE'))
PY
}
setsid $PY -m anomaly.cli.main serve --port "$PORT" --workers 1 --store "$STORE" \
  --db-url "$DB_URL" "${SCHEMA_ARGS[@]}" --instance "$WORK/inst" >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM -- -$SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; drop_schema || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 300); do
  curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 1
done
.venv/bin/schemathesis run "http://127.0.0.1:$PORT/api/v1/openapi.json" \
  --checks not_a_server_error --max-examples "$EXAMPLES" --mode all --request-timeout 120 \
  --seed 1 --phases examples,coverage,fuzzing
