"""Fused serving kernel for reranked retrieval on CPU: for each query row, walk its beam's paths
in the inverted index, de-duplicate the candidates, score each by ``⟨q, k_v⟩ + b_v`` in place and
keep the top ``n``, in one numba pass.

The numpy path in :mod:`.retrieval` (``candidates`` → gather + dot → ``segment_topk``) stays the
reference; this kernel returns the same candidate counts and the same ids in the same order
(score descending, ties by item id ascending), with scores equal to float32 rounding. The dot
products are summed in float64 here and in float32 by numpy, so two candidates whose scores lie
within a rounding of each other can swap places (a few rows in a thousand at 200k items; the
reference's own one-query and batch forms disagree as often, and the kernel's order is the one
exact scores give). What it saves: the ``(C_total, E)`` gathered copies of queries and keys, the
sort-unique over ``row · V + item`` and the dense ``(U, widest row)`` partition.

De-duplication uses an epoch-stamped ``(V,)`` int32 array: ``marks[v] == e`` means "seen in the
current row", and ``e`` grows with each row, so the array is never cleared between rows or calls
(one allocation per buffer, reused; see :class:`_MarkPool`). ``e + 1`` marks the row's excluded
items that have not been met yet: they still count as candidates (as in the reference, which
counts before excluding) but are never scored.

Batches run in row chunks on a small module-level thread pool (the kernel releases the GIL). Not
numba's ``parallel=True``: its workqueue threading layer aborts when two Python threads enter a
parallel region at once, and the HTTP service answers requests from several threads.

Shapes: ``U`` query rows, ``B`` beam, ``V`` items, ``E`` embedding width, ``P`` occupied paths,
``n`` results per row.
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
import torch
from llvmlite import ir  # type: ignore[import-untyped]  # numba's own dependency
from numba import types
from numba.extending import intrinsic

from ..core.paths import ItemPathMap

#: Up to this many paths (``K**D``) the path → slot lookup is a dense int32 table (16 MiB at the
#: limit); above it the kernel binary-searches ``occupied_paths``.
MAX_DENSE_PATHS = 1 << 22

#: Rows below this run in the calling thread: a pool hand-off costs tens of microseconds, which
#: a handful of rows does not win back.
MIN_ROWS_PER_THREAD = 8

_EPOCH_LIMIT = np.iinfo(np.int32).max - 4

#: How many candidates ahead the scoring pass prefetches (4–16 measured alike at 1M items), and
#: how many index entries ahead the collecting pass prefetches their marks.
_PREFETCH_AHEAD = 8
_PREFETCH_MARKS = 16


def _prefetch_typer(typingctx: Any, arr: Any, offset: Any) -> Any:
    """Hint the CPU to load the cache line at byte ``offset`` of ``arr``'s data (LLVM's
    ``llvm.prefetch``: read, keep in all cache levels). A hint only: it never faults."""
    if not isinstance(arr, types.Array) or not isinstance(offset, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        off = context.cast(builder, args[1], signature.args[1], types.intp)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        address = builder.gep(builder.bitcast(ary.data, i8p), [off])
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        builder.call(fn, [address, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, offset), codegen


_prefetch: Any = intrinsic(_prefetch_typer)


@numba.njit(cache=True, nogil=True, inline="always")
def _better(s1: float, i1: int, s2: float, i2: int) -> bool:  # pragma: no cover - compiled
    """``(s1, i1)`` ranks before ``(s2, i2)``: higher score, then lower id; NaN ranks last."""
    if s1 != s1:
        return s2 != s2 and i1 < i2
    if s2 != s2:
        return True
    return s1 > s2 or (s1 == s2 and i1 < i2)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dot(q: np.ndarray, keys: np.ndarray, v: int) -> float:  # pragma: no cover - compiled
    """``⟨q, keys[v]⟩`` accumulated in float64 (``q`` float64, ``keys`` float32 rows).

    ``reassoc`` lets LLVM vectorise the sum; float64 keeps the result within one float32
    rounding of the exact dot product once cast.
    """
    acc = 0.0
    for j in range(q.shape[0]):
        acc += q[j] * keys[v, j]
    return acc


@numba.njit(cache=True, nogil=True)
def _serve_rows(  # pragma: no cover - compiled
    path_ids: np.ndarray,
    queries: np.ndarray,
    occupied: np.ndarray,
    slots: np.ndarray,
    path_indptr: np.ndarray,
    path_items: np.ndarray,
    keys: np.ndarray,
    bias: np.ndarray,
    excl_indptr: np.ndarray,
    excl_items: np.ndarray,
    marks: np.ndarray,
    epoch: int,
    out_ids: np.ndarray,
    out_scores: np.ndarray,
    out_counts: np.ndarray,
) -> int:
    """Top ``n = out_ids.shape[1]`` per row of ``path_ids (R, B)``; returns the last epoch used.

    ``slots``: dense ``(K**D,)`` path → position in ``occupied`` (``-1``: empty path), or empty to
    binary-search ``occupied``. ``excl_indptr (R + 1,)`` offsets into ``excl_items`` (any order,
    duplicates allowed; ids outside ``marks`` are ignored). ``marks (≥ V,)`` int32 with every
    entry ``≤ epoch``. Writes ``out_ids (R, n)``, ``out_scores (R, n)`` (non-finite scores
    become ``-1`` / ``-inf``, as ``pad_results`` does) and ``out_counts (R,)``.

    Two passes per row: collect the new candidates, then score them. The second pass knows the
    items to come, so it prefetches their key rows and biases ``_PREFETCH_AHEAD`` items early:
    at a million items every key row is a DRAM miss, and waiting for them one at a time cost a
    third of the kernel's time.
    """
    n_rows, width = path_ids.shape
    n = out_ids.shape[1]
    n_occupied = occupied.shape[0]
    dense = slots.shape[0] > 0
    dim = queries.shape[1]
    row_bytes = keys.strides[0]
    q = np.empty(dim, np.float64)
    heap_s = np.empty(max(n, 1), np.float32)
    heap_i = np.empty(max(n, 1), np.int64)
    row_slots = np.empty(width, np.int64)
    cand = np.empty(1024, np.int64)
    for r in range(n_rows):
        epoch += 2
        seen = epoch
        banned = epoch + 1
        for t in range(excl_indptr[r], excl_indptr[r + 1]):
            x = excl_items[t]
            if 0 <= x < marks.shape[0]:
                marks[x] = banned
        total = 0
        for b in range(width):
            p = path_ids[r, b]
            slot = -1
            if p >= 0:
                if dense:
                    slot = slots[p] if p < slots.shape[0] else -1
                else:
                    slot = np.searchsorted(occupied, p)
            # Checked in both cases: a table that does not belong to this index must not make
            # the loops below read out of bounds (numba does no bounds checks).
            if slot < 0 or slot >= n_occupied or occupied[slot] != p:
                slot = -1
            else:
                total += path_indptr[slot + 1] - path_indptr[slot]
            row_slots[b] = slot
        if total > cand.shape[0]:
            cand = np.empty(max(total, 2 * cand.shape[0]), np.int64)
        # Pass 1: the row's distinct items, banned ones counted but not kept.
        count = 0
        n_cand = 0
        for b in range(width):
            slot = row_slots[b]
            if slot < 0:
                continue
            for t in range(path_indptr[slot], path_indptr[slot + 1]):
                if t + _PREFETCH_MARKS < path_items.shape[0]:  # cheap: path_items is sequential
                    _prefetch(marks, path_items[t + _PREFETCH_MARKS] * marks.strides[0])
                v = path_items[t]
                mark = marks[v]
                if mark == seen:
                    continue
                marks[v] = seen
                count += 1
                if mark != banned:
                    cand[n_cand] = v
                    n_cand += 1
        # Pass 2: score and keep the best n (heap_*: the best `size` so far, worst at the root).
        for j in range(dim):
            q[j] = queries[r, j]
        size = 0
        for c in range(n_cand):
            if c + _PREFETCH_AHEAD < n_cand:
                ahead = cand[c + _PREFETCH_AHEAD]
                for offset in range(0, row_bytes, 64):
                    _prefetch(keys, ahead * row_bytes + offset)
                _prefetch(bias, ahead * bias.strides[0])
            v = cand[c]
            s = np.float32(_dot(q, keys, v)) + bias[v]
            if size < n:
                # Sift up: parents that rank before the new entry move down.
                pos = size
                size += 1
                while pos > 0:
                    parent = (pos - 1) >> 1
                    if not _better(heap_s[parent], heap_i[parent], s, v):
                        break
                    heap_s[pos] = heap_s[parent]
                    heap_i[pos] = heap_i[parent]
                    pos = parent
                heap_s[pos] = s
                heap_i[pos] = v
            elif _better(s, v, heap_s[0], heap_i[0]):
                _sift_down(heap_s, heap_i, 0, size, s, v)
        # Heap sort: pop the worst into the last free place, so the row ends best first.
        for last in range(size - 1, -1, -1):
            s_top = heap_s[0]
            i_top = heap_i[0]
            if last > 0:
                _sift_down(heap_s, heap_i, 0, last, heap_s[last], heap_i[last])
            if np.isfinite(s_top):
                out_ids[r, last] = i_top
                out_scores[r, last] = s_top
            else:
                out_ids[r, last] = -1
                out_scores[r, last] = -np.inf
        for k in range(size, n):
            out_ids[r, k] = -1
            out_scores[r, k] = -np.inf
        out_counts[r] = count
    return epoch


@numba.njit(cache=True, nogil=True, inline="always")
def _sift_down(  # pragma: no cover - compiled
    heap_s: np.ndarray, heap_i: np.ndarray, pos: int, size: int, s: float, v: int
) -> None:
    """Place ``(s, v)`` at ``pos`` of the ``size``-long heap (worst at the root) and sift down."""
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        right = child + 1
        if right < size and _better(heap_s[child], heap_i[child], heap_s[right], heap_i[right]):
            child = right  # the worse of the two children
        if not _better(s, v, heap_s[child], heap_i[child]):
            break
        heap_s[pos] = heap_s[child]
        heap_i[pos] = heap_i[child]
        pos = child
    heap_s[pos] = s
    heap_i[pos] = v


class _Marks:
    """One epoch-stamped ``(V,)`` int32 buffer and the last epoch written into it."""

    def __init__(self, n_items: int) -> None:
        self.marks = np.zeros(max(n_items, 1), np.int32)
        self.epoch = 0


class _MarkPool:
    """Mark buffers handed to one caller at a time: as many exist as calls ever ran at once
    (one per pool thread, plus one per concurrent one-query request), never one per call."""

    def __init__(self) -> None:
        self._free: list[_Marks] = []
        self._lock = threading.Lock()

    def acquire(self, n_items: int, n_rows: int) -> _Marks:
        with self._lock:
            buf = self._free.pop() if self._free else None
        if buf is None or len(buf.marks) < n_items:
            buf = _Marks(n_items)  # a larger catalogue: the old buffer is dropped
        if buf.epoch + 2 * n_rows + 2 >= _EPOCH_LIMIT:
            buf.marks[:] = 0  # every ~10⁹ rows: restart the epochs
            buf.epoch = 0
        return buf

    def release(self, buf: _Marks) -> None:
        with self._lock:
            self._free.append(buf)


_MARKS = _MarkPool()
_POOL: tuple[ThreadPoolExecutor, int] | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> tuple[ThreadPoolExecutor, int]:
    """The batch pool and its size: ``torch.get_num_threads()`` (else the CPU count) threads,
    created on first use."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            workers = max(1, torch.get_num_threads() or os.cpu_count() or 1)
            _POOL = (ThreadPoolExecutor(workers, thread_name_prefix="dr-serve"), workers)
        return _POOL


def pool_size() -> int:
    """Threads a batch is split over."""
    return _pool()[1]


def path_slots(index: ItemPathMap) -> np.ndarray:
    """``(K**D,)`` int32: position of each path in ``index.occupied_paths``, ``-1`` when empty;
    an empty array above :data:`MAX_DENSE_PATHS` paths (the kernel then binary-searches)."""
    n_paths = index.codec.n_paths
    if n_paths > MAX_DENSE_PATHS:
        return np.zeros(0, np.int32)
    slots = np.full(n_paths, -1, np.int32)
    slots[index.occupied_paths] = np.arange(len(index.occupied_paths), dtype=np.int32)
    return slots


def serve(
    index: ItemPathMap,
    slots: np.ndarray,
    path_ids: np.ndarray,
    queries: np.ndarray,
    keys: np.ndarray,
    bias: np.ndarray,
    n: int,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``n`` reranked items per row from the beam's paths (see the module docstring).

    Args:
        index: the item → path map whose inverted index is walked.
        slots: :func:`path_slots` of ``index``.
        path_ids: ``(U, B)`` int64 beam path ids (``-1``: padding).
        queries: ``(U, E)`` float32 query vectors.
        keys: ``(V, E)`` float32 item vectors; ``bias``: ``(V,)`` float32.
        n: results per row.
        exclude: ``(indptr (U + 1,), items)`` items never to return per row, or ``None``.
        threads: split a batch over at most this many pool threads (default: the pool's size).

    Returns:
        ``(ids (U, n) int64, scores (U, n) float32, candidate counts (U,) int64)``, padded
        ``-1`` / ``-inf``.
    """
    path_ids = np.ascontiguousarray(path_ids, dtype=np.int64)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n_rows = path_ids.shape[0]
    n_items = index.n_items
    # numba does no bounds checks: the tables must cover every id the index can hand out.
    if keys.dtype != np.float32 or bias.dtype != np.float32 or not keys.flags.c_contiguous:
        raise ValueError("keys and bias must be float32, keys C-contiguous")
    if keys.shape[0] < n_items or bias.shape[0] < n_items or queries.shape != (
        n_rows, keys.shape[1]
    ):
        raise ValueError(
            f"tables do not fit: keys {keys.shape}, bias {bias.shape}, queries {queries.shape},"
            f" {n_rows} rows, {n_items} items"
        )
    if len(slots) and len(slots) != index.codec.n_paths:
        raise ValueError(f"slots has {len(slots)} entries for {index.codec.n_paths} paths")
    if exclude is None:
        excl_indptr, excl_items = np.zeros(n_rows + 1, np.int64), np.zeros(0, np.int64)
    else:
        excl_indptr, excl_items = (np.asarray(a, dtype=np.int64) for a in exclude)
        if (
            len(excl_indptr) != n_rows + 1
            or excl_indptr[0] < 0
            or excl_indptr[-1] > len(excl_items)
            or np.any(np.diff(excl_indptr) < 0)
        ):
            raise ValueError(f"exclude must be {n_rows} rows in CSR layout")
    ids = np.empty((n_rows, n), np.int64)
    scores = np.empty((n_rows, n), np.float32)
    counts = np.empty(n_rows, np.int64)
    tables = (index.occupied_paths, slots, index.path_indptr, index.path_items, keys, bias)

    def run(lo: int, hi: int) -> None:
        buf = _MARKS.acquire(n_items, hi - lo)
        try:
            buf.epoch = _serve_rows(
                path_ids[lo:hi], queries[lo:hi], *tables, excl_indptr[lo : hi + 1], excl_items,
                buf.marks, buf.epoch, ids[lo:hi], scores[lo:hi], counts[lo:hi],
            )
        finally:
            _MARKS.release(buf)

    workers = min(threads or pool_size(), n_rows // MIN_ROWS_PER_THREAD)
    if workers <= 1:
        run(0, n_rows)
    else:
        bounds = np.linspace(0, n_rows, workers + 1).astype(np.int64).tolist()
        pool = _pool()[0]
        futures = [pool.submit(run, lo, hi) for lo, hi in itertools.pairwise(bounds)]
        for f in futures:
            f.result()
    return ids, scores, counts

