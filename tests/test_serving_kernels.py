"""The fused numba serving kernel (index/kernels.py) against its numpy reference in
index/retrieval.py (``candidates`` → gather + dot → ``segment_topk``): the same ids in the same
order, the same candidate counts, scores equal to float32 rounding."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from deep_retrieval.config import DRConfig, load_config
from deep_retrieval.core.paths import ItemPathMap, PathCodec
from deep_retrieval.data.types import Sequences
from deep_retrieval.index import catalogue, kernels, retrieval
from deep_retrieval.index.state import DRState, build_state

DIM = 16


def _state(
    n_items: int = 300, *, n_layers: int = 2, n_nodes: int = 4, paths_per_item: int = 3,
    path_ids: np.ndarray | None = None, seed: int = 0,
) -> DRState:
    """A random-weight state (no training: the kernel only needs tables to agree on)."""
    config = load_config(DRConfig, overrides=[
        f"structure.n_layers={n_layers}", f"structure.n_nodes={n_nodes}",
        f"structure.paths_per_item={paths_per_item}", "train.encoder=mean",
        f"train.embedding_dim={DIM}", f"seed={seed}",
    ])
    torch.manual_seed(seed)
    codec = PathCodec(n_layers, n_nodes)
    item_paths = None if path_ids is None else ItemPathMap(path_ids, codec)
    state = build_state(config, n_items, ordered=False, item_paths=item_paths)
    with torch.no_grad():  # a bias, so that scores are not plain dot products
        bias = state.net.reranker.item_bias
        if bias is not None:
            bias.copy_(torch.randn(n_items) * 0.3)
    return state


def _histories(n_rows: int, n_items: int, seed: int = 1) -> Sequences:
    rng = np.random.default_rng(seed)
    return Sequences.from_lists(
        [rng.choice(n_items, size=rng.integers(1, 6), replace=False) for _ in range(n_rows)],
        ordered=False,
    )


def _tolerance(state: DRState, histories: Sequences, ids: np.ndarray) -> np.ndarray:
    """A bound on the float32 rounding of ``⟨q, k⟩ + b`` in any summation order:
    ``(E + 2)·ε·(Σ|q_e k_e| + |b|)`` per returned entry (``γ_n`` of a dot product)."""
    keys, bias = retrieval.rerank_table(state)
    with torch.no_grad():
        u = retrieval.user_embeddings(state, histories)
        q = state.net.reranker.query(u).float().numpy()
    safe = np.maximum(ids, 0)
    mag = np.einsum("ue,une->un", np.abs(q), np.abs(keys[safe])) + np.abs(bias[safe])
    return (DIM + 2) * np.finfo(np.float32).eps * mag


def _compare(
    state: DRState, histories: Sequences, n: int, *, beam_size: int,
    exclude: Sequences | None = None,
) -> tuple[np.ndarray, np.ndarray, retrieval.QueryStats]:
    """Fused and reference ``recommend`` agree; returns the fused result and its stats."""
    got_stats, want_stats = retrieval.QueryStats(), retrieval.QueryStats()
    ids, scores = retrieval.recommend(
        state, histories, n, beam_size=beam_size, exclude=exclude, stats=got_stats
    )
    want_ids, want_scores = retrieval.recommend(
        state, histories, n, beam_size=beam_size, exclude=exclude, stats=want_stats, fused=False
    )
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert ids.shape == scores.shape == (len(histories), n)
    np.testing.assert_array_equal(ids, want_ids)
    pad = ids < 0
    assert np.all(np.isneginf(scores[pad])) and np.all(np.isneginf(want_scores[pad]))
    tol = _tolerance(state, histories, ids)
    assert np.all(np.abs(scores[~pad] - want_scores[~pad]) <= tol[~pad])
    assert (got_stats.queries, got_stats.candidates) == (want_stats.queries, want_stats.candidates)
    return ids, scores, got_stats


def _counts(state: DRState, histories: Sequences, beam_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row candidate counts of the kernel and of ``candidates`` (same beam)."""
    with torch.no_grad():
        u = retrieval.user_embeddings(state, histories)
        path_ids, _ = retrieval.beam(state, u, beam_size, ordered=False)
        q = state.net.reranker.query(u).float().numpy()
    keys, bias = retrieval.rerank_table(state)
    _, _, counts = kernels.serve(
        state.item_paths, retrieval.path_slots(state), path_ids, q, keys, bias, 5
    )
    return counts, retrieval.candidates(state, path_ids, None).counts


@pytest.mark.parametrize("n_rows", [1, 7, 60])
@pytest.mark.parametrize("beam_size", [1, 3, 8])
def test_fused_equals_reference_with_many_duplicates(n_rows: int, beam_size: int) -> None:
    """16 paths, 300 items on 3 paths each: a beam meets the same items on several paths."""
    state = _state()
    hist = _histories(n_rows, state.n_items)
    _compare(state, hist, 10, beam_size=beam_size)
    counts, want = _counts(state, hist, beam_size)
    np.testing.assert_array_equal(counts, want)


def test_exact_ties_break_by_item_id() -> None:
    """Items share 4 key rows and one bias: whole blocks of exactly equal scores."""
    state = _state(n_items=200)
    with torch.no_grad():
        w = state.net.reranker.item_table.weight
        w.copy_(w[torch.arange(200) % 4])
        bias = state.net.reranker.item_bias
        if bias is not None:
            bias.fill_(0.25)
    state.changed()
    for hist in (_histories(1, 200), _histories(30, 200)):
        ids, scores, _ = _compare(state, hist, 25, beam_size=4)
        for row_ids, row_scores in zip(ids, scores, strict=True):
            same = row_scores[1:] == row_scores[:-1]
            assert same.any()  # the data do tie
            assert np.all(row_ids[1:][same] > row_ids[:-1][same])


def test_n_above_the_candidate_count_pads() -> None:
    state = _state(n_items=20, paths_per_item=1)
    for n_rows in (1, 20):
        ids, scores, stats = _compare(state, _histories(n_rows, 20), 40, beam_size=2)
        assert stats.candidates_per_query < 40
        assert np.all((ids < 0) == np.isneginf(scores))
        assert np.all(ids[:, -1] == -1)
        for row in ids:  # real ids first, then padding only
            real = row >= 0
            assert not np.any(real[1:] & ~real[:-1])


@pytest.mark.parametrize("dense", [True, False])
def test_unoccupied_paths_and_both_path_lookups(
    dense: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items only on 3 of 64 paths: most beam paths are empty, some rows get nothing. Also the
    binary search over ``occupied_paths`` used above ``MAX_DENSE_PATHS``."""
    if not dense:
        monkeypatch.setattr(kernels, "MAX_DENSE_PATHS", 0)
    rng = np.random.default_rng(2)
    n_items = 50
    path_ids = rng.choice([5, 17, 60], size=(n_items, 1))
    state = _state(n_items, n_layers=3, n_nodes=4, paths_per_item=1, path_ids=path_ids)
    assert len(retrieval.path_slots(state)) == (64 if dense else 0)
    hist = _histories(40, n_items)
    ids, _, _ = _compare(state, hist, 8, beam_size=16)
    counts, want = _counts(state, hist, 16)
    np.testing.assert_array_equal(counts, want)
    assert np.any(counts == 0) and np.any(counts > 0)  # both kinds of rows occur
    assert np.all(ids[counts == 0] == -1)


def test_removed_items_are_never_returned() -> None:
    """Items removed from the catalogue (``ItemPathMap.excluded``) are not in the inverted index."""
    state = _state()
    removed = np.arange(0, state.n_items, 3)
    catalogue.remove_items(state, removed)
    assert state.item_paths.excluded[removed].all()
    for hist in (_histories(1, state.n_items), _histories(50, state.n_items)):
        ids, _, _ = _compare(state, hist, 30, beam_size=6)
        assert not np.isin(ids, removed).any()


def test_exclude_per_row() -> None:
    """Query-time exclusion: counted as candidates (as the reference counts), never returned."""
    state = _state()
    hist = _histories(40, state.n_items)
    rng = np.random.default_rng(4)
    exclude = Sequences.from_lists(  # duplicates within a row on purpose
        [rng.integers(0, state.n_items, size=rng.integers(0, 40)) for _ in range(40)],
        ordered=False,
    )
    ids, _, _ = _compare(state, hist, 20, beam_size=5, exclude=exclude)
    for r in range(40):
        assert not np.isin(ids[r], exclude[r]).any()
    one = Sequences.from_lists([exclude[0]], ordered=False)
    _compare(state, hist.rows(np.array([0])), 20, beam_size=5, exclude=one)


def test_threaded_chunks_equal_one_chunk() -> None:
    """More chunks than pool threads (and rows not divisible by them) give the one-chunk answer."""
    state = _state(n_items=500)
    hist = _histories(203, state.n_items)
    with torch.no_grad():
        u = retrieval.user_embeddings(state, hist)
        path_ids, _ = retrieval.beam(state, u, 6, ordered=False)
        q = state.net.reranker.query(u).float().numpy()
    keys, bias = retrieval.rerank_table(state)
    args = (state.item_paths, retrieval.path_slots(state), path_ids, q, keys, bias, 15)
    one = kernels.serve(*args, threads=1)
    for threads in (2, 5, 25):
        many = kernels.serve(*args, threads=threads)
        for a, b in zip(one, many, strict=True):
            np.testing.assert_array_equal(a, b)
    _compare(state, hist, 15, beam_size=6)


def test_concurrent_callers() -> None:
    """Several Python threads serving at once (the HTTP service's case) get their own answers."""
    state = _state(n_items=400)
    batches = [_histories(n, state.n_items, seed=s) for s, n in enumerate((1, 1, 37, 90, 3, 64))]
    want = [retrieval.recommend(state, h, 12, beam_size=5) for h in batches]
    got: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(batches)

    def work(i: int) -> None:
        for _ in range(5):
            got[i] = retrieval.recommend(state, batches[i], 12, beam_size=5)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w, g in zip(want, got, strict=True):
        assert g is not None
        np.testing.assert_array_equal(w[0], g[0])
        np.testing.assert_array_equal(w[1], g[1])


def test_epoch_restart_keeps_results() -> None:
    """Mark buffers near the int32 epoch limit are cleared and restarted, not wrapped."""
    state = _state()
    hist = _histories(30, state.n_items)
    want = retrieval.recommend(state, hist, 10, beam_size=4)
    bufs = [kernels._MARKS.acquire(state.n_items, 1) for _ in range(4)]
    for buf in bufs:
        buf.marks[:] = kernels._EPOCH_LIMIT - 3  # stale marks above any restarted epoch
        buf.epoch = kernels._EPOCH_LIMIT - 3
        kernels._MARKS.release(buf)
    got = retrieval.recommend(state, hist, 10, beam_size=4)
    np.testing.assert_array_equal(want[0], got[0])
    np.testing.assert_array_equal(want[1], got[1])
    assert any(buf.epoch < 1000 for buf in bufs)  # the buffers used were restarted


def test_serve_refuses_tables_that_do_not_fit() -> None:
    state = _state()
    keys, bias = retrieval.rerank_table(state)
    q = np.zeros((2, DIM), np.float32)
    paths = np.zeros((2, 3), np.int64)
    slots = retrieval.path_slots(state)
    with pytest.raises(ValueError, match="tables do not fit"):
        kernels.serve(state.item_paths, slots, paths, q, keys[:10], bias, 5)
    with pytest.raises(ValueError, match="slots"):
        kernels.serve(state.item_paths, slots[:3], paths, q, keys, bias, 5)
    with pytest.raises(ValueError, match="exclude"):
        kernels.serve(state.item_paths, slots, paths, q, keys, bias, 5,
                      (np.zeros(2, np.int64), np.zeros(0, np.int64)))
