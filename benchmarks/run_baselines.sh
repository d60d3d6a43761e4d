#!/usr/bin/env bash
# Regenerates benchmarks/results/{movielens-latest-small,gowalla}/results.{json,md}.
# Needs the package installed (make install) and, for Gowalla, ../shared/data (or DEEP_RETRIEVAL_DATA).
# Full outputs (truth.csv, recommendations/) go to runs/; verify them with benchmarks/verify_outputs.py.
set -euo pipefail
cd "$(dirname "$0")/.."
DR=${DR:-.venv/bin/deep-retrieval}
DATA=${DEEP_RETRIEVAL_DATA:-../shared/data}

$DR -q benchmark --dataset movielens-latest-small \
  --methods most-popular,item-cf,als,brute-force,ann-hnsw,ann-ivf,dr --k 10 --out runs/movielens-latest-small
$DR -q benchmark --dataset gowalla --data-dir "$DATA" \
  --methods most-popular,item-cf,als,brute-force,ann-hnsw,ann-ivf --k 20 --out runs/gowalla

for name in movielens-latest-small gowalla; do
  .venv/bin/python benchmarks/verify_outputs.py runs/$name
  mkdir -p benchmarks/results/$name
  cp runs/$name/results.json runs/$name/results.md benchmarks/results/$name/
done
