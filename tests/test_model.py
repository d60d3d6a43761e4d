from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pytest
import torch

from deep_retrieval.config import ConfigError, DRConfig, ProtocolConfig, load_config
from deep_retrieval.core.contract import topk_from_scores
from deep_retrieval.data.protocols import paper_split
from deep_retrieval.data.synthetic import make_clustered
from deep_retrieval.data.types import Sequences
from deep_retrieval.estimator import DeepRetrieval
from deep_retrieval.evaluation.metrics import evaluate_recommendations
from deep_retrieval.index.retrieval import QueryStats

TINY = [
    "structure.n_layers=2",
    "structure.n_nodes=8",
    "structure.paths_per_item=2",
    "train.encoder=mean",
    "train.epochs=6",
    "train.joint_epochs=4",
    "train.reranker_epochs=0",
    # The candidate rule (10 × n) and the penalty as given: these tests pin behaviour that
    # predates the recall target and the penalty scale, which have their own tests below.
    "retrieval.target_recall=none",
    "assignment.penalty_scale=none",
    "train.embedding_dim=32",
    "train.n_negatives=64",
    "train.batch_size=256",
    "train.lr=0.01",
    "assignment.n_candidates=8",
    "assignment.penalty=1e-4",
]


def planted_split():
    """The planted data set (8 clusters, 160 items) and its paper split, 100 test users."""
    data = make_clustered(n_users=500, n_items=160, n_clusters=8, interactions_per_user=24, seed=0)
    split = paper_split(
        data.interactions, ProtocolConfig(n_valid_users=0, n_test_users=100, min_rating=0)
    )
    return data, split


@pytest.fixture(scope="module")
def planted():
    return planted_split()


@pytest.fixture(scope="module")
def fitted_model(planted):
    _, split = planted
    model = DeepRetrieval(load_config(DRConfig, overrides=TINY), device="cpu")
    return model.fit(split.train, split.n_items)


@pytest.fixture()
def model(fitted_model):
    return copy.deepcopy(fitted_model)


def _brute_force(model: DeepRetrieval, histories: Sequences, n: int) -> np.ndarray:
    with torch.no_grad():
        scores = model.net_.reranker.scores(model.user_embeddings(histories)).numpy()
    return topk_from_scores(scores, n)[0]


def test_planted_clusters_share_paths(model, planted):
    data, split = planted
    cluster = data.item_cluster[split.item_ids]  # internal -> planted cluster
    paths = model.item_paths_.path_ids  # (V, J)
    assert paths.shape == (split.n_items, 2)
    # Each cluster's most common path should be held by (nearly) every item of that cluster, and
    # different clusters should mostly own different paths. With random paths the first fraction
    # would be about J / K^D = 2 / 64.
    modal, held = [], []
    for c in range(8):
        mine = paths[cluster == c]
        values, counts = np.unique(mine, return_counts=True)
        modal.append(values[counts.argmax()])
        held.append((mine == modal[-1]).any(axis=1).mean())
    assert min(held) >= 0.9, held  # observed 1.0 for every cluster
    assert len(set(modal)) >= 6, modal  # observed 7 distinct of 8


def test_planted_recall_close_to_brute_force(model, planted):
    _, split = planted
    stats = QueryStats()
    dr, _ = model.recommend(split.test_history, 10, stats=stats)
    bf = _brute_force(model, split.test_history, 10)
    r_dr = evaluate_recommendations(dr, split.test_truth, [10])["recall@10"]
    r_bf = evaluate_recommendations(bf, split.test_truth, [10])["recall@10"]
    assert r_dr >= 0.95 * r_bf, (r_dr, r_bf)  # observed equal (0.571 vs 0.571)
    assert stats.queries == len(split.test_history)
    assert 0 < model.diagnostics(stats)["candidates_per_query"] < split.n_items
    assert "candidates_per_query" not in model.diagnostics()  # recommend left the model as it was


def test_explicit_beam_pads_past_the_catalogue(model, planted):
    """The shared recommend contract (shapes, order, padding, exclude, batching, bad input) is
    checked for DR with every baseline in test_contract.py; here only the explicit ``beam_size``."""
    _, split = planted
    hist = split.test_history.rows(np.arange(5))
    big, big_scores = model.recommend(hist, 500, beam_size=64)  # n > V: padded
    assert (
        big.shape == (5, 500) and (big[:, -1] == -1).all() and np.isneginf(big_scores[:, -1]).all()
    )


def test_full_beam_equals_brute_force(model, planted):
    """With a beam over every path all items are candidates,
    so DR == brute force on its reranker."""
    _, split = planted
    n_paths = model.codec_.n_paths
    ids, _ = model.recommend(split.test_history, 10, beam_size=n_paths)
    np.testing.assert_array_equal(ids, _brute_force(model, split.test_history, 10))


def test_without_rerank_and_retrieve(model, planted):
    _, split = planted
    cand = model.retrieve(split.test_history.rows(np.arange(3)), beam_size=4)
    assert cand.beam_size == 4 and len(cand.counts) == 3
    ids, scores = model.recommend(
        split.test_history.rows(np.arange(3)), 5, beam_size=4, rerank=False
    )
    for r in range(3):
        row = cand.items[cand.indptr[r] : cand.indptr[r + 1]]
        assert set(ids[r][ids[r] >= 0]) <= set(row)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_save_load_identical(model, planted, tmp_path):
    _, split = planted
    out = model.save(tmp_path / "m", item_ids=split.item_ids)
    loaded = DeepRetrieval.load(out, device="cpu")
    a = model.recommend(split.test_history, 10)
    b = loaded.recommend(split.test_history, 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6)
    np.testing.assert_array_equal(loaded.item_paths_.path_ids, model.item_paths_.path_ids)
    # saving again over the same directory replaces it atomically
    model.save(out)
    assert DeepRetrieval.load(out).n_items_ == split.n_items


def test_load_rejects_bad_bundles(model, tmp_path):
    out = model.save(tmp_path / "m")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = 99
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="version 99"):
        DeepRetrieval.load(out)
    out2 = model.save(tmp_path / "m2")
    data = (out2 / "weights.safetensors").read_bytes()
    (out2 / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        DeepRetrieval.load(out2)
    with pytest.raises(FileNotFoundError, match="manifest"):
        DeepRetrieval.load(tmp_path / "nothing")


def test_unfitted_and_bad_config():
    with pytest.raises(ValueError, match="not fitted"):
        DeepRetrieval().recommend(Sequences.from_lists([[1]]), 3)
    # Refused where the setting is made, before any model is built.
    with pytest.raises(ConfigError, match="n_candidates"):
        load_config(DRConfig, overrides=["assignment.n_candidates=1"])


def test_seeded_runs_repeat(planted):
    _, split = planted
    cfg = load_config(DRConfig, overrides=[*TINY, "train.epochs=2", "train.joint_epochs=1"])
    a = DeepRetrieval(cfg, device="cpu").fit(split.train, split.n_items)
    b = DeepRetrieval(cfg, device="cpu").fit(split.train, split.n_items)
    np.testing.assert_array_equal(a.item_paths_.path_ids, b.item_paths_.path_ids)


def test_segment_topk_prefilter_equals_the_full_sort_with_ties() -> None:
    """The partition pre-filter of _segment_topk against a plain full sort, on scores full of
    ties at the cut, for one row and for several."""
    from deep_retrieval.index import retrieval

    def full_sort(rows, items, scores, n_rows, n, tiebreak=None):
        keys = (items,) if tiebreak is None else (tiebreak,)
        order = np.lexsort((*keys, -scores, rows))
        ids = np.full((n_rows, n), -1)
        for r in range(n_rows):
            mine = order[rows[order] == r][:n]
            ids[r, : len(mine)] = items[mine]
        return ids

    rng = np.random.default_rng(0)
    for _ in range(30):
        n_rows = int(rng.integers(1, 4))
        counts = rng.integers(0, 60, size=n_rows)
        rows = np.repeat(np.arange(n_rows), counts)
        items = np.concatenate(
            [np.sort(rng.choice(500, size=c, replace=False)) for c in counts]
        ).astype(np.int64)
        scores = rng.integers(0, 5, size=len(rows)).astype(np.float64)  # many exact ties
        tb = -rng.integers(0, 3, size=len(rows))
        for n in (1, 5, 30, 80):
            for t in (None, tb):
                got = retrieval.segment_topk(rows, items, scores, n_rows, n, tiebreak=t)[0]
                np.testing.assert_array_equal(got, full_sort(rows, items, scores, n_rows, n, t))


@pytest.mark.parametrize("causal", ["false", "true"])
def test_causal_and_per_sample_training_both_learn_the_planted_clusters(planted, causal) -> None:
    _, split = planted
    model = DeepRetrieval(
        load_config(DRConfig, overrides=[*TINY, f"train.causal={causal}"]), device="cpu"
    )
    model.fit(split.train, split.n_items)
    dr, _ = model.recommend(split.test_history, 10)
    bf = _brute_force(model, split.test_history, 10)
    r_dr = evaluate_recommendations(dr, split.test_truth, [10])["recall@10"]
    r_bf = evaluate_recommendations(bf, split.test_truth, [10])["recall@10"]
    # Observed (seed 0): per-sample 0.558 / 0.558, causal 0.573 / 0.573 (DR / brute force).
    assert r_bf > 0.5 and r_dr >= 0.95 * r_bf, (r_dr, r_bf)


def test_reranker_epochs_train_the_reranker_alone_first(planted):
    """``reranker_epochs`` pass over the samples training the encoder and reranker only (the
    structure network keeps its weights, no path assignment follows), then the network epochs
    run as before (here with the reranker frozen: ``joint_epochs=0``)."""
    from deep_retrieval.index.state import build_state
    from deep_retrieval.training.batch import fit_state

    _, split = planted
    cfg = load_config(DRConfig, overrides=[*TINY, "train.epochs=1", "train.joint_epochs=0",
                                           "train.reranker_epochs=2"])
    state = build_state(cfg, split.n_items, ordered=split.train.ordered)

    def weights():
        return {k: v.clone() for k, v in state.net.state_dict().items()}

    snapshots = [weights()]
    paths = [state.item_paths.path_ids.copy()]

    def on_event(entry):
        snapshots.append(weights())
        paths.append(state.item_paths.path_ids.copy())

    fit_state(state, split.train, on_event=on_event)
    history = state.history
    assert [e["epoch"] for e in history] == [1, 2, 3]
    assert [e.get("reranker_only", False) for e in history] == [True, True, False]
    for e in history[:2]:
        assert e["structure_loss"] == 0.0 and e["softmax_loss"] > 0
        assert "largest_path_size" not in e
    assert history[2]["softmax_loss"] == 0.0 and "largest_path_size" in history[2]

    def changed(a, b, prefix):
        return any(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))

    for before, after in itertools.pairwise(snapshots[:3]):
        assert changed(before, after, "reranker.") and not changed(before, after, "structure.")
    assert changed(snapshots[2], snapshots[3], "structure.")
    assert not changed(snapshots[2], snapshots[3], "reranker.")
    np.testing.assert_array_equal(paths[0], paths[2])  # no assignment after reranker epochs
    assert not np.array_equal(paths[2], paths[3])


def test_kmeans_init_places_items_from_the_trained_reranker(planted, monkeypatch):
    """``assignment.init=kmeans``: when the first network epoch starts, after the reranker
    epochs, every item's paths are residual k-means of the reranker's item vectors as they are
    then; random init never calls it."""
    from deep_retrieval.core.paths import kmeans_path_ids
    from deep_retrieval.index.state import build_state
    from deep_retrieval.training import batch, step

    _, split = planted
    seen = []

    def spy(state):
        keys = state.net.reranker.keys().detach().numpy().copy()
        step.kmeans_paths(state)
        seen.append((keys, state.item_paths.path_ids.copy()))

    monkeypatch.setattr(batch, "kmeans_paths", spy)
    for init, calls in (("kmeans", 1), ("random", 1)):  # calls so far
        cfg = load_config(DRConfig, overrides=[
            *TINY, "train.epochs=2", "train.joint_epochs=0", "train.reranker_epochs=1",
            f"assignment.init={init}",
        ])
        state = build_state(cfg, split.n_items, ordered=split.train.ordered)
        batch.fit_state(state, split.train)
        assert len(seen) == calls
    keys, ids = seen[0]
    codec = build_state(cfg, split.n_items, ordered=True).codec
    np.testing.assert_array_equal(ids, kmeans_path_ids(keys, codec, 2, np.random.default_rng(0)))
    with pytest.raises(ConfigError, match=r"paths_per_item \(3\) must be ≤ structure.n_nodes"):
        load_config(DRConfig, overrides=["structure.n_nodes=2", "assignment.init=kmeans"])


def test_scoring_budget_default_is_ten_percent_below_30k_items_and_two_from_there():
    from deep_retrieval.index import retrieval
    from deep_retrieval.index.state import build_state

    tiny = load_config(DRConfig, overrides=TINY)
    for n_items, share in ((100, 0.10), (29_999, 0.10), (30_000, 0.02), (40_000, 0.02)):
        state = build_state(tiny, n_items, ordered=True)
        assert retrieval.scoring_budget(state) == pytest.approx(share * n_items)
    state.removed[:10_001] = True  # the budget counts servable items: 29,999 left
    assert retrieval.scoring_budget(state) == pytest.approx(0.10 * 29_999)
    given = load_config(DRConfig, overrides=[*TINY, "retrieval.max_fraction_scored=0.5"])
    assert retrieval.scoring_budget(build_state(given, 100, ordered=True)) == pytest.approx(50)


def test_penalty_scale_follows_the_interactions_per_item(planted):
    from deep_retrieval.config import PENALTY_REFERENCE_DENSITY
    from deep_retrieval.index.state import build_state

    _, split = planted
    counts = np.full(split.n_items, 40)  # interactions per item
    for scale, want in (("none", 1e-4), ("interactions", 40e-4 / PENALTY_REFERENCE_DENSITY)):
        cfg = load_config(DRConfig, overrides=[*TINY, f"assignment.penalty_scale={scale}"])
        state = build_state(cfg, split.n_items, ordered=True, item_counts=counts)
        assert state.penalty() == pytest.approx(want)
    with pytest.raises(ConfigError, match="penalty_scale"):
        load_config(DRConfig, overrides=["assignment.penalty_scale=items"])


ONE_EPOCH = ["train.epochs=1", "train.joint_epochs=1"]


def test_exhaustive_top_matches_a_full_sort_and_skips_removed_items(planted):
    from deep_retrieval.index import retrieval

    _, split = planted
    model = DeepRetrieval(load_config(DRConfig, overrides=[*TINY, *ONE_EPOCH]), device="cpu")
    model.fit(split.train, split.n_items)
    state = model.state
    state.removed[::7] = True
    u = retrieval.user_embeddings(state, split.test_history)
    keys, bias = retrieval.rerank_table(state)
    scores = state.net.reranker.query(u).numpy() @ keys.T + bias  # (U, V)
    scores[:, state.removed] = -np.inf
    want = np.argsort(-scores, axis=1, kind="stable")[:, :30]
    # blocks merge across 10 steps
    got, got_scores = retrieval.exhaustive_top(state, split.test_history, 30, item_block=17)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got_scores, np.take_along_axis(scores, want, 1), rtol=1e-5)
    assert not np.isin(got, np.flatnonzero(state.removed)).any()
    padded, _ = retrieval.exhaustive_top(state, split.test_history.rows(np.arange(2)),
                                         split.n_items + 5)
    assert (padded[:, -5 - state.removed.sum() :] == -1).all()


def test_recall_targeted_calibration_picks_the_smallest_beam_reaching_it(planted, tmp_path):
    """With ``target_recall``, fit measures recall@n against the reranker's exhaustive top n per
    beam; a request gets the smallest beam reaching the target; the beam that covers every path
    reaches recall 1; the curve is saved with the bundle and shown in ``diagnostics()``."""
    from deep_retrieval.index import retrieval

    _, split = planted
    cfg = load_config(DRConfig, overrides=[*TINY, *ONE_EPOCH, "retrieval.target_recall=0.9",
                                           "retrieval.max_fraction_scored=1"])
    model = DeepRetrieval(cfg, device="cpu").fit(split.train, split.n_items)
    beams, _ = model.state.beam_calibration
    ns, recall = model.state.recall_calibration
    assert ns.tolist() == [1, 5, 10, 20, 50, 100] and recall.shape == (len(ns), len(beams))
    assert beams[-1] == 64 and recall[:, -1].min() > 0.999  # all 8² paths: every item scored
    for n in (1, 10, 30, 100, 150):
        row = recall[min(np.searchsorted(ns, n), len(ns) - 1)]
        want = beams[np.flatnonzero(row >= 0.9)[0]]
        assert model.beam_size_for(n) == want
    # Measured independently: at the chosen beam the served top 10 reaches the target.
    b = model.beam_size_for(10)
    hist = split.train.rows(np.arange(200))
    got, _ = model.recommend(hist, 10, beam_size=b)
    exact, _ = retrieval.exhaustive_top(model.state, hist, 10)
    assert np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, exact, strict=True)]) > 0.8
    diag = model.diagnostics()["beam_for_n"]
    assert diag[10]["beam"] == b and diag[10]["recall"] >= 0.9 and diag[10]["fraction_scored"] > 0
    loaded = DeepRetrieval.load(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.state.recall_calibration[1], recall)
    assert loaded.beam_size_for(10) == b
    # A budget: beams past it are not measured (nan) and never chosen; a target beyond reach
    # gets the largest beam within the budget.
    budget = load_config(DRConfig, overrides=[*TINY, *ONE_EPOCH, "retrieval.target_recall=1",
                                              "retrieval.max_fraction_scored=0.3"])
    capped = DeepRetrieval(budget, device="cpu").fit(split.train, split.n_items)
    beams, means = capped.state.beam_calibration
    within = means <= 0.3 * split.n_items
    assert 0 < within.sum() < len(beams)
    assert np.isnan(capped.state.recall_calibration[1][:, ~within]).all()
    assert not np.isnan(capped.state.recall_calibration[1][:, within]).any()
    assert capped.beam_size_for(10) == beams[np.flatnonzero(within)[-1]]
    # Without a target the candidate rule applies and no recall curve is measured.
    plain = DeepRetrieval(
        load_config(DRConfig, overrides=[*TINY, *ONE_EPOCH, "retrieval.target_recall=none"]),
        device="cpu",
    )
    plain.fit(split.train, split.n_items)
    assert plain.state.recall_calibration is None
    assert "recall" not in plain.diagnostics()["beam_for_n"][10]
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(ConfigError, match="target_recall"):
            load_config(DRConfig, overrides=[f"retrieval.target_recall={bad}"])
        with pytest.raises(ConfigError, match="max_fraction_scored"):
            load_config(DRConfig, overrides=[f"retrieval.max_fraction_scored={bad}"])
