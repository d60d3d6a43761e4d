from __future__ import annotations

import numpy as np
import pytest

from deep_retrieval.data.types import Sequences
from deep_retrieval.evaluation.metrics import evaluate_recommendations, hit_matrix, per_user_metrics


def test_hand_computed_example():
    # user 0: truth {1, 2, 3}; recs [1, 9, 3, -1] -> hits at ranks 1 and 3
    # user 1: truth {5};       recs [7, 8, 6, 4]  -> no hit
    recs = np.array([[1, 9, 3, -1], [7, 8, 6, 4]])
    truth = Sequences.from_lists([[1, 2, 3], [5]])
    m = per_user_metrics(recs, truth, [2, 4])
    np.testing.assert_allclose(m["precision@2"], [0.5, 0.0])
    # Padding counts as a miss, the divisor stays k.
    np.testing.assert_allclose(m["precision@4"], [0.5, 0.0])
    np.testing.assert_allclose(m["recall@2"], [1 / 3, 0.0])
    np.testing.assert_allclose(m["recall@4"], [2 / 3, 0.0])
    # F per user: 2PR/(P+R) with P=.5, R=2/3 -> 4/7
    np.testing.assert_allclose(m["f1@4"], [4 / 7, 0.0])
    np.testing.assert_allclose(m["hit_rate@2"], [1.0, 0.0])
    dcg = 1 / np.log2(2) + 1 / np.log2(4)
    idcg = 1 / np.log2(2) + 1 / np.log2(3) + 1 / np.log2(4)
    np.testing.assert_allclose(m["ndcg@4"], [dcg / idcg, 0.0])
    # ndcg@2: truth larger than k -> ideal uses k positions
    np.testing.assert_allclose(m["ndcg@2"], [1 / (1 + 1 / np.log2(3)), 0.0])
    avg = evaluate_recommendations(recs, truth, [4])
    assert avg["recall@4"] == pytest.approx(1 / 3)  # unweighted mean over users
    assert avg["f1@4"] == pytest.approx(2 / 7)  # mean of per-user F, not F of means


def test_perfect_ranking_scores_one():
    truth = Sequences.from_lists([[4, 2], [0]])
    recs = np.array([[2, 4, 7], [0, 1, 2]])
    m = evaluate_recommendations(recs, truth, [2])
    assert m["recall@2"] == 1.0 and m["ndcg@2"] == pytest.approx(1.0)


def test_padding_never_hits_and_errors():
    truth = Sequences.from_lists([[0]])
    assert not hit_matrix(np.array([[-1, -1]]), truth).any()
    with pytest.raises(ValueError, match="empty ground truth"):
        per_user_metrics(np.array([[1]]), Sequences.from_lists([[]]), [1])
    with pytest.raises(ValueError, match="k=3"):
        per_user_metrics(np.array([[1, 2]]), truth, [3])
