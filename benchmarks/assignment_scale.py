"""Path assignment at catalogue scale, without the network: score accumulation and descent.

A synthetic workload shaped like bench-speed's at 10M items (500K users, 6M interactions, K=100,
D=3, J=3, S=20): every training row is one interaction, its item drawn by a power law over the
catalogue by bench-speed's own corpus generator, and it carries its user's beam, ``S``
distinct path ids out of ``K**D`` with probabilities summing to 0.9 (a user's rows share one beam,
as in score_paths on unordered rows; the beam's paths share prefixes like a real beam's do). The
rows are fed to :class:`~deep_retrieval.core.assignment.PathScoreAccumulator` in chunks as
``training.batch.score_paths`` feeds them, then timed stage by stage:

* ``add_seconds``: every ``add`` call; ``result_seconds``: ``result()``;
  ``held_seconds``: :func:`~deep_retrieval.core.assignment.with_held_paths` (each item's current
  paths joined to its candidates; 0 when ``result(held, held_scores)`` joins them itself, as
  score_paths now has it do). Their sum is score_paths' ``accumulation_seconds`` (bench-speed:
  ``score_accumulation_seconds``).
* ``descent_seconds``: :func:`~deep_retrieval.core.assignment.assign_paths` with the default
  :class:`~deep_retrieval.config.AssignmentConfig`; ``install_seconds``: building the
  :class:`~deep_retrieval.core.paths.ItemPathMap` of the result, which ``reassign_paths`` also
  does. Their sum is its ``assignment_seconds`` (bench-speed: ``coordinate_descent_seconds``).

``--chunk-rows`` (default 1024) is the rows per ``add``: score_paths adds 1024 rows a call on
ordered data, and 1024 users' rows (about 12K here) on unordered data, so the default is the
dearer case for per-call costs.

Run: ``.venv/bin/python benchmarks/assignment_scale.py --n-items 1000000`` (under half a minute)
or with the defaults (10M items, 6M rows; several GiB of memory). ``--out DIR`` writes
``DIR/assignment.json``; ``--check`` also compares the accumulation against one
:func:`~deep_retrieval.core.assignment.accumulate_path_scores` call (slow at 10M); ``--impl`` times
another copy of the module (the digests of the candidates and of the assignment must match).

Measured on the 2-core VM (other jobs kept about one core busy, so the threads hardly showed:
CPU time ≈ wall time), the NumPy implementation (``--impl`` of the previous commit's module)
against the compiled one; identical candidates, assignments and statistics:

=====  ==================  ==================  =================  ===============
items  accumulation s       descent s           install s           peak RSS
=====  ==================  ==================  =================  ===============
1M     7.85 → 0.86          1.89 → 0.64         0.43 → 0.48         (with --check)
10M    185.5 → 10.0         20.8 → 5.8          7.3 → 8.3           12.9 → 8.6 GB
=====  ==================  ==================  =================  ===============

(10M accumulation: add 112.9 → 3.1 s, result 47.4 → 6.9 s, with_held_paths 25.2 s → joined
into result. ``install`` is ItemPathMap, unchanged.)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import inspect
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from deep_retrieval.config import AssignmentConfig
from deep_retrieval.core import assignment
from deep_retrieval.core.paths import ItemPathMap, PathCodec, random_distinct_path_ids
from deep_retrieval.data.corpus import make_corpus


def workload(
    n_items: int, n_rows: int, n_paths: int, width: int, rows_per_user: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(items (N,) int64, path_ids (N, S) int64, probs (N, S) float64)``, rows grouped by user.

    Items and users come from bench-speed's corpus generator (power-law popularity within taste
    clusters, lognormal user activity); beams are synthetic.
    """
    rng = np.random.default_rng(seed)
    n_users = max(1, n_rows // rows_per_user)
    seq = make_corpus(n_users, n_items, max(n_rows, 2 * n_users), dim=2, seed=seed).sequences
    items, user = seq.items.astype(np.int64), seq.row_ids()
    # A user's beam: a popular first path, then S-1 more at small increasing offsets (distinct,
    # and sharing prefixes like a real beam's paths).
    first = np.exp(rng.random(n_users) * np.log(n_paths + 1.0)).astype(np.int64) - 1
    first = rng.permutation(n_paths)[np.minimum(first, n_paths - 1)]
    offsets = np.cumsum(rng.integers(1, 8, size=(n_users, width)), axis=1) - 1
    user_paths = (first[:, None] + offsets) % n_paths  # (U, S) distinct while 7·S < K**D
    mass = rng.exponential(size=(n_users, width))
    user_probs = -np.sort(-0.9 * mass / mass.sum(axis=1, keepdims=True), axis=1)
    return items, user_paths[user], user_probs[user]


def load_impl(path: Path) -> Any:
    """``path`` imported as a module of ``deep_retrieval.core`` (its relative imports resolve)."""
    spec = importlib.util.spec_from_file_location("deep_retrieval.core._timed_assignment", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def digest(*arrays: np.ndarray) -> str:
    """Short fingerprint of arrays' bytes, to compare results across implementations."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-items", type=int, default=10_000_000)
    ap.add_argument("--n-rows", type=int, default=None,
                    help="training rows (default: 0.6 per item, bench-speed's 6M at 10M items)")
    ap.add_argument("--chunk-rows", type=int, default=1024, help="rows per add() call")
    ap.add_argument("--rows-per-user", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true",
                    help="compare with one accumulate_path_scores call")
    ap.add_argument("--out", type=Path, default=None, help="write OUT/assignment.json")
    ap.add_argument("--impl", type=Path, default=None,
                    help="time another copy of core/assignment.py instead (e.g. an older one: "
                         "git show REV:src/deep_retrieval/core/assignment.py > old.py)")
    args = ap.parse_args()
    impl = assignment if args.impl is None else load_impl(args.impl)

    cfg = AssignmentConfig()
    codec = PathCodec(n_layers=3, n_nodes=100)
    j = 3
    n_rows = args.n_rows if args.n_rows is not None else int(0.6 * args.n_items)
    t0 = time.perf_counter()
    items, path_ids, probs = workload(args.n_items, n_rows, codec.n_paths, cfg.n_candidates,
                                      args.rows_per_user, args.seed)
    held = random_distinct_path_ids(args.n_items, j, codec.n_paths, args.seed + 1)
    doc: dict = {
        "impl": str(args.impl or "deep_retrieval.core.assignment"),
        "n_items": args.n_items, "n_rows": n_rows, "chunk_rows": args.chunk_rows,
        "n_paths": codec.n_paths, "paths_per_item": j, "assignment": dataclasses.asdict(cfg),
        "workload_seconds": round(time.perf_counter() - t0, 2),
        "workload_rss_mb": round(peak_rss_mb(), 1),
    }

    # Warm the compiled kernels (numba's cache) outside the timings, as a trained run would.
    warm = impl.PathScoreAccumulator(10, cfg.n_candidates)
    warm.add(items[:4] % 10, path_ids[:4], probs[:4])
    impl.assign_paths(impl.with_held_paths(warm.result(), held[:10], np.ones((10, j))),
                      paths_per_item=j, penalty=cfg.penalty, n_paths=codec.n_paths,
                      n_sweeps=cfg.n_sweeps, previous=held[:10], rng=0, power=cfg.power)
    if "held" in inspect.signature(warm.result).parameters:
        warm = impl.PathScoreAccumulator(10, cfg.n_candidates)
        warm.add(items[:4] % 10, path_ids[:4], probs[:4])
        warm.result(held[:10], np.ones((10, j)))

    acc = impl.PathScoreAccumulator(args.n_items, cfg.n_candidates)
    c0, t0 = time.process_time(), time.perf_counter()
    for lo in range(0, n_rows, args.chunk_rows):
        hi = lo + args.chunk_rows
        acc.add(items[lo:hi], path_ids[lo:hi], probs[lo:hi])
    c1, t1 = time.process_time(), time.perf_counter()
    # The exact scores of the held paths stand in as a tenth of the item's count (any values
    # ≥ 0 do: they only add J candidate slots).
    held_scores = np.repeat(0.1 * acc.counts[:, None], j, axis=1).astype(np.float64)
    fused = "held" in inspect.signature(acc.result).parameters
    if fused:  # what score_paths does where the accumulator can join the held paths itself
        cand = acc.result(held, held_scores)
        c2, t2 = time.process_time(), time.perf_counter()
        c3, t3 = c2, t2
    else:
        scores = acc.result()
        c2, t2 = time.process_time(), time.perf_counter()
        cand = impl.with_held_paths(scores, held, held_scores)
        c3, t3 = time.process_time(), time.perf_counter()
    new, stats = impl.assign_paths(cand, paths_per_item=j, penalty=cfg.penalty,
                                   n_paths=codec.n_paths, n_sweeps=cfg.n_sweeps,
                                   previous=held, rng=args.seed, power=cfg.power)
    c4, t4 = time.process_time(), time.perf_counter()
    ItemPathMap(new, codec)
    c5, t5 = time.process_time(), time.perf_counter()
    doc.update(
        fused_held=fused,
        add_seconds=round(t1 - t0, 2), result_seconds=round(t2 - t1, 2),
        held_seconds=round(t3 - t2, 2), accumulation_seconds=round(t3 - t0, 2),
        descent_seconds=round(t4 - t3, 2), install_seconds=round(t5 - t4, 2),
        assignment_seconds=round(t5 - t3, 2), total_seconds=round(t5 - t0, 2),
        # CPU time of all threads (wall time above), to read the timings on a busy machine
        cpu_seconds={"add": round(c1 - c0, 2), "result": round(c2 - c1, 2),
                     "held": round(c3 - c2, 2), "descent": round(c4 - c3, 2),
                     "install": round(c5 - c4, 2)},
        n_active_items=stats["n_active_items"], n_changed=stats["n_changed"],
        objective=[round(o, 3) for o in stats["objective"]],
        largest_path_size=stats["largest_path_size"],
        distinct_items=int((cand.counts > 0).sum()),
        filled_slots=int((cand.path_ids >= 0).sum()),
        candidates_digest=digest(cand.path_ids, cand.scores, cand.counts),
        paths_digest=digest(new),
    )
    if args.check:
        want = impl.with_held_paths(
            impl.accumulate_path_scores(items, path_ids, probs, args.n_items, cfg.n_candidates),
            held, held_scores)
        doc["check"] = {
            "same_path_ids": bool(np.array_equal(want.path_ids, cand.path_ids)),
            "max_abs_score_difference": float(np.abs(want.scores - cand.scores).max()),
            "same_counts": bool(np.array_equal(want.counts, cand.counts)),
        }
    doc.update(peak_rss_mb=round(peak_rss_mb(), 1), cpus=os.cpu_count(),
               machine=platform.processor() or platform.machine())
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "assignment.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
