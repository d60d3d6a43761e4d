#!/usr/bin/env bash
# Regenerates benchmarks/results/speed/: `deep-retrieval bench-speed` at 100K, 1M and 10M items
# (synthetic corpora with a planted two-tower model; DR, exact torch/faiss, HNSW, IVF in one
# process each), the ML-20M-shaped training run (10M time-ordered interactions, joint training),
# and the growth plot over the three sizes. Run it on an otherwise idle machine: everything
# recorded is a timing. About 1.5 hours on 2 cores.
#   benchmarks/run_speed.sh            # everything
#   benchmarks/run_speed.sh 1000000    # one catalogue size (or: ml-20m-train, plot)
set -euo pipefail
cd "$(dirname "$0")/.."
DR=${DR:-.venv/bin/deep-retrieval}
OUT=benchmarks/results/speed
ONLY=${1:-}

size() {  # N [extra --set values]
  local n=$1; shift
  [[ -n $ONLY && $ONLY != "$n" ]] && return 0
  $DR -q bench-speed --n-items "$n" --out "$OUT/$n" "$@"
}

size 100000
size 1000000
# IVF: 4·√V = 12,649 lists would make k-means the longest step; 4,096 lists keep the build in minutes.
size 10000000 --set ivf.n_lists=4096

# Training throughput on the ML-20M shape (138,493 users, 26,744 items), 10M time-ordered
# interactions, DR's own encoder and reranker trained jointly for one epoch.
if [[ -z $ONLY || $ONLY == ml-20m-train ]]; then
  $DR -q bench-speed --n-items 26744 --out "$OUT/ml-20m-train" --set n_users=138493 \
    interactions_per_user=72.21 ordered=true joint=true dr.train.epochs=1 dr.train.joint_epochs=1 \
    dr.structure.n_nodes=50
fi

if [[ -z $ONLY || $ONLY == plot ]]; then
  .venv/bin/python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from deep_retrieval.speed import plot_speed, speed_markdown
out = Path(sys.argv[1])
docs = [json.loads(p.read_text()) for p in sorted(out.glob("[0-9]*/speed.json"), key=lambda p: int(p.parent.name))]
plot_speed(docs, out / "growth.png")
(out / "speed.md").write_text(speed_markdown(docs))
print(f"wrote {out}/growth.png, {out}/speed.md")
PY
fi
