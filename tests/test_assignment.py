from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from deep_retrieval.core import assignment
from deep_retrieval.core.assignment import (
    GreedySweep,
    PathScoreAccumulator,
    PathScores,
    StreamingPathScores,
    accumulate_path_scores,
    assign_paths,
    assign_paths_reference,
    assignment_objective,
    merge_path_scores,
    place_paths,
    place_paths_reference,
    streaming_update,
    with_held_paths,
)
from deep_retrieval.core.paths import random_distinct_path_ids

# --------------------------------------------------------------------------------------------
# Path scores


def _random_batch(
    seed: int, n: int = 300, n_items: int = 20, width: int = 5, n_paths: int = 12
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    items = rng.integers(0, n_items, size=n)
    path_ids = rng.integers(-1, n_paths, size=(n, width))  # -1 = padding; repeats across rows
    probs = rng.random((n, width))
    return items, path_ids, probs


def _dict_scores(items, path_ids, probs, n_items, n_keep) -> tuple[list[list], Counter]:
    total: dict[tuple[int, int], float] = defaultdict(float)
    for v, row_ids, row_probs in zip(
        items.tolist(), path_ids.tolist(), probs.tolist(), strict=True
    ):
        for c, p in zip(row_ids, row_probs, strict=True):
            if c >= 0:
                total[v, c] += p
    rows: list[list] = [[] for _ in range(n_items)]
    for (v, c), s in total.items():
        rows[v].append((-s, c))
    return [sorted(r)[:n_keep] for r in rows], Counter(items.tolist())


@pytest.mark.parametrize("n_keep", [1, 4, 50])
@pytest.mark.parametrize("seed", [0, 1])
def test_accumulate_matches_dict_reference(n_keep: int, seed: int) -> None:
    items, path_ids, probs = _random_batch(seed)
    scores = accumulate_path_scores(items, path_ids, probs, n_items=22, n_keep=n_keep)
    rows, counts = _dict_scores(items, path_ids, probs, 22, n_keep)
    assert scores.path_ids.shape == (22, n_keep)
    for v in range(22):
        got = [(c, s) for c, s in zip(scores.path_ids[v], scores.scores[v], strict=True) if c >= 0]
        assert [c for c, _ in got] == [c for _, c in rows[v]]
        np.testing.assert_allclose([s for _, s in got], [-s for s, _ in rows[v]])
        assert (scores.path_ids[v, len(got):] == -1).all()
        assert scores.counts[v] == counts[v]


def test_merge_of_chunks_equals_one_pass() -> None:
    items, path_ids, probs = _random_batch(3)
    whole = accumulate_path_scores(items, path_ids, probs, n_items=20, n_keep=12)
    a = accumulate_path_scores(items[:170], path_ids[:170], probs[:170], n_items=20, n_keep=12)
    b = accumulate_path_scores(items[170:], path_ids[170:], probs[170:], n_items=20, n_keep=12)
    merged = merge_path_scores(a, b)
    np.testing.assert_array_equal(merged.path_ids, whole.path_ids)
    np.testing.assert_allclose(merged.scores, whole.scores)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    # Truncating only after the merge keeps the one-pass top-S exactly.
    top3 = merge_path_scores(a, b, n_keep=3)
    np.testing.assert_array_equal(top3.path_ids, whole.path_ids[:, :3])
    with pytest.raises(ValueError, match="items"):
        merge_path_scores(a, PathScores.empty(5, 12))


def test_streaming_update_hand_example() -> None:
    # η = 1/2 and dyadic numbers keep every value exact.
    state = PathScores(
        np.array([[5, 2, 7], [-1, -1, -1]]),
        np.array([[0.5, 0.25, 0.125], [0.0, 0.0, 0.0]]),
        np.array([4, 0]),
    )
    items = np.array([0, 1, 0])
    path_ids = np.array([[2, 9, 4], [3, 8, -1], [5, 1, -1]])
    probs = np.array([[0.5, 0.25, 0.0625], [0.5, 0.25, 0.0], [0.25, 0.5, 0.0]])
    new = streaming_update(state, items, path_ids, probs, decay=0.5)
    # Item 0, first instance (min_score 0.125):
    #   2: both  0.5·0.25 + 0.5 = 0.625;   5: old 0.5·0.5 = 0.25;   7: old 0.5·0.125 = 0.0625
    #   9: new   0.5·0.125 + 0.25 = 0.3125; 4: new 0.5·0.125 + 0.0625 = 0.125
    #   -> [2, 9, 5] with [0.625, 0.3125, 0.25]
    # Item 0, second instance (min_score 0.25):
    #   5: both 0.5·0.25 + 0.25 = 0.375;  2: old 0.3125;  9: old 0.15625
    #   1: new  0.5·0.25 + 0.5 = 0.625
    #   -> [1, 5, 2] with [0.625, 0.375, 0.3125]
    # Item 1: empty list, min_score 0 -> [3, 8] with [0.5, 0.25]
    assert new.path_ids.tolist() == [[1, 5, 2], [3, 8, -1]]
    assert new.scores.tolist() == [[0.625, 0.375, 0.3125], [0.5, 0.25, 0.0]]
    assert new.counts.tolist() == [6, 1]
    assert state.path_ids.tolist() == [[5, 2, 7], [-1, -1, -1]]  # input untouched


def test_streaming_ties_go_to_smaller_path_id() -> None:
    state = PathScores.empty(1, 2)
    new = streaming_update(state, np.array([0]), np.array([[7, 3, 5]]), np.array([[0.5] * 3]))
    assert new.path_ids.tolist() == [[3, 5]]


def test_streaming_without_decay_or_eviction_equals_batch() -> None:
    items, path_ids, probs = _random_batch(4)
    batch = accumulate_path_scores(items, path_ids, probs, n_items=20, n_keep=12)
    stream = streaming_update(PathScores.empty(20, 12), items, path_ids, probs, decay=1.0)
    np.testing.assert_array_equal(stream.path_ids, batch.path_ids)
    np.testing.assert_allclose(stream.scores, batch.scores)
    np.testing.assert_array_equal(stream.counts, batch.counts)


def test_streaming_python_kernel_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    items, path_ids, probs = _random_batch(5, n=80, width=4)
    state = PathScores.empty(20, 3)
    compiled = streaming_update(state, items, path_ids, probs, decay=0.9)
    monkeypatch.setattr(assignment, "_streaming_kernel", assignment._streaming_kernel_py)
    plain = streaming_update(state, items, path_ids, probs, decay=0.9)
    np.testing.assert_array_equal(plain.path_ids, compiled.path_ids)
    np.testing.assert_array_equal(plain.scores, compiled.scores)


@pytest.mark.parametrize("python_kernel", [False, True])
def test_streaming_path_scores_equal_repeated_streaming_update(
    python_kernel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if python_kernel:
        monkeypatch.setattr(assignment, "_streaming_kernel", assignment._streaming_kernel_py)
    items, path_ids, probs = _random_batch(6, n=400, width=5)
    state = PathScores.empty(20, 4)
    inplace = StreamingPathScores(20, 4)
    assert (inplace.n_items, inplace.n_keep) == (20, 4)
    snapshots = []
    for lo, decay in zip(range(0, 400, 90), [0.9, 1.0, 0.5, 0.999, 0.75], strict=True):
        chunk = (items[lo : lo + 90], path_ids[lo : lo + 90], probs[lo : lo + 90])
        state = streaming_update(state, *chunk, decay=decay)
        inplace.merge(*chunk, decay=decay)
        got = inplace.snapshot()
        np.testing.assert_array_equal(got.path_ids, state.path_ids)
        np.testing.assert_array_equal(got.scores, state.scores)  # the same kernel: bit for bit
        np.testing.assert_array_equal(got.counts, state.counts)
        snapshots.append(got)
    # A snapshot is a copy: later merges leave it as it was.
    assert snapshots[0].counts.sum() == 90 and snapshots[-1].counts.sum() == 400
    with pytest.raises(ValueError, match="decay"):
        inplace.merge(items[:1], path_ids[:1], probs[:1], decay=0.0)
    with pytest.raises(ValueError, match="n_items=20"):
        inplace.merge(np.array([20]), path_ids[:1], probs[:1])
    np.testing.assert_array_equal(inplace.snapshot().counts, state.counts)  # rejected: no change


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="twice"):
        PathScores(np.array([[1, 1]]), np.array([[0.5, 0.5]]), np.array([1]))
    with pytest.raises(ValueError, match="shape"):
        PathScores(np.array([[1, 2]]), np.array([[0.5]]), np.array([1]))
    with pytest.raises(ValueError, match="n_items=3"):
        accumulate_path_scores(np.array([3]), np.array([[0]]), np.array([[1.0]]), 3, 2)
    with pytest.raises(ValueError, match="log_probs"):
        accumulate_path_scores(np.array([0]), np.array([[0]]), np.array([[-1.0]]), 3, 2)
    with pytest.raises(ValueError, match="decay"):
        streaming_update(
            PathScores.empty(2, 2), np.array([0]), np.array([[0]]), np.array([[1.0]]), decay=0
        )


# --------------------------------------------------------------------------------------------
# Greedy assignment


def _random_scores(
    seed: int, n_items: int = 150, n_keep: int = 6, n_paths: int = 30
) -> PathScores:
    """Skewed candidates (popular low path ids) so path sizes compete; some items have no
    interactions, some no candidates, some fewer candidates than J."""
    rng = np.random.default_rng(seed)
    n = n_items * 4
    items = rng.integers(0, n_items, size=n)
    path_ids = np.minimum(rng.geometric(0.15, size=(n, 4)) - 1, n_paths - 1)
    scores = accumulate_path_scores(items, path_ids, rng.random((n, 4)), n_items, n_keep)
    counts = scores.counts.copy()
    counts[:10] = 0  # interactions dropped: these items must keep their paths
    ids = scores.path_ids.copy()
    ids[10:15] = -1  # counts but no candidates
    ids[15:25, 1:] = -1  # a single candidate
    vals = np.where(ids >= 0, scores.scores, 0.0)
    return PathScores(ids, vals, counts)


def _check_same(fast: tuple, ref: tuple) -> None:
    np.testing.assert_array_equal(fast[0], ref[0])
    np.testing.assert_allclose(fast[1]["objective"], ref[1]["objective"], rtol=1e-12)
    for key in ("n_changed", "largest_path_size", "n_active_items"):
        assert fast[1][key] == ref[1][key], key


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("paths_per_item", [1, 3])
@pytest.mark.parametrize("penalty", [0.0, 1e-3, 1.0])
@pytest.mark.parametrize("with_previous", [False, True])
def test_fast_equals_reference(
    seed: int, paths_per_item: int, penalty: float, with_previous: bool
) -> None:
    scores = _random_scores(seed)
    previous = None
    if with_previous:
        previous = random_distinct_path_ids(scores.n_items, paths_per_item, 30, rng=100 + seed)
    kwargs = {"paths_per_item": paths_per_item, "penalty": penalty, "n_paths": 30, "n_sweeps": 3,
              "previous": previous, "rng": seed, "power": 4}
    _check_same(assign_paths(scores, **kwargs), assign_paths_reference(scores, **kwargs))


def test_fast_equals_reference_remapped_ids_and_power_2() -> None:
    # K**D beyond the direct size table: the fast path works on compacted local path ids.
    scores = _random_scores(7)
    spread = PathScores(np.where(scores.path_ids >= 0, scores.path_ids * 33_333_331, -1),
                        scores.scores, scores.counts)
    kwargs = {"paths_per_item": 3, "penalty": 0.05, "n_paths": 10**9, "n_sweeps": 4, "rng": 3,
              "power": 2}
    _check_same(assign_paths(spread, **kwargs), assign_paths_reference(spread, **kwargs))


def test_python_kernel_equals_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assignment, "_sweep_kernel", assignment._sweep_kernel_py)
    monkeypatch.setattr(assignment, "_penalty_steps_kernel", assignment._penalty_steps_kernel_py)
    scores = _random_scores(8, n_items=60)
    kwargs = {"paths_per_item": 2, "penalty": 0.01, "n_paths": 30, "rng": 0}
    _check_same(assign_paths(scores, **kwargs), assign_paths_reference(scores, **kwargs))


def test_zero_penalty_picks_top_scored_candidates() -> None:
    rng = np.random.default_rng(0)
    n_items, n_keep = 40, 8
    ids = np.array([rng.permutation(50)[:n_keep] for _ in range(n_items)])
    scores = PathScores(ids, rng.random((n_items, n_keep)), np.full(n_items, 3))
    new, _ = assign_paths(scores, paths_per_item=3, penalty=0.0, n_paths=50, rng=0)
    best = np.take_along_axis(ids, np.argsort(-scores.scores, axis=1)[:, :3], axis=1)
    np.testing.assert_array_equal(new, best)  # in order of decreasing score


def test_large_penalty_lowers_largest_path() -> None:
    # Every item prefers paths 0, 1, 2 over its own, weaker candidates.
    n_items = 200
    ids = np.column_stack([np.arange(3).repeat(n_items).reshape(3, n_items).T,
                           3 + np.arange(n_items * 3).reshape(n_items, 3)])
    vals = np.tile([1.0, 0.9, 0.8, 0.3, 0.2, 0.1], (n_items, 1))
    scores = PathScores(ids, vals, np.full(n_items, 5))
    kwargs = {"paths_per_item": 2, "n_paths": 1000, "rng": 0}
    free, free_stats = assign_paths(scores, penalty=0.0, **kwargs)
    tight, tight_stats = assign_paths(scores, penalty=1e-4, **kwargs)
    assert free_stats["largest_path_size"] == n_items
    assert tight_stats["largest_path_size"] < n_items // 4  # observed 21
    for new in (free, tight):
        assert (new[:, 0] != new[:, 1]).all()
    sizes = Counter(tight.ravel().tolist())
    assert max(sizes.values()) == tight_stats["largest_path_size"]


def test_with_held_paths_adds_and_replaces() -> None:
    scores = PathScores(np.array([[5, 7, -1], [2, -1, -1]]),
                        np.array([[0.9, 0.4, 0.0], [0.3, 0.0, 0.0]]), np.array([4, 1]))
    held = np.array([[7, 1], [3, 4]])
    out = with_held_paths(scores, held, np.array([[0.6, 0.05], [0.0, 0.2]]))
    # item 0: path 7's beam sum 0.4 gives way to its exact 0.6; item 1 keeps a zero-score path
    np.testing.assert_array_equal(out.path_ids, [[5, 7, 1, -1, -1], [2, 4, 3, -1, -1]])
    np.testing.assert_allclose(out.scores, [[0.9, 0.6, 0.05, 0, 0], [0.3, 0.2, 0.0, 0, 0]])
    np.testing.assert_array_equal(out.counts, [4, 1])
    with pytest.raises(ValueError, match="shape"):
        with_held_paths(scores, held[:1], np.zeros((1, 2)))


def test_with_held_paths_equals_a_flat_reranking() -> None:
    """The row-wise sorts against the flat reference (_top_per_item over every slot), with ties."""
    rng = np.random.default_rng(7)
    n_items, s, j = 50, 6, 3
    base = accumulate_path_scores(
        *_random_batch(8, n=200, n_items=n_items, width=4, n_paths=15), n_items, s
    )
    held = np.stack([rng.choice(15, size=j, replace=False) for _ in range(n_items)])
    held_scores = rng.integers(0, 3, size=held.shape) / 4.0  # ties with each other and with zeros
    out = with_held_paths(base, held, held_scores)
    dup = (base.path_ids[:, :, None] == held[:, None, :]).any(2)
    ids = np.concatenate([np.where(dup, -1, base.path_ids), held], 1)
    vals = np.concatenate([base.scores, held_scores], 1)
    ref_ids, ref_scores = assignment._top_per_item(
        np.repeat(np.arange(n_items), s + j), ids.ravel(), vals.ravel(), n_items, s + j)
    np.testing.assert_array_equal(out.path_ids, ref_ids)
    np.testing.assert_allclose(out.scores, ref_scores)


@pytest.mark.parametrize("n_buckets", [1, 3, 7])
def test_accumulator_over_chunks_equals_one_batch(
    n_buckets: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunked, bucketed accumulation is the batch form exactly (no per-chunk top-S cut)."""
    items, path_ids, probs = _random_batch(9, n=600, n_items=40, width=6, n_paths=30)
    whole = accumulate_path_scores(items, path_ids, probs, n_items=40, n_keep=4)
    acc = PathScoreAccumulator(40, 4, n_buckets=n_buckets)
    for lo in range(0, 600, 170):
        acc.add(items[lo : lo + 170], path_ids[lo : lo + 170], probs[lo : lo + 170])
    got = acc.result()
    np.testing.assert_array_equal(got.path_ids, whole.path_ids)
    np.testing.assert_allclose(got.scores, whole.scores, rtol=1e-6)  # float32 storage
    np.testing.assert_array_equal(got.counts, whole.counts)
    with pytest.raises(ValueError, match="n_items"):
        acc.add(np.array([40]), np.array([[0]]), np.array([[1.0]]))
    # Compacting buckets along the way (summing repeated pairs early) changes nothing.
    monkeypatch.setattr(assignment, "_COMPACT_TRIPLES", 50)
    acc = PathScoreAccumulator(40, 4, n_buckets=n_buckets)
    for lo in range(0, 600, 170):
        acc.add(items[lo : lo + 170], path_ids[lo : lo + 170], probs[lo : lo + 170])
    assert max(len(p) for p in acc._parts) <= 2
    got = acc.result()
    np.testing.assert_array_equal(got.path_ids, whole.path_ids)
    np.testing.assert_allclose(got.scores, whole.scores, rtol=1e-6)


def test_held_paths_prevent_collapse_onto_shared_candidates() -> None:
    # What beam search gives early in training: every item's candidates are the same few
    # popular paths, so without its own paths an item can only crowd onto them.
    n_items, n_shared = 400, 6
    ids = np.tile(np.arange(n_shared), (n_items, 1))
    vals = np.tile(np.linspace(1.0, 0.5, n_shared), (n_items, 1))
    shared = PathScores(ids, vals, np.full(n_items, 3))
    held = n_shared + np.arange(n_items * 2).reshape(n_items, 2)  # each item's own paths
    kwargs = {"paths_per_item": 2, "penalty": 3e-5, "n_paths": n_shared + held.size, "rng": 0,
              "previous": held}
    _, crowded = assign_paths(shared, **kwargs)
    _, spread = assign_paths(with_held_paths(shared, held, np.full(held.shape, 0.1)), **kwargs)
    assert crowded["largest_path_size"] >= n_items * 2 // n_shared  # observed 134
    # Paths fill until α·n³ ≈ N_v·log(1.0 / 0.1), i.e. n ≈ 61, then items stay on their own.
    assert spread["largest_path_size"] < 70  # observed 61
    assert spread["objective"][-1] > crowded["objective"][-1]


def test_paths_distinct_and_deterministic() -> None:
    scores = _random_scores(11)
    kwargs = {"paths_per_item": 3, "penalty": 0.01, "n_paths": 30, "n_sweeps": 3}
    a, stats_a = assign_paths(scores, rng=5, **kwargs)
    b, stats_b = assign_paths(scores, rng=5, **kwargs)
    np.testing.assert_array_equal(a, b)
    assert stats_a == stats_b
    rows = np.sort(a, axis=1)
    assert (rows[:, 1:] != rows[:, :-1]).all()
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() < 30
    assert len(stats_a["objective"]) == 3 and len(stats_a["n_changed"]) == 3


def test_items_without_interactions_keep_their_paths() -> None:
    scores = _random_scores(12)
    previous = random_distinct_path_ids(scores.n_items, 3, 30, rng=0)
    new, stats = assign_paths(scores, paths_per_item=3, penalty=0.01, n_paths=30,
                              previous=previous, rng=1)
    fixed = (scores.counts == 0) | (scores.path_ids < 0).all(axis=1)
    assert fixed[:15].all()
    np.testing.assert_array_equal(new[fixed], previous[fixed])
    assert stats["n_active_items"] == int((~fixed).sum())
    # A single candidate: it comes first, then previous paths in order, skipping duplicates.
    for v in range(15, 25):
        cand = int(scores.path_ids[v, 0])
        rest = [c for c in previous[v].tolist() if c != cand][:2]
        assert new[v].tolist() == [cand, *rest]
    # Without previous paths, fixed items get random distinct ones.
    new, _ = assign_paths(scores, paths_per_item=3, penalty=0.01, n_paths=30, rng=1)
    rows = np.sort(new[fixed], axis=1)
    assert (rows[:, 1:] != rows[:, :-1]).all()


def test_fixed_items_count_in_path_sizes() -> None:
    # 50 items without interactions sit on path 0; one active item prefers path 0 only slightly.
    n_items = 51
    ids = np.full((n_items, 2), -1)
    ids[50] = [0, 1]
    vals = np.zeros((n_items, 2))
    vals[50] = [0.6, 0.5]
    counts = np.zeros(n_items, dtype=np.int64)
    counts[50] = 1
    previous = np.zeros((n_items, 1), dtype=np.int64)
    scores = PathScores(ids, vals, counts)
    crowded, _ = assign_paths(scores, paths_per_item=1, penalty=1e-5, n_paths=4,
                              previous=previous, rng=0)
    elsewhere, _ = assign_paths(scores, paths_per_item=1, penalty=1e-5, n_paths=4,
                                previous=np.full((n_items, 1), 2), rng=0)
    # Path 0 with 50 fixed items: log 0.6 − 1e-5·(51⁴ − 50⁴)/4 ≈ −0.51 − 1.29 < log 0.5 ≈ −0.69.
    assert crowded[50, 0] == 1
    assert elsewhere[50, 0] == 0


def test_objective_hand_example() -> None:
    scores = PathScores(
        np.array([[3, 1, -1], [1, 2, 0]]),
        np.array([[2.0, 1.0, 0.0], [0.5, 0.25, 0.125]]),
        np.array([4, 2]),
    )
    pi = np.array([[3, 2], [1, 0]])  # item 0: path 2 is no candidate and adds nothing
    expected = 4 * math.log(2.0) + 2 * math.log(0.625) - 0.5 * (1 + 1 + 1 + 1) / 4
    assert assignment_objective(scores, pi, penalty=0.5, power=4) == pytest.approx(expected)
    pi = np.array([[3, 1], [3, 1]])  # sizes 2, 2
    expected = 4 * math.log(3.0) + 2 * math.log(0.5) - 0.5 * (2**4 + 2**4) / 4
    assert assignment_objective(scores, pi, penalty=0.5, power=4) == pytest.approx(expected)


def test_assignment_validation() -> None:
    scores = _random_scores(0, n_items=30)
    with pytest.raises(ValueError, match="penalty"):
        assign_paths(scores, paths_per_item=2, penalty=-1.0, n_paths=30)
    with pytest.raises(ValueError, match="n_paths=20"):
        assign_paths(scores, paths_per_item=2, penalty=0.0, n_paths=20)
    with pytest.raises(ValueError, match="shape"):
        assign_paths(scores, paths_per_item=2, penalty=0.0, n_paths=30,
                     previous=np.zeros((30, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="distinct"):
        assign_paths(scores, paths_per_item=2, penalty=0.0, n_paths=30,
                     previous=np.zeros((30, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="n_sweeps"):
        assign_paths(scores, paths_per_item=2, penalty=0.0, n_paths=30, n_sweeps=0)


def test_greedy_sweep_in_blocks_equals_assign_paths() -> None:
    """Blocks of a sweep, with the sizes kept by the caller, are assign_paths' sweeps exactly
    (one process: the sizes the kernel leaves are the next block's)."""
    scores = _random_scores(13)
    previous = random_distinct_path_ids(scores.n_items, 3, 30, rng=4)
    kwargs = {"paths_per_item": 3, "penalty": 0.01, "n_paths": 30, "n_sweeps": 3, "power": 4}
    ref, stats = assign_paths(scores, previous=previous, rng=9, **kwargs)
    greedy = GreedySweep(scores, previous, penalty=0.01, power=4)
    assert greedy.paths_per_item == 3 and int(greedy.active.sum()) == stats["n_active_items"]
    rng = np.random.default_rng(9)  # assign_paths draws one order per sweep from its rng
    visit = np.flatnonzero(greedy.active)
    paths = previous.copy()
    sizes = np.bincount(previous[~greedy.active].ravel(), minlength=30).astype(np.int64)
    for sweep in range(3):
        for block in np.array_split(rng.permutation(visit), 7):
            greedy.sweep(block, paths, sizes, release=sweep > 0)
    np.testing.assert_array_equal(paths, ref)
    np.testing.assert_array_equal(sizes, np.bincount(ref.ravel(), minlength=30))
    with pytest.raises(TypeError, match="int64"):
        greedy.sweep(visit, paths.astype(np.int32), sizes, release=True)
    with pytest.raises(ValueError, match="sizes"):
        greedy.sweep(visit, paths, sizes[:10], release=True)
    with pytest.raises(ValueError, match="order"):
        greedy.sweep(np.array([scores.n_items]), paths, sizes, release=True)
    with pytest.raises(ValueError, match="distinct"):
        GreedySweep(scores, np.zeros_like(previous), penalty=0.01)


# --------------------------------------------------------------------------------------------
# Placing new items against fixed ones


def _placement_case(seed: int, power: float = 4) -> tuple[PathScores, np.ndarray, dict]:
    """New items with >= J scored candidates among skewed popular paths (plus zero-score and
    empty slots, zero counts, equal scores), old items on the same paths."""
    rng = np.random.default_rng(seed)
    n_new, n_old, n_paths, n_keep = int(rng.integers(1, 40)), int(rng.integers(0, 300)), 40, 8
    j = int(rng.integers(1, 4))
    ids = np.full((n_new, n_keep), -1, dtype=np.int64)
    vals = np.zeros((n_new, n_keep))
    for v in range(n_new):
        k = int(rng.integers(j, n_keep + 1))
        pool = np.unique(np.minimum(rng.geometric(0.12, size=4 * n_keep) - 1, n_paths - 1))
        pool = pool if len(pool) >= k else np.arange(n_paths)
        slots = rng.permutation(n_keep)[:k]
        ids[v, slots] = rng.choice(pool, size=k, replace=False)
        vals[v, slots] = rng.choice([0.25, 0.5, 1.0], size=k) if seed % 3 == 0 else rng.random(k)
        if k > j:  # a candidate scoring 0 is no candidate
            vals[v, slots[-1]] = 0.0
    counts = rng.integers(0, 6, size=n_new)
    old = np.zeros((0, j), np.int64)
    if n_old:
        old = np.stack([rng.choice(n_paths, j, replace=False) for _ in range(n_old)])
    kwargs = {"paths_per_item": j, "penalty": float(rng.choice([0.0, 1e-4, 1e-3, 1e-2, 0.1, 1.0])),
              "n_sweeps": int(rng.integers(1, 5)), "power": power}
    return PathScores(ids, vals, counts), old, kwargs


@pytest.mark.parametrize("power", [4, 2, 3, 2.5])
@pytest.mark.parametrize("seed", range(12))
def test_place_paths_equals_the_reference_at_every_power(seed: int, power: float) -> None:
    """place_paths on the compiled kernel against its plain-Python twin (which replaced
    catalogue.place_items, and was checked equal to it bit for bit before it went)."""
    scores, old, kwargs = _placement_case(seed, power)
    fixed = np.unique(old, return_counts=True)
    np.testing.assert_array_equal(
        place_paths(scores, fixed, **kwargs), place_paths_reference(scores, fixed, **kwargs)
    )


@pytest.mark.parametrize("python_kernel", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_place_paths_equals_reference(
    seed: int, python_kernel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if python_kernel:
        monkeypatch.setattr(assignment, "_sweep_kernel", assignment._sweep_kernel_py)
    scores, old, kwargs = _placement_case(seed, power=[4, 2, 3.5][seed % 3])
    fixed = np.unique(old, return_counts=True)
    fast = place_paths(scores, fixed, **kwargs)
    np.testing.assert_array_equal(fast, place_paths_reference(scores, fixed, **kwargs))
    assert fast.dtype == np.int64 and fast.shape == (scores.n_items, kwargs["paths_per_item"])
    scored = [set(c[s > 0].tolist()) for c, s in zip(scores.path_ids, scores.scores, strict=True)]
    for row, allowed in zip(fast.tolist(), scored, strict=True):
        assert len(set(row)) == len(row) and set(row) <= allowed
    # Repeated fixed path ids add up: one (path, 1) pair per old slot gives the same.
    pairs = (old.ravel(), np.ones(old.size, np.int64))
    np.testing.assert_array_equal(place_paths(scores, pairs, **kwargs), fast)


@pytest.mark.parametrize("case", range(12))
def test_place_paths_equals_assign_paths_with_the_old_items_fixed(case: int) -> None:
    """place_paths is assign_paths' coordinate step for one new item, old items held fixed."""
    rng = np.random.default_rng(case)
    n_old, n_paths, n_keep, j = 40, 24, 6, 3
    old = np.stack([rng.choice(n_paths, j, replace=False) for _ in range(n_old)])
    cand = rng.choice(n_paths, n_keep, replace=False)
    new = PathScores(cand[None], rng.random((1, n_keep)), np.array([int(rng.integers(1, 6))]))
    penalty = float(rng.choice([0.0, 1e-3, 1e-2, 0.1]))
    fixed = np.unique(old, return_counts=True)
    placed = place_paths(new, fixed, paths_per_item=j, penalty=penalty, n_sweeps=1)
    full = PathScores(
        np.vstack([np.full((n_old, n_keep), -1), new.path_ids]),
        np.vstack([np.zeros((n_old, n_keep)), new.scores]),
        np.r_[np.zeros(n_old, np.int64), new.counts],
    )
    previous = np.vstack([old, rng.choice(n_paths, j, replace=False)[None]])
    ref, _ = assign_paths(full, paths_per_item=j, penalty=penalty, n_paths=n_paths, n_sweeps=1,
                          previous=previous, rng=0)
    np.testing.assert_array_equal(placed[0], ref[n_old])


def test_place_paths_counts_the_fixed_items() -> None:
    # Path 0 holds 50 fixed items; a new item prefers it only slightly over path 1.
    new = PathScores(np.array([[0, 1]]), np.array([[0.6, 0.5]]), np.array([1]))
    kwargs = {"paths_per_item": 1, "penalty": 1e-5}
    # log 0.6 − 1e-5·(51⁴ − 50⁴)/4 ≈ −0.51 − 1.29 < log 0.5 ≈ −0.69
    assert place_paths(new, (np.array([0]), np.array([50])), **kwargs).tolist() == [[1]]
    assert place_paths(new, (np.array([2]), np.array([50])), **kwargs).tolist() == [[0]]
    assert place_paths(new, None, **kwargs).tolist() == [[0]]
    # New items count for each other: with 25 fixed items path 0 still pays (step 0.166 <
    # log 1.2 = 0.182) for the first of two identical items, not for the second (0.186).
    two = PathScores(np.array([[0, 1], [0, 1]]), np.array([[0.6, 0.5]] * 2), np.array([1, 1]))
    assert place_paths(two, (np.array([0]), np.array([25])), **kwargs).tolist() == [[0], [1]]
    assert place_paths(PathScores.empty(0, 2), None, **kwargs).shape == (0, 1)  # nothing to place


def test_place_paths_validation() -> None:
    scores = PathScores(np.array([[3, 1, 2]]), np.array([[0.5, 0.25, 0.0]]), np.array([2]))
    kwargs = {"paths_per_item": 3, "penalty": 0.1}
    for fn in (place_paths, place_paths_reference):
        with pytest.raises(ValueError, match="item 0 has 2 scored candidate paths, needs 3"):
            fn(scores, None, **kwargs)
        with pytest.raises(ValueError, match="fixed"):
            fn(scores, (np.array([1, 2]), np.array([1])), paths_per_item=2, penalty=0.1)
        with pytest.raises(ValueError, match="penalty"):
            fn(scores, None, paths_per_item=2, penalty=-1.0)
        with pytest.raises(ValueError, match="n_sweeps"):
            fn(scores, None, paths_per_item=2, penalty=0.1, n_sweeps=0)
