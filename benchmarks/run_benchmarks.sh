#!/usr/bin/env bash
# Regenerates benchmarks/results/: the side-by-side benchmark on five data sets with the library
# defaults (no per-set settings), the DR ablations, and the README's tables from them
# (benchmarks/fill_readme.py). Needs the package installed (make install) and ../shared/data (or
# DEEP_RETRIEVAL_DATA) for every set but latest-small. Run it on an otherwise idle machine: the
# timings are recorded. Full outputs (truth.csv, recommendations/) go to runs/;
# verify_outputs.py re-checks every metric.
#   benchmarks/run_benchmarks.sh              # everything (about two hours on 2 cores)
#   benchmarks/run_benchmarks.sh gowalla      # one data set (its benchmark and, if any, ablations)
#   benchmarks/run_benchmarks.sh gowalla bench  # its benchmark only ("ablate": its ablations only;
#                                               # "attention": the candidate-aware reranker's run)
set -euo pipefail
cd "$(dirname "$0")/.."
DR=${DR:-.venv/bin/deep-retrieval}
DATA=${DEEP_RETRIEVAL_DATA:-../shared/data}
ALL=most-popular,item-cf,als,brute-force,ann-hnsw,ann-ivf,dr,dr-shared
ONLY=${1:-}
PART=${2:-}

bench() {  # NAME K
  local name=$1 k=$2
  [[ -n $ONLY && $ONLY != "$name" ]] && return 0
  [[ -n $PART && $PART != bench ]] && return 0
  $DR -q benchmark --dataset "$name" --data-dir "$DATA" --methods $ALL --k "$k" --out "runs/$name"
  .venv/bin/python benchmarks/verify_outputs.py "runs/$name"
  mkdir -p "benchmarks/results/$name"
  cp "runs/$name/results.json" "runs/$name/results.md" "benchmarks/results/$name/"
}

# The candidate-aware reranker (dr.reranker=attention) beside brute force and dr, in a run of its own
# (results in benchmarks/results/NAME/attention/): dr-attention is dr with the attention term
# (the same index and dot product: the attention term has its own seed), attention-exhaustive
# its reranker over every item on 2,000 test users.
attention() {  # NAME K
  local name=$1 k=$2
  [[ -n $ONLY && $ONLY != "$name" ]] && return 0
  [[ -n $PART && $PART != attention ]] && return 0
  $DR -q benchmark --dataset "$name" --data-dir "$DATA" --k "$k" --out "runs/$name-attention" \
    --methods brute-force,dr,dr-attention,attention-exhaustive
  .venv/bin/python benchmarks/verify_outputs.py "runs/$name-attention"
  mkdir -p "benchmarks/results/$name/attention"
  cp "runs/$name-attention/results.json" "runs/$name-attention/results.md" \
    "benchmarks/results/$name/attention/"
}

ablate() {  # NAME K OUT [extra flags]
  local name=$1 k=$2 out=$3; shift 3
  [[ -n $ONLY && $ONLY != "$name" ]] && return 0
  [[ -n $PART && $PART != ablate ]] && return 0
  $DR -q ablate --dataset "$name" --data-dir "$DATA" --k "$k" --out "$out" "$@"
}

bench movielens-latest-small 10
bench movielens-100k 10
bench movielens-1m-m1 20
bench gowalla 20
bench amazon-book 20
attention movielens-latest-small 10
attention movielens-100k 10
attention movielens-1m-m1 20
attention gowalla 20
attention amazon-book 20
# The ablations share the brute-force model's reranker (share_reranker), so rows differ in the
# index alone. Penalties are before the scale (penalty_scale=interactions: × interactions per
# item / 19.8; Gowalla's scale is 1, so its penalty_scale row would repeat the configured fit).
ablate movielens-latest-small 10 benchmarks/results/movielens-latest-small
ablate movielens-1m-m1 20 benchmarks/results/movielens-1m-m1 \
  --grid paths_per_item=3 n_layers=3 hidden_dim=256 penalty=3e-4,3e-3 \
  penalty_scale=none,interactions init=random,kmeans target_recall=none,0.99 beam_size=2,4,6,8,16
ablate gowalla 20 benchmarks/results/gowalla \
  --grid paths_per_item=3 n_layers=3 hidden_dim=256 penalty=3e-4 penalty_scale=interactions \
  init=random,kmeans target_recall=none,0.99 beam_size=2,4,8,16,32
# the structure layer's hidden width, on Gowalla
ablate gowalla 20 benchmarks/results/gowalla/hidden-width \
  --grid paths_per_item=3 n_layers=3 hidden_dim=none,64,128,256 penalty=3e-4 \
  penalty_scale=interactions init=random target_recall=0.99 beam_size=8,16
.venv/bin/python benchmarks/fill_readme.py
