"""Recompute every metric of a benchmark output directory from truth.csv and recommendations/*.csv.

    python benchmarks/verify_outputs.py runs/gowalla

Exits non-zero when any figure differs from results.json by more than 1e-9. Uses only pandas and
the metric definitions (external ids; nothing from the run itself).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from deep_retrieval.experiments.benchmark import recompute_metrics


def main(out_dir: str) -> int:
    out = Path(out_dir)
    doc = json.loads((out / "results.json").read_text())
    worst = 0.0
    for name, result in doc["methods"].items():
        again = recompute_metrics(out, name, doc["k"], sampled="sample_users" in result)
        for key, value in result["metrics"].items():
            worst = max(worst, abs(again[key] - value))
        key = f"recall@{doc['k'][-1]}"
        print(f"{name:<14} {key} = {again[key]:.4f} (recomputed)")
    print(f"largest difference from results.json: {worst:.2e}")
    return 0 if worst <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
