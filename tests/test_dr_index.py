"""DRIndex: an index over given vectors (fit on item and query vectors, search by ⟨q, v⟩ + b)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from deep_retrieval import (
    ConfigError,
    DeepRetrieval,
    DRConfig,
    DRIndex,
    Sequences,
    load_config,
)

# A small grid; at 600 items the default budget (10 %) is 60 candidates, a beam of one path.
SMALL = {"n_layers": 2, "n_nodes": 8, "hidden_dim": 32, "node_dim": 8, "epochs": 2,
         "anchor_queries": 300, "max_fraction_scored": 0.2, "distill_k": 10}


def planted(n_items: int = 600, n_queries: int = 900, dim: int = 8, seed: int = 0):
    """Clustered item vectors with a bias, and queries near the cluster centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim))
    items = (centres[rng.integers(0, 12, n_items)] + 0.5 * rng.normal(size=(n_items, dim)))
    queries = centres[rng.integers(0, 12, n_queries)] + 0.3 * rng.normal(size=(n_queries, dim))
    bias = 0.1 * rng.normal(size=n_items)
    return items.astype(np.float32), queries.astype(np.float32), bias.astype(np.float32)


def exact(items, bias, queries, k):
    scores = queries.astype(np.float64) @ items.T.astype(np.float64) + bias
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, 1)


@pytest.fixture(scope="module")
def fitted():
    items, queries, bias = planted()
    index = DRIndex(**SMALL).fit(items, queries=queries, item_bias=bias)
    return index, items, queries, bias


def test_search_returns_exact_scores_of_mostly_the_exact_top_k(fitted) -> None:
    index, items, queries, bias = fitted
    test = queries[:200] + 0.05
    ids, scores = index.search(test, 10)
    assert ids.shape == scores.shape == (200, 10) and ids.dtype == np.int64
    # The scores are the exact ⟨q, v⟩ + b of the returned items, best first.
    want = np.einsum("ne,nke->nk", test.astype(np.float64), items[ids]) + bias[ids]
    np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    top, _ = exact(items, bias, test, 10)
    overlap = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(ids, top, strict=True)])
    assert overlap >= 0.93  # observed 0.978 (the beam is calibrated to 0.99 of the exact top n)


def test_search_exact_is_brute_force(fitted) -> None:
    index, items, queries, bias = fitted
    ids, scores = index.search_exact(queries[:50], 7)
    want_ids, want_scores = exact(items, bias, queries[:50], 7)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


def test_one_query_vector_gives_one_row(fitted) -> None:
    index, _, queries, _ = fitted
    ids, scores = index.search(queries[3], 5)
    batch_ids, batch_scores = index.search(queries[3:4], 5)
    assert ids.shape == (5,) and scores.shape == (5,)
    np.testing.assert_array_equal(ids, batch_ids[0])
    np.testing.assert_allclose(scores, batch_scores[0])


def test_fit_records_ids_and_how_it_trained(fitted) -> None:
    index = fitted[0]
    np.testing.assert_array_equal(index.ids, np.arange(600))  # identity ids, recorded
    training = index.diagnostics()["training"]
    assert training["kind"] == "vector-index" and training["pairs"] > 0
    # 900 queries < 4 × 500: the calibration queries are training queries too.
    assert training["calibration_queries_held_out"] is False
    assert len(index) == index.n_items == 600


def test_string_ids_come_back_and_pad_with_empty_strings() -> None:
    items, queries, _ = planted(n_items=40, n_queries=200)
    names = [f"sku-{i}" for i in range(40)]
    index = DRIndex(**SMALL).fit(items, queries=queries, ids=names)
    ids, scores = index.search(queries[:4], 50, beam_size=64)  # more than the 40 items
    assert ids.dtype.kind == "U"
    assert set(ids[0][ids[0] != ""]) <= set(names)
    assert (ids[:, 40:] == "").all() and np.isneginf(scores[:, 40:]).all()
    exact_ids, _ = exact(items, np.zeros(40, np.float32), queries[:4], 40)
    np.testing.assert_array_equal(ids[:, :40], np.asarray(names)[exact_ids])


def test_positives_as_lists_and_as_a_sparse_matrix_train_the_same_index() -> None:
    items, queries, _ = planted(n_items=200, n_queries=300)
    rng = np.random.default_rng(1)
    lists = [sorted(rng.choice(200, 3, replace=False).tolist()) for _ in range(300)]
    csr = sp.csr_matrix(
        (np.ones(900), (np.repeat(np.arange(300), 3), np.concatenate(lists))), shape=(300, 200)
    )
    a = DRIndex(**SMALL).fit(items, queries=queries, positives=lists)
    b = DRIndex(**SMALL).fit(items, queries=queries, positives=csr)
    np.testing.assert_array_equal(a.state.item_paths.path_ids, b.state.item_paths.path_ids)
    assert a.diagnostics()["training"]["positives"] is True
    counts = np.bincount(np.concatenate(lists), minlength=200)
    np.testing.assert_array_equal(a.state.item_counts, counts)


def test_items_no_query_ranks_are_placed_through_anchor_queries() -> None:
    items, queries, bias = planted()
    index = DRIndex(**{**SMALL, "distill_k": 2}).fit(items, queries=queries, item_bias=bias)
    state = index.state
    unseen = np.flatnonzero(state.item_counts == 0)
    assert index.diagnostics()["training"]["items_placed_by_anchors"] == len(unseen) > 0
    test = queries[:300]
    top, _ = exact(items, bias, test, 10)
    rows, cols = np.nonzero(np.isin(top, unseen))

    def found() -> float:  # share of (query, unseen item in its exact top 10) pairs found
        ids, _ = index.search(test, 10)
        return float(np.mean([top[r, c] in ids[r] for r, c in zip(rows, cols, strict=True)]))

    placed = found()
    rng = np.random.default_rng(5)
    shuffled = state.item_paths.path_ids.copy()
    shuffled[unseen] = shuffled[rng.permutation(unseen)]  # the same paths, to other items
    state.set_paths(shuffled)
    assert placed >= found() + 0.3  # observed 0.69 against 0.12


def test_added_items_are_found_and_removed_ones_never() -> None:
    items, queries, bias = planted()
    index = DRIndex(**SMALL).fit(items, queries=queries, item_bias=bias)  # its own: it changes
    # New items that are the best of one query each: a longer copy of the query.
    test = queries[:20]
    rows = index.add(4 * test, item_bias=np.zeros(20))
    np.testing.assert_array_equal(rows, np.arange(600, 620))
    np.testing.assert_array_equal(index.ids[600:], rows)  # the next integer ids
    assert len(index) == 620
    best = index.search_exact(test, 1)[0][:, 0]
    assert np.isin(best, rows).all()  # each query's exact best is a new item
    ids, _ = index.search(test, 10)
    assert (ids == best[:, None]).any(axis=1).mean() >= 0.9  # observed 1.0
    assert index.remove(rows[:10]) == 10 and len(index) == 610
    ids, _ = index.search(test, 10)
    assert not np.isin(ids, rows[:10]).any()
    with pytest.raises(KeyError, match="unknown item id"):
        index.remove([12345])


def test_add_refuses_bad_items(fitted) -> None:
    index, items, _, _ = fitted
    with pytest.raises(ValueError, match="item_bias"):
        index.add(items[:2])
    with pytest.raises(ValueError, match="already in the index"):
        index.add(items[:1], ids=[5], item_bias=[0.0])
    with pytest.raises(ValueError, match="columns"):
        index.add(np.zeros((1, 3)), item_bias=[0.0])


def test_save_and_load_answer_the_same(fitted, tmp_path) -> None:
    index, _, queries, _ = fitted
    index.save(tmp_path / "idx")
    loaded = DRIndex.load(tmp_path / "idx")
    a, b = index.search(queries[:30], 10), loaded.search(queries[:30], 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1])
    assert loaded.config == index.config
    np.testing.assert_array_equal(loaded.state.anchors[0], index.state.anchors[0])


def test_a_history_model_bundle_is_not_an_index(tmp_path) -> None:
    rng = np.random.default_rng(0)
    train = Sequences.from_lists([rng.choice(30, 5, replace=False).tolist() for _ in range(40)],
                                 ordered=False)
    cfg = load_config(DRConfig, overrides=["structure.n_nodes=4", "structure.n_layers=2",
                                           "train.epochs=1", "train.reranker_epochs=0",
                                           "train.embedding_dim=8"])
    DeepRetrieval(cfg, device="cpu").fit(train, 30).save(tmp_path / "m")
    with pytest.raises(ValueError, match="history model, not a DRIndex"):
        DRIndex.load(tmp_path / "m")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x, q: DRIndex(**SMALL).fit(x[:, :4], queries=q), "columns"),
        (lambda x, q: DRIndex(**SMALL).fit(np.full_like(x, np.nan), queries=q), "NaN"),
        (lambda x, q: DRIndex(**SMALL).fit(x, queries=q, positives=[[0]] * 3), "rows for"),
        (lambda x, q: DRIndex(**SMALL).fit(x, queries=q, positives=[[10**6]] * len(q)),
         "item positions"),
        (lambda x, q: DRIndex(**SMALL).fit(x, queries=q, ids=[1] * len(x)), "distinct"),
        (lambda x, q: DRIndex(**SMALL).fit(x, queries=q, item_bias=[0.0]), "item_bias"),
    ],
)
def test_bad_fit_input_is_one_clear_error(call, message) -> None:
    items, queries, _ = planted(n_items=50, n_queries=60)
    with pytest.raises(ValueError, match=message):
        call(items, queries)


def test_bad_settings_and_queries_fail_loudly(fitted) -> None:
    with pytest.raises(ConfigError, match="unknown index setting 'n_node'"):
        DRIndex(n_node=3)
    with pytest.raises(ConfigError, match="distill_k"):
        DRIndex(distill_k=0)
    index = fitted[0]
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.zeros(8), 0)
    with pytest.raises(ValueError, match="k must be"):
        index.search_exact(np.zeros(8), 0)
    with pytest.raises(ValueError, match="columns"):
        index.search(np.zeros((2, 5)), 3)
    with pytest.raises(ValueError, match="not fitted"):
        DRIndex().search(np.zeros(8), 3)


def test_history_queries_and_vector_queries_share_one_retrieval_path(fitted) -> None:
    """A history model's recommend and the index's search are one function: a history's mean
    item vector, searched as a vector, gives the history query's answer."""
    index, items, _, _ = fitted
    hist = Sequences.from_lists([[1, 2, 3], [10, 20]], ordered=False)
    from deep_retrieval.index import retrieval

    by_history = retrieval.recommend(index.state, hist, 10)
    vectors = np.stack([items[[1, 2, 3]].mean(0), items[[10, 20]].mean(0)])
    by_vector = retrieval.recommend(index.state, vectors, 10)
    np.testing.assert_array_equal(by_history[0], by_vector[0])
