from __future__ import annotations

import numpy as np
import pytest

from deep_retrieval.config import ProtocolConfig
from deep_retrieval.data.protocols import default_holdout_size, fixed_split, make_split, paper_split
from deep_retrieval.data.types import FixedSplit, Interactions, Sequences


def _log(n_users=40, per_user=12, seed=0):
    rng = np.random.default_rng(seed)
    users, items, ratings, ts = [], [], [], []
    for u in range(n_users):
        n = per_user + u % 3
        users += [u] * n
        items += list(rng.choice(50, n, replace=False) + 100)
        ratings += [5.0] * n
        ts += list(rng.permutation(n) + 1000 * u)
    return Interactions(
        np.array(users), np.array(items), np.array(ratings, np.float32), np.array(ts)
    )


def test_sequences_helpers():
    s = Sequences.from_lists([[1, 2, 3], [], [4, 5]])
    assert s.lengths.tolist() == [3, 0, 2]
    assert s.rows(np.array([2, 0])).items.tolist() == [4, 5, 1, 2, 3]
    assert s.last(2).items.tolist() == [2, 3, 4, 5]
    np.testing.assert_array_equal(s.padded(2), [[2, 3], [-1, -1], [4, 5]])
    assert s.to_csr(6).toarray().sum() == 5


def test_paper_protocol_rules():
    log = _log()
    cfg = ProtocolConfig(n_valid_users=5, n_test_users=6, history_len=4, seed=1)
    s = paper_split(log, cfg)
    assert len(s.test_truth) == 6 and len(s.valid_truth) == 5 and len(s.train) == 29
    assert not set(s.test_user_ids) & set(s.valid_user_ids)
    assert not set(s.train_user_ids) & (set(s.test_user_ids) | set(s.valid_user_ids))
    assert s.test_exclude is None
    for row, user in enumerate(s.test_user_ids):
        mine = np.flatnonzero(log.users == user)
        seq = log.items[mine[np.argsort(log.timestamps[mine])]]
        half = len(seq) // 2
        # history: the last history_len items of the first half, in time order
        np.testing.assert_array_equal(s.item_ids[s.test_history[row]], seq[:half][-4:])
        assert set(s.item_ids[s.test_truth[row]]) == set(seq[half:])
    # training rows are time ordered
    u0 = s.train_user_ids[0]
    mine = np.flatnonzero(log.users == u0)
    np.testing.assert_array_equal(
        s.item_ids[s.train[0]], log.items[mine[np.argsort(log.timestamps[mine])]]
    )
    assert s.n_interactions == len(log)


def test_paper_protocol_filters_ratings_and_short_users(caplog):
    log = _log()
    ratings = log.ratings.copy()
    ratings[log.users == 0] = 3.0  # user 0 drops out entirely
    short = Interactions(
        np.concatenate([log.users, [99] * 5]),
        np.concatenate([log.items, [100] * 5]),
        np.concatenate([ratings, [5.0] * 5]).astype(np.float32),
        np.concatenate([log.timestamps, np.arange(5)]),
    )
    with caplog.at_level("INFO", logger="deep_retrieval"):
        s = paper_split(short, ProtocolConfig(n_valid_users=2, n_test_users=2))
    all_users = set(s.train_user_ids) | set(s.test_user_ids) | set(s.valid_user_ids)
    assert 0 not in all_users and 99 not in all_users and len(all_users) == 39
    # Every filter says what it dropped.
    n_zero = int((log.users == 0).sum())
    assert f"protocol.min_rating = 4.0 dropped {n_zero} of {len(short)} interactions, 1 users" \
        in caplog.text
    assert "protocol.min_user_interactions = 10 dropped 5 of 512 interactions, 1 users" \
        in caplog.text


def test_paper_filter_seen_excludes_first_half():
    s = paper_split(
        _log(), ProtocolConfig(n_valid_users=2, n_test_users=3, filter_seen=True, history_len=2)
    )
    for row in range(3):
        assert len(s.test_exclude[row]) >= len(s.test_history[row])
        assert set(s.test_history[row]) <= set(s.test_exclude[row])


def test_paper_too_few_users():
    with pytest.raises(ValueError, match="n_test_users"):
        paper_split(_log(n_users=4), ProtocolConfig(n_valid_users=2, n_test_users=2))


def test_default_holdout_size():
    assert default_holdout_size(129_797) == 1000
    assert default_holdout_size(600) == 100
    assert default_holdout_size(5000) == 500


def test_fixed_split_rules():
    train = Interactions(np.array([1, 1, 2, 2, 3]), np.array(["a", "b", "b", "c", "a"]))
    test = Interactions(np.array([1, 2]), np.array(["c", "a"]))
    s = fixed_split(FixedSplit(train, test))
    assert s.protocol == "fixed-split" and not s.train.ordered
    assert list(s.test_user_ids) == [1, 2]  # user 3 has no test items -> not evaluated
    assert [set(s.item_ids[s.test_exclude[r]]) for r in range(2)] == [{"a", "b"}, {"b", "c"}]
    assert [set(s.item_ids[s.test_truth[r]]) for r in range(2)] == [{"c"}, {"a"}]
    assert s.summary() == {
        "n_users": 3,
        "n_items": 3,
        "n_interactions": 7,
        "n_train_users": 3,
        "n_test_users": 2,
    }
    with pytest.raises(ValueError, match="fixed-split"):
        make_split(FixedSplit(train, test), "paper", ProtocolConfig())


def test_all_users_keeps_short_histories_and_holds_no_one_out(caplog):
    log = _log()
    short = Interactions(  # user 99 has 3 interactions, one rated below min_rating
        np.concatenate([log.users, [99] * 3]),
        np.concatenate([log.items, [100, 101, 102]]),
        np.concatenate([log.ratings, [5.0, 5.0, 2.0]]).astype(np.float32),
        np.concatenate([log.timestamps, [3, 1, 2]]),
    )
    with caplog.at_level("INFO", logger="deep_retrieval"):
        s = make_split(short, "all-users", ProtocolConfig())
    assert s.protocol == "all-users" and len(s.train) == 41 and 99 in s.train_user_ids
    assert len(s.test_truth) == len(s.test_user_ids) == len(s.valid_user_ids) == 0
    row = int(np.flatnonzero(s.train_user_ids == 99)[0])
    assert s.item_ids[s.train.rows([row]).items].tolist() == [101, 100]  # time order, rated ≥ 4
    assert "protocol.min_rating = 4.0 dropped 1 of" in caplog.text
    assert s.n_interactions == len(log) + 2
    # A filter drops short histories only when set, and says so.
    caplog.clear()
    with caplog.at_level("INFO", logger="deep_retrieval"):
        s = make_split(short, "all-users", ProtocolConfig(min_user_interactions=5))
    assert 99 not in s.train_user_ids and len(s.train) == 40
    assert "protocol.min_user_interactions = 5 dropped 2 of" in caplog.text


def test_all_users_joins_a_fixed_split():
    train = Interactions(np.array([1, 1, 2]), np.array([10, 11, 10]))
    test = Interactions(np.array([1, 3]), np.array([12, 11]))
    s = make_split(FixedSplit(train, test), "all-users", ProtocolConfig())
    assert s.train_user_ids.tolist() == [1, 2, 3] and s.item_ids.tolist() == [10, 11, 12]
    assert s.train.lengths.tolist() == [3, 1, 1]


def test_paper_protocol_too_few_users_points_at_all_users():
    with pytest.raises(ValueError, match="train --all-users"):
        paper_split(_log(n_users=40), ProtocolConfig(n_valid_users=0, n_test_users=40))
