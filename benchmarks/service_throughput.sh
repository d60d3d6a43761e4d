#!/usr/bin/env bash
# Service throughput (issue 16, item 9): requests/s and latency at 1, 8 and 32 clients over
# loopback, `POST /v1/recommend` with n = 100 and the latest-small test users' histories.
#   benchmarks/service_throughput.sh                 # writes benchmarks/results/service/$LABEL/
#   LABEL=before SERVE_ARGS="--batch-window-ms 0" benchmarks/service_throughput.sh
# Server and load generator share this machine (2 cores): run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DR=${DR:-.venv/bin/deep-retrieval}
PY=${PY:-.venv/bin/python}
MODEL=${MODEL:-runs/throughput-latest-small}
LABEL=${LABEL:-current}
OUT=benchmarks/results/service/$LABEL
PORT=${PORT:-8766}
URL=http://127.0.0.1:$PORT
DURATION=${DURATION:-20}

if [[ ! -d $MODEL ]]; then
  $DR -q train --dataset movielens-latest-small --out "$MODEL" --no-checkpoints
fi
mkdir -p "$OUT"
# shellcheck disable=SC2086  # SERVE_ARGS is a list of flags
$DR -q serve "$MODEL" --port "$PORT" ${SERVE_ARGS:-} &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
$PY benchmarks/wait_for_service.py "$URL"
for clients in 1 8 32; do
  $DR -q load-test "$URL" --dataset movielens-latest-small --clients $clients \
    --duration "$DURATION" -n 100 --out "$OUT/clients-$clients.json" > /dev/null
done
$PY - "$OUT" "${SERVE_ARGS:-}" "$(git rev-parse --short HEAD)" <<'PY'
import json, sys
from pathlib import Path
out, args, commit = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = ["| clients | requests | errors | requests/s | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|"]
for clients in (1, 8, 32):
    r = json.loads((out / f"clients-{clients}.json").read_text())
    rows.append(f"| {clients} | {r['requests']:,} | {r['errors']} | {r['throughput_rps']} |"
                f" {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['max_ms']} |")
text = (f"latest-small model, `POST /v1/recommend` with n = 100, over loopback; server and load"
        f" generator on one 2-core machine. Commit {commit}, serve flags `{args or '(defaults)'}`."
        "\nCommand: `benchmarks/service_throughput.sh`.\n\n" + "\n".join(rows) + "\n")
(out / "throughput.md").write_text(text)
print(text)
PY
