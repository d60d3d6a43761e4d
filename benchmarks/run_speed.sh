#!/usr/bin/env bash
# Regenerates benchmarks/results/speed/: `deep-retrieval bench-speed` at 100K, 1M and 10M items
# (synthetic corpora with a planted two-tower model; DR, exact torch/faiss, HNSW, IVF, IVF-PQ
# fast-scan and ScaNN in one process each, every method's recall-latency frontier, frontier.png
# per size), the multi-interest corpus at 1M items (every method searches the embeddings DR's
# jointly trained reranker learns), the ML-20M-shaped training run (10M interactions, joint
# training), the growth plot over the three sizes, and the README's Speed tables. Run it on an
# otherwise idle machine: everything recorded is a timing. About 1.5 hours on 2 cores.
#   benchmarks/run_speed.sh            # everything
#   benchmarks/run_speed.sh 1000000    # one catalogue size (or: multi-interest-1000000,
#                                      # profile-1000000, ml-20m-train, plot)
set -euo pipefail
cd "$(dirname "$0")/.."
DR=${DR:-.venv/bin/deep-retrieval}
OUT=benchmarks/results/speed
ONLY=${1:-}

size() {  # NAME N [extra --set values]
  local name=$1 n=$2; shift 2
  [[ -n $ONLY && $ONLY != "$name" ]] && return 0
  $DR -q bench-speed --n-items "$n" --out "$OUT/$name" "$@"
}

size 100000 100000
size 1000000 1000000
# 10M items: 500K users (6M interactions) and one epoch keep the run near 40 minutes; IVF and
# IVF-PQ get 4,096 lists (4·√V = 12,649 would make k-means the longest step of the whole run);
# 50 single queries time each exact search (a third of a second each), and DR's add is timed on
# one call of 1,000 new items (each call computes log-partitions over all 10M items).
size 10000000 10000000 --set n_users=500000 dr.train.epochs=1 dr.train.joint_epochs=0 \
  ivf.n_lists=4096 ivf_pq.n_lists=4096 n_single_exact=50 dr_add_sample=1000
# The multi-interest corpus: each user's interactions come from 2-4 taste clusters, and no
# method is handed the generating model: DR trains its encoder and reranker, and every other
# method searches that reranker's embeddings. One joint epoch: with the (1M, 64) item tables
# trained, an epoch takes about 14 minutes here (dense Adam over both tables each step).
size multi-interest-1000000 1000000 --set corpus=multi-interest joint=true dr.train.epochs=1 \
  dr.train.joint_epochs=1

# Where DR's serving time goes at 1M items, stage by stage, the numpy reference path against
# the fused kernel (the same corpus and model as the 1M run).
if [[ -z $ONLY || $ONLY == profile-1000000 ]]; then
  .venv/bin/python benchmarks/profile_retrieval.py --n-items 1000000 --out "$OUT/profile-1000000"
fi

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
# The planted corpus at its three sizes (folders named by the size).
docs = [json.loads(p.read_text()) for p in sorted(out.glob("[0-9]*/speed.json"), key=lambda p: int(p.parent.name))]
plot_speed(docs, out / "growth.png")
multi = out / "multi-interest-1000000" / "speed.json"
extra = [json.loads(multi.read_text())] if multi.exists() else []
(out / "speed.md").write_text(speed_markdown(docs + extra))
print(f"wrote {out}/growth.png, {out}/speed.md")
PY
  .venv/bin/python benchmarks/fill_readme.py  # the README's generated tables from the result files
fi
