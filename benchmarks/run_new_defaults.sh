#!/usr/bin/env bash
# The candidate new defaults, measured against today's on each data set (library defaults
# otherwise; no per-set overrides). DR as a user trains it (no shared reranker) against the
# brute-force model of the same run, three ways:
#   paper     the paper's schedule (2 joint epochs + 2 structure epochs): today's default
#   reranker  train.reranker_epochs=8 (the brute-force recipe first), then 4 structure epochs on
#             the frozen reranker (joint_epochs=0)
#   recall    reranker + retrieval.target_recall=0.99 (recall-targeted beam calibration)
# and the classic baselines with and without tune_baselines (ALS and Item-CF tuned on validation
# users). Writes benchmarks/results/NAME/new-defaults/{VARIANT}.json and
# benchmarks/results/new-defaults.md.
# Timings are recorded: run it on an otherwise idle machine.
#   benchmarks/run_new_defaults.sh                      # every set
#   benchmarks/run_new_defaults.sh movielens-1m-m1      # one set (then the summary again)
set -euo pipefail
cd "$(dirname "$0")/.."
DR=${DR:-.venv/bin/deep-retrieval}
DATA=${DEEP_RETRIEVAL_DATA:-../shared/data}
ONLY=${1:-}
declare -A VARIANT=(
  [paper]=""
  [reranker]="dr.train.reranker_epochs=8 dr.train.joint_epochs=0"
  [recall]="dr.train.reranker_epochs=8 dr.train.joint_epochs=0 dr.retrieval.target_recall=0.99"
)

run() {  # NAME K [VARIANT ...] (default: all three)
  local name=$1 k=$2; shift 2
  [[ -n $ONLY && $ONLY != "$name" ]] && return 0
  local out=benchmarks/results/$name/new-defaults
  mkdir -p "$out"
  for v in "${@:-paper reranker recall}"; do
    for w in $v; do
      # shellcheck disable=SC2086  # the variant's settings are separate words
      $DR -q benchmark --dataset "$name" --data-dir "$DATA" --methods brute-force,dr --k "$k" \
        --out "runs/new-defaults/$name/$w" --set share_reranker=false ${VARIANT[$w]}
      cp "runs/new-defaults/$name/$w/results.json" "$out/$w.json"
    done
  done
  for t in false true; do
    $DR -q benchmark --dataset "$name" --data-dir "$DATA" --methods most-popular,item-cf,als \
      --k "$k" --out "runs/new-defaults/$name/baselines-tuned-$t" --set tune_baselines=$t
    cp "runs/new-defaults/$name/baselines-tuned-$t/results.json" "$out/baselines-tuned-$t.json"
  done
}

run movielens-latest-small 10
run movielens-100k 10
# The larger sets: today's schedule and the reranker schedule ("recall" trains the same model
# and differs only in the beam rule, which overspends on the small sets).
run movielens-1m-m1 20 paper reranker
run gowalla 20 paper reranker

.venv/bin/python - <<'PY'
import json
from pathlib import Path

rows = ["| data set | variant | brute force | dr | × brute force | beam | % items scored |"
        " dr fit s | brute-force fit s | fit × |", "|---" * 10 + "|"]
base = ["| data set | method | recall, defaults | recall, tuned | tuned settings |",
        "|---|---|---|---|---|"]
folders = sorted(Path("benchmarks/results").glob("*/new-defaults"))
for folder in folders:
    for v in ("paper", "reranker", "recall"):
        f = folder / f"{v}.json"
        if not f.exists():
            continue
        d = json.loads(f.read_text())
        key = f"recall@{d['k'][0]}"
        bf, dr = d["methods"]["brute-force"], d["methods"]["dr"]
        a, b = bf["metrics"][key], dr["metrics"][key]
        rows.append(
            f"| {d['dataset']} | {v} | {a:.4f} | {b:.4f} | {b / a:.3f} | {dr['beam_size']}"
            f" | {100 * dr['fraction_scored']:.2f} | {dr['fit_seconds']:.0f}"
            f" | {bf['fit_seconds']:.0f} | {dr['fit_seconds'] / bf['fit_seconds']:.2f} |"
        )
    f, g = folder / "baselines-tuned-false.json", folder / "baselines-tuned-true.json"
    if f.exists() and g.exists():
        d, t = json.loads(f.read_text()), json.loads(g.read_text())
        key = f"recall@{d['k'][0]}"
        for m, r in d["methods"].items():
            tr = t["methods"][m]
            chosen = ", ".join(f"{k} {v:g}" for k, v in tr.get("tuning", {}).get("chosen", {}).items())
            base.append(f"| {d['dataset']} | {m} | {r['metrics'][key]:.4f}"
                        f" | {tr['metrics'][key]:.4f} | {chosen or '—'} |")
text = "\n".join(rows) + "\n\n" + "\n".join(base) + "\n"
Path("benchmarks/results/new-defaults.md").write_text(text)
print(text)
PY
