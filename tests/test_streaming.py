"""Streaming training (deep_retrieval.training.stream): time order, per-user samples,
the decayed merge, path assignment as it goes, bundles, and quality against a floor (and, slow,
against batch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_model import TINY as MODEL_TINY

from deep_retrieval.baselines import MostPopular
from deep_retrieval.config import DRConfig, ProtocolConfig, StreamConfig, load_config
from deep_retrieval.core.assignment import accumulate_path_scores
from deep_retrieval.data.protocols import paper_split
from deep_retrieval.data.samples import TrainingSamples
from deep_retrieval.data.synthetic import make_clustered
from deep_retrieval.data.types import Interactions
from deep_retrieval.estimator import DeepRetrieval, stream_train
from deep_retrieval.evaluation.metrics import evaluate_recommendations
from deep_retrieval.training.stream import (
    StreamChunk,
    _Histories,
    stream_vocabulary,
    time_ordered_chunks,
)

# The model tests' tiny settings; a stream sets its own passes instead of epochs.
TINY = [o for o in MODEL_TINY if not o.startswith(("train.epochs=", "train.joint_epochs="))]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """These networks are tiny: a second torch thread only adds overhead, and on a busy machine
    (measured with other jobs running) two threads made the streamed fixture 7× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def planted():
    """Planted clusters, re-timed so the stream interleaves users (every user's t-th event at
    time t, users in id order): a stream where user by user would be the degenerate case."""
    data = make_clustered(n_users=500, n_items=160, n_clusters=8, interactions_per_user=24, seed=0)
    log = data.interactions
    position = np.tile(np.arange(24), 500)
    log = Interactions(log.users, log.items, None, (position * 10_000 + log.users).astype(np.int64))
    split = paper_split(log, ProtocolConfig(n_valid_users=0, n_test_users=100, min_rating=0))
    return log, split


def _recall(model, split, n=10):
    ids, _ = model.recommend(split.test_history, n)
    return evaluate_recommendations(ids, split.test_truth, [n])[f"recall@{n}"]


# ---------------------------------------------------------------------------------- reading


def test_chunks_in_time_order_with_filters_and_item_ids():
    log = Interactions(
        users=np.array([1, 2, 1, 3, 2, 1, 3]),
        items=np.array([10, 20, 30, 10, 40, 20, 99]),
        ratings=np.array([5, 5, 2, 5, 5, 4, 5], dtype=np.float32),
        timestamps=np.array([30, 10, 5, 10, 40, 20, 50]),
    )
    item_ids = np.array([40, 10, 20])  # internal id = position: 40 → 0, 10 → 1, 20 → 2
    chunks = list(
        time_ordered_chunks(log, 2, item_ids=item_ids, users=np.array([1, 2]), min_rating=4)
    )
    assert [len(c) for c in chunks] == [2, 2]  # rating 2, user 3 and item 99 dropped
    users = np.concatenate([c.users for c in chunks])
    items = np.concatenate([c.items for c in chunks])
    times = np.concatenate([c.timestamps for c in chunks])
    np.testing.assert_array_equal(times, [10, 20, 30, 40])
    np.testing.assert_array_equal(users, [2, 1, 1, 2])
    np.testing.assert_array_equal(items, [2, 2, 1, 0])
    # Ties keep file order; without item_ids the vocabulary is the sorted distinct items.
    tied = Interactions(np.array([7, 8, 9]), np.array([5, 6, 5]), None, np.array([1, 1, 0]))
    (only,) = time_ordered_chunks(tied, 10)
    np.testing.assert_array_equal(only.users, [9, 7, 8])
    np.testing.assert_array_equal(stream_vocabulary(tied)[only.items], [5, 5, 6])


def test_no_timestamps_is_a_clear_error():
    log = Interactions(np.array([1, 2]), np.array([3, 4]))
    with pytest.raises(ValueError, match="no timestamps"):
        next(time_ordered_chunks(log, 10))


def test_histories_are_the_items_before_each_event(planted):
    """Across chunk boundaries and repeated users inside a chunk, each event's history equals the
    batch sample of TrainingSamples (the ≤ L items before it in the user's time-ordered row)."""
    log, split = planted
    L = 5
    hist = _Histories(L)
    got: dict[int, list[np.ndarray]] = {}
    for chunk in time_ordered_chunks(log, 37, item_ids=split.item_ids, users=split.train_user_ids):
        h = hist.advance(hist.rows_of(chunk.users), chunk.items)
        for u, row in zip(chunk.users.tolist(), h, strict=True):
            got.setdefault(u, []).append(row)
    samples = TrainingSamples(split.train, L, skip_first=False)
    for r, user in enumerate(split.train_user_ids[:50].tolist()):
        n = split.train.lengths[r]
        want, _ = samples.batch(np.full(n, r), np.arange(n))
        np.testing.assert_array_equal(np.stack(got[user]), want)


def test_out_of_order_events_and_bad_items_are_refused():
    cfg = load_config(DRConfig, overrides=TINY)
    backwards = [
        (np.array([1, 2]), np.array([0, 1]), np.array([5, 6])),
        (np.array([1]), np.array([2]), np.array([4])),
    ]
    with pytest.raises(ValueError, match="time order"):
        stream_train(DeepRetrieval(cfg, device="cpu"), backwards, 4, StreamConfig(chunk_size=8))
    with pytest.raises(ValueError, match="n_items"):
        stream_train(
            DeepRetrieval(cfg, device="cpu"),
            [(np.array([1, 1]), np.array([0, 9]))],
            4,
            StreamConfig(chunk_size=8),
        )


# ---------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def streamed(planted, tmp_path_factory):
    log, split = planted
    out = tmp_path_factory.mktemp("bundles")
    events_seen = []
    config = StreamConfig(chunk_size=512, passes=2, replay=512, reassign_every=1024, decay=0.999,
                          bundle_every=2048, bundle_dir=str(out), keep_bundles=2)
    chunks = time_ordered_chunks(log, 512, item_ids=split.item_ids, users=split.train_user_ids)
    model = stream_train(
        DeepRetrieval(load_config(DRConfig, overrides=TINY), device="cpu"),
        chunks,
        split.n_items,
        config,
        item_ids=split.item_ids,
        on_event=events_seen.append,
    )
    return model, out, events_seen


def test_streamed_model_beats_popularity_and_random(streamed, planted):
    _, split = planted
    model, _, _ = streamed
    recall = _recall(model, split)
    pop_ids, _ = MostPopular().fit(split.train, split.n_items).recommend(split.test_history, 10)
    popular = evaluate_recommendations(pop_ids, split.test_truth, [10])["recall@10"]
    # 8 planted clusters of 20 items. Observed: streamed 0.573; batch DR with the same DRConfig on
    # the same split 0.554; most-popular 0.124; random 0.055.
    assert recall >= 0.4, recall
    assert recall >= 3 * popular, (recall, popular)
    # Paths are assigned as the stream goes (every 1,024 of 9,600 events, and at the end).
    assignments = [e for e in model.history_ if e["event"] == "assignment"]
    assert len(assignments) == 10
    assert [e["interactions"] for e in assignments][:3] == [1024, 2048, 3072]
    assert model.item_counts_.sum() == split.train.n_interactions


def test_bundles_written_as_it_goes_and_load(streamed, planted):
    _, split = planted
    model, out, events = streamed
    written = [e["interactions"] for e in events if e["event"] == "bundle"]
    assert written == [2048, 4096, 6144, 8192, 9600]  # every 2,048 events, and at the end
    kept = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert kept == ["LATEST", "bundle-000000008192", "bundle-000000009600"]  # keep_bundles=2
    assert (out / "LATEST").read_text().strip() == "bundle-000000009600"
    final = DeepRetrieval.load(out / "bundle-000000009600", device="cpu")
    hist = split.test_history.rows(np.arange(20))
    np.testing.assert_array_equal(final.recommend(hist, 10)[0], model.recommend(hist, 10)[0])
    np.testing.assert_array_equal(final.item_ids_, split.item_ids)
    earlier = DeepRetrieval.load(out / "bundle-000000008192", device="cpu")
    assert earlier.training_["stream"]["interactions"] == 8192
    assert earlier.recommend(hist, 10)[0].shape == (20, 10)


def test_a_bundle_continues_streaming(streamed, planted):
    """A loaded bundle is a fitted model: streaming the events after it continues its training."""
    log, split = planted
    _, out, _ = streamed
    model = DeepRetrieval.load(out / "bundle-000000008192", device="cpu")
    chunks = time_ordered_chunks(log, 512, item_ids=split.item_ids, users=split.train_user_ids)
    rest = list(chunks)[16:]
    assert sum(len(c) for c in rest) == 9600 - 8192
    before = model.item_counts_.sum()
    model = stream_train(model, rest, config=StreamConfig(chunk_size=512, reassign_every=1024))
    assert model.item_counts_.sum() == before + 9600 - 8192
    assert _recall(model, split) >= 0.4  # observed 0.587 (0.564 for the bundle it continued from)


@pytest.mark.parametrize("decay", [1.0, 0.5])
def test_path_scores_are_the_decayed_merge(decay):
    """On a fixed network (learning rate 0) with a beam over every path (lists never fill, so the
    merge never evicts), each item's score must be ``Σ_i η^(later occurrences of v) p(c | x_i)``:
    the plain sum for η = 1 (= accumulate_path_scores), a decayed one for η < 1. A stream that
    ignored η, or scored instances with another network, fails one of the two."""
    overrides = [*TINY, "train.lr=0.0", "assignment.n_candidates=64", "structure.n_nodes=8"]
    cfg = load_config(DRConfig, overrides=overrides)  # K^D = 64 paths, S = 64: every path listed
    rng = np.random.default_rng(3)
    n_items, n_events = 12, 300
    users = rng.integers(0, 20, n_events)
    items = rng.integers(0, n_items, n_events)
    chunks = [(users[lo : lo + 64], items[lo : lo + 64]) for lo in range(0, n_events, 64)]
    model = stream_train(DeepRetrieval(cfg, device="cpu"), chunks, n_items,
                         StreamConfig(chunk_size=50, decay=decay, reassign_every=10_000))
    got = model.path_scores_

    # Independent reference: each event's history from plain Python lists, every path's exact
    # probability from the (unchanged) network, decayed by the item's later occurrences.
    seen: dict[int, list[int]] = {}
    hist_rows, targets = [], []
    for u, v in zip(users.tolist(), items.tolist(), strict=True):
        past = seen.setdefault(u, [])
        if past:
            row = np.full(cfg.train.history_len, -1)
            tail = past[-cfg.train.history_len :]
            row[len(row) - len(tail) :] = tail
            hist_rows.append(row)
            targets.append(v)
        past.append(v)
    targets = np.array(targets)
    all_paths = model.codec_.decode(np.arange(model.codec_.n_paths))  # (64, D)
    all_paths = torch.as_tensor(all_paths, dtype=torch.long)
    with torch.no_grad():
        u = model.net_.user_embedding(torch.as_tensor(np.stack(hist_rows)))
        log_p = model.net_.structure.log_prob(u, all_paths.expand(len(u), -1, -1))
        p = log_p.exp().double().numpy()  # (N, 64)
    later = np.array([(targets[i + 1 :] == v).sum() for i, v in enumerate(targets)])
    weights = decay ** later
    want = np.zeros((n_items, model.codec_.n_paths))
    np.add.at(want, targets, p * weights[:, None])
    dense = np.zeros_like(want)
    rows = np.repeat(np.arange(n_items), got.n_keep)
    ok = got.path_ids.ravel() >= 0
    dense[rows[ok], got.path_ids.ravel()[ok]] = got.scores.ravel()[ok]
    np.testing.assert_allclose(dense, want, rtol=1e-4, atol=1e-9)
    np.testing.assert_array_equal(got.counts, np.bincount(targets, minlength=n_items))
    if decay == 1.0:
        plain = accumulate_path_scores(
            targets, np.tile(np.arange(64), (len(targets), 1)), p, n_items, 64
        )
        assert (got.path_ids[:, 64:] == -1).all()  # the S + J slots never filled
        np.testing.assert_array_equal(got.path_ids[:, :64], plain.path_ids)
        np.testing.assert_allclose(got.scores[:, :64], plain.scores, rtol=1e-4, atol=1e-9)
    else:  # and the decay mattered: the plain sum is far from it
        plain = np.zeros_like(want)
        np.add.at(plain, targets, p)
        assert not np.allclose(dense, plain, rtol=1e-2)


def test_chunk_tuples_and_stream_chunks_agree(planted):
    """The same events as (users, items) tuples of any size or as StreamChunks
    give the same model."""
    log, split = planted
    chunks = time_ordered_chunks(log, 1000, item_ids=split.item_ids, users=split.train_user_ids)
    chunks = list(chunks)[:3]
    cfg = load_config(DRConfig, overrides=TINY)
    config = StreamConfig(chunk_size=250, reassign_every=500)
    a = stream_train(DeepRetrieval(cfg, device="cpu"), chunks, split.n_items, config)
    tuples = [(c.users, c.items, c.timestamps) for c in chunks]
    b = stream_train(DeepRetrieval(cfg, device="cpu"), iter(tuples), split.n_items, config)
    np.testing.assert_array_equal(a.item_paths_.path_ids, b.item_paths_.path_ids)
    hist = split.test_history.rows(np.arange(10))
    np.testing.assert_array_equal(a.recommend(hist, 5)[0], b.recommend(hist, 5)[0])
    assert isinstance(chunks[0], StreamChunk)


# ---------------------------------------------------------------------------------- slow: real data


@pytest.mark.slow
def test_streamed_within_ten_percent_of_batch_on_movielens_latest_small():
    """The issue's acceptance: on time-ordered MovieLens (latest-small, paper protocol), one stream
    over the training users' interactions reaches ≥ 0.9 × the batch-trained model's recall with the
    same DRConfig. The settings are benchmarks/streaming_vs_batch.py's (see its results.md)."""
    from deep_retrieval.data.protocols import make_split
    from deep_retrieval.data.registry import load_dataset
    from deep_retrieval.evaluation.evaluate import evaluate

    data = load_dataset("movielens-latest-small")
    protocol = ProtocolConfig()
    split = make_split(data, "paper", protocol)
    from deep_retrieval.config import PAPER_SETTINGS

    # the settings benchmarks/streaming_vs_batch.py recorded its comparison with
    dr = load_config(DRConfig, overrides=list(PAPER_SETTINGS))
    batch = DeepRetrieval(dr, device="cpu").fit(split.train, split.n_items)
    config = StreamConfig()  # the defaults are the benchmark's settings
    events = time_ordered_chunks(data, config.chunk_size, item_ids=split.item_ids,
                                 users=split.train_user_ids, min_rating=protocol.min_rating)
    streamed = stream_train(DeepRetrieval(dr, device="cpu"), events, split.n_items, config,
                            item_ids=split.item_ids)
    ks = [10, 20]
    b = evaluate(batch, split.test_history, split.test_truth, ks, n_latency_queries=0).metrics
    s = evaluate(streamed, split.test_history, split.test_truth, ks, n_latency_queries=0).metrics
    # Observed (seed 0, one torch thread): recall@10 0.0684 vs 0.0571, recall@20 0.1173 vs 0.1040.
    for k in ks:
        assert s[f"recall@{k}"] >= 0.9 * b[f"recall@{k}"], (k, s, b)
