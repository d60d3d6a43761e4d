"""Items added after training (add_items) against the same items trained with the rest.

On MovieLens latest-small (paper protocol), ``--n-new`` items with 5–50 training interactions are
held out of a model's training; ``add_items`` then places them from the training users who picked
them (warm) or, for a second copy, from their 20 nearest items by co-occurrence (cold, through the
``neighbours`` argument). Against a model trained on every item, per held-out item set:

* **retrieved**: of the (test user, held-out item in the user's truth) pairs, the share whose
  item is among DR's candidates (the union of the beam's paths) — "retrieved for users who
  interact with its neighbours";
* **recall@k (new items)**: hits among held-out truth items in the top k, over their number;
* **recall@k (all)**: the usual recall, every item.

Run: ``.venv/bin/python benchmarks/new_items.py`` (about 4 min on 2 cores); writes
``benchmarks/results/new-items/results.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from deep_retrieval import BenchmarkConfig, DeepRetrieval, Sequences, load_dataset, make_split
from deep_retrieval.utils import atomic_write_text, versions


def remap(seq: Sequences, table: np.ndarray, drop: bool = False) -> Sequences:
    new = table[seq.items]
    keep = new >= 0 if drop else np.ones(len(new), bool)
    lengths = np.bincount(seq.row_ids()[keep], minlength=len(seq))
    return Sequences(np.r_[0, np.cumsum(lengths)], new[keep], seq.ordered)


def co_occurrence_neighbours(train: Sequences, new: np.ndarray, n_old: int, k: int) -> Sequences:
    """The ``k`` existing items that share the most training rows with each new item."""
    rows = []
    for v in new:
        users = np.unique(train.row_ids()[train.items == v])
        sub = train.rows(users).items
        counts = np.bincount(sub[sub < n_old], minlength=n_old)
        rows.append(np.argsort(-counts, kind="stable")[:k])
    return Sequences.from_lists(rows, ordered=False)


def measure(model: DeepRetrieval, split, new_ids: np.ndarray, ks: list[int]) -> dict[str, float]:
    hist, truth = split.test_history, split.test_truth
    if model.n_items_ < split.n_items:  # the model lacks the held-out items: drop them from queries
        table = np.where(np.arange(split.n_items) < model.n_items_, np.arange(split.n_items), -1)
        hist = remap(hist, table, drop=True)
    is_new = np.zeros(split.n_items, bool)
    is_new[new_ids] = True
    cand = model.retrieve(hist, n=max(ks))
    out: dict[str, float] = {}
    pairs = found = 0
    for u in range(len(truth)):
        t = truth.items[truth.indptr[u] : truth.indptr[u + 1]]
        t_new = t[is_new[t]]
        if len(t_new):
            c = cand.items[cand.indptr[u] : cand.indptr[u + 1]]
            pairs += len(t_new)
            found += int(np.isin(t_new, c).sum())
    out["retrieved"] = found / max(pairs, 1)
    out["pairs"] = pairs
    for k in ks:
        ids, _ = model.recommend(hist, k)
        hit_new = n_new = 0
        rec_all = []
        for u in range(len(truth)):
            t = truth.items[truth.indptr[u] : truth.indptr[u + 1]]
            hits = np.isin(t, ids[u])
            rec_all.append(hits.mean())
            hit_new += int(hits[is_new[t]].sum())
            n_new += int(is_new[t].sum())
        out[f"recall@{k} (new items)"] = hit_new / max(n_new, 1)
        out[f"recall@{k} (all)"] = float(np.mean(rec_all))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="movielens-latest-small")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--n-new", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/new-items"))
    args = ap.parse_args()
    config = BenchmarkConfig()
    data = load_dataset(args.dataset, args.data_dir)
    split = make_split(data, None, config.protocol)
    counts = np.bincount(split.train.items, minlength=split.n_items)
    rng = np.random.default_rng(0)
    pool = np.flatnonzero((counts >= 5) & (counts <= 50))
    held = np.sort(rng.choice(pool, size=min(args.n_new, len(pool)), replace=False))
    # Internal ids with the held-out items last, so that add_items appends them where they were.
    order = np.r_[np.setdiff1d(np.arange(split.n_items), held), held]
    table = np.empty(split.n_items, np.int64)
    table[order] = np.arange(split.n_items)
    n_old = split.n_items - len(held)
    split = split.__class__(
        **{
            **split.__dict__,
            "item_ids": split.item_ids[order],
            "train": remap(split.train, table),
            "test_history": remap(split.test_history, table),
            "test_truth": remap(split.test_truth, table),
        }
    )
    new_ids = np.arange(n_old, split.n_items)
    ks = [10, 100]
    rows = {}
    t0 = time.perf_counter()
    full = DeepRetrieval(config.dr, device="cpu").fit(split.train, split.n_items)
    rows["trained with every item"] = {
        **measure(full, split, new_ids, ks),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    t0 = time.perf_counter()
    base = DeepRetrieval(config.dr, device="cpu").fit(
        remap(
            split.train,
            np.where(np.arange(split.n_items) < n_old, np.arange(split.n_items), -1),
            drop=True,
        ),
        n_old,
    )
    fit_s = time.perf_counter() - t0
    rows["held out, not added"] = {**measure(base, split, new_ids, ks), "seconds": round(fit_s, 1)}
    import copy

    warm = copy.deepcopy(base)
    t0 = time.perf_counter()
    warm.add_items(n_new=len(held), interactions=split.train)
    rows["added from interactions (warm)"] = {
        **measure(warm, split, new_ids, ks),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    cold = copy.deepcopy(base)
    t0 = time.perf_counter()
    cold.add_items(
        n_new=len(held), neighbours=co_occurrence_neighbours(split.train, new_ids, n_old, 20)
    )
    rows["added from 20 co-occurrence neighbours (cold)"] = {
        **measure(cold, split, new_ids, ks),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    doc = {
        "dataset": args.dataset,
        "n_new": int(len(held)),
        "n_items": int(split.n_items),
        "rows": rows,
        "command": "benchmarks/new_items.py",
        "versions": versions(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "results.json", json.dumps(doc, indent=2) + "\n")
    cols = (
        ["retrieved"]
        + [f"recall@{k} (new items)" for k in ks]
        + [f"recall@{k} (all)" for k in ks]
        + ["seconds"]
    )
    lines = [
        f"{len(held)} items with 5–50 training interactions held out of {args.dataset}"
        f" ({split.n_items:,} items); {rows['trained with every item']['pairs']} test (user,"
        " held-out item) pairs.",
        "",
        "| model | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | "
            + " | ".join(f"{r[c]:.4f}" if c != "seconds" else f"{r[c]}" for c in cols)
            + " |"
        )
    atomic_write_text(args.out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
