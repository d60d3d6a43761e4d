"""DR on validation users carved from the training rows (never the test users): how the defaults
were chosen.

    .venv/bin/python benchmarks/validation.py movielens-100k 10 [--set KEY=VALUE ...]

Fits DR with the library defaults plus the overrides (``--set train.epochs=6``) on the training
rows left after holding out 20 % of the items of up to 1,000 training users (the benchmark's
baseline-tuning split, :func:`~deep_retrieval.experiments.tuning.validation_for`; a protocol
with its own validation users uses those), then scores those users with DR's candidates and with
every item, both ranked by the fitted reranker. Reports:

- ``dr`` and ``exhaustive``: recall@k of the two rankings, and ``dr_vs_exhaustive``, their ratio;
- ``overlap``: mean ``|DR top k ∩ exhaustive top k| / k``, the index's share of its own
  reranker's ranking (no truth needed, so far less noisy than recall on a few hundred users);
- ``beam``, ``fraction_scored`` (candidates per query / items) and ``fit_seconds``.

With ``reranker=attention`` it also ranks both ways by the dot product alone (the attention term
switched off): ``dr_dot``, ``dot_exhaustive``. Appends one JSON line per run to
``benchmarks/results/NAME/validation.jsonl`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from deep_retrieval.config import BenchmarkConfig, DRConfig, load_config
from deep_retrieval.data.protocols import make_split
from deep_retrieval.data.registry import load_dataset
from deep_retrieval.estimator import DeepRetrieval
from deep_retrieval.evaluation.metrics import evaluate_recommendations
from deep_retrieval.experiments.tuning import validation_for
from deep_retrieval.index.retrieval import QueryStats
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
    config = load_config(DRConfig, overrides=args.overrides)
    seed_everything(config.seed)
    t0 = time.perf_counter()
    model = DeepRetrieval(config, device="cpu").fit(valid.train, split.n_items)
    fit_seconds = time.perf_counter() - t0
    k = args.k

    def ranked(exhaustive: bool, stats: QueryStats | None = None) -> np.ndarray:
        ids, _ = model.recommend(valid.history, k, exclude=valid.exclude,
                                 exhaustive=exhaustive, stats=stats)
        return ids

    def recall(ids: np.ndarray) -> float:
        return float(evaluate_recommendations(ids, valid.truth, [k])[f"recall@{k}"])

    def overlap(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean([len(np.intersect1d(x[x >= 0], y[y >= 0])) / k
                              for x, y in zip(a, b, strict=True)]))

    stats = QueryStats()
    dr, full = ranked(False, stats), ranked(True)
    row: dict[str, object] = {
        "dataset": args.dataset, "k": k, "overrides": args.overrides,
        "validation_users": len(valid.truth), "n_items": split.n_items,
        "fit_seconds": round(fit_seconds, 1), "beam": model.beam_size_for(k),
        "fraction_scored": round(stats.candidates_per_query / split.n_items, 5),
        "dr": recall(dr), "exhaustive": recall(full),
        "dr_vs_exhaustive": round(recall(dr) / max(recall(full), 1e-12), 3),
        "overlap": round(overlap(dr, full), 4),
    }
    if model.state.net.attention is not None:
        row["attention_loss"] = [e["attention_loss"] for e in model.state.history
                                 if "attention_loss" in e]
        model.state.net.attention = None  # the same model, ranked by its dot product alone
        model.state.changed()
        row["dr_dot"], row["dot_exhaustive"] = recall(ranked(False)), recall(ranked(True))
    out = RESULTS / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "validation.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
