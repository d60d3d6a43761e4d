#!/usr/bin/env bash
# Load test of the HTTP service with the Gowalla model, over loopback, on this machine.
#   benchmarks/run_load_test.sh        # trains runs/gowalla-model first if it is missing (~15 min)
# Server and load generator share the machine (2 cores here), so the figures are a floor for a
# dedicated server. Run it on an otherwise idle machine: the results are recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
DR=${DR:-.venv/bin/deep-retrieval}
PY=${PY:-.venv/bin/python}
DATA=${DEEP_RETRIEVAL_DATA:-../shared/data}
MODEL=${MODEL:-runs/gowalla-model}
OUT=benchmarks/results/load
PORT=${PORT:-8765}
URL=http://127.0.0.1:$PORT
DURATION=${DURATION:-30}

if [[ ! -d $MODEL ]]; then
  $DR -q train --dataset gowalla --data-dir "$DATA" --out "$MODEL" --set dr.retrieval.candidate_factor=20
fi
# A second bundle to swap with during the reload test (same model, another directory).
rm -rf "$MODEL-b" && cp -r "$MODEL" "$MODEL-b"
mkdir -p "$OUT"
# The reload test needs the admin endpoint: a throwaway token.
TOKEN_FILE=$(mktemp)
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$TOKEN_FILE"

$DR -q serve "$MODEL" --port "$PORT" --admin-token-file "$TOKEN_FILE" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -f "$TOKEN_FILE"' EXIT
$PY benchmarks/wait_for_service.py "$URL"

for clients in 1 4 16; do
  $DR -q load-test "$URL" --dataset gowalla --data-dir "$DATA" --clients $clients --duration "$DURATION" \
    -n 100 --out "$OUT/clients-$clients.json" > /dev/null
done
# Reload under load: swap bundles every 5 s while 8 clients send requests.
$DR -q load-test "$URL" --dataset gowalla --data-dir "$DATA" --clients 8 --duration $((DURATION * 2)) -n 100 \
  --reload-every 5 --reload-paths "$MODEL-b,$MODEL" --admin-token-file "$TOKEN_FILE" \
  --out "$OUT/reload.json" > /dev/null

$PY - "$OUT" "$MODEL" <<'PY'
import json, sys
from pathlib import Path
out, model = Path(sys.argv[1]), sys.argv[2]
manifest = json.loads((Path(model) / "manifest.json").read_text())
rows = ["| test | clients | requests | errors | throughput (req/s) | p50 ms | p90 ms | p99 ms | reloads |",
        "|---|---|---|---|---|---|---|---|---|"]
for name in ["clients-1", "clients-4", "clients-16", "reload"]:
    r = json.loads((out / f"{name}.json").read_text())
    label = "reload every 5 s" if name == "reload" else "steady"
    rows.append(f"| {label} | {r['clients']} | {r['requests']:,} | {r['errors']} | {r['throughput_rps']} |"
                f" {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['reloads']} |")
text = (f"Gowalla model ({manifest['n_items']:,} items), `POST /v1/recommend` with n = 100 and each test"
        " user's history, over loopback; server and clients on one 2-core machine.\n"
        "Command: `benchmarks/run_load_test.sh`.\n\n" + "\n".join(rows) + "\n")
(out / "load.md").write_text(text)
print(text)
PY
