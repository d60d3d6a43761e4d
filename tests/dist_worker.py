"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node 2``: checks the collectives
of deep_retrieval.training.distributed against their single-process twins; rank 0 writes a JSON
report."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch.distributed as dist

from deep_retrieval.core.assignment import (
    PathScoreAccumulator,
    PathScores,
    assign_paths,
    assignment_objective,
)
from deep_retrieval.training import distributed


def planted_scores(n_items: int, n_paths: int, n_keep: int, rng: np.random.Generator) -> PathScores:
    """Items of 40 clusters prefer their cluster's 12 paths: a shape like trained path scores."""
    cluster_paths = rng.choice(n_paths, (40, 12))
    ids = np.full((n_items, n_keep), -1, np.int64)
    scores = np.zeros((n_items, n_keep))
    for v in range(n_items):
        c = rng.integers(40)
        pool = np.unique(np.r_[cluster_paths[c], rng.choice(n_paths, 8)])[:n_keep]
        ids[v, : len(pool)] = pool
        weights = rng.dirichlet(np.ones(len(pool))) * rng.integers(1, 50)
        scores[v, : len(pool)] = np.sort(weights)[::-1]
    return PathScores(ids, scores, rng.integers(1, 60, n_items))


def main(out: str) -> None:
    dist.init_process_group("gloo")
    ctx = distributed.current()
    rng = np.random.default_rng(0)  # the same data on every process
    n_items, n_paths, n_keep, j, penalty = 3000, 400, 12, 3, 3e-4
    report: dict = {}

    # Routing rows to item owners and accumulating = accumulating everything in one process.
    items = rng.integers(0, n_items, 4000)
    path_ids = np.stack([rng.choice(n_paths, 6, replace=False) for _ in range(len(items))])
    probs = rng.random((len(items), 6))
    mine = slice(ctx.rank, None, ctx.world)  # this process's share of the rows
    bounds = distributed.item_bounds(n_items, ctx.world)
    lo, hi = bounds[ctx.rank], bounds[ctx.rank + 1]
    got = distributed.route_rows(items[mine], path_ids[mine], probs[mine], bounds)
    acc = PathScoreAccumulator(hi - lo, n_keep)
    acc.add(got[0] - lo, got[1], got[2])
    routed = acc.result()
    whole = PathScoreAccumulator(n_items, n_keep)
    whole.add(items, path_ids, probs)
    ref = whole.result()
    routed_equal = (np.array_equal(routed.path_ids, ref.path_ids[lo:hi])
                    and np.allclose(routed.scores, ref.scores[lo:hi])
                    and np.array_equal(routed.counts, ref.counts[lo:hi]))
    n_equal = distributed.all_reduce_numpy(np.array([int(routed_equal)]), "sum")[0]
    report["routing_equal"] = bool(n_equal == ctx.world)

    # Sharded coordinate descent against the single-process one on the same scores.
    scores = planted_scores(n_items, n_paths, n_keep, rng)
    previous = np.stack([rng.choice(n_paths, j, replace=False) for _ in range(n_items)])
    settings = {"paths_per_item": j, "penalty": penalty, "n_paths": n_paths, "n_sweeps": 3}
    single, _ = assign_paths(scores, previous=previous, rng=0, **settings)
    own = PathScores(scores.path_ids[lo:hi], scores.scores[lo:hi], scores.counts[lo:hi])
    sharded, sharded_stats = distributed.assign_paths_sharded(
        own, int(lo), previous, seed=0, **settings
    )
    report["single_objective"] = assignment_objective(scores, single, penalty)
    report["sharded_objective"] = assignment_objective(scores, sharded, penalty)
    report["sharded_objective_reported"] = sharded_stats["objective"][-1]
    report["same_table_everywhere"] = bool(
        distributed.all_reduce_numpy(sharded.astype(np.int64), "max").tolist() == sharded.tolist()
    )
    report["distinct_paths"] = bool(
        (np.sort(sharded, 1)[:, 1:] != np.sort(sharded, 1)[:, :-1]).all()
    )
    report["largest_single"] = int(np.bincount(single.ravel()).max())
    report["largest_sharded"] = int(np.bincount(sharded.ravel()).max())
    if ctx.rank == 0:
        with open(out, "w") as fh:
            json.dump(report, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
