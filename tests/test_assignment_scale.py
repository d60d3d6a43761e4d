"""The compiled path-assignment kernels against their slow, obvious twins (issue 13, item 5).

Frozen here, the NumPy implementations they replaced: the bucketed accumulator (argsort by
bucket per chunk, ``np.add.reduceat`` over a stable sort per bucket), the row-wise argsorts of
``with_held_paths`` and the ``(V, J, S)`` objective. The compiled ones must give the same results:
bit for bit for the accumulator (same float32 storage, same float64 summation order, including
early summing of full buckets) and ``with_held_paths``; to rounding for the objective, whose sums
run in another order. Plus the kernels one by one against their plain-Python runs (the ``_py``
twins) and thread-count invariance.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from deep_retrieval.core import assignment
from deep_retrieval.core.assignment import (
    PathScoreAccumulator,
    PathScores,
    accumulate_path_scores,
    assign_paths,
    assign_paths_reference,
    assignment_objective,
    with_held_paths,
)
from deep_retrieval.core.paths import random_distinct_path_ids

# --------------------------------------------------------------------------------------------
# Frozen NumPy twins (the implementations before the compiled kernels)


class LegacyAccumulator:
    """The NumPy ``PathScoreAccumulator`` as it was, with its compaction threshold a parameter."""

    def __init__(self, n_items: int, n_keep: int, *, n_buckets: int | None = None,
                 compact: int = assignment._COMPACT_TRIPLES) -> None:
        self.n_items, self.n_keep, self.compact = n_items, n_keep, compact
        self.n_buckets = n_buckets or int(np.clip(n_items // 200_000, 1, 250))
        self._width = -(-max(n_items, 1) // self.n_buckets)
        self._parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [
            [] for _ in range(self.n_buckets)
        ]
        self._pending = np.zeros(self.n_buckets, dtype=np.int64)
        self.counts = np.zeros(n_items, dtype=np.int64)
        self._radix = 0

    def add(self, items: np.ndarray, path_ids: np.ndarray, probs: np.ndarray) -> None:
        items, path_ids, probs = assignment._check_batch(items, path_ids, probs, self.n_items)
        self.counts += np.bincount(items, minlength=self.n_items)
        width = path_ids.shape[1]
        flat_items = np.repeat(items, width)
        paths, values = path_ids.ravel(), probs.ravel()
        keep = paths >= 0
        flat_items, paths, values = flat_items[keep], paths[keep], values[keep]
        path_dtype = np.int32 if (paths.size == 0 or paths.max() < 2**31) else np.int64
        if paths.size:
            self._radix = max(self._radix, int(paths.max()) + 1)
        bucket = (flat_items // self._width).astype(np.int64)
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(self.n_buckets + 1))
        for b in range(self.n_buckets):
            sel = order[bounds[b] : bounds[b + 1]]
            if sel.size:
                self._parts[b].append((flat_items[sel].astype(np.int32),
                                       paths[sel].astype(path_dtype),
                                       values[sel].astype(np.float32)))
                self._pending[b] += sel.size
                if self._pending[b] > self.compact:
                    self._compact(b)

    def _compact(self, b: int) -> None:
        parts = self._parts[b]
        items = np.concatenate([p[0] for p in parts]).astype(np.int64)
        paths = np.concatenate([p[1] for p in parts]).astype(np.int64)
        values = np.concatenate([p[2] for p in parts]).astype(np.float64)
        order = np.lexsort((paths, items))  # stable, like the int64 key it used
        items, paths, values = items[order], paths[order], values[order]
        new = np.ones(len(items), dtype=bool)
        new[1:] = (items[1:] != items[:-1]) | (paths[1:] != paths[:-1])
        starts = np.flatnonzero(new)
        self._parts[b] = [
            (items[starts].astype(np.int32), paths[starts], np.add.reduceat(values, starts))
        ]
        self._pending[b] = len(starts)

    def result(self) -> PathScores:
        out_ids = np.full((self.n_items, self.n_keep), -1, dtype=np.int64)
        out_scores = np.zeros((self.n_items, self.n_keep), dtype=np.float64)
        for b, parts in enumerate(self._parts):
            if not parts:
                continue
            items = np.concatenate([p[0] for p in parts]).astype(np.int64)
            paths = np.concatenate([p[1] for p in parts]).astype(np.int64)
            values = np.concatenate([p[2] for p in parts]).astype(np.float64)
            lo = b * self._width
            ids, scores = assignment._top_per_item(
                items - lo, paths, values, min(self._width, self.n_items - lo), self.n_keep
            )
            out_ids[lo : lo + len(ids)] = ids
            out_scores[lo : lo + len(ids)] = scores
        return PathScores(out_ids, out_scores, self.counts.copy())


def legacy_with_held_paths(scores: PathScores, held: np.ndarray, held_scores: np.ndarray
                           ) -> PathScores:
    """The row-wise argsorts ``with_held_paths`` used (one block)."""
    cand, h = scores.path_ids, np.asarray(held, dtype=np.int64)
    duplicate = (cand[:, :, None] == h[:, None, :]).any(axis=2)
    ids = np.concatenate([np.where(duplicate, -1, cand), h], axis=1)
    values = np.concatenate([scores.scores, np.asarray(held_scores, np.float64)], axis=1)
    o = np.argsort(np.where(ids >= 0, ids, np.iinfo(np.int64).max), axis=1, kind="stable")
    ids, values = np.take_along_axis(ids, o, 1), np.take_along_axis(values, o, 1)
    o = np.argsort(np.where(ids >= 0, -values, np.inf), axis=1, kind="stable")
    out_ids = np.take_along_axis(ids, o, 1)
    out_scores = np.where(out_ids >= 0, np.take_along_axis(values, o, 1), 0.0)
    return PathScores(out_ids, out_scores, scores.counts)


def legacy_objective(scores: PathScores, pi: np.ndarray, penalty: float, power: float) -> float:
    """The ``(V, J, S)`` NumPy objective."""
    cand = scores.path_ids[:, None, :]
    held = (((pi[:, :, None] == cand) & (cand >= 0)) * scores.scores[:, None, :]).sum(axis=(1, 2))
    seen = scores.counts > 0
    with np.errstate(divide="ignore"):
        likelihood = float((scores.counts[seen] * np.log(held[seen])).sum())
    _, sizes = np.unique(pi, return_counts=True)
    return likelihood - penalty * float((sizes.astype(np.float64) ** power / power).sum())


# --------------------------------------------------------------------------------------------
# Data


def _rows(seed: int, n: int, n_items: int, width: int, n_paths: int, *, dyadic: bool = False,
          padding: float = 0.2, skew: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` training rows: popular items (some never drawn), ``width`` path slots with repeats
    across and within rows, ``-1`` padding, probabilities (multiples of 1/8 when ``dyadic``:
    ties, and sums that are exact in any order)."""
    rng = np.random.default_rng(seed)
    items = (np.minimum(rng.geometric(0.05, n) - 1, n_items - 1) if skew
             else rng.integers(0, n_items, n))
    items = rng.permutation(n_items)[items] if n_items else items
    ids = np.minimum(rng.geometric(0.1, (n, width)) - 1, n_paths - 1)
    ids[rng.random((n, width)) < padding] = -1
    probs = rng.integers(0, 9, (n, width)) / 8.0 if dyadic else rng.random((n, width))
    return items.astype(np.int64), ids.astype(np.int64), probs


def _chunks(n: int, seed: int) -> list[tuple[int, int]]:
    """Random cuts of ``[0, n)``, including empty chunks."""
    rng = np.random.default_rng(seed)
    cuts = sorted(rng.integers(0, n + 1, size=8).tolist())
    return list(itertools.pairwise([0, 0, *cuts, n, n]))


def _assert_same(got: PathScores, want: PathScores) -> None:
    np.testing.assert_array_equal(got.path_ids, want.path_ids)
    np.testing.assert_array_equal(got.scores, want.scores)  # bit for bit
    np.testing.assert_array_equal(got.counts, want.counts)


# --------------------------------------------------------------------------------------------
# Accumulator


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_buckets", [None, 1, 3, 7])
@pytest.mark.parametrize("compact", [None, 40, 3])
@pytest.mark.parametrize("small_blocks", [False, True])
@pytest.mark.parametrize("packed", [True, False])
def test_accumulator_equals_legacy_bit_for_bit(
    seed: int, n_buckets: int | None, compact: int | None, small_blocks: bool, packed: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any chunking, bucketing, storage blocks (chunks spanning several) and early summing,
    with the packed-key sort or the per-item sorts it falls back to for wide ids: the legacy
    accumulator's exact floats."""
    threshold = assignment._COMPACT_TRIPLES if compact is None else compact
    monkeypatch.setattr(assignment, "_COMPACT_TRIPLES", threshold)
    if not packed:
        monkeypatch.setattr(assignment, "_KEY_BITS", 0)
    if small_blocks:
        monkeypatch.setattr(assignment, "_FIRST_BLOCK_TRIPLES", 2)
        monkeypatch.setattr(assignment, "_BLOCK_TRIPLES", 16)
    items, ids, probs = _rows(seed, 700, 60, 6, 25)
    new = PathScoreAccumulator(60, 5, n_buckets=n_buckets)
    old = LegacyAccumulator(60, 5, n_buckets=n_buckets, compact=threshold)
    for lo, hi in _chunks(len(items), seed):
        new.add(items[lo:hi], ids[lo:hi], probs[lo:hi])
        old.add(items[lo:hi], ids[lo:hi], probs[lo:hi])
    if compact is not None:
        assert any(new._summed)  # the early summing did run
    if small_blocks and compact is None:
        assert max(len(b) for b in new._blocks) > 3
    _assert_same(new.result(), old.result())


def test_accumulator_equals_batch_on_float32_probabilities() -> None:
    """Without early summing, the sums are accumulate_path_scores' on the float32-rounded
    probabilities exactly (same summation order), and to float32 rounding on the given ones."""
    items, ids, probs = _rows(5, 2000, 300, 8, 400)
    acc = PathScoreAccumulator(300, 6, n_buckets=4)
    for lo, hi in _chunks(len(items), 5):
        acc.add(items[lo:hi], ids[lo:hi], probs[lo:hi])
    got = acc.result()
    rounded = probs.astype(np.float32).astype(np.float64)
    _assert_same(got, accumulate_path_scores(items, ids, rounded, 300, 6))
    want = accumulate_path_scores(items, ids, probs, 300, 6)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)


def test_accumulator_sums_long_runs_like_reduceat() -> None:
    """One (item, path) pair repeated thousands of times (NumPy's pairwise blocks of 8 and 128,
    and halving above), next to pairs seen once: same floats as np.add.reduceat."""
    rng = np.random.default_rng(3)
    n = 5000
    items = np.where(rng.random(n) < 0.8, 2, rng.integers(0, 5, n)).astype(np.int64)
    ids = np.where(rng.random((n, 3)) < 0.7, 7, rng.integers(0, 50, (n, 3)))
    probs = rng.random((n, 3))
    acc = PathScoreAccumulator(5, 4)
    old = LegacyAccumulator(5, 4)
    for lo in range(0, n, 333):
        acc.add(items[lo : lo + 333], ids[lo : lo + 333], probs[lo : lo + 333])
        old.add(items[lo : lo + 333], ids[lo : lo + 333], probs[lo : lo + 333])
    _assert_same(acc.result(), old.result())


@pytest.mark.parametrize("key_bits", [63, 40, 0])
def test_accumulator_edge_cases(key_bits: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """No items; no rows; only padding; zero-width rows; items with no triples; ties; path ids
    past int32 (the buffers switch to int64) and afterwards small ones again; packed keys, or
    ids too wide to pack (key_bits 40: 2**40 needs 41 bits)."""
    monkeypatch.setattr(assignment, "_KEY_BITS", key_bits)
    empty = PathScoreAccumulator(0, 3)
    empty.add(np.zeros(0, np.int64), np.zeros((0, 4), np.int64), np.zeros((0, 4)))
    out = empty.result()
    assert out.path_ids.shape == (0, 3) and out.counts.shape == (0,)

    # (sizes as NumPy integers, as score_paths passes its item bounds)
    acc = PathScoreAccumulator(np.int64(6), np.int64(3), n_buckets=np.int64(2))
    old = LegacyAccumulator(6, 3, n_buckets=2)
    batches = [
        (np.zeros(0, np.int64), np.zeros((0, 3), np.int64), np.zeros((0, 3))),
        (np.array([1, 1]), np.full((2, 3), -1), np.zeros((2, 3))),  # counts only
        (np.array([4]), np.zeros((1, 0), np.int64), np.zeros((1, 0))),  # zero-width
        (np.array([0, 0, 5]), np.array([[3, 2, 1], [1, 2, 3], [9, -1, 9]]),
         np.array([[0.25, 0.25, 0.5], [0.5, 0.25, 0.25], [0.5, 0.0, 0.25]])),  # ties, repeats
        (np.array([5, 2]), np.array([[2**40, 2**33, -1], [7, 2**31, 2**31 - 1]]),
         np.array([[0.125, 0.125, 0.0], [0.5, 0.5, 0.5]])),
        (np.array([0]), np.array([[2, 3, 4]]), np.array([[0.0, 0.0, 0.125]])),
    ]
    for batch in batches:
        acc.add(*batch)
        old.add(*batch)
    got = acc.result()
    _assert_same(got, old.result())
    assert got.path_ids.tolist() == [
        [1, 2, 3], [-1, -1, -1], [7, 2**31 - 1, 2**31], [-1, -1, -1], [-1, -1, -1],
        [9, 2**33, 2**40],
    ]
    assert got.counts.tolist() == [3, 2, 1, 0, 1, 2]
    # result() consumes the triples; the counts stay
    again = acc.result()
    assert (again.path_ids == -1).all() and again.counts.tolist() == got.counts.tolist()


@pytest.mark.parametrize("seed", range(3))
def test_accumulator_result_with_held_equals_with_held_paths(seed: int) -> None:
    """result(held, held_scores) = with_held_paths(result(), held, held_scores), bit for bit,
    = the legacy row-wise argsorts; items without triples get their held paths alone."""
    rng = np.random.default_rng(seed)
    n_items, j = 80, 3
    items, ids, probs = _rows(seed, 500, n_items, 5, 20, dyadic=seed == 0)
    held = random_distinct_path_ids(n_items, j, 30, rng)
    held_scores = rng.integers(0, 4, size=held.shape) / 4.0 if seed == 0 else rng.random(held.shape)
    a = PathScoreAccumulator(n_items, 6, n_buckets=3)
    b = PathScoreAccumulator(n_items, 6, n_buckets=3)
    for lo, hi in _chunks(len(items), seed):
        a.add(items[lo:hi], ids[lo:hi], probs[lo:hi])
        b.add(items[lo:hi], ids[lo:hi], probs[lo:hi])
    fused = a.result(held, held_scores)
    plain = b.result()
    _assert_same(fused, with_held_paths(plain, held, held_scores))
    _assert_same(fused, legacy_with_held_paths(plain, held, held_scores))
    untouched = np.flatnonzero(plain.counts == 0)
    assert untouched.size
    assert (np.sort(fused.path_ids[untouched, :j], 1) == np.sort(held[untouched], 1)).all()
    with pytest.raises(ValueError, match="both"):
        a.result(held, None)
    with pytest.raises(ValueError, match="shape"):
        PathScoreAccumulator(n_items, 6).result(held[:3], held_scores[:3])
    with pytest.raises(ValueError, match="finite"):
        PathScoreAccumulator(n_items, 6).result(held, -held_scores - 1)


def test_accumulator_same_for_any_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    items, ids, probs = _rows(11, 3000, 500, 6, 100)
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(assignment, "_n_threads", lambda threads=threads: threads)
        acc = PathScoreAccumulator(500, 5, n_buckets=9)
        for lo in range(0, len(items), 256):
            acc.add(items[lo : lo + 256], ids[lo : lo + 256], probs[lo : lo + 256])
        results.append(acc.result())
    for other in results[1:]:
        _assert_same(other, results[0])


def test_accumulator_as_plain_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without numba the kernels run as the very same Python functions: same result."""
    items, ids, probs = _rows(4, 150, 30, 4, 12)
    held = random_distinct_path_ids(30, 2, 12, 0)
    held_scores = np.full(held.shape, 0.25)

    def run() -> PathScores:
        acc = PathScoreAccumulator(30, 3, n_buckets=2)
        for lo in range(0, len(items), 40):
            acc.add(items[lo : lo + 40], ids[lo : lo + 40], probs[lo : lo + 40])
        return acc.result(held, held_scores)

    compiled = run()
    for name in ("_split_chunk", "_pairwise_sum", "_group_bucket", "_top_groups",
                 "_insert_ranked", "_merge_held_row", "_check_rows_kernel", "_pack_keys",
                 "_sum_sorted_runs"):
        monkeypatch.setattr(assignment, name, getattr(assignment, f"{name}_py"))
    _assert_same(run(), compiled)


# --------------------------------------------------------------------------------------------
# Kernels against their plain-Python runs and NumPy


def test_pairwise_sum_is_numpy_reduceat() -> None:
    rng = np.random.default_rng(0)
    values = rng.random(5000)
    for n in [*range(1, 300), 1000, 1023, 4999]:
        want = np.add.reduceat(values[:n], [0])[0]
        got = values[0] + (assignment._pairwise_sum(values, 1, n - 1) if n > 1 else 0.0)
        assert (got if n > 1 else values[0]) == want, n
        if n < 200:
            assert assignment._pairwise_sum_py(values, 1, n - 1) == assignment._pairwise_sum(
                values, 1, n - 1)


def test_group_bucket_compiled_equals_python() -> None:
    """The grouping kernel compiled and as plain Python, with earlier sums in front, popular
    items (the mergesort branch) and items without triples."""
    rng = np.random.default_rng(2)
    n_local, m = 60, 3000
    raw_items = np.minimum(rng.geometric(0.08, m) - 1, 44).astype(np.int32)  # 45..59: none
    raw_paths = rng.integers(0, 30, m).astype(np.int32)
    raw_values = rng.random(m).astype(np.float32)
    s_items = np.repeat(np.arange(0, n_local, 3), 2).astype(np.int32)
    s_paths = np.tile([4, 9], len(s_items) // 2).astype(np.int64)
    s_values = rng.random(len(s_items))
    args = (s_items, s_paths, s_values, raw_items, raw_paths, raw_values)

    def run(kernel):  # work arrays dirty from an earlier use, as when reused across buckets
        size = len(s_items) + m + 5
        work = (np.full(size, 99, np.int64), np.full(size, np.nan), np.full(n_local + 1, 7),
                np.full(n_local + 1, -3))
        kernel(*args, *work)
        return work[0], work[1], work[3]

    fast, slow = run(assignment._group_bucket), run(assignment._group_bucket_py)
    n = int(fast[2][-1])
    np.testing.assert_array_equal(fast[2], slow[2])
    np.testing.assert_array_equal(fast[0][:n], slow[0][:n])
    np.testing.assert_array_equal(fast[1][:n], slow[1][:n])
    # the same sums as the NumPy grouping (stable sort, np.add.reduceat)
    items = np.concatenate([s_items, raw_items]).astype(np.int64)
    paths = np.concatenate([s_paths, raw_paths]).astype(np.int64)
    values = np.concatenate([s_values, raw_values.astype(np.float64)])
    order = np.lexsort((paths, items))
    items, paths, values = items[order], paths[order], values[order]
    new = np.r_[True, (items[1:] != items[:-1]) | (paths[1:] != paths[:-1])]
    np.testing.assert_array_equal(fast[0][:n], paths[new])
    np.testing.assert_array_equal(fast[1][:n], np.add.reduceat(values, np.flatnonzero(new)))
    np.testing.assert_array_equal(fast[2], np.searchsorted(items[new], np.arange(n_local + 1)))
    # the packed-key route: same groups and sums, compiled and plain Python
    path_bits, pos_bits = 5, 12
    for pack, runs in [(assignment._pack_keys, assignment._sum_sorted_runs),
                       (assignment._pack_keys_py, assignment._sum_sorted_runs_py)]:
        keys = np.empty(len(items), np.int64)
        pack(s_items, s_paths, raw_items, raw_paths, keys, path_bits, pos_bits)
        keys.sort()
        sums, groups = np.full(len(keys), np.nan), np.full(n_local + 1, -3)
        runs(keys, s_values, raw_values, sums, groups, path_bits, pos_bits)
        np.testing.assert_array_equal(groups, fast[2])
        np.testing.assert_array_equal(keys[:n], fast[0][:n])
        np.testing.assert_array_equal(sums[:n], fast[1][:n])
    assert (np.diff(fast[2]) == 0).any()  # some items have no triples


@pytest.mark.parametrize("seed", range(3))
def test_with_held_paths_equals_legacy(seed: int) -> None:
    """Ties among candidates and held scores, held paths that are candidates too, empty slots
    anywhere in the input rows, compiled and plain-Python kernel."""
    rng = np.random.default_rng(seed)
    n_items, s, j = 120, 7, 3
    ids = np.stack([rng.choice(25, s, replace=False) for _ in range(n_items)])
    ids[rng.random(ids.shape) < 0.3] = -1
    scores = PathScores(ids, np.where(ids >= 0, rng.integers(0, 4, ids.shape) / 4.0, 0.0),
                        rng.integers(0, 3, n_items))
    held = random_distinct_path_ids(n_items, j, 25, rng)
    held_scores = rng.integers(0, 4, held.shape) / 4.0
    want = legacy_with_held_paths(scores, held, held_scores)
    _assert_same(with_held_paths(scores, held, held_scores), want)
    out_ids = np.empty((n_items, s + j), np.int64)
    out_scores = np.empty((n_items, s + j))
    assignment._held_rows_kernel_py(ids, scores.scores, held, held_scores, out_ids, out_scores)
    np.testing.assert_array_equal(out_ids, want.path_ids)
    np.testing.assert_array_equal(out_scores, want.scores)
    with pytest.raises(ValueError, match="finite"):
        with_held_paths(scores, held, np.full(held.shape, np.nan))


def test_row_checks() -> None:
    """PathScores' compiled row checks: the first row listing a path twice (a global index past
    the first row block), ids below -1, scores not finite or negative; as plain Python too."""
    ids = np.array([[0, 1, -1, -1], [2, -1, 2, 3], [-1, -1, 5, 6], [4, 4, 4, 4]])
    zeros = np.zeros(ids.shape)
    assert assignment._first_repeated_row(ids) == 1
    assert assignment._check_rows_kernel_py(ids, zeros) == (False, False, 1)
    assert assignment._check_rows(ids, zeros) == (False, False, 1)
    assert assignment._first_repeated_row(ids[[0, 2]]) == -1
    assert assignment._first_repeated_row(np.zeros((3, 1), np.int64)) == -1
    assert assignment._first_repeated_row(np.zeros((0, 4), np.int64)) == -1
    with pytest.raises(ValueError, match="item 1 lists a path twice"):
        PathScores(ids, zeros, np.zeros(4, np.int64))
    big = np.tile(np.arange(3), (assignment._ROW_BLOCK + 10, 1))
    big[assignment._ROW_BLOCK + 4] = [7, 8, 7]
    assert assignment._first_repeated_row(big) == assignment._ROW_BLOCK + 4
    good = ids[[0, 2]]
    for bad_scores in ([[0.0, 1.0, 0.0, -0.5], [0.0] * 4], [[0.0] * 4, [np.inf, 0, 0, 0]],
                       [[0.0] * 4, [0.0, np.nan, 0.0, 0.0]]):
        assert assignment._check_rows(good, np.array(bad_scores))[:2] == (False, True)
        with pytest.raises(ValueError, match="scores must be finite"):
            PathScores(good, np.array(bad_scores), np.zeros(2, np.int64))
    assert assignment._check_rows(good, np.array([[-0.0] * 4, [0.0] * 4])) == (False, False, -1)
    with pytest.raises(ValueError, match="got -3"):
        PathScores(np.array([[0, -3]]), np.zeros((1, 2)), np.zeros(1, np.int64))
    # the first failing check speaks: ids before scores before counts before repeats
    with pytest.raises(ValueError, match="path ids must be"):
        PathScores(np.array([[1, 1, -2]]), np.full((1, 3), np.nan), np.array([-1]))
    with pytest.raises(ValueError, match="counts must be"):
        PathScores(np.array([[1, 1]]), np.zeros((1, 2)), np.array([-1]))


def test_active_items() -> None:
    rng = np.random.default_rng(1)
    ids = np.where(rng.random((500, 4)) < 0.7, -1, rng.integers(0, 9, (500, 4)))
    counts = rng.integers(0, 3, 500)
    want = (counts > 0) & (ids >= 0).any(axis=1)
    np.testing.assert_array_equal(assignment._active_items(counts, ids), want)
    np.testing.assert_array_equal(assignment._active_items_py(counts, ids), want)


# --------------------------------------------------------------------------------------------
# Descent statistics


def _scores(seed: int, n_items: int = 200, n_paths: int = 40) -> PathScores:
    items, ids, probs = _rows(seed, 800, n_items, 5, n_paths)
    base = accumulate_path_scores(items, ids, probs, n_items, 6)
    held = random_distinct_path_ids(n_items, 2, n_paths, seed)
    return with_held_paths(base, held, np.full(held.shape, 0.01))


@pytest.mark.parametrize("seed", range(3))
def test_objective_equals_legacy_to_rounding(seed: int) -> None:
    scores = _scores(seed)
    pi = random_distinct_path_ids(scores.n_items, 2, 40, seed)
    pi[:50] = scores.path_ids[:50, :2]  # some held paths score, others do not
    for penalty, power in [(0.0, 4.0), (1e-3, 4.0), (0.5, 2.5)]:
        got = assignment_objective(scores, pi, penalty, power)
        want = legacy_objective(scores, pi, penalty, power)
        assert got == pytest.approx(want, rel=1e-12)
    scored = pi.copy()
    scored[:, :2] = scores.path_ids[:, :2]  # every item holds a candidate
    got = assignment_objective(scores, scored, 1e-3, 4.0)
    assert np.isfinite(got)
    assert got == pytest.approx(legacy_objective(scores, scored, 1e-3, 4.0), rel=1e-12)


def test_count_paths_and_likelihood_over_moved_rows() -> None:
    """The descent's helpers: path counts over the fixed rows (= np.bincount), and the
    likelihood with the moved rows passed apart (= over the whole table, the same float)."""
    rng = np.random.default_rng(4)
    scores = _scores(4)
    pi = random_distinct_path_ids(scores.n_items, 2, 40, rng)
    skip = rng.random(scores.n_items) < 0.4
    want = np.bincount(pi[~skip].ravel(), minlength=45)
    np.testing.assert_array_equal(assignment._count_paths(pi, skip, 45), want)
    np.testing.assert_array_equal(assignment._count_paths_py(pi, skip, 45), want)
    moved = np.flatnonzero(skip)
    other = random_distinct_path_ids(scores.n_items, 2, 40, rng)
    other[:, 0] = scores.path_ids[:, 0]
    mixed = pi.copy()
    mixed[moved] = other[moved]
    counts = scores.counts.astype(np.float64)
    whole = assignment._likelihood_kernel(scores.path_ids, scores.scores, counts, mixed,
                                          moved[:0], mixed[:0])
    split = assignment._likelihood_kernel(scores.path_ids, scores.scores, counts, pi, moved,
                                          other[moved])
    slow = assignment._likelihood_kernel_py(scores.path_ids, scores.scores, counts, pi, moved,
                                            other[moved])
    assert whole == split == slow


def test_n_changed_kernel() -> None:
    rng = np.random.default_rng(0)
    before = random_distinct_path_ids(300, 3, 10, rng)
    after = before.copy()
    after[::3] = before[::3, ::-1]  # same sets, other order
    after[1::7] = random_distinct_path_ids(len(after[1::7]), 3, 10, rng)
    want = assignment._n_changed(before, after)
    assert assignment._n_changed_kernel(before, after) == want
    assert assignment._n_changed_kernel_py(before, after) == want


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("seed", range(3))
def test_assign_paths_stats_on_threads(
    threads: int, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statistics computed beside the next sweep (or inline on one thread) are those of
    the reference, and the stats' last objective is assignment_objective's exactly."""
    monkeypatch.setattr(assignment, "_n_threads", lambda: threads)
    scores = _scores(seed)
    kwargs = {"paths_per_item": 2, "penalty": 1e-3, "n_paths": 40, "n_sweeps": 4, "rng": seed,
              "previous": random_distinct_path_ids(scores.n_items, 2, 40, seed + 1)}
    fast, stats = assign_paths(scores, **kwargs)
    ref, ref_stats = assign_paths_reference(scores, **kwargs)
    np.testing.assert_array_equal(fast, ref)
    assert stats["n_changed"] == ref_stats["n_changed"]
    np.testing.assert_allclose(stats["objective"], ref_stats["objective"], rtol=1e-12)
    assert stats["objective"][-1] == assignment_objective(scores, fast, 1e-3)
