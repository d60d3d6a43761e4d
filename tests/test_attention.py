"""The candidate-aware reranker (``dr.reranker=attention``): the attention term against a slow
per-(user, item) loop, its batched and chunked forms against each other, training, serving,
the exhaustive method, bundles, and the benchmark's two methods."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from test_model import TINY, planted_split

from deep_retrieval.config import BenchmarkConfig, ConfigError, DRConfig, load_config
from deep_retrieval.core.modules.attention import TargetAttention
from deep_retrieval.data.types import Sequences
from deep_retrieval.estimator import DeepRetrieval, stream_train
from deep_retrieval.index import retrieval

ATTENTION = [*TINY, "reranker=attention", "train.attention_epochs=3"]


@pytest.fixture(scope="module")
def planted():
    return planted_split()


def _slow_term(att: TargetAttention, history: torch.Tensor, mask: torch.Tensor,
               item: torch.Tensor) -> float:
    """``t(u, v)`` for one user and one item, written out."""
    real = history[mask]  # (l, E)
    if not len(real):
        return 0.0
    logits = [float(att.key(h) @ att.query(item)) / math.sqrt(att.attention_dim) for h in real]
    top = max(logits)
    weights = [math.exp(x - top) for x in logits]
    pooled = sum(w * att.value(h) for w, h in zip(weights, real, strict=True)) / sum(weights)
    return float(pooled @ att.out(item))


def test_target_attention_matches_a_per_pair_loop_in_both_candidate_forms():
    torch.manual_seed(0)
    att = TargetAttention(12, 5)
    with torch.no_grad():  # it starts at t ≡ 0
        assert float(att(torch.randn(2, 3, 12), torch.ones(2, 3, dtype=torch.bool),
                         torch.randn(4, 12)).abs().max()) == 0
    torch.nn.init.normal_(att.out.weight)
    history = torch.randn(3, 6, 12)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]]).bool()
    items = torch.randn(4, 12)
    with torch.no_grad():
        shared = att(history, mask, items)  # (3, 4)
        per_row = att(history, mask, items[None].expand(3, 4, 12))
        want = torch.tensor([[_slow_term(att, history[n], mask[n], items[c]) for c in range(4)]
                             for n in range(3)])
    torch.testing.assert_close(shared, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(per_row, want, rtol=1e-4, atol=1e-5)
    assert (shared[2] == 0).all()  # no history: no attention term


@pytest.fixture(scope="module")
def attention_model(planted):
    _, split = planted
    model = DeepRetrieval(load_config(DRConfig, overrides=ATTENTION), device="cpu")
    return model.fit(split.train, split.n_items)


def _full_scores(state, histories) -> np.ndarray:
    """``(U, V)`` the reranker's logits, dot product plus attention term, computed densely."""
    net = state.net
    hist = torch.as_tensor(retrieval.history_matrix(state, histories))
    with torch.no_grad():
        u = net.user_embedding(hist)
        return (net.reranker.scores(u) + net.attention_terms(hist, torch.arange(state.n_items))
                ).numpy()


def test_fit_trains_the_attention_term_last_and_it_reranks(attention_model):
    history = attention_model.state.history
    assert [bool(e.get("attention_only")) for e in history] == [False] * 6 + [True] * 3
    losses = [e["attention_loss"] for e in history[6:]]
    assert losses[-1] < losses[0]
    net = attention_model.state.net
    assert float(net.attention.out.weight.abs().max()) > 0  # it learned away from t ≡ 0


def test_dr_attention_ranks_its_candidates_by_the_full_logit(attention_model, planted):
    _, split = planted
    state = attention_model.state
    hist = split.test_history
    ids, scores = attention_model.recommend(hist, 10)
    cand = attention_model.retrieve(hist, beam_size=attention_model.beam_size_for(10))
    full = _full_scores(state, hist)
    for r in range(len(hist)):
        items = cand.items[cand.indptr[r] : cand.indptr[r + 1]]
        want = items[np.argsort(-full[r, items], kind="stable")][:10]
        np.testing.assert_allclose(scores[r], full[r, want], rtol=1e-4, atol=1e-4)
        assert set(ids[r]) <= set(items)


def test_attention_terms_chunked_equal_one_pass(attention_model, planted, monkeypatch):
    _, split = planted
    state = attention_model.state
    hist = retrieval.history_matrix(state, split.test_history)
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 9, size=len(hist))
    rows = np.repeat(np.arange(len(hist)), counts)
    items = rng.integers(0, state.n_items, size=len(rows))
    one = retrieval.attention_terms(state, hist, rows, items)
    monkeypatch.setattr(retrieval, "ATTENTION_BLOCK", 50)  # a few rows per chunk
    np.testing.assert_allclose(retrieval.attention_terms(state, hist, rows, items), one,
                               rtol=1e-5, atol=1e-6)
    full = _full_scores(state, split.test_history)
    dot = _dot(state, split.test_history)
    np.testing.assert_allclose(one, full[rows, items] - dot[rows, items], rtol=1e-4, atol=1e-4)


def _dot(state, histories) -> np.ndarray:
    with torch.no_grad():
        u = retrieval.user_embeddings(state, histories)
        return state.net.reranker.scores(u).numpy()


def test_attention_exhaustive_is_the_top_n_of_every_item(attention_model, planted, monkeypatch):
    _, split = planted
    state = copy.deepcopy(attention_model.state)
    state.removed[::9] = True
    hist, exclude = split.test_history, split.test_history  # don't return what was seen
    full = _full_scores(state, hist)
    full[:, state.removed] = -np.inf
    full[exclude.row_ids(), exclude.items] = -np.inf
    want = np.argsort(-full, axis=1, kind="stable")[:, :15]
    monkeypatch.setattr(retrieval, "ATTENTION_BLOCK", 2000)  # several item blocks and chunks
    ids, scores = retrieval.exhaustive_top(state, hist, 15, exclude=exclude)
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, 1), rtol=1e-4, atol=1e-4)
    assert (ids == want).mean() > 0.99  # only near-ties may swap
    model = DeepRetrieval.from_state(state, device="cpu")
    got, _ = model.recommend(hist, 15, exclude=exclude, exhaustive=True)
    np.testing.assert_array_equal(got, ids)


def test_an_attention_bundle_round_trips(attention_model, planted, tmp_path):
    _, split = planted
    loaded = DeepRetrieval.load(attention_model.save(tmp_path / "m"))
    assert loaded.config.reranker == "attention" and loaded.state.net.attention is not None
    for exhaustive in (False, True):
        want = attention_model.recommend(split.test_history, 10, exhaustive=exhaustive)
        got = loaded.recommend(split.test_history, 10, exhaustive=exhaustive)
        np.testing.assert_array_equal(got[0], want[0])


def test_the_attention_term_changes_nothing_else(attention_model, planted):
    """Same seed, same settings: the attention fit's paths and dot-product reranker are the dot
    fit's (the term has its own generator and trains last)."""
    _, split = planted
    dot = DeepRetrieval(load_config(DRConfig, overrides=TINY), device="cpu")
    dot.fit(split.train, split.n_items)
    np.testing.assert_array_equal(attention_model.state.item_paths.path_ids,
                                  dot.state.item_paths.path_ids)
    for name, value in dot.state.net.reranker.state_dict().items():
        torch.testing.assert_close(attention_model.state.net.reranker.state_dict()[name], value)


def test_added_items_are_scored_by_the_attention_term(attention_model, planted):
    _, split = planted
    model = copy.deepcopy(attention_model)
    v = model.state.n_items
    rows = [[*split.train[u], v, v + 1] for u in range(40)]
    new = model.add_items(n_new=2, interactions=Sequences.from_lists(rows))
    assert new.tolist() == [v, v + 1]
    ids, _ = model.recommend(split.test_history, 10, exhaustive=True)
    full = _full_scores(model.state, split.test_history)  # (U, V + 2), attention term included
    np.testing.assert_array_equal(ids[:, 0], full.argmax(axis=1))


def test_bad_reranker_settings_fail_in_one_line(planted):
    with pytest.raises(ConfigError, match="reranker must be one of"):
        load_config(DRConfig, overrides=["reranker=mlp"])
    with pytest.raises(ConfigError, match="attention_dim"):
        load_config(DRConfig, overrides=["train.attention_dim=0"])
    _, split = planted
    with pytest.raises(ValueError, match="streaming does not train the attention reranker"):
        stream_train(load_config(DRConfig, overrides=ATTENTION),
                     [(split.train.row_ids(), split.train.items)], split.n_items)


def test_the_benchmark_samples_attention_exhaustive_users(planted, tmp_path):
    from deep_retrieval.experiments.benchmark import recompute_metrics, run_benchmark

    _, split = planted
    config = BenchmarkConfig(dr=load_config(DRConfig, overrides=ATTENTION), exhaustive_users=30,
                             tune_baselines=False)
    config = load_config(
        BenchmarkConfig, overrides=["softmax.epochs=1", "softmax.embedding_dim=16"], base=config
    )
    doc = run_benchmark(split, ["brute-force", "attention-exhaustive", "dr-attention"], [10],
                        config, out_dir=tmp_path)
    assert list(doc["methods"]) == ["brute-force", "attention-exhaustive", "dr-attention"]
    ex = doc["methods"]["attention-exhaustive"]
    assert ex["sample_users"] == 30 and "recall@10" in ex["brute_force_on_sample"]
    assert ex["fit_seconds"] == doc["methods"]["dr-attention"]["fit_seconds"]
    assert "sample_users" not in doc["methods"]["dr-attention"]
    again = recompute_metrics(tmp_path, "attention-exhaustive", [10], sampled=True)
    assert again["recall@10"] == pytest.approx(ex["metrics"]["recall@10"], abs=1e-12)
