"""Path assignment: the update of the item → path mapping π with the network fixed (paper §2.2–2.4).

Shape letters as in :mod:`deep_retrieval.core.paths` (``V`` items, ``S`` candidate paths per item,
``J`` paths per item, ``N`` training interactions, ``S'`` beam paths per interaction).

Two stages, both pure numpy on internal ids:

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

The sequential loops (the greedy sweep, the streaming merge) are compiled with numba when it is
installed; otherwise the very same functions run as plain Python (correct, but slow on millions of
items). ``HAVE_NUMBA`` says which.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .paths import as_int_array, check_rng, random_distinct_path_ids

try:  # numba is optional: the kernels below are written in its subset of Python.
    import numba

    HAVE_NUMBA = True

    def _jit(func: Any) -> Any:
        return numba.njit(cache=True)(func)

except ImportError:  # pragma: no cover - exercised only where numba is missing
    HAVE_NUMBA = False

    def _jit(func: Any) -> Any:
        return func


_INT64_MAX = np.iinfo(np.int64).max
_COMPACT_TRIPLES = 16_000_000  # raw triples a PathScoreAccumulator bucket holds before summing them
_ROW_BLOCK = 500_000  # rows per block in row-wise passes over (V, S) tables (bounds temporaries)
_CHUNK_ITEMS = 65_536  # rows per block in assignment_objective, bounds the (v, J, S) temporary
_MAX_DIRECT_PATHS = 1 << 20  # up to this K**D, assign_paths counts sizes over all path ids
_MAX_PENALTY_TABLE = 1 << 22  # entries of the cached f(n + 1) - f(n) table


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
        if ids.size and ids.min() < -1:
            raise ValueError(f"path ids must be >= 0 or -1 (empty), got {ids.min()}")
        if scores.size and not (np.isfinite(scores).all() and scores.min() >= 0):
            raise ValueError("scores must be finite and >= 0")
        if counts.size and counts.min() < 0:
            raise ValueError(f"counts must be >= 0, got {counts.min()}")
        for lo in range(0, ids.shape[0] if ids.shape[1] > 1 else 0, _ROW_BLOCK):
            rows = np.sort(ids[lo : lo + _ROW_BLOCK], axis=1)
            dup = ((rows[:, 1:] == rows[:, :-1]) & (rows[:, 1:] >= 0)).any(axis=1)
            if dup.any():
                item = lo + int(np.flatnonzero(dup)[0])
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
    held = as_int_array(held, "held")
    held_scores = np.asarray(held_scores, dtype=np.float64)
    if held.ndim != 2 or held.shape[0] != scores.n_items or held_scores.shape != held.shape:
        raise ValueError(
            f"held and held_scores must both have shape ({scores.n_items}, J), "
            f"got {held.shape} and {held_scores.shape}"
        )
    n_items, width = scores.n_items, scores.n_keep + held.shape[1]
    out_ids = np.empty((n_items, width), dtype=np.int64)
    out_scores = np.empty((n_items, width), dtype=np.float64)
    # Blocks of rows keep the temporaries small next to the (V, S + J) output at 10M items.
    for lo in range(0, n_items, _ROW_BLOCK):
        hi = min(lo + _ROW_BLOCK, n_items)
        cand, h = scores.path_ids[lo:hi], held[lo:hi]
        duplicate = (cand[:, :, None] == h[:, None, :]).any(axis=2)  # (b, S)
        ids = np.concatenate([np.where(duplicate, -1, cand), h], axis=1)  # (b, S + J), distinct
        values = np.concatenate([scores.scores[lo:hi], held_scores[lo:hi]], axis=1)
        # Nothing is cut and no pair repeats, so each row only needs sorting: by path id (empty
        # slots last), then stably by score descending: row-wise sorts of S + J slots instead of
        # one flat sort of all V·(S + J).
        o = np.argsort(np.where(ids >= 0, ids, _INT64_MAX), axis=1, kind="stable")
        ids, values = np.take_along_axis(ids, o, 1), np.take_along_axis(values, o, 1)
        o = np.argsort(np.where(ids >= 0, -values, np.inf), axis=1, kind="stable")
        out_ids[lo:hi] = np.take_along_axis(ids, o, 1)
        out_scores[lo:hi] = np.where(out_ids[lo:hi] >= 0, np.take_along_axis(values, o, 1), 0.0)
    return PathScores(out_ids, out_scores, scores.counts)


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


class PathScoreAccumulator:
    """The batch form of :func:`accumulate_path_scores` over many chunks, exact and in one pass.

    ``add`` files each chunk's ``(item, path, p)`` triples into buckets by item range (compact
    dtypes: 12 bytes a triple while path ids fit in int32); ``result`` then sums and ranks one
    bucket at a time. Every item's sums are complete before its top ``S`` is cut, so the result
    equals one :func:`accumulate_path_scores` call over all chunks (tested), unlike merging
    per-chunk top-``S`` lists (:func:`merge_path_scores`, which drops mass below a chunk's cut).
    Merging cost also grew with the catalogue: every merge re-sorted all ``V·S`` slots, about
    30 s per epoch at 1M items (measured), where the buckets sort each triple once.

    Memory: 12 bytes per triple until a bucket holds 16M of them; the bucket then sums its
    repeated ``(item, path)`` pairs (exact), so it keeps its distinct pairs plus one batch.

    Args:
        n_items: ``V``.
        n_keep: ``S``.
        n_buckets: item ranges reduced separately (bounds the sort's working memory).
    """

    def __init__(self, n_items: int, n_keep: int, *, n_buckets: int | None = None) -> None:
        if n_items < 0 or n_keep < 1:
            raise ValueError(f"need n_items ≥ 0 and n_keep ≥ 1, got {n_items}, {n_keep}")
        self.n_items, self.n_keep = n_items, n_keep
        self.n_buckets = n_buckets or int(np.clip(n_items // 200_000, 1, 250))
        self._width = -(-max(n_items, 1) // self.n_buckets)  # items per bucket
        self._parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [
            [] for _ in range(self.n_buckets)
        ]
        self._pending = np.zeros(self.n_buckets, dtype=np.int64)  # triples held per bucket
        self.counts = np.zeros(n_items, dtype=np.int64)
        self._radix = 0  # largest path id + 1 seen so far (the sort key is item · radix + path)

    def add(self, items: np.ndarray, path_ids: np.ndarray, probs: np.ndarray) -> None:
        """One chunk: ``items (N,)``, ``path_ids (N, S')`` (``-1`` = padding), ``probs (N, S')``."""
        items, path_ids, probs = _check_batch(items, path_ids, probs, self.n_items)
        self.counts += np.bincount(items, minlength=self.n_items)
        width = path_ids.shape[1]
        flat_items = np.repeat(items, width)
        paths, values = path_ids.ravel(), probs.ravel()
        keep = paths >= 0
        flat_items, paths, values = flat_items[keep], paths[keep], values[keep]
        path_dtype = np.int32 if (paths.size == 0 or paths.max() < 2**31) else np.int64
        if paths.size:
            self._radix = max(self._radix, int(paths.max()) + 1)
            if self._width * self._radix > _INT64_MAX:
                raise ValueError("path ids too large for the accumulator's int64 sort key")
        bucket = (flat_items // self._width).astype(np.uint8 if self.n_buckets <= 256 else np.int64)
        order = np.argsort(bucket, kind="stable")  # a radix sort for uint8 keys
        bounds = np.searchsorted(bucket[order], np.arange(self.n_buckets + 1))
        for b in range(self.n_buckets):
            sel = order[bounds[b] : bounds[b + 1]]
            if sel.size:
                self._parts[b].append(
                    (
                        flat_items[sel].astype(np.int32),
                        paths[sel].astype(path_dtype),
                        values[sel].astype(np.float32),
                    )
                )
                self._pending[b] += sel.size
                if self._pending[b] > _COMPACT_TRIPLES:
                    self._compact(b)

    def _compact(self, b: int) -> None:
        """Sum bucket ``b``'s repeated ``(item, path)`` pairs now (exact: nothing is cut), so a
        bucket holds its distinct pairs plus at most one batch of raw triples. (Measured on the
        ML-20M shape, one bucket of 26,744 items gathered 200M triples and the final sort of
        all of them took the run to 19 GB.)"""
        parts = self._parts[b]
        items = np.concatenate([p[0] for p in parts]).astype(np.int64)
        paths = np.concatenate([p[1] for p in parts]).astype(np.int64)
        values = np.concatenate([p[2] for p in parts]).astype(np.float64)
        order = np.argsort(items * self._radix + paths, kind="stable")
        items, paths, values = items[order], paths[order], values[order]
        new = np.ones(len(items), dtype=bool)
        new[1:] = (items[1:] != items[:-1]) | (paths[1:] != paths[:-1])
        starts = np.flatnonzero(new)
        self._parts[b] = [
            (items[starts].astype(np.int32), paths[starts], np.add.reduceat(values, starts))
        ]
        self._pending[b] = len(starts)

    def result(self) -> PathScores:
        """The top ``S`` paths per item over everything added (sorted as :class:`PathScores`)."""
        out_ids = np.full((self.n_items, self.n_keep), -1, dtype=np.int64)
        out_scores = np.zeros((self.n_items, self.n_keep), dtype=np.float64)
        for b, parts in enumerate(self._parts):
            if not parts:
                continue
            items = np.concatenate([p[0] for p in parts]).astype(np.int64)
            paths = np.concatenate([p[1] for p in parts]).astype(np.int64)
            values = np.concatenate([p[2] for p in parts]).astype(np.float64)
            self._parts[b] = []  # free as we go
            lo = b * self._width
            ids, scores = _top_per_item(
                items - lo, paths, values, min(self._width, self.n_items - lo), self.n_keep
            )
            out_ids[lo : lo + len(ids)] = ids
            out_scores[lo : lo + len(ids)] = scores
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

    Args:
        scores: candidate scores.
        path_ids: ``(V, J)`` the mapping π (distinct paths per row).
        penalty: ``α`` ≥ 0.
        power: exponent of ``f``.
    """
    pi = as_int_array(path_ids, "path_ids")
    if pi.ndim != 2 or pi.shape[0] != scores.n_items:
        raise ValueError(f"path_ids must have shape ({scores.n_items}, J), got {pi.shape}")
    held = np.zeros(scores.n_items, dtype=np.float64)  # (V,) Σ_j s[v, π_j(v)]
    for lo in range(0, scores.n_items, _CHUNK_ITEMS):
        hi = min(lo + _CHUNK_ITEMS, scores.n_items)
        cand = scores.path_ids[lo:hi, None, :]  # (v, 1, S)
        match = (pi[lo:hi, :, None] == cand) & (cand >= 0)  # (v, J, S)
        held[lo:hi] = (match * scores.scores[lo:hi, None, :]).sum(axis=(1, 2))
    seen = scores.counts > 0
    with np.errstate(divide="ignore"):
        likelihood = float((scores.counts[seen] * np.log(held[seen])).sum())
    _, sizes = np.unique(pi, return_counts=True)
    return likelihood - penalty * float((sizes.astype(np.float64) ** power / power).sum())


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
        rows = np.sort(fallback, axis=1)
        if (rows[:, 1:] == rows[:, :-1]).any():
            raise ValueError("previous must hold distinct paths within each item")
    active = (scores.counts > 0) & (scores.path_ids >= 0).any(axis=1)
    visit = np.flatnonzero(active)
    orders = [rng.permutation(visit) for _ in range(int(n_sweeps))]
    return _Plan(fallback, active, orders, float(power), paths_per_item)


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
    sizes = np.bincount(fallback_local[~plan.active].ravel(), minlength=n_local).astype(np.int64)
    counts = scores.counts.astype(np.float64)
    # A path never holds more than V items; sizes past the table are computed on the fly.
    steps = _penalty_steps_kernel(min(scores.n_items + 1, _MAX_PENALTY_TABLE), plan.power)

    result = plan.fallback
    stats: dict[str, Any] = {"objective": [], "n_changed": [],
                             "n_active_items": int(plan.active.sum())}
    for sweep, order in enumerate(plan.orders):
        _sweep_kernel(order.astype(np.int64), cand_local, scores.scores, counts, fallback_local,
                      assign, sizes, steps, float(penalty), plan.power, sweep > 0)
        new = assign.copy() if local is None else local[assign]
        stats["objective"].append(assignment_objective(scores, new, penalty, plan.power))
        stats["n_changed"].append(_n_changed(result, new))
        result = new
    stats["largest_path_size"] = int(sizes.max()) if sizes.size else 0
    return result.astype(np.int64), stats


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
