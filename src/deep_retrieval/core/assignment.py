"""Path assignment: the update of the item → path mapping π with the network fixed (paper §2.2–2.4).

Shape letters as in :mod:`deep_retrieval.core.paths` (``V`` items, ``S`` candidate paths per item,
``J`` paths per item, ``N`` training interactions, ``S'`` beam paths per interaction).

Two stages, on internal ids:

1. **Path scores.** ``s[v, c] = Σ_{i: y_i = v} p(c | x_i)``, the summed beam-search probability of
   path ``c`` over the training interactions of item ``v``, kept as the top-``S`` paths per item
   (:class:`PathScores`). Batch form: :func:`accumulate_path_scores` (+ :func:`merge_path_scores`
   for chunks, :class:`PathScoreAccumulator` for exact chunked passes). Streaming form with
   decay: :func:`streaming_update`, or :class:`StreamingPathScores` to merge in place.
2. **Greedy coordinate descent** (:func:`assign_paths`, Algorithm 2) maximising
   ``Σ_v N_v log Σ_j s[v, π_j(v)] − α Σ_c f(|c|)``, ``f(n) = n**power / power``, where ``N_v``
   counts the interactions of ``v`` and ``|c|`` the items on path ``c``.
   :func:`assign_paths_reference` is its slow plain-Python twin, used by the tests. The same
   compiled step also serves :class:`GreedySweep` (blocks of a sweep with sizes kept by the
   caller: sharded assignment) and :func:`place_paths` (new items placed against fixed ones,
   twin :func:`place_paths_reference`).

The loops (the greedy sweep, the streaming merge, the accumulator's filing and reduction, the
held-path merge, the statistics and row checks) are compiled with numba when it is installed;
otherwise the very same functions run as plain Python (correct, but slow on millions of items).
``HAVE_NUMBA`` says which. The kernels release the GIL: independent row blocks and buckets run on
Python threads (:func:`_run_all`, as many as the process may use), and assign_paths computes a
sweep's statistics on a second thread during the next sweep; results never depend on the thread
count. The NumPy implementations they replaced are kept as twins in the tests
(tests/test_assignment_scale.py), which check that the results did not change, bit for bit where
the old code fixed the floats (path scores, held paths, assignments) and to rounding for the
objective, whose sums now run in the reference's order. ``benchmarks/assignment_scale.py`` times
both at 10M items.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import numpy as np

from ..utils import progress
from .paths import as_int_array, check_rng, random_distinct_path_ids

try:  # numba is optional: the kernels below are written in its subset of Python.
    import numba

    HAVE_NUMBA = True

    def _jit(func: Any) -> Any:
        # nogil: the accumulator, with_held_paths and assign_paths' statistics run kernels on
        # Python threads (not numba's parallel=True, whose threading layers the serving code
        # avoids for the same reason: see index.kernels).
        return numba.njit(cache=True, nogil=True)(func)

except ImportError:  # pragma: no cover - exercised only where numba is missing
    HAVE_NUMBA = False

    def _jit(func: Any) -> Any:
        return func


_INT64_MAX = np.iinfo(np.int64).max
_COMPACT_TRIPLES = 16_000_000  # raw triples a PathScoreAccumulator bucket holds before summing them
_ROW_BLOCK = 500_000  # rows per block in row-wise passes over (V, S) tables (bounds temporaries)
_MAX_DIRECT_PATHS = 1 << 20  # up to this K**D, assign_paths counts sizes over all path ids
_MAX_PENALTY_TABLE = 1 << 22  # entries of the cached f(n + 1) - f(n) table
_KEY_BITS = 63  # PathScoreAccumulator packs (item, path, position) into one int64 up to this
_FIRST_BLOCK_TRIPLES = 1 << 14  # a PathScoreAccumulator bucket's first storage block ...
_BLOCK_TRIPLES = 1 << 20  # ... and the largest (12 MB); each block doubles the last

_T = TypeVar("_T")


def _n_threads() -> int:
    """Python threads the ``nogil`` kernels here are spread over: the CPUs this process may run
    on, capped by ``OMP_NUM_THREADS`` when it is set (torchrun sets it to 1 when it starts several
    processes per machine, which then share the cores already)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        n = os.cpu_count() or 1
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        n = min(n, int(env))
    return max(1, n)


def _run_all(tasks: Sequence[Callable[[], _T]], n_threads: int | None = None) -> list[_T]:
    """Results of ``tasks`` in order, run on up to ``n_threads`` threads (default
    :func:`_n_threads`). The tasks call ``nogil`` kernels on disjoint outputs, so the result is the
    same for any thread count; with one thread or one task they run inline."""
    n = min(_n_threads() if n_threads is None else n_threads, len(tasks))
    if n <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(n, thread_name_prefix="dr-assign") as pool:
        futures = [pool.submit(task) for task in tasks]
        return [f.result() for f in futures]


@dataclass(frozen=True)
class PathScores:
    """Top-``S`` candidate paths and scores per item, plus occurrence counts.

    Rows produced by this module are sorted by score descending (ties by path id ascending) with
    empty slots last; inputs may have empty slots anywhere.

    Attributes:
        path_ids: ``(V, S)`` int64 candidate path ids, ``-1`` = empty slot; distinct within a row.
        scores: ``(V, S)`` float64 ``s[v, c]`` ≥ 0 (0 in empty slots).
        counts: ``(V,)`` int64 ``N_v``, training occurrences of each item.
    """

    path_ids: np.ndarray
    scores: np.ndarray
    counts: np.ndarray

    def __post_init__(self) -> None:
        ids = as_int_array(self.path_ids, "path_ids")
        scores = np.asarray(self.scores, dtype=np.float64)
        counts = as_int_array(self.counts, "counts")
        if ids.ndim != 2:
            raise ValueError(f"path_ids must have shape (n_items, n_keep), got {ids.shape}")
        if scores.shape != ids.shape:
            raise ValueError(
                f"scores must have the shape of path_ids {ids.shape}, got {scores.shape}"
            )
        if counts.shape != (ids.shape[0],):
            raise ValueError(f"counts must have shape ({ids.shape[0]},), got {counts.shape}")
        # One compiled pass over the rows (in blocks, on threads) for all three row checks;
        # the errors come in the order of the checks.
        bad_id, bad_score, item = _check_rows(ids, scores)
        if bad_id:
            raise ValueError(f"path ids must be >= 0 or -1 (empty), got {ids.min()}")
        if bad_score:
            raise ValueError("scores must be finite and >= 0")
        if counts.size and counts.min() < 0:
            raise ValueError(f"counts must be >= 0, got {counts.min()}")
        if item >= 0:
            raise ValueError(f"item {item} lists a path twice: {ids[item].tolist()}")
        object.__setattr__(self, "path_ids", ids)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "counts", counts)

    @property
    def n_items(self) -> int:
        return self.path_ids.shape[0]

    @property
    def n_keep(self) -> int:
        """``S``, the slots per item."""
        return self.path_ids.shape[1]

    @classmethod
    def empty(cls, n_items: int, n_keep: int) -> PathScores:
        """No candidates and zero counts: the starting state of :func:`streaming_update`."""
        return cls(
            np.full((n_items, n_keep), -1, dtype=np.int64),
            np.zeros((n_items, n_keep), dtype=np.float64),
            np.zeros(n_items, dtype=np.int64),
        )


def _check_rows_kernel(ids: np.ndarray, scores: np.ndarray) -> tuple[bool, bool, int]:
    """``(some id < -1, some score not finite or < 0, first row listing an id ≥ 0 twice or -1)``
    over ``ids`` and ``scores`` (``(n, S)``; ``scores`` may be ``(n, 0)``: not checked).

    Repeats are looked for pairwise over a row's filled slots: most rows at scale hold few
    (items without interactions keep only their ``J`` held paths), and ``S`` is small.
    """
    n_slots = ids.shape[1]
    buf = np.empty(n_slots, dtype=np.int64)
    bad_id = False
    bad_score = False
    repeated = -1
    for v in range(ids.shape[0]):
        m = 0
        for k in range(n_slots):
            c = ids[v, k]
            if c < -1:
                bad_id = True
            if c >= 0 and repeated < 0:
                for q in range(m):
                    if buf[q] == c:
                        repeated = v
                        break
                buf[m] = c
                m += 1
        for k in range(scores.shape[1]):
            x = scores[v, k]
            if not (math.isfinite(x) and x >= 0.0):
                bad_score = True
    return bad_id, bad_score, repeated


_check_rows_kernel_py = _check_rows_kernel
_check_rows_kernel = _jit(_check_rows_kernel)


def _check_rows(ids: np.ndarray, scores: np.ndarray | None = None) -> tuple[bool, bool, int]:
    """:func:`_check_rows_kernel` over ``(V, S)`` int64 ``ids`` (and float64 ``scores`` of the
    same shape, when given), in row blocks on threads; the repeated row is a global index."""
    scores = np.zeros((ids.shape[0], 0)) if scores is None else scores
    starts = range(0, ids.shape[0], _ROW_BLOCK)
    found = _run_all([functools.partial(_check_rows_kernel, ids[lo : lo + _ROW_BLOCK],
                                        scores[lo : lo + _ROW_BLOCK]) for lo in starts])
    bad_id = any(f[0] for f in found)
    bad_score = any(f[1] for f in found)
    item = next((lo + f[2] for lo, f in zip(starts, found, strict=True) if f[2] >= 0), -1)
    return bad_id, bad_score, item


def _first_repeated_row(ids: np.ndarray) -> int:
    """Index of the first row of ``(V, S)`` int64 ``ids`` that lists an id ``≥ 0`` twice, or
    ``-1``."""
    return _check_rows(ids)[2]


def _alloc_rows(n_rows: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Uninitialised ``(n_rows, width)`` int64 ids and float64 scores for a :class:`PathScores`.

    Allocated by compiled code (plain ``malloc``), not NumPy: NumPy advises transparent huge
    pages for large arrays, and faulting those in measured 2.5x slower than small pages on the
    2-core benchmark VM (1.84 GB: 1.4 s against 0.6 s), the largest single cost of a result at
    10M items. The pages are then first touched by the kernels that fill the rows, on threads.
    """
    return np.empty((n_rows, width), dtype=np.int64), np.empty((n_rows, width), dtype=np.float64)


_alloc_rows_py = _alloc_rows
_alloc_rows = _jit(_alloc_rows)


# --------------------------------------------------------------------------------------------
# Path scores


def _top_per_item(
    items: np.ndarray, path_ids: np.ndarray, values: np.ndarray, n_items: int, n_keep: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``values`` per identical ``(item, path)`` and keep the top ``n_keep`` paths per item.

    Args:
        items, path_ids, values: ``(M,)`` flat triples; ``path_ids < 0`` are dropped.

    Returns:
        ``(path_ids (V, n_keep) int64, scores (V, n_keep) float64)``, rows sorted by score
        descending, ties by path id ascending, empty slots ``-1`` / ``0`` last.
    """
    out_ids = np.full((n_items, n_keep), -1, dtype=np.int64)
    out_scores = np.zeros((n_items, n_keep), dtype=np.float64)
    keep = path_ids >= 0
    items, path_ids = items[keep], path_ids[keep]
    values = values[keep].astype(np.float64)
    if items.size == 0:
        return out_ids, out_scores

    # Group identical (item, path) pairs with one sort. A single int64 key is the fast route;
    # lexsort covers path ids too large to combine with the item index.
    radix = int(path_ids.max()) + 1
    if n_items * radix <= _INT64_MAX:
        order = np.argsort(items * radix + path_ids, kind="stable")
    else:
        order = np.lexsort((path_ids, items))
    items, path_ids, values = items[order], path_ids[order], values[order]
    new_pair = np.ones(items.size, dtype=bool)
    new_pair[1:] = (items[1:] != items[:-1]) | (path_ids[1:] != path_ids[:-1])
    starts = np.flatnonzero(new_pair)
    sums = np.add.reduceat(values, starts)  # (U,) one per distinct (item, path)
    items, path_ids = items[starts], path_ids[starts]

    # Rank within each item by (score desc, path id asc) and keep ranks < n_keep. The pairs are
    # sorted by (item, path) already and lexsort is stable, so ties keep path order.
    order = np.lexsort((-sums, items))
    items, path_ids, sums = items[order], path_ids[order], sums[order]
    position = np.arange(items.size)
    first = np.ones(items.size, dtype=bool)
    first[1:] = items[1:] != items[:-1]
    rank = position - np.maximum.accumulate(np.where(first, position, 0))
    kept = rank < n_keep
    out_ids[items[kept], rank[kept]] = path_ids[kept]
    out_scores[items[kept], rank[kept]] = sums[kept]
    return out_ids, out_scores


def with_held_paths(scores: PathScores, held: np.ndarray, held_scores: np.ndarray) -> PathScores:
    """Add each item's current paths, with exactly computed scores, to its candidates.

    Beam search only lists a path for an interaction when it is among that user's top paths, so
    an item whose paths no user ranks highly (most items, early in training) has candidates that
    are just the globally popular paths, and the penalty can then only crowd it onto those. With
    its own paths among the candidates, an item can always stay where it is when the crowded paths
    cost more than they gain. The exact ``s[v, π_j(v)] = Σ_i p(π_j(v) | x_i)`` replaces the beam's
    truncated sum where a held path is also a beam candidate.

    Args:
        scores: beam-search candidates, ``(V, S)``.
        held: ``(V, J)`` current path ids (distinct per row).
        held_scores: ``(V, J)`` their exact scores ``≥ 0``.

    Returns:
        :class:`PathScores` with ``S + J`` slots per row, sorted as usual; counts unchanged.
    """
    held, held_scores = _check_held(scores.n_items, held, held_scores)
    n_items, width = scores.n_items, scores.n_keep + held.shape[1]
    out_ids, out_scores = _alloc_rows(n_items, width)
    # Nothing is cut and no pair repeats, so each row is only merged and sorted: a compiled
    # insertion sort over its S + J slots, row blocks spread over threads (rows are independent).
    cand = np.ascontiguousarray(scores.path_ids)
    cand_scores = np.ascontiguousarray(scores.scores)

    def block(lo: int) -> None:
        hi = min(lo + _ROW_BLOCK, n_items)
        _held_rows_kernel(cand[lo:hi], cand_scores[lo:hi], held[lo:hi], held_scores[lo:hi],
                          out_ids[lo:hi], out_scores[lo:hi])

    _run_all([functools.partial(block, lo) for lo in range(0, n_items, _ROW_BLOCK)])
    return PathScores(out_ids, out_scores, scores.counts)


def _check_held(
    n_items: int, held: np.ndarray, held_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(held (V, J) int64, held_scores (V, J) float64)``, C-contiguous, validated."""
    held = np.ascontiguousarray(as_int_array(held, "held"))
    held_scores = np.ascontiguousarray(held_scores, dtype=np.float64)
    if held.ndim != 2 or held.shape[0] != n_items or held_scores.shape != held.shape:
        raise ValueError(
            f"held and held_scores must both have shape ({n_items}, J), "
            f"got {held.shape} and {held_scores.shape}"
        )
    if held_scores.size and not (np.isfinite(held_scores).all() and held_scores.min() >= 0):
        raise ValueError("held_scores must be finite and >= 0")
    return held, held_scores


def _insert_ranked(ids: np.ndarray, scores: np.ndarray, m: int, c: int, s: float) -> int:
    """Insert path ``c`` with score ``s`` into ``ids[:m], scores[:m]`` (sorted by score
    descending, ties by path id ascending), shifting the smaller ones right; returns ``m + 1``.
    The caller guarantees room for one more slot."""
    pos = m
    while pos > 0 and (scores[pos - 1] < s or (scores[pos - 1] == s and ids[pos - 1] > c)):
        ids[pos] = ids[pos - 1]
        scores[pos] = scores[pos - 1]
        pos -= 1
    ids[pos] = c
    scores[pos] = s
    return m + 1


_insert_ranked_py = _insert_ranked
_insert_ranked = _jit(_insert_ranked)


def _merge_held_row(
    cand: np.ndarray,
    cand_scores: np.ndarray,
    held: np.ndarray,
    held_scores: np.ndarray,
    out_ids: np.ndarray,
    out_scores: np.ndarray,
) -> None:
    """One row of :func:`with_held_paths`: ``cand (S,)`` minus the paths also in ``held (J,)``,
    plus ``held``, sorted by score descending (ties by path id ascending) into
    ``out_ids / out_scores (S + J,)``, empty slots (``-1`` ids, score 0) last."""
    m = 0
    for k in range(cand.shape[0]):
        c = cand[k]
        if c < 0:
            continue
        duplicate = False
        for j in range(held.shape[0]):
            if held[j] == c:
                duplicate = True
                break
        if not duplicate:  # a held path takes its exact score instead
            m = _insert_ranked(out_ids, out_scores, m, c, cand_scores[k])
    for j in range(held.shape[0]):
        if held[j] >= 0:
            m = _insert_ranked(out_ids, out_scores, m, held[j], held_scores[j])
    for k in range(m, out_ids.shape[0]):
        out_ids[k] = -1
        out_scores[k] = 0.0


_merge_held_row_py = _merge_held_row
_merge_held_row = _jit(_merge_held_row)


def _held_rows_kernel(
    cand: np.ndarray,
    cand_scores: np.ndarray,
    held: np.ndarray,
    held_scores: np.ndarray,
    out_ids: np.ndarray,
    out_scores: np.ndarray,
) -> None:
    """:func:`_merge_held_row` over rows: ``cand (n, S)``, ``held (n, J)``, out ``(n, S + J)``."""
    for v in range(cand.shape[0]):
        _merge_held_row(cand[v], cand_scores[v], held[v], held_scores[v], out_ids[v],
                        out_scores[v])


_held_rows_kernel_py = _held_rows_kernel
_held_rows_kernel = _jit(_held_rows_kernel)


def _check_batch(
    items: np.ndarray, path_ids: np.ndarray, probs: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    items = as_int_array(items, "items")
    path_ids = as_int_array(path_ids, "path_ids")
    probs = np.asarray(probs, dtype=np.float64)
    if items.ndim != 1:
        raise ValueError(f"items must be 1-D (N,), got shape {items.shape}")
    if path_ids.ndim != 2 or path_ids.shape[0] != items.shape[0]:
        raise ValueError(
            f"path_ids must have shape (N={items.shape[0]}, S'), got {path_ids.shape}"
        )
    if probs.shape != path_ids.shape:
        raise ValueError(
            f"probs must have the shape of path_ids {path_ids.shape}, got {probs.shape}"
        )
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(
            f"items must lie in [0, n_items={n_items}), "
            f"got values in [{items.min()}, {items.max()}]"
        )
    if path_ids.size and path_ids.min() < -1:
        raise ValueError(f"path ids must be >= 0 or -1 (padding), got {path_ids.min()}")
    if probs.size and not (np.isfinite(probs).all() and probs.min() >= 0):
        raise ValueError("probs must be finite and >= 0 (pass exp(log_probs), not log_probs)")
    return items, path_ids, probs


def accumulate_path_scores(
    items: np.ndarray,
    path_ids: np.ndarray,
    probs: np.ndarray,
    n_items: int,
    n_keep: int,
) -> PathScores:
    """Batch path scores ``s[v, c] = Σ_{i: y_i = v} p(c | x_i)``, top ``n_keep`` per item.

    Vectorised: the ``(item, path)`` pairs are grouped with one sort and summed with
    ``np.add.reduceat``.

    Args:
        items: ``(N,)`` the item ``y_i`` of each training interaction.
        path_ids: ``(N, S')`` beam-search path ids for that interaction's user, ``-1`` = padding.
        probs: ``(N, S')`` their probabilities ``exp(log_prob)``.
        n_items: ``V``.
        n_keep: ``S``, paths kept per item.

    Returns:
        :class:`PathScores` with ``counts[v]`` = occurrences of ``v`` in ``items``.
    """
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    if n_keep < 1:
        raise ValueError(f"n_keep must be >= 1, got {n_keep}")
    items, path_ids, probs = _check_batch(items, path_ids, probs, n_items)
    width = path_ids.shape[1]
    ids, scores = _top_per_item(
        np.repeat(items, width), path_ids.ravel(), probs.ravel(), n_items, n_keep
    )
    return PathScores(ids, scores, np.bincount(items, minlength=n_items).astype(np.int64))


def _split_chunk(
    items: np.ndarray,
    path_ids: np.ndarray,
    probs: np.ndarray,
    width: int,
    n_buckets: int,
    counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """One chunk's triples grouped by bucket (item range of ``width`` items), in input order.

    Args:
        items: ``(N,)`` int64 items in ``[0, len(counts))``; ``counts[items[i]]`` is incremented.
        path_ids: ``(N, S')`` int64, ``-1`` = padding (dropped).
        probs: ``(N, S')`` float64, stored rounded to float32 (the accumulator's 12-byte triples).

    Returns:
        ``(offsets (B + 1,), local items (M,) int32, path ids (M,) int64, values (M,) float32,
        largest path id or -1)``: bucket ``b``'s triples are ``[offsets[b], offsets[b + 1])``,
        row-major (row, then slot) within it, items relative to the bucket's first item.
    """
    n_rows, n_slots = path_ids.shape
    offsets = np.zeros(n_buckets + 1, dtype=np.int64)
    max_path = -1
    for i in range(n_rows):
        v = items[i]
        counts[v] += 1
        b = v // width
        for q in range(n_slots):
            c = path_ids[i, q]
            if c >= 0:
                offsets[b + 1] += 1
                max_path = max(max_path, c)
    for b in range(n_buckets):
        offsets[b + 1] += offsets[b]
    total = offsets[n_buckets]
    out_items = np.empty(total, dtype=np.int32)
    out_paths = np.empty(total, dtype=np.int64)
    out_values = np.empty(total, dtype=np.float32)
    fill = offsets[:-1].copy()
    for i in range(n_rows):
        v = items[i]
        b = v // width
        local = v - b * width
        for q in range(n_slots):
            c = path_ids[i, q]
            if c >= 0:
                k = fill[b]
                out_items[k] = local
                out_paths[k] = c
                out_values[k] = probs[i, q]
                fill[b] = k + 1
    return offsets, out_items, out_paths, out_values, max_path


_split_chunk_py = _split_chunk
_split_chunk = _jit(_split_chunk)


def _pairwise_sum(values: np.ndarray, lo: int, n: int) -> float:
    """``values[lo : lo + n].sum()`` in NumPy's pairwise order (``pairwise_sum`` in its
    ``loops_utils.h``: plain below 8 terms, 8 interleaved partial sums up to 128, halves above),
    so that the compiled reduction reproduces ``np.add.reduceat`` bit for bit."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += values[i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = values[lo], values[lo + 1], values[lo + 2], values[lo + 3]
        r4, r5, r6, r7 = values[lo + 4], values[lo + 5], values[lo + 6], values[lo + 7]
        i = 8
        limit = n - n % 8
        while i < limit:
            r0 += values[lo + i]
            r1 += values[lo + i + 1]
            r2 += values[lo + i + 2]
            r3 += values[lo + i + 3]
            r4 += values[lo + i + 4]
            r5 += values[lo + i + 5]
            r6 += values[lo + i + 6]
            r7 += values[lo + i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += values[lo + i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(values, lo, n2) + _pairwise_sum(values, lo + n2, n - n2)


_pairwise_sum_py = _pairwise_sum
_pairwise_sum = _jit(_pairwise_sum)


def _group_bucket(
    summed_items: np.ndarray,
    summed_paths: np.ndarray,
    summed_values: np.ndarray,
    raw_items: np.ndarray,
    raw_paths: np.ndarray,
    raw_values: np.ndarray,
    paths: np.ndarray,
    values: np.ndarray,
    starts: np.ndarray,
    groups: np.ndarray,
) -> None:
    """Sum one bucket's triples per ``(item, path)``: the compiled ``_top_per_item`` grouping.

    The triples are the bucket's earlier sums (``summed_*``, ``(M0,)``, distinct pairs) followed
    by its raw triples (``raw_*``, ``(M1,)``, in the order added); items are local, in
    ``[0, n_local)``. Every group is summed in that order as ``np.add.reduceat`` sums a run of a
    stable sort by ``(item, path)``: first term, plus the pairwise sum of the rest in float64
    (:func:`_pairwise_sum`), so the sums are those of the NumPy implementation exactly.

    The work arrays are the caller's (reused from bucket to bucket: fresh memory is slow to
    fault in at this size): ``paths`` int64 and ``values`` float64 of length ≥ ``M0 + M1``,
    ``starts`` and ``groups`` int64 of length ``n_local + 1``. On return item ``v``'s distinct
    paths, ascending, are ``paths[groups[v]:groups[v + 1]]`` with their sums in ``values``.
    """
    n_local = starts.shape[0] - 1
    n_summed = summed_items.shape[0]
    starts[:] = 0
    for i in range(n_summed):
        starts[summed_items[i] + 1] += 1
    for i in range(raw_items.shape[0]):
        starts[raw_items[i] + 1] += 1
    for v in range(n_local):
        starts[v + 1] += starts[v]
    # Counting sort by item, stable: earlier sums first, then raw triples in the order added.
    fill = groups  # (its first n_local entries, until the groups are written)
    fill[:n_local] = starts[:n_local]
    for i in range(n_summed):
        k = fill[summed_items[i]]
        paths[k] = summed_paths[i]
        values[k] = summed_values[i]
        fill[summed_items[i]] = k + 1
    for i in range(raw_items.shape[0]):
        k = fill[raw_items[i]]
        paths[k] = raw_paths[i]
        values[k] = raw_values[i]
        fill[raw_items[i]] = k + 1
    n_groups = 0
    for v in range(n_local):
        lo, hi = starts[v], starts[v + 1]
        groups[v] = n_groups
        # Stable sort of the item's triples by path id: insertion sort for the usual few,
        # NumPy's stable mergesort for popular items.
        if hi - lo <= 32:
            for a in range(lo + 1, hi):
                c, x = paths[a], values[a]
                b = a - 1
                while b >= lo and paths[b] > c:
                    paths[b + 1] = paths[b]
                    values[b + 1] = values[b]
                    b -= 1
                paths[b + 1] = c
                values[b + 1] = x
        else:
            order = np.argsort(paths[lo:hi], kind="mergesort")
            sorted_paths = paths[lo:hi][order]
            sorted_values = values[lo:hi][order]
            paths[lo:hi] = sorted_paths
            values[lo:hi] = sorted_values
        k = lo
        while k < hi:  # runs of one path; written back in place (n_groups <= k)
            r = k + 1
            while r < hi and paths[r] == paths[k]:
                r += 1
            total = values[k] if r - k == 1 else values[k] + _pairwise_sum(values, k + 1, r - k - 1)
            paths[n_groups] = paths[k]
            values[n_groups] = total
            n_groups += 1
            k = r
    groups[n_local] = n_groups


_group_bucket_py = _group_bucket
_group_bucket = _jit(_group_bucket)


def _pack_keys(
    summed_items: np.ndarray,
    summed_paths: np.ndarray,
    raw_items: np.ndarray,
    raw_paths: np.ndarray,
    keys: np.ndarray,
    path_bits: int,
    pos_bits: int,
) -> None:
    """``keys[i] = item << (path_bits + pos_bits) | path << pos_bits | i`` over the bucket's
    sums then its raw triples (``i`` = position in that sequence): sorted, the keys order the
    triples by ``(item, path)`` and, within a pair, in the order added (what a stable sort does,
    with NumPy's much faster unstable one)."""
    n_summed = summed_items.shape[0]
    item_shift = path_bits + pos_bits
    for i in range(n_summed):
        keys[i] = ((np.int64(summed_items[i]) << item_shift)
                   | (np.int64(summed_paths[i]) << pos_bits) | i)
    for i in range(raw_items.shape[0]):
        k = n_summed + i
        keys[k] = ((np.int64(raw_items[i]) << item_shift)
                   | (np.int64(raw_paths[i]) << pos_bits) | k)


_pack_keys_py = _pack_keys
_pack_keys = _jit(_pack_keys)


def _sum_sorted_runs(
    keys: np.ndarray,
    summed_values: np.ndarray,
    raw_values: np.ndarray,
    values: np.ndarray,
    groups: np.ndarray,
    path_bits: int,
    pos_bits: int,
) -> None:
    """The grouping of :func:`_group_bucket` from :func:`_pack_keys` keys sorted ascending.

    On return, as there: item ``v``'s distinct paths are ``keys[groups[v]:groups[v + 1]]`` and
    their sums ``values[groups[v]:groups[v + 1]]`` (``values``: float64 work array, length of
    ``keys``; ``groups``: int64, ``n_local + 1``).
    """
    n = keys.shape[0]
    n_summed = summed_values.shape[0]
    pos_mask = (np.int64(1) << pos_bits) - 1
    path_mask = (np.int64(1) << path_bits) - 1
    for i in range(n):  # the values in sorted order, so that each run is contiguous
        p = keys[i] & pos_mask
        values[i] = summed_values[p] if p < n_summed else raw_values[p - n_summed]
    n_local = groups.shape[0] - 1
    n_groups = 0
    next_item = 0
    k = 0
    while k < n:  # runs of one (item, path); written back in place (n_groups <= k)
        pair = keys[k] >> pos_bits
        r = k + 1
        while r < n and (keys[r] >> pos_bits) == pair:
            r += 1
        item = pair >> path_bits
        while next_item <= item:
            groups[next_item] = n_groups
            next_item += 1
        total = values[k] if r - k == 1 else values[k] + _pairwise_sum(values, k + 1, r - k - 1)
        keys[n_groups] = pair & path_mask
        values[n_groups] = total
        n_groups += 1
        k = r
    while next_item <= n_local:
        groups[next_item] = n_groups
        next_item += 1


_sum_sorted_runs_py = _sum_sorted_runs
_sum_sorted_runs = _jit(_sum_sorted_runs)


def _top_groups(
    paths: np.ndarray,
    sums: np.ndarray,
    starts: np.ndarray,
    held: np.ndarray,
    held_scores: np.ndarray,
    out_ids: np.ndarray,
    out_scores: np.ndarray,
) -> None:
    """Top ``S`` of each item's groups (:func:`_group_bucket`): score descending, ties by path id
    ascending, as ``_top_per_item`` ranks them; then merged with the item's ``held (n, J)`` paths
    as :func:`with_held_paths` does (``J = 0``: no held paths) into ``out_ids / out_scores
    (n, S + J)``."""
    n_keep = out_ids.shape[1] - held.shape[1]
    top_ids = np.empty(n_keep, dtype=np.int64)
    top_scores = np.empty(n_keep, dtype=np.float64)
    for v in range(starts.shape[0] - 1):
        m = 0
        for g in range(starts[v], starts[v + 1]):  # path ids ascending
            s = sums[g]
            if m == n_keep:
                if not s > top_scores[n_keep - 1]:  # a tie keeps the smaller path id
                    continue
                m -= 1  # the last one drops out
            m = _insert_ranked(top_ids, top_scores, m, paths[g], s)
        top_ids[m:] = -1
        top_scores[m:] = 0.0
        _merge_held_row(top_ids, top_scores, held[v], held_scores[v], out_ids[v], out_scores[v])


_top_groups_py = _top_groups
_top_groups = _jit(_top_groups)


class _Work:
    """Work arrays of a bucket's reduction, kept across the buckets one thread reduces.

    At 10M items a result() reduces 50 buckets of ~2.4M triples; allocating their work arrays
    afresh faulted in ~2 GB of new pages, measured slower than the reduction itself on the 2-core
    benchmark machine."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, n: int, dtype: type) -> np.ndarray:
        """``(n,)`` array of ``dtype`` (uninitialised), reusing a large enough earlier one."""
        a = self._arrays.get(name)
        if a is None or a.shape[0] < n:
            a = self._arrays[name] = np.empty(max(n, 1), dtype=dtype)
        return a[:n]


class PathScoreAccumulator:
    """The batch form of :func:`accumulate_path_scores` over many chunks, exact and in one pass.

    ``add`` files each chunk's ``(item, path, p)`` triples into buckets by item range (compact
    dtypes: 12 bytes a triple while path ids fit in int32), appending them to storage blocks per
    bucket; ``result`` then sums and ranks one bucket at a time. Every item's sums are
    complete before its top ``S`` is cut, so the result equals one :func:`accumulate_path_scores`
    call over all chunks (tested), unlike merging per-chunk top-``S`` lists
    (:func:`merge_path_scores`, which drops mass below a chunk's cut). Merging cost also grew with
    the catalogue: every merge re-sorted all ``V·S`` slots, about 30 s per epoch at 1M items
    (measured), where the buckets sort each triple once.

    Values are kept as float32 and summed in float64, in the order added, exactly as the earlier
    NumPy implementation summed them (``np.add.reduceat`` over a stable sort by ``(item, path)``;
    tests/test_assignment_scale.py keeps that implementation and checks equality): so the result
    equals :func:`accumulate_path_scores` over the float32-rounded probabilities bit for bit, and
    over the given ones to float32 rounding. ``add`` is one compiled pass per chunk (no ``(V,)``
    temporaries); ``result`` sorts each bucket's triples by one packed int64 key (NumPy's
    vectorised sort) and sums and ranks them in compiled passes, buckets spread over threads.

    Memory: 12 bytes per triple (in blocks that double from 16K to 1M triples, never copied)
    until a bucket holds 16M of them; the bucket then sums its repeated ``(item, path)``
    pairs (exact), so it keeps its distinct pairs plus one batch.

    Args:
        n_items: ``V``.
        n_keep: ``S``.
        n_buckets: item ranges reduced separately (bounds the reduction's working memory).
    """

    def __init__(self, n_items: int, n_keep: int, *, n_buckets: int | None = None) -> None:
        if n_items < 0 or n_keep < 1:
            raise ValueError(f"need n_items ≥ 0 and n_keep ≥ 1, got {n_items}, {n_keep}")
        # Python ints (callers pass NumPy ones, e.g. item bounds): the key widths use bit_length
        self.n_items, self.n_keep = int(n_items), int(n_keep)
        self.n_buckets = int(n_buckets or np.clip(self.n_items // 200_000, 1, 250))
        self._width = -(-max(self.n_items, 1) // self.n_buckets)  # items per bucket
        # Per bucket: the raw triples added since its last summing, in blocks (local item int32,
        # path id int32 or int64, value float32), all full but the last, filled to _fill[b] ...
        self._blocks: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [
            [] for _ in range(self.n_buckets)
        ]
        self._fill = [0] * self.n_buckets
        self._n_raw = [0] * self.n_buckets
        # ... and the distinct (item, path) sums of that summing (local item int32, path id
        # int64, sum float64), sorted by (item, path); None before the first.
        self._summed: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = (
            [None] * self.n_buckets
        )
        self._pending = [0] * self.n_buckets  # triples held per bucket (summed + raw)
        self._path_dtype: type[np.signedinteger[Any]] = np.int32  # int64 once an id needs it
        self._max_path = 0  # largest path id added (bounds the packed sort keys)
        self.counts = np.zeros(n_items, dtype=np.int64)

    def add(self, items: np.ndarray, path_ids: np.ndarray, probs: np.ndarray) -> None:
        """One chunk: ``items (N,)``, ``path_ids (N, S')`` (``-1`` = padding), ``probs (N, S')``."""
        items, path_ids, probs = _check_batch(items, path_ids, probs, self.n_items)
        # (_check_batch bounds the items and path ids: the kernel does no bounds checks.)
        offsets, local, paths, values, max_path = _split_chunk(
            np.ascontiguousarray(items), np.ascontiguousarray(path_ids),
            np.ascontiguousarray(probs), self._width, self.n_buckets, self.counts,
        )
        self._max_path = max(self._max_path, int(max_path))
        if max_path >= 2**31 and self._path_dtype is np.int32:
            self._path_dtype = np.int64
            self._blocks = [[(i, p.astype(np.int64), x) for i, p, x in blocks]
                            for blocks in self._blocks]
        bounds = offsets.tolist()
        for b in np.flatnonzero(offsets[1:] != offsets[:-1]).tolist():
            lo, hi = bounds[b], bounds[b + 1]
            self._append(b, local[lo:hi], paths[lo:hi], values[lo:hi])

    def _append(
        self, b: int, items: np.ndarray, paths: np.ndarray, values: np.ndarray
    ) -> None:
        """Append triples to bucket ``b``'s blocks (opening new ones as they fill up)."""
        n, done = len(items), 0
        blocks = self._blocks[b]
        while done < n:
            if not blocks or self._fill[b] == len(blocks[-1][0]):
                # 16K triples, doubling up to 1M: small buckets stay small, no block is copied
                size = min(_BLOCK_TRIPLES, _FIRST_BLOCK_TRIPLES << len(blocks))
                blocks.append((np.empty(size, np.int32), np.empty(size, self._path_dtype),
                               np.empty(size, np.float32)))
                self._fill[b] = 0
            block_items, block_paths, block_values = blocks[-1]
            fill = self._fill[b]
            k = min(n - done, len(block_items) - fill)
            block_items[fill : fill + k] = items[done : done + k]
            block_paths[fill : fill + k] = paths[done : done + k]
            block_values[fill : fill + k] = values[done : done + k]
            self._fill[b] = fill + k
            done += k
        self._n_raw[b] += n
        self._pending[b] += n
        if self._pending[b] > _COMPACT_TRIPLES:
            self._compact(b)

    def _bucket_items(self, b: int) -> int:
        """Items in bucket ``b`` (the last buckets may be short or empty)."""
        return max(0, min(self._width, self.n_items - b * self._width))

    def _raw(self, b: int, work: _Work) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bucket ``b``'s raw triples as three contiguous ``(M1,)`` arrays, in the order added
        (views of its only block, or its blocks joined into ``work``)."""
        blocks, fill = self._blocks[b], self._fill[b]
        if not blocks:
            return np.zeros(0, np.int32), np.zeros(0, self._path_dtype), np.zeros(0, np.float32)
        if len(blocks) == 1:
            return blocks[0][0][:fill], blocks[0][1][:fill], blocks[0][2][:fill]
        n = self._n_raw[b]
        out = (work.get("raw_items", n, np.int32), work.get("raw_paths", n, np.int64),
               work.get("raw_values", n, np.float32))
        for k, arr in enumerate(out):
            np.concatenate([blk[k] for blk in blocks[:-1]] + [blocks[-1][k][:fill]], out=arr)
        return out

    def _group(self, b: int, work: _Work) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`_group_bucket` over bucket ``b``'s sums and raw triples: ``(paths, sums,
        groups)``, views of ``work``."""
        summed = self._summed[b]
        if summed is None:
            summed = (np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.float64))
        raw = self._raw(b, work)
        n, n_local = len(summed[0]) + len(raw[0]), self._bucket_items(b)
        paths, values = work.get("paths", n, np.int64), work.get("values", n, np.float64)
        groups = work.get("groups", n_local + 1, np.int64)
        path_bits = max(1, self._max_path.bit_length())
        pos_bits = max(1, (n - 1).bit_length())
        if max(1, (n_local - 1).bit_length()) + path_bits + pos_bits <= _KEY_BITS:
            # One int64 key per triple and NumPy's sort (vectorised: ~5x the compiled
            # per-item sorts at 10M items), the same groups and sums.
            _pack_keys(summed[0], summed[1], raw[0], raw[1], paths, path_bits, pos_bits)
            paths.sort()
            _sum_sorted_runs(paths, summed[2], raw[2], values, groups, path_bits, pos_bits)
        else:  # ids too wide to pack: counting sort by item, then sorts per item
            starts = work.get("starts", n_local + 1, np.int64)
            _group_bucket(*summed, *raw, paths, values, starts, groups)
        return paths, values, groups

    def _release(self, b: int) -> None:
        """Forget bucket ``b``'s triples and sums."""
        self._blocks[b], self._fill[b], self._n_raw[b] = [], 0, 0
        self._summed[b], self._pending[b] = None, 0

    def _compact(self, b: int) -> None:
        """Sum bucket ``b``'s repeated ``(item, path)`` pairs now (exact: nothing is cut), so a
        bucket holds its distinct pairs plus at most one batch of raw triples. (Measured on the
        ML-20M shape, one bucket of 26,744 items gathered 200M triples and the final sort of
        all of them took the run to 19 GB.)"""
        paths, sums, groups = self._group(b, _Work())
        n = int(groups[-1])
        items = np.repeat(np.arange(len(groups) - 1, dtype=np.int32), np.diff(groups))
        self._release(b)
        self._summed[b] = (items, paths[:n].copy(), sums[:n].copy())
        self._pending[b] = n

    @property
    def _parts(self) -> list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """Per bucket, the blocks it holds: its sums (when present), then its raw triples'
        storage blocks. For tests and debugging."""
        return [([] if summed is None else [summed]) + blocks
                for summed, blocks in zip(self._summed, self._blocks, strict=True)]

    def result(
        self, held: np.ndarray | None = None, held_scores: np.ndarray | None = None
    ) -> PathScores:
        """The top ``S`` paths per item over everything added (sorted as :class:`PathScores`).

        With ``held`` and ``held_scores`` (``(V, J)``, as :func:`with_held_paths` takes them):
        ``with_held_paths(self.result(), held, held_scores)`` (``S + J`` slots), built bucket by
        bucket without the ``(V, S)`` intermediate (3.2 GB less to allocate at 10M items).

        Consumes the triples (each bucket's are freed once ranked); ``counts`` stay.
        """
        if (held is None) != (held_scores is None):
            raise ValueError("pass both held and held_scores, or neither")
        if held is None or held_scores is None:
            held = np.zeros((self.n_items, 0), dtype=np.int64)
            held_scores = np.zeros((self.n_items, 0), dtype=np.float64)
        else:
            held, held_scores = _check_held(self.n_items, held, held_scores)
        out_ids, out_scores = _alloc_rows(self.n_items, self.n_keep + held.shape[1])
        # (every row is written below)
        local = threading.local()  # one _Work per thread, freed with this call

        def reduce(b: int) -> None:
            if not hasattr(local, "work"):
                local.work = _Work()
            paths, sums, groups = self._group(b, local.work)  # no groups for an empty bucket
            self._release(b)
            lo = b * self._width
            hi = lo + self._bucket_items(b)
            _top_groups(paths, sums, groups, held[lo:hi], held_scores[lo:hi], out_ids[lo:hi],
                        out_scores[lo:hi])

        # Buckets are independent and write disjoint rows: any thread count, same result.
        _run_all([functools.partial(reduce, b) for b in range(self.n_buckets)])
        return PathScores(out_ids, out_scores, self.counts.copy())


def merge_path_scores(a: PathScores, b: PathScores, n_keep: int | None = None) -> PathScores:
    """Add two score accumulators (e.g. of two data chunks) and keep the top ``n_keep`` per item.

    Scores of the same ``(item, path)`` add up, counts add up. The result equals one
    :func:`accumulate_path_scores` pass over both chunks whenever neither chunk dropped a path by
    its own top-``S`` cut; otherwise mass that fell below a chunk's cut is lost (the same
    approximation as the paper's top-``S`` lists). For exact chunked processing, accumulate the
    chunks with a larger ``n_keep`` than the final one.

    Args:
        a, b: accumulators over the same ``V`` items.
        n_keep: ``S`` of the result; default ``max(a.n_keep, b.n_keep)``.
    """
    if a.n_items != b.n_items:
        raise ValueError(f"cannot merge scores over {a.n_items} and {b.n_items} items")
    n_keep = max(a.n_keep, b.n_keep) if n_keep is None else n_keep
    if n_keep < 1:
        raise ValueError(f"n_keep must be >= 1, got {n_keep}")
    n_items = a.n_items
    items = np.concatenate(
        [np.repeat(np.arange(n_items), a.n_keep), np.repeat(np.arange(n_items), b.n_keep)]
    )
    ids, scores = _top_per_item(
        items,
        np.concatenate([a.path_ids.ravel(), b.path_ids.ravel()]),
        np.concatenate([a.scores.ravel(), b.scores.ravel()]),
        n_items,
        n_keep,
    )
    return PathScores(ids, scores, a.counts + b.counts)


def _streaming_kernel(
    ids: np.ndarray,
    scores: np.ndarray,
    counts: np.ndarray,
    items: np.ndarray,
    new_ids: np.ndarray,
    new_probs: np.ndarray,
    decay: float,
) -> None:
    """In-place decayed merge of each instance's list into its item's top-``S`` list, in order."""
    n_keep = ids.shape[1]
    width = new_ids.shape[1]
    buf_ids = np.empty(n_keep + width, dtype=np.int64)
    buf_scores = np.empty(n_keep + width, dtype=np.float64)
    for i in range(items.shape[0]):
        v = items[i]
        counts[v] += 1
        n_old = 0
        min_old = np.inf
        for k in range(n_keep):
            if ids[v, k] >= 0:
                buf_ids[n_old] = ids[v, k]
                buf_scores[n_old] = decay * scores[v, k]  # only old (so far): η·s
                min_old = min(min_old, scores[v, k])
                n_old += 1
        if n_old < n_keep:
            # A list that is not full has never evicted a path, so unlisted paths truly score 0.
            min_old = 0.0
        m = n_old
        for q in range(width):
            c = new_ids[i, q]
            if c < 0:
                continue
            found = -1
            for k in range(m):
                if buf_ids[k] == c:
                    found = k
                    break
            if found >= 0:  # in both lists: η·s + s'  (or a repeated new path: summed)
                buf_scores[found] += new_probs[i, q]
            else:  # only new: η·min_score + s'
                buf_ids[m] = c
                buf_scores[m] = decay * min_old + new_probs[i, q]
                m += 1
        # Insertion sort by (score desc, path id asc); m ≤ S + S' is small.
        for a in range(1, m):
            cid = buf_ids[a]
            cscore = buf_scores[a]
            b = a - 1
            while b >= 0 and (
                buf_scores[b] < cscore or (buf_scores[b] == cscore and buf_ids[b] > cid)
            ):
                buf_ids[b + 1] = buf_ids[b]
                buf_scores[b + 1] = buf_scores[b]
                b -= 1
            buf_ids[b + 1] = cid
            buf_scores[b + 1] = cscore
        for k in range(n_keep):
            if k < m:
                ids[v, k] = buf_ids[k]
                scores[v, k] = buf_scores[k]
            else:
                ids[v, k] = -1
                scores[v, k] = 0.0


_streaming_kernel_py = _streaming_kernel
_streaming_kernel = _jit(_streaming_kernel)


def streaming_update(
    state: PathScores,
    items: np.ndarray,
    path_ids: np.ndarray,
    probs: np.ndarray,
    decay: float = 0.999,
) -> PathScores:
    """Merge new instances into the per-item top-``S`` lists with decay ``η`` (paper §2.4).

    For each instance ``i`` (item ``v``, list ``s'``), with ``min_score`` the smallest stored score
    of ``v``: a path in both lists gets ``η·s + s'``, a path only in the new list gets
    ``η·min_score + s'`` (favours exploring new paths), a path only in the stored list gets ``η·s``;
    then the top ``S`` are kept. Instances are applied one by one in the given order (a compiled
    loop), since several instances of one item in a call depend on each other. Interpretations
    (the paper is silent): ``min_score`` is 0 while an item's list is not full (no path has been
    evicted yet, so unlisted paths really score 0); a path repeated in one new list is summed;
    ``counts`` are plain, undecayed occurrence counts.

    Args:
        state: current lists; not modified.
        items: ``(N,)`` the item of each instance.
        path_ids: ``(N, S')`` beam-search path ids of the instance's user, ``-1`` = padding.
        probs: ``(N, S')`` their probabilities.
        decay: ``η`` in ``(0, 1]``.

    Returns:
        The updated :class:`PathScores` (same ``S``).
    """
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    items, path_ids, probs = _check_batch(items, path_ids, probs, state.n_items)
    ids = state.path_ids.copy()
    scores = state.scores.copy()
    counts = state.counts.copy()
    _streaming_kernel(ids, scores, counts, items, path_ids, probs, float(decay))
    return PathScores(ids, scores, counts)


class StreamingPathScores:
    """The lists of :func:`streaming_update`, merged in place: one stream's running state.

    :func:`streaming_update` leaves its input untouched, so it copies the ``(V, S)`` arrays on
    every call; a stream that merges every chunk into one state (``training.stream``) would copy
    them per chunk. This owns its arrays and runs the same compiled merge on them, so a sequence
    of :meth:`merge` calls equals the same sequence of :func:`streaming_update` calls (tested).

    Args:
        n_items: ``V``.
        n_keep: ``S``, paths kept per item.
    """

    def __init__(self, n_items: int, n_keep: int) -> None:
        empty = PathScores.empty(n_items, n_keep)  # validates the sizes
        self._ids = empty.path_ids  # (V, S) int64, -1 = empty slot
        self._scores = empty.scores  # (V, S) float64
        self._counts = empty.counts  # (V,) int64

    @property
    def n_items(self) -> int:
        return self._ids.shape[0]

    @property
    def n_keep(self) -> int:
        """``S``, the slots per item."""
        return self._ids.shape[1]

    def merge(
        self, items: np.ndarray, path_ids: np.ndarray, probs: np.ndarray, decay: float = 0.999
    ) -> None:
        """Merge instances in place, by the rules of :func:`streaming_update`.

        Args:
            items: ``(N,)`` the item of each instance.
            path_ids: ``(N, S')`` beam-search path ids of the instance's user, ``-1`` = padding.
            probs: ``(N, S')`` their probabilities.
            decay: ``η`` in ``(0, 1]``.
        """
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        items, path_ids, probs = _check_batch(items, path_ids, probs, self.n_items)
        _streaming_kernel(
            self._ids, self._scores, self._counts, items, path_ids, probs, float(decay)
        )

    def snapshot(self) -> PathScores:
        """A copy of the current lists (later merges do not change it)."""
        return PathScores(self._ids.copy(), self._scores.copy(), self._counts.copy())


# --------------------------------------------------------------------------------------------
# Greedy coordinate descent


def assignment_objective(
    scores: PathScores, path_ids: np.ndarray, penalty: float, power: float = 4
) -> float:
    """``Σ_v N_v log Σ_j s[v, π_j(v)] − α Σ_c f(|c|)``, ``f(n) = n**power / power``.

    Only candidate scores count: a path that is not among ``v``'s candidates adds 0 to its sum.
    Items with ``N_v = 0`` add no likelihood term but their paths count in ``|c|``. The result is
    ``-inf`` when an item with ``N_v > 0`` holds no scored path.

    Compiled (:func:`_likelihood_kernel`, :func:`_size_penalty_kernel`); the per-sweep
    ``objective`` of :func:`assign_paths` is the same computation, so the two agree exactly.

    Args:
        scores: candidate scores.
        path_ids: ``(V, J)`` the mapping π (distinct paths per row).
        penalty: ``α`` ≥ 0.
        power: exponent of ``f``.
    """
    pi = as_int_array(path_ids, "path_ids")
    if pi.ndim != 2 or pi.shape[0] != scores.n_items:
        raise ValueError(f"path_ids must have shape ({scores.n_items}, J), got {pi.shape}")
    _, sizes = np.unique(pi, return_counts=True)  # (P,) by path id ascending
    likelihood = _likelihood_kernel(scores.path_ids, scores.scores,
                                    scores.counts.astype(np.float64), pi,
                                    np.zeros(0, np.int64), pi[:0])
    return float(likelihood - penalty * _size_penalty_kernel(sizes.astype(np.int64), power))


def _likelihood_kernel(
    cand_ids: np.ndarray,
    cand_scores: np.ndarray,
    counts: np.ndarray,
    pi: np.ndarray,
    moved: np.ndarray,
    pi_moved: np.ndarray,
) -> float:
    """``Σ_v N_v log Σ_j s[v, π_j(v)]`` over the items with ``N_v > 0``.

    Args:
        cand_ids, cand_scores: ``(V, S)`` candidates (``-1`` = empty slot).
        counts: ``(V,)`` float64 ``N_v``.
        pi: ``(V, J)`` the mapping, in the id space of ``cand_ids`` ...
        moved: ``(n,)`` ascending item indices, ...
        pi_moved: ``(n, J)`` ... except that item ``moved[i]`` holds ``pi_moved[i]`` instead (so
            that :func:`assign_paths` passes only the rows its sweeps change).

    Sums run in a fixed order (items ascending, candidate slots ascending), the order
    :func:`assign_paths_reference` uses, whichever rows come from ``pi_moved``.
    """
    n_held = pi.shape[1]
    likelihood = 0.0
    p = 0
    for v in range(cand_ids.shape[0]):
        row = pi[v]
        if p < moved.shape[0] and moved[p] == v:
            row = pi_moved[p]
            p += 1
        if counts[v] <= 0:
            continue
        held = 0.0
        for k in range(cand_ids.shape[1]):
            c = cand_ids[v, k]
            if c < 0:
                continue
            for j in range(n_held):
                if row[j] == c:
                    held += cand_scores[v, k]
                    break
        likelihood += counts[v] * math.log(held) if held > 0.0 else -np.inf
    return likelihood


_likelihood_kernel_py = _likelihood_kernel
_likelihood_kernel = _jit(_likelihood_kernel)


def _size_penalty_kernel(sizes: np.ndarray, power: float) -> float:
    """``Σ_c f(|c|)`` over ``sizes (P,)`` (zeros skipped), in the order given: increasing path id
    for both callers, so path ids and :func:`assign_paths`' local ids give the same float."""
    total = 0.0
    for c in range(sizes.shape[0]):
        if sizes[c] > 0:
            n = float(sizes[c])
            total += n**power / power
    return total


_size_penalty_kernel_py = _size_penalty_kernel
_size_penalty_kernel = _jit(_size_penalty_kernel)


def _n_changed_kernel(before: np.ndarray, after: np.ndarray) -> int:
    """Rows of ``(V, J)`` ``before`` and ``after`` (distinct entries per row) whose sets differ."""
    n = 0
    width = before.shape[1]
    for v in range(before.shape[0]):
        for a in range(width):
            found = False
            for b in range(width):
                if after[v, b] == before[v, a]:
                    found = True
                    break
            if not found:
                n += 1
                break
    return n


_n_changed_kernel_py = _n_changed_kernel
_n_changed_kernel = _jit(_n_changed_kernel)


class _Plan(NamedTuple):
    """What both assignment implementations share: validated inputs and all random draws."""

    fallback: np.ndarray  # (V, J) previous paths, or random distinct ones
    active: np.ndarray  # (V,) bool: N_v > 0 and at least one candidate
    orders: list[np.ndarray]  # per sweep, the active items in visiting order
    power: float
    paths_per_item: int  # J as an int (the checks accept integral floats such as 2.0)


def _plan(
    scores: PathScores,
    paths_per_item: int,
    penalty: float,
    n_paths: int,
    n_sweeps: int,
    previous: np.ndarray | None,
    rng: np.random.Generator | int | None,
    power: float,
) -> _Plan:
    if int(paths_per_item) != paths_per_item or paths_per_item < 1:
        raise ValueError(f"paths_per_item must be an integer >= 1, got {paths_per_item!r}")
    if int(n_paths) != n_paths or n_paths < paths_per_item:
        raise ValueError(
            f"n_paths must be an integer >= paths_per_item={paths_per_item}, got {n_paths!r}"
        )
    if not (math.isfinite(penalty) and penalty >= 0):
        raise ValueError(f"penalty must be finite and >= 0, got {penalty}")
    if int(n_sweeps) != n_sweeps or n_sweeps < 1:
        raise ValueError(f"n_sweeps must be an integer >= 1, got {n_sweeps!r}")
    if not (math.isfinite(power) and power >= 1):
        raise ValueError(f"power must be >= 1 (f must be convex), got {power}")
    if scores.path_ids.size and scores.path_ids.max() >= n_paths:
        raise ValueError(
            f"candidate path ids must be < n_paths={n_paths}, got {scores.path_ids.max()}"
        )
    n_items = scores.n_items
    paths_per_item = int(paths_per_item)
    rng = check_rng(rng)
    if previous is None:
        fallback = random_distinct_path_ids(n_items, paths_per_item, n_paths, rng)
    else:
        fallback = as_int_array(previous, "previous").copy()
        if fallback.shape != (n_items, paths_per_item):
            raise ValueError(
                f"previous must have shape ({n_items}, {paths_per_item}), got {fallback.shape}"
            )
        if fallback.size and (fallback.min() < 0 or fallback.max() >= n_paths):
            raise ValueError(
                f"previous path ids must lie in [0, n_paths={n_paths}), "
                f"got values in [{fallback.min()}, {fallback.max()}]"
            )
        if _first_repeated_row(fallback) >= 0:  # (all ids are >= 0 here)
            raise ValueError("previous must hold distinct paths within each item")
    active = _active_items(scores.counts, scores.path_ids)
    visit = np.flatnonzero(active)
    orders = [rng.permutation(visit) for _ in range(int(n_sweeps))]
    return _Plan(fallback, active, orders, float(power), paths_per_item)


def _active_items(counts: np.ndarray, cand_ids: np.ndarray) -> np.ndarray:
    """``(V,)`` bool: ``counts[v] > 0`` and ``cand_ids[v]`` holds an id ``≥ 0`` (the items the
    descent moves), without a ``(V, S)`` temporary."""
    out = np.zeros(counts.shape[0], dtype=np.bool_)
    for v in range(counts.shape[0]):
        if counts[v] > 0:
            for k in range(cand_ids.shape[1]):
                if cand_ids[v, k] >= 0:
                    out[v] = True
                    break
    return out


_active_items_py = _active_items
_active_items = _jit(_active_items)


def _count_paths(paths: np.ndarray, skip: np.ndarray, n_ids: int) -> np.ndarray:
    """``(n_ids,)`` int64: how often each id occurs in the rows of ``paths (V, J)`` whose
    ``skip[v]`` is False (``np.bincount(paths[~skip].ravel(), minlength=n_ids)``, without the
    ``(V, J)`` gather)."""
    out = np.zeros(n_ids, dtype=np.int64)
    for v in range(paths.shape[0]):
        if not skip[v]:
            for j in range(paths.shape[1]):
                out[paths[v, j]] += 1
    return out


_count_paths_py = _count_paths
_count_paths = _jit(_count_paths)


def _penalty_steps_kernel(length: int, power: float) -> np.ndarray:
    """``(length,)`` table of ``f(n + 1) − f(n)`` for ``n = 0 .. length-1``, ``f(n) = n**p / p``.

    Written exactly like the per-call expression of :func:`assign_paths_reference` so both
    implementations see bit-identical penalties.
    """
    out = np.empty(length, dtype=np.float64)
    for i in range(length):
        n = float(i)
        out[i] = ((n + 1.0) ** power - n**power) / power
    return out


def _sweep_kernel(
    order: np.ndarray,
    cand_ids: np.ndarray,
    cand_scores: np.ndarray,
    counts: np.ndarray,
    fallback: np.ndarray,
    assign: np.ndarray,
    sizes: np.ndarray,
    steps: np.ndarray,
    penalty: float,
    power: float,
    release: bool,
) -> None:
    """One Gauss–Seidel sweep of the greedy, in place on ``assign (V, J)`` and ``sizes (P,)``.

    Path ids here are local (``0 .. P-1``), ``-1`` = empty candidate slot. ``steps[n]`` caches
    ``f(n + 1) − f(n)``; sizes beyond the table are computed directly.
    """
    n_paths_per_item = assign.shape[1]
    n_cand = cand_ids.shape[1]
    n_steps = steps.shape[0]
    for idx in range(order.shape[0]):
        v = order[idx]
        if release:  # coordinate step on v: its own paths must not count against it
            for j in range(n_paths_per_item):
                sizes[assign[v, j]] -= 1
        n_v = counts[v]
        acc = 0.0
        for j in range(n_paths_per_item):
            log_acc = math.log(acc) if acc > 0.0 else 0.0
            best_k = -1
            best_gain = -np.inf
            for k in range(n_cand):
                c = cand_ids[v, k]
                if c < 0:
                    continue
                taken = False
                for jj in range(j):
                    if assign[v, jj] == c:
                        taken = True
                        break
                if taken:
                    continue
                s = cand_scores[v, k]
                if acc > 0.0:
                    gain = n_v * (math.log(acc + s) - log_acc)
                elif s > 0.0:
                    gain = n_v * math.log(s)  # first path: log(acc) = -inf is common to all c
                else:
                    gain = -np.inf
                size = sizes[c]
                if size < n_steps:
                    gain -= penalty * steps[size]
                else:
                    n = float(size)
                    gain -= penalty * (((n + 1.0) ** power - n**power) / power)
                if best_k < 0 or gain > best_gain:
                    best_k = k
                    best_gain = gain
            if best_k >= 0:
                c = cand_ids[v, best_k]
                acc += cand_scores[v, best_k]
            else:  # candidates exhausted: first fallback path not chosen yet
                c = -1
                for q in range(n_paths_per_item):
                    c = fallback[v, q]
                    free = True
                    for jj in range(j):
                        if assign[v, jj] == c:
                            free = False
                            break
                    if free:
                        break
            assign[v, j] = c
            sizes[c] += 1


_sweep_kernel_py = _sweep_kernel
_sweep_kernel = _jit(_sweep_kernel)
_penalty_steps_kernel_py = _penalty_steps_kernel
_penalty_steps_kernel = _jit(_penalty_steps_kernel)


def _n_changed(before: np.ndarray, after: np.ndarray) -> int:
    """Items whose set of paths differs."""
    return int((np.sort(before, axis=1) != np.sort(after, axis=1)).any(axis=1).sum())


def assign_paths(
    scores: PathScores,
    *,
    paths_per_item: int,
    penalty: float,
    n_paths: int,
    n_sweeps: int = 3,
    previous: np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
    power: float = 4,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Penalised greedy coordinate descent over items (paper §2.3, Algorithm 2).

    Each sweep visits the items with ``N_v > 0`` and at least one candidate, in a fresh seeded
    random order, and re-chooses their ``J`` paths greedily among their candidates; choosing ``c``
    as the next path gains ``N_v·(log(acc + s[v,c]) − log acc) − α·(f(|c|+1) − f(|c|))`` where
    ``acc`` sums the scores of the paths already chosen for ``v`` (for the first path, ``acc = 0``:
    ``N_v·log s[v,c] − α·(…)``). Ties go to the earlier candidate slot.

    Details:

    - Sizes ``|c|`` start from the fixed items only; sweep 1 adds items as it visits them (the
      paper's ``size[c] = 0`` start). From sweep 2 on, an item's ``J`` paths of the previous sweep
      are released together before it chooses again: the exact coordinate step "all other items
      fixed". (Algorithm 2 releases the ``j``-th old path just before choosing the ``j``-th new
      one, which makes ``v``'s later old paths count against ``v`` itself.)
    - Fixed items: ``N_v = 0`` or no candidates. They keep ``previous`` (or random distinct paths
      when ``previous`` is None), and their paths count in ``|c|``.
    - An item with fewer than ``J`` candidates fills its remaining slots with its ``previous``
      paths (or the random ones) in order, skipping any already chosen.

    Deterministic for a given ``rng`` seed; :func:`assign_paths_reference` gives the same result.
    The loop is sequential (each choice changes ``|c|`` for the next), so it runs as a compiled
    numba kernel when numba is installed (``HAVE_NUMBA``), else as plain Python.

    Args:
        scores: candidate paths and scores per item (``V`` rows).
        paths_per_item: ``J``.
        penalty: ``α`` ≥ 0.
        n_paths: ``K**D`` (``PathCodec.n_paths``), bound for path ids.
        n_sweeps: ``T`` ≥ 1 ("three to five iterations are enough").
        previous: ``(V, J)`` current path ids, or None.
        rng: seed or generator for the item orders (and the random paths when ``previous`` is None).
        power: ``f(n) = n**power / power``; the paper uses 4.

    Returns:
        ``(path_ids (V, J) int64, stats)``: row ``v`` lists ``v``'s paths in the order chosen;
        ``stats`` has ``objective`` (list, after each sweep, see :func:`assignment_objective`),
        ``n_changed`` (list, items whose path set changed in each sweep), ``largest_path_size``
        and ``n_active_items``.
    """
    plan = _plan(scores, paths_per_item, penalty, n_paths, n_sweeps, previous, rng, power)
    cand = scores.path_ids
    local: np.ndarray | None = None  # local id -> path id, when remapped
    if n_paths <= max(_MAX_DIRECT_PATHS, cand.size + plan.fallback.size):
        # A size counter per possible path costs no more than the inputs: use path ids as is.
        cand_local, fallback_local, n_local = cand, plan.fallback, int(n_paths)
    else:
        # Local ids 0 .. P-1 over the paths that can occur keep ``sizes`` small for any K**D.
        local = np.unique(np.concatenate([cand[cand >= 0], plan.fallback.ravel()]))
        cand_local = np.where(cand >= 0, np.searchsorted(local, cand), -1).astype(np.int64)
        fallback_local = np.searchsorted(local, plan.fallback).astype(np.int64)
        n_local = local.size
    assign = fallback_local.copy()  # (V, J); active rows are overwritten by sweep 1
    sizes = _count_paths(fallback_local, plan.active, n_local)  # the fixed items' paths
    counts = scores.counts.astype(np.float64)
    # A path never holds more than V items; sizes past the table are computed on the fly.
    steps = _penalty_steps_kernel(min(scores.n_items + 1, _MAX_PENALTY_TABLE), plan.power)
    # Only the active items move; the statistics read snapshots of their rows (the others keep
    # fallback_local), (n_active, J) instead of (V, J) copies.
    moved = np.flatnonzero(plan.active)

    def sweep_stats(before: np.ndarray, after: np.ndarray) -> tuple[float, int]:
        # The objective's likelihood and n_changed, on local ids (a bijection that keeps the
        # order of path ids: same sets, same sums as assignment_objective on path ids).
        return (_likelihood_kernel(cand_local, scores.scores, counts, fallback_local, moved,
                                   after),
                _n_changed_kernel(before, after))

    stats: dict[str, Any] = {"objective": [], "n_changed": [],
                             "n_active_items": int(moved.size)}
    before = fallback_local[moved]
    pending: list[tuple[float, Future[tuple[float, int]] | tuple[float, int]]] = []
    # The statistics of a sweep (passes over all V items) run on a second thread while the
    # next sweep runs: they only read that sweep's snapshot, so nothing changes but the time.
    with ThreadPoolExecutor(1, thread_name_prefix="dr-assign-stats") as pool, progress(
        len(plan.orders), "path assignment", "sweep"
    ) as bar:
        for sweep, order in enumerate(plan.orders):
            _sweep_kernel(order.astype(np.int64), cand_local, scores.scores, counts,
                          fallback_local, assign, sizes, steps, float(penalty), plan.power,
                          sweep > 0)
            after = assign[moved]
            size_term = _size_penalty_kernel(sizes, plan.power)  # sizes = those of `assign`
            pending.append((size_term, pool.submit(sweep_stats, before, after)
                            if _n_threads() > 1 else sweep_stats(before, after)))
            before = after
            bar.update(1)
        for size_term, job in pending:
            likelihood, changed = job.result() if isinstance(job, Future) else job
            stats["objective"].append(float(likelihood - penalty * size_term))
            stats["n_changed"].append(int(changed))
    stats["largest_path_size"] = int(sizes.max()) if sizes.size else 0
    # (assign is this call's own array: no copy needed)
    result = assign if local is None else local[assign].astype(np.int64, copy=False)
    return result, stats


def assign_paths_reference(
    scores: PathScores,
    *,
    paths_per_item: int,
    penalty: float,
    n_paths: int,
    n_sweeps: int = 3,
    previous: np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
    power: float = 4,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Plain-Python twin of :func:`assign_paths` (dicts and explicit loops); same result and stats.

    Slow; for tests. It shares only the input checks and the random draws (item orders, random
    fallback paths) with the fast version, so both visit items in the same order for a seed.
    """
    plan = _plan(scores, paths_per_item, penalty, n_paths, n_sweeps, previous, rng, power)
    n_items = scores.n_items
    power = plan.power
    paths_per_item = plan.paths_per_item
    candidates = [
        [
            (int(c), float(s))
            for c, s in zip(scores.path_ids[v], scores.scores[v], strict=True)
            if c >= 0
        ]
        for v in range(n_items)
    ]
    counts = [float(n) for n in scores.counts]
    fallback = [[int(c) for c in row] for row in plan.fallback]

    def f(n: float) -> float:
        return n**power / power

    def objective(paths: dict[int, list[int]]) -> float:
        total = 0.0
        size: dict[int, int] = defaultdict(int)
        for v in range(n_items):
            for c in paths[v]:
                size[c] += 1
            if counts[v] > 0:
                held = sum(s for c, s in candidates[v] if c in paths[v])
                total += counts[v] * math.log(held) if held > 0 else -math.inf
        return total - penalty * sum(f(float(n)) for n in size.values())

    paths = {v: list(fallback[v]) for v in range(n_items)}
    size: dict[int, int] = defaultdict(int)
    for v in range(n_items):
        if not plan.active[v]:
            for c in paths[v]:
                size[c] += 1

    stats: dict[str, Any] = {"objective": [], "n_changed": [],
                             "n_active_items": int(plan.active.sum())}
    for sweep, order in enumerate(plan.orders):
        before = {v: set(p) for v, p in paths.items()}
        for v in order.tolist():
            if sweep > 0:
                for c in paths[v]:
                    size[c] -= 1
            chosen: list[int] = []
            acc = 0.0
            for _ in range(paths_per_item):
                best, best_gain, best_score = None, -math.inf, 0.0
                for c, s in candidates[v]:
                    if c in chosen:
                        continue
                    if acc > 0:
                        gain = counts[v] * (math.log(acc + s) - math.log(acc))
                    elif s > 0:
                        gain = counts[v] * math.log(s)
                    else:
                        gain = -math.inf
                    n = float(size[c])
                    # f(n + 1) - f(n), written as in the kernel so the floats agree bit for bit
                    gain -= penalty * (((n + 1.0) ** power - n**power) / power)
                    if best is None or gain > best_gain:
                        best, best_gain, best_score = c, gain, s
                if best is None:
                    best = next(c for c in fallback[v] if c not in chosen)
                    best_score = 0.0
                chosen.append(best)
                acc += best_score
                size[best] += 1
            paths[v] = chosen
        stats["objective"].append(objective(paths))
        stats["n_changed"].append(sum(before[v] != set(paths[v]) for v in range(n_items)))
    stats["largest_path_size"] = max((n for n in size.values()), default=0)
    out = np.array([paths[v] for v in range(n_items)], dtype=np.int64)
    return out.reshape(n_items, paths_per_item), stats


class GreedySweep:
    """The greedy step of :func:`assign_paths`, run on items in any order with sizes kept outside.

    :func:`assign_paths` runs whole sweeps over all items and keeps the path sizes ``|c|``
    itself. Sharded assignment (``training.distributed``) runs each sweep in blocks over one
    process's items, summing the sizes over the processes before each block, so it needs the
    step alone: :meth:`sweep` re-chooses the ``J`` paths of the given items, one after another,
    on the compiled kernel of :func:`assign_paths` (same gains, ties and fallback filling).

    Args:
        scores: ``(V, S)`` candidates of the items this sweeps over; path ids index ``sizes``.
        fallback: ``(V, J)`` distinct paths per item that fill the slots its candidates cannot
            (as ``previous`` in :func:`assign_paths`).
        penalty: ``α`` ≥ 0.
        power: ``f(n) = n**power / power``.
        max_path_size: the largest ``|c|`` expected (at most the number of items counted in the
            sizes; default ``V``). ``f(n + 1) − f(n)`` is tabulated up to it; larger sizes are
            computed as they occur (same values), so this only trades memory for speed.

    Attributes:
        active: ``(V,)`` bool, the items :func:`assign_paths` moves: ``N_v > 0`` and at least one
            candidate. The others keep their paths (and count in ``|c|``) there.
        paths_per_item: ``J``.
    """

    def __init__(
        self,
        scores: PathScores,
        fallback: np.ndarray,
        *,
        penalty: float,
        power: float = 4,
        max_path_size: int | None = None,
    ) -> None:
        fallback = as_int_array(fallback, "fallback")
        if fallback.ndim != 2 or fallback.shape[0] != scores.n_items or fallback.shape[1] < 1:
            raise ValueError(
                f"fallback must have shape ({scores.n_items}, J), got {fallback.shape}"
            )
        if fallback.size and fallback.min() < 0:
            raise ValueError(f"fallback path ids must be >= 0, got {fallback.min()}")
        rows = np.sort(fallback, axis=1)
        if (rows[:, 1:] == rows[:, :-1]).any():
            raise ValueError("fallback must hold distinct paths within each item")
        if not (math.isfinite(penalty) and penalty >= 0):
            raise ValueError(f"penalty must be finite and >= 0, got {penalty}")
        if not (math.isfinite(power) and power >= 1):
            raise ValueError(f"power must be >= 1 (f must be convex), got {power}")
        max_path_size = scores.n_items if max_path_size is None else int(max_path_size)
        if max_path_size < 0:
            raise ValueError(f"max_path_size must be >= 0, got {max_path_size}")
        self.paths_per_item = fallback.shape[1]
        self.active = (scores.counts > 0) & (scores.path_ids >= 0).any(axis=1)
        self._ids, self._scores = scores.path_ids, scores.scores
        self._counts = scores.counts.astype(np.float64)
        self._fallback = np.ascontiguousarray(fallback)
        # sizes must hold a counter for every path id an item can take
        self._n_ids = int(max(scores.path_ids.max(initial=-1), fallback.max(initial=-1))) + 1
        self._penalty, self._power = float(penalty), float(power)
        self._steps = _penalty_steps_kernel(min(max_path_size + 1, _MAX_PENALTY_TABLE), self._power)

    def sweep(
        self, order: np.ndarray, paths: np.ndarray, sizes: np.ndarray, *, release: bool
    ) -> None:
        """Re-choose the ``J`` paths of the items in ``order``, one after another, in place.

        Each item's choice sees ``sizes`` as left by the items before it (Gauss–Seidel).

        Args:
            order: ``(n,)`` item indices (rows of ``scores``) in visiting order.
            paths: ``(V, J)`` int64, every item's paths; rows in ``order`` are overwritten.
            sizes: ``(P,)`` int64 items per path id, to count against each choice; updated
                with each item's new paths.
            release: whether the paths each item holds in ``paths`` are counted in ``sizes`` and
                are taken out before it chooses (``False`` in the first sweep from an empty start:
                the items' rows are then only overwritten).
        """
        for name, arr in (("paths", paths), ("sizes", sizes)):
            if not (isinstance(arr, np.ndarray) and arr.dtype == np.int64 and arr.flags.writeable):
                raise TypeError(f"{name} must be a writable int64 array (it is updated in place)")
        if paths.shape != self._fallback.shape:
            raise ValueError(f"paths must have shape {self._fallback.shape}, got {paths.shape}")
        if sizes.ndim != 1 or sizes.shape[0] < self._n_ids:
            raise ValueError(
                f"sizes must have shape (P,) with P >= {self._n_ids}, got {sizes.shape}"
            )
        order = np.ascontiguousarray(as_int_array(order, "order"))
        if order.ndim != 1:
            raise ValueError(f"order must be 1-D, got shape {order.shape}")
        if order.size and (order.min() < 0 or order.max() >= paths.shape[0]):
            raise ValueError(f"order must hold item indices in [0, {paths.shape[0]})")
        if release and order.size:
            held = paths[order]
            if held.min() < 0 or held.max() >= sizes.shape[0]:
                raise ValueError("the released paths must be path ids in [0, len(sizes))")
        _sweep_kernel(order, self._ids, self._scores, self._counts, self._fallback, paths, sizes,
                      self._steps, self._penalty, self._power, bool(release))


# --------------------------------------------------------------------------------------------
# Placing new items against fixed ones


def _check_placement(
    scores: PathScores,
    fixed: tuple[np.ndarray, np.ndarray] | None,
    paths_per_item: int,
    penalty: float,
    n_sweeps: int,
    power: float,
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``(J, candidates (n, S), fixed path ids (P,), fixed sizes (P,))``; the
    candidates are ``scores.path_ids`` with ``-1`` in the slots scoring 0."""
    if int(paths_per_item) != paths_per_item or paths_per_item < 1:
        raise ValueError(f"paths_per_item must be an integer >= 1, got {paths_per_item!r}")
    if not (math.isfinite(penalty) and penalty >= 0):
        raise ValueError(f"penalty must be finite and >= 0, got {penalty}")
    if int(n_sweeps) != n_sweeps or n_sweeps < 1:
        raise ValueError(f"n_sweeps must be an integer >= 1, got {n_sweeps!r}")
    if not (math.isfinite(power) and power >= 1):
        raise ValueError(f"power must be >= 1 (f must be convex), got {power}")
    if fixed is None:
        fixed_ids, fixed_sizes = np.zeros(0, np.int64), np.zeros(0, np.int64)
    else:
        fixed_ids = as_int_array(fixed[0], "fixed path ids")
        fixed_sizes = as_int_array(fixed[1], "fixed sizes")
        if fixed_ids.ndim != 1 or fixed_sizes.shape != fixed_ids.shape:
            raise ValueError(
                "fixed must be (path ids (P,), sizes (P,)), "
                f"got shapes {fixed_ids.shape}, {fixed_sizes.shape}"
            )
        if fixed_ids.size and (fixed_ids.min() < 0 or fixed_sizes.min() < 0):
            raise ValueError("fixed path ids and sizes must be >= 0")
    j = int(paths_per_item)
    # A slot with score 0 is no candidate: it would add nothing to the item's likelihood.
    cand = np.where(scores.scores > 0, scores.path_ids, -1)
    short = np.flatnonzero((cand >= 0).sum(axis=1) < j)
    if short.size:
        v = int(short[0])
        n_scored = int((cand[v] >= 0).sum())
        raise ValueError(f"item {v} has {n_scored} scored candidate paths, needs {j}")
    return j, cand, fixed_ids, fixed_sizes


def _place_steps(length: int, power: float) -> np.ndarray:
    """``(length,)`` table of ``f(n + 1) − f(n)``, ``f(n) = n**power / power`` on Python ints.

    Placement writes the difference this way (exact integer powers for an integral ``power``),
    not as ``((n + 1)**p − n**p) / p`` like :func:`_penalty_steps_kernel`, so that it places new
    items exactly as ``catalogue.place_items`` did before it moved here; the two forms can differ
    in the last bit.
    """
    return np.array([(n + 1) ** power / power - n**power / power for n in range(length)],
                    dtype=np.float64)


def place_paths(
    scores: PathScores,
    fixed: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    paths_per_item: int,
    penalty: float,
    n_sweeps: int = 3,
    power: float = 4,
) -> np.ndarray:
    """Path assignment for new items, the items already placed held fixed (adding items).

    The coordinate step of :func:`assign_paths`, run over the new items only: each chooses its
    ``J`` paths one at a time, the candidate with the largest
    ``N_v·(log(acc + s[v,c]) − log acc) − α·(f(|c|+1) − f(|c|))`` (``acc`` = scores chosen so
    far; ``N_v·log s[v,c]`` for the first; ties to the earlier candidate slot), where ``|c|``
    counts the fixed items and the new items placed so far. Without the penalty new items would
    crowd onto the paths every user's beam reaches, and be retrieved (and crowd results) for
    everyone. The fixed items never move, so only their path sizes are needed.

    Unlike :func:`assign_paths`: items are visited in row order in every sweep (no random
    order); items with ``N_v = 0`` are placed too (by the penalty alone); candidate slots scoring
    0 are ignored; and there is no fallback, so every item needs ``J`` scored candidates. Sweep 1
    starts with no new item placed; from sweep 2 on each item releases its paths and chooses
    again. Runs on the compiled kernel of :func:`assign_paths`; :func:`place_paths_reference` is
    its plain-Python twin.

    Args:
        scores: ``n`` rows of candidates (``counts`` = ``N_v``); every row needs ≥ ``J``
            candidates with a score > 0.
        fixed: ``(path ids (P,), sizes (P,))``, items per path among the fixed items (repeated
            ids add up), e.g. ``np.unique(old_path_ids, return_counts=True)`` or an index's
            ``(occupied_paths, path_sizes())``; ``None``: no fixed items.
        paths_per_item: ``J``.
        penalty: ``α`` ≥ 0.
        n_sweeps: ``T`` ≥ 1.
        power: ``f(n) = n**power / power``.

    Returns:
        ``(n, J)`` int64 path ids, each row in the order chosen.

    Raises:
        ValueError: an item with fewer than ``J`` scored candidates, or invalid settings.
    """
    j, cand, fixed_ids, fixed_sizes = _check_placement(
        scores, fixed, paths_per_item, penalty, n_sweeps, power
    )
    n = scores.n_items
    # Local ids 0 .. P-1 over the candidate paths: only their sizes enter a gain.
    local = np.unique(cand[cand >= 0])
    cand_local = np.where(cand >= 0, np.searchsorted(local, cand), -1).astype(np.int64)
    sizes = np.zeros(local.size, dtype=np.int64)
    pos = np.searchsorted(local, fixed_ids)
    hit = pos < local.size
    hit[hit] = local[pos[hit]] == fixed_ids[hit]
    np.add.at(sizes, pos[hit], fixed_sizes[hit])
    # A path grows by at most one per new item listing it, so the table covers every size met
    # and the kernel never computes a step its own way.
    reach = sizes + np.bincount(cand_local[cand_local >= 0], minlength=local.size)
    steps = _place_steps(int(reach.max(initial=0)) + 1, power)
    assign = np.zeros((n, j), dtype=np.int64)
    fallback = np.zeros((n, j), dtype=np.int64)  # never read: every item has J candidates
    order = np.arange(n, dtype=np.int64)
    counts = scores.counts.astype(np.float64)
    for sweep in range(int(n_sweeps)):
        _sweep_kernel(order, cand_local, scores.scores, counts, fallback, assign, sizes, steps,
                      float(penalty), float(power), sweep > 0)
    return local[assign].astype(np.int64).reshape(n, j)


def place_paths_reference(
    scores: PathScores,
    fixed: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    paths_per_item: int,
    penalty: float,
    n_sweeps: int = 3,
    power: float = 4,
) -> np.ndarray:
    """Plain-Python twin of :func:`place_paths` (dicts, explicit loops): same result; for tests."""
    j, cand, fixed_ids, fixed_sizes = _check_placement(
        scores, fixed, paths_per_item, penalty, n_sweeps, power
    )
    n = scores.n_items
    candidates = [
        [(int(c), float(s)) for c, s in zip(cand[v], scores.scores[v], strict=True) if c >= 0]
        for v in range(n)
    ]
    counts = [float(x) for x in scores.counts]
    size: dict[int, int] = defaultdict(int)
    for c, k in zip(fixed_ids.tolist(), fixed_sizes.tolist(), strict=True):
        size[c] += k

    def f(k: int) -> float:
        return k**power / power

    paths: list[list[int]] = [[] for _ in range(n)]
    for _sweep in range(int(n_sweeps)):
        for v in range(n):
            for c in paths[v]:  # empty in sweep 1
                size[c] -= 1
            chosen: list[int] = []
            acc = 0.0
            for _slot in range(j):
                best, best_gain, best_score = -1, -math.inf, 0.0
                for c, s in candidates[v]:
                    if c in chosen:
                        continue
                    like = math.log(s) if acc == 0 else math.log(acc + s) - math.log(acc)
                    gain = counts[v] * like - penalty * (f(size[c] + 1) - f(size[c]))
                    if best < 0 or gain > best_gain:
                        best, best_gain, best_score = c, gain, s
                chosen.append(best)
                acc += best_score
                size[best] += 1
            paths[v] = chosen
    return np.array(paths, dtype=np.int64).reshape(n, j)
