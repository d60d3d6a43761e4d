#!/usr/bin/env bash
# The candidate defaults of issue 14, measured one at a time on each data set (no per-set
# overrides). DR as a user trains it (no shared reranker) against the brute-force model of the
# same run, with the beam of 10 × k candidates unless said:
#   paper     the paper's schedule (2 joint epochs + 2 structure epochs): the old default
#   reranker  train.reranker_epochs=8 (the brute-force recipe first), then 4 structure epochs on
#             the frozen reranker (joint_epochs=0)
#   recall    reranker + retrieval.target_recall=0.99 with no scoring budget
#   kmeans    reranker + assignment.init=kmeans (on request: "NAME kmeans"; ablate measures it)
#   scaled    reranker + assignment.penalty_scale=interactions
# and the classic baselines with and without tune_baselines (ALS and Item-CF tuned on validation
# users). Writes benchmarks/results/NAME/new-defaults/{VARIANT}.json and
# benchmarks/results/new-defaults.md.
# Timings are recorded: run it on an otherwise idle machine.
#   benchmarks/run_new_defaults.sh                      # every set
#   benchmarks/run_new_defaults.sh movielens-1m-m1      # one set (then the summary again)
#   benchmarks/run_new_defaults.sh gowalla "scaled"     # chosen variants of one set (and
#                                                       # "baselines" for the baselines)
set -euo pipefail
cd "$(dirname "$0")/.."
DR=${DR:-.venv/bin/deep-retrieval}
DATA=${DEEP_RETRIEVAL_DATA:-../shared/data}
ONLY=${1:-}
PICK=${2:-}
R="dr.train.reranker_epochs=8 dr.train.joint_epochs=0"
CF="dr.retrieval.target_recall=none"  # the candidate-factor beam rule (10 × k)
declare -A VARIANT=(
  [paper]="dr.train.reranker_epochs=0 dr.train.joint_epochs=2 $CF"
  [reranker]="$R $CF"
  [recall]="$R dr.retrieval.target_recall=0.99 dr.retrieval.max_fraction_scored=1"
  [kmeans]="$R $CF dr.assignment.init=kmeans"
  [scaled]="$R $CF dr.assignment.penalty_scale=interactions"
)

run() {  # NAME K "VARIANT ..."
  local name=$1 k=$2 variants=$3
  [[ -n $ONLY && $ONLY != "$name" ]] && return 0
  [[ -n $PICK ]] && variants=$PICK
  local out=benchmarks/results/$name/new-defaults
  mkdir -p "$out"
  for w in $variants; do
    [[ $w == baselines ]] && continue
    # shellcheck disable=SC2086  # the variant's settings are separate words
    $DR -q benchmark --dataset "$name" --data-dir "$DATA" --methods brute-force,dr --k "$k" \
      --out "runs/new-defaults/$name/$w" --set ${VARIANT[$w]}
    cp "runs/new-defaults/$name/$w/results.json" "$out/$w.json"
  done
  [[ -n $PICK && " $PICK " != *" baselines "* ]] && return 0
  for t in false true; do
    $DR -q benchmark --dataset "$name" --data-dir "$DATA" --methods most-popular,item-cf,als \
      --k "$k" --out "runs/new-defaults/$name/baselines-tuned-$t" --set tune_baselines=$t
    cp "runs/new-defaults/$name/baselines-tuned-$t/results.json" "$out/baselines-tuned-$t.json"
  done
}

run movielens-latest-small 10 "paper reranker recall scaled"
run movielens-100k 10 "paper reranker recall scaled"
# The larger sets: today's schedule and the reranker schedule ("recall" trains the same model
# and differs only in the beam rule, which overspends on the small sets).
run movielens-1m-m1 20 "paper reranker scaled"
run gowalla 20 "paper reranker"

.venv/bin/python - <<'PY'
import json
from pathlib import Path

rows = ["| data set | variant | brute force | dr | × brute force | beam | % items scored |"
        " dr fit s | brute-force fit s | fit × |", "|---" * 10 + "|"]
base = ["| data set | method | recall, defaults | recall, tuned | tuned settings |",
        "|---|---|---|---|---|"]
folders = sorted(Path("benchmarks/results").glob("*/new-defaults"))
for folder in folders:
    for v in ("paper", "reranker", "recall", "kmeans", "scaled"):
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
