"""Training-sample construction: fast vectorised batches vs an obvious per-sample reference."""

from __future__ import annotations

import numpy as np
import pytest

from deep_retrieval.data.samples import TrainingSamples
from deep_retrieval.data.types import Sequences


def _random_rows(seed: int, n_rows: int = 40, n_items: int = 30, ordered: bool = True) -> Sequences:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_rows):
        n = int(rng.integers(0, 25))
        # Unordered rows are sets (fixed splits de-duplicate); ordered rows may repeat items.
        rows.append(rng.choice(n_items, size=min(n, n_items), replace=ordered) if n else [])
    return Sequences.from_lists(rows, ordered=ordered)


def _reference_ordered(train: Sequences, L: int, skip_first: bool) -> list[tuple[list[int], int]]:
    """Every (preceding ≤ L items, target), one by one."""
    out = []
    for u in range(len(train)):
        row = train[u].tolist()
        for t in range(1 if skip_first else 0, len(row)):
            out.append((row[max(0, t - L) : t], row[t]))
    return out


def _unpad(hist: np.ndarray) -> list[list[int]]:
    return [[int(x) for x in h if x >= 0] for h in hist]


def _collect(samples: TrainingSamples, batch_size: int = 7) -> tuple[list[list[int]], list[int]]:
    hists, targets = [], []
    for h, t in samples.epoch(batch_size):
        assert h.dtype == np.int64 and t.dtype == np.int64
        assert h.shape == (len(t), samples.history_len)
        hists += _unpad(h)
        targets += t.tolist()
    return hists, targets


@pytest.mark.parametrize("L", [1, 3, 69])
@pytest.mark.parametrize("skip_first", [True, False])
def test_ordered_windows_equal_reference(L: int, skip_first: bool) -> None:
    train = _random_rows(0)
    samples = TrainingSamples(train, L, skip_first=skip_first, seed=1)
    hists, targets = _collect(samples)
    got = sorted((tuple(h), t) for h, t in zip(hists, targets, strict=True))
    want = sorted((tuple(h), t) for h, t in _reference_ordered(train, L, skip_first))
    assert got == want
    assert len(samples) == len(want)


def test_ordered_histories_are_right_aligned() -> None:
    train = Sequences.from_lists([[5, 6, 7, 8]])
    samples = TrainingSamples(train, 3, seed=0)
    hist, target = samples.batch(np.array([0, 0, 0]), np.array([1, 2, 3]))
    np.testing.assert_array_equal(hist, [[-1, -1, 5], [-1, 5, 6], [5, 6, 7]])
    np.testing.assert_array_equal(target, [6, 7, 8])


@pytest.mark.parametrize("L", [2, 5, 69])
def test_leave_one_out_history_is_other_items_of_the_row(L: int) -> None:
    train = _random_rows(2, ordered=False)
    samples = TrainingSamples(train, L, seed=3)
    # Every item of every row with ≥ 2 items is a target exactly once per epoch.
    _, targets = _collect(samples, batch_size=16)
    want_targets = sorted(int(x) for u in range(len(train)) if len(train[u]) >= 2 for x in train[u])
    assert sorted(targets) == want_targets
    # Each (row, position) against its row: ids repeat across rows, so go row by row.
    for u in range(len(train)):
        row = train[u]
        if len(row) < 2:
            continue
        hist, target = samples.batch(np.full(len(row), u), np.arange(len(row)))
        for h, t in zip(_unpad(hist), target, strict=True):
            assert t not in h, "the target must never be in its own history"
            assert len(h) == min(len(row) - 1, L)
            assert len(set(h)) == len(h), "no item drawn twice"
            assert set(h) <= set(row.tolist()) - {t}
        assert sorted(target.tolist()) == sorted(row.tolist())


def test_leave_one_out_resamples_each_epoch_and_is_seeded() -> None:
    train = Sequences.from_lists([list(range(30))], ordered=False)

    def two_epochs(seed: int) -> list[list[tuple[int, ...]]]:
        s = TrainingSamples(train, 5, seed=seed)
        out = []
        for _ in range(2):
            pairs = {}
            for h, t in s.epoch(8):
                for hh, tt in zip(_unpad(h), t, strict=True):
                    pairs[int(tt)] = tuple(sorted(hh))
            out.append([pairs[i] for i in range(30)])
        return out

    a, b = two_epochs(7), two_epochs(7)
    assert a == b  # seeded
    assert a[0] != a[1]  # a new draw every epoch


def test_history_dropout_marks_items_missing() -> None:
    train = Sequences.from_lists([list(range(50))] * 4, ordered=True)
    samples = TrainingSamples(train, 20, seed=0)
    kept = total = 0
    for h, _ in samples.epoch(64, history_dropout=0.5):
        total += (h >= -1).sum()
        kept += (h >= 0).sum()
    assert 0 < kept < total
    with pytest.raises(ValueError, match="history_dropout"):
        next(samples.epoch(8, history_dropout=1.0))


def test_max_samples_per_user_caps_each_row() -> None:
    train = Sequences.from_lists([list(range(40)), list(range(3)), list(range(10))], ordered=True)
    samples = TrainingSamples(train, 5, max_samples_per_user=4, seed=0)
    assert len(samples) == 4 + 2 + 4
    _, targets = _collect(samples)
    assert len(targets) == 10


def test_bad_arguments_raise() -> None:
    train = _random_rows(0)
    with pytest.raises(ValueError, match="history_len"):
        TrainingSamples(train, 0)
    with pytest.raises(ValueError, match="batch_size"):
        next(TrainingSamples(train, 3).epoch(0))


@pytest.mark.parametrize("ordered", [True, False])
def test_causal_epoch_gives_the_same_samples_as_epoch(ordered: bool) -> None:
    """Every (history, target) of the causal pass, read off its segment, is a reference sample."""
    L = 5
    train = _random_rows(3, ordered=ordered)
    samples = TrainingSamples(train, L, seed=1)
    got = []
    for items, lengths, target, keep in samples.causal_epoch(16):
        assert keep is None and items.dtype == np.int64 and lengths.sum() == len(items)
        starts = np.cumsum(lengths) - lengths
        for s, n in zip(starts, lengths, strict=True):
            seg = items[s : s + n].tolist()
            for q in np.flatnonzero(target[s : s + n]):
                hist = seg[max(0, q - L) : q] if ordered else seg[:q] + seg[q + 1 :]
                got.append((sorted(hist), seg[q]))
    if ordered:
        want = [(sorted(h), t) for h, t in _reference_ordered(train, L, skip_first=True)]
    else:  # leave-one-out over the whole row (rows here are shorter than L + 1 or use all others)
        want = [
            (sorted(np.delete(train[u], i).tolist()), int(train[u][i]))
            for u in range(len(train)) if len(train[u]) >= 2 for i in range(len(train[u]))
        ]
    assert sorted(got) == sorted(want)
    assert len(got) == len(samples)


def test_causal_epoch_batches_and_dropout_masks() -> None:
    samples = TrainingSamples(_random_rows(4), 5, seed=0)
    sizes, masks = [], []
    for items, _, target, keep in samples.causal_epoch(32, history_dropout=0.5):
        sizes.append(int(target.sum()))
        assert keep.shape[1] == len(items) and keep.dtype == bool
        masks.append(keep.mean())
    assert sum(sizes) == len(samples)
    assert max(sizes) < 32 + 5  # a batch overshoots by less than one segment
    assert 0.4 < np.mean(masks) < 0.6
    with pytest.raises(ValueError, match="history_dropout"):
        next(samples.causal_epoch(8, history_dropout=1.0))
