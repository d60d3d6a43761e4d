"""Synthetic corpora: shape, determinism, the planted structure, the held-out split."""

from __future__ import annotations

import numpy as np
import pytest

from deep_retrieval.data.corpus import SHAPES, make_corpus, make_corpus_shape


def test_shape_and_determinism() -> None:
    a = make_corpus(300, 1_000, 6_000, dim=8, seed=3)
    b = make_corpus(300, 1_000, 6_000, dim=8, seed=3)
    assert len(a.sequences) == 300 and a.sequences.n_interactions == 6_000
    assert a.sequences.lengths.min() >= 2 and a.sequences.items.max() < 1_000
    assert a.item_vectors.shape == (1_000, 8) and a.item_vectors.dtype == np.float32
    np.testing.assert_array_equal(a.sequences.items, b.sequences.items)
    np.testing.assert_array_equal(a.item_vectors, b.item_vectors)
    assert not np.array_equal(
        a.sequences.items, make_corpus(300, 1_000, 6_000, dim=8, seed=4).sequences.items
    )


def test_popularity_is_a_power_law_and_users_stay_in_their_clusters() -> None:
    c = make_corpus(2_000, 5_000, 60_000, n_clusters=20, noise=0.05, seed=0)
    counts = np.sort(np.bincount(c.sequences.items, minlength=5_000))[::-1]
    assert counts[:50].sum() > 0.2 * counts.sum()  # the head is heavy (observed 0.36)
    # Most of a user's items come from at most three clusters.
    in_top3 = []
    for u in range(200):
        cl = np.bincount(c.item_cluster[c.sequences[u]], minlength=20)
        in_top3.append(np.sort(cl)[::-1][:3].sum() / cl.sum())
    assert np.mean(in_top3) > 0.9  # observed 0.99


def test_planted_vectors_beat_popularity_on_held_out_users() -> None:
    c = make_corpus(3_000, 2_000, 60_000, seed=1)
    split = c.split(200)
    assert split.n_items == 2_000 and len(split.test_truth) == 200
    V, b = c.item_vectors, c.item_bias
    pop = np.bincount(split.train.items, minlength=2_000)

    def recall(scores: np.ndarray) -> float:
        hits = []
        for i in range(200):
            s = scores[i].copy()
            s[split.test_exclude[i]] = -np.inf
            top = np.argsort(-s)[:50]
            hits.append(np.isin(split.test_truth[i], top).mean())
        return float(np.mean(hits))

    q = np.stack([V[split.test_history[i]].mean(0) for i in range(200)])
    planted = recall(q @ V.T / 0.1 + b)
    popular = recall(np.tile(pop.astype(float), (200, 1)))
    assert planted > 1.5 * popular, (planted, popular)  # observed 0.52 vs 0.24


def test_named_shapes_and_bad_input() -> None:
    assert SHAPES["ml-20m"] == (138_493, 26_744, 20_000_263)
    small = make_corpus_shape("amazon-books", scale=1e-3)
    assert small.n_items == round(1_477_922 * 1e-3)
    with pytest.raises(ValueError, match="unknown corpus shape"):
        make_corpus_shape("ml-30m")
    with pytest.raises(ValueError, match="n_interactions"):
        make_corpus(10, 10, 5)
    with pytest.raises(ValueError, match="n_test_users"):
        make_corpus(10, 10, 40).split(10)


def test_synth_command_writes_a_readable_movielens_set(tmp_path, capsys) -> None:
    from deep_retrieval.cli import main
    from deep_retrieval.data.readers import read_movielens

    assert main(["synth", "--shape", "ml-20m", "--scale", "0.001", "--out", str(tmp_path)]) == 0
    log = read_movielens(tmp_path / "ratings.csv")
    assert len(log) == round(20_000_263 * 0.001) and set(np.unique(log.ratings)) == {5.0}
    assert np.load(tmp_path / "item_vectors.npy").shape == (round(26_744 * 0.001), 32)
    assert "--ratings-file" in capsys.readouterr().out
    # Timestamps increase along each user's row, so the paper protocol's time order is the row.
    c = make_corpus_shape("ml-20m", scale=0.001)
    np.testing.assert_array_equal(log.items[log.users == 3], c.sequences[3])
    assert main(["synth", "--out", str(tmp_path)]) == 2
