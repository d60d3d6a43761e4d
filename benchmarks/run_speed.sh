#!/usr/bin/env bash
# Regenerates benchmarks/results/speed/: `deep-retrieval bench-speed` at 100K, 1M and 10M items
# (synthetic corpora with a planted two-tower model; DR, exact torch/faiss, HNSW, IVF in one
# process each), the ML-20M-shaped training run (10M time-ordered interactions, joint training),
# and the growth plot over the three sizes. Run it on an otherwise idle machine: everything
# recorded is a timing. About an hour on 2 cores.
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
# 10M items: 500K users (6M interactions) and one epoch keep the run near 20 minutes; IVF gets
# 4,096 lists (4·√V = 12,649 would make k-means the longest step of the whole run).
size 10000000 --set n_users=500000 dr.train.epochs=1 dr.train.joint_epochs=0 ivf.n_lists=4096

# Training throughput on the ML-20M shape (138,493 users, 26,744 items, 10M interactions): one
# epoch with DR's own encoder and reranker trained jointly. Rows are sets here, so path scoring
# runs one beam search per user; on time-ordered rows it runs one per interaction (see README).
if [[ -z $ONLY || $ONLY == ml-20m-train ]]; then
  $DR -q bench-speed --n-items 26744 --out "$OUT/ml-20m-train" --set n_users=138493 \
    interactions_per_user=72.21 joint=true dr.train.epochs=1 dr.train.joint_epochs=1 dr.structure.n_nodes=50
fi

if [[ -z $ONLY || $ONLY == plot ]]; then
  .venv/bin/python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from deep_retrieval.experiments.speed import plot_speed, speed_markdown
out = Path(sys.argv[1])
docs = [json.loads(p.read_text()) for p in sorted(out.glob("[0-9]*/speed.json"), key=lambda p: int(p.parent.name))]
plot_speed(docs, out / "growth.png")
(out / "speed.md").write_text(speed_markdown(docs))
print(f"wrote {out}/growth.png, {out}/speed.md")
PY
fi
