"""The candidate-aware reranker on validation users carved from the training rows (never the test
users): how its settings were chosen.

    .venv/bin/python benchmarks/attention_validation.py movielens-100k 10 [--set KEY=VALUE ...]

Fits DR with ``reranker=attention`` (and the overrides) on the training rows left after holding
out 20 % of the items of up to 1,000 training users (the benchmark's baseline-tuning split,
:func:`~deep_retrieval.experiments.tuning.validation_for`), then scores those users four ways on
the same model: DR's candidates and every item, each ranked by the whole reranker and by its dot
product alone (the attention term switched off). Appends one JSON line per run to
``benchmarks/results/NAME/attention/validation.jsonl`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from deep_retrieval.config import BenchmarkConfig, DRConfig, load_config
from deep_retrieval.data.protocols import make_split
from deep_retrieval.data.registry import load_dataset
from deep_retrieval.estimator import DeepRetrieval
from deep_retrieval.evaluation.metrics import evaluate_recommendations
from deep_retrieval.experiments.tuning import validation_for
from deep_retrieval.utils import seed_everything

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("k", type=int)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides")
    args = parser.parse_args()
    split = make_split(load_dataset(args.dataset, args.data_dir), None, BenchmarkConfig().protocol)
    valid = validation_for(split, 1000, 0)
    config = load_config(DRConfig, overrides=["reranker=attention", *args.overrides])
    seed_everything(config.seed)
    t0 = time.perf_counter()
    model = DeepRetrieval(config, device="cpu").fit(valid.train, split.n_items)
    fit_seconds = time.perf_counter() - t0

    def recall(exhaustive: bool) -> float:
        ids, _ = model.recommend(valid.history, args.k, exclude=valid.exclude,
                                 exhaustive=exhaustive)
        return evaluate_recommendations(ids, valid.truth, [args.k])[f"recall@{args.k}"]

    row: dict[str, object] = {"dataset": args.dataset, "k": args.k, "overrides": args.overrides,
                              "validation_users": len(valid.truth),
                              "fit_seconds": round(fit_seconds, 1)}
    row["dr_attention"], row["attention_exhaustive"] = recall(False), recall(True)
    model.state.net.attention = None  # the same model, ranked by its dot product alone
    model.state.changed()
    row["dr_dot"], row["dot_exhaustive"] = recall(False), recall(True)
    for key in ("dr_attention", "attention_exhaustive", "dr_dot"):
        row[f"{key}_vs_dot_exhaustive"] = round(float(row[key]) / float(row["dot_exhaustive"]), 3)
    row["attention_loss"] = [e["attention_loss"] for e in model.state.history
                             if "attention_loss" in e]
    out = RESULTS / args.dataset / "attention"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "validation.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
