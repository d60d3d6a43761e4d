"""Evaluation protocols: turn a raw log into a :class:`~deep_retrieval.data.types.Split`.

``paper`` (TDM/JTM, as used by the DR paper, paper-notes §4.1–4.2):

1. keep interactions with rating ≥ ``min_rating`` when the log has ratings;
2. keep users with ≥ ``min_user_interactions`` interactions (after step 1);
3. the item vocabulary is every item left;
4. draw disjoint validation and test users at random (seeded); everyone else trains;
5. each held-out user's interactions in time order (ties keep file order): the first
   ``⌊n/2⌋`` are the history (the model sees the last ``history_len`` of them), the remaining
   ``⌈n/2⌉`` are the ground truth (as a set);
6. training rows are the full time-ordered sequences of the training users (a model forms
   samples from every interaction and its preceding items);
7. already-seen items are *not* removed from rankings unless ``filter_seen`` is set, in which
   case the whole first half is excluded.

``all-users`` (for production): every user trains and no one is held out; step 1 applies, and
step 2 only when ``min_user_interactions`` is set; rows are time-ordered as in step 6. A fixed
split's files are joined first.

``fixed-split`` (given train/test files, the LightGCN convention): every user's train items are
both a training row and, for users with test items, the history; the test items are the ground
truth; the user's train items are excluded from the ranking. Files without timestamps give
unordered rows (``Sequences.ordered = False``).
"""

from __future__ import annotations

import logging

import numpy as np

from ..config import ProtocolConfig
from .types import FixedSplit, Interactions, Sequences, Split

log = logging.getLogger("deep_retrieval")


def _log_filter(rule: str, before: Interactions, after: Interactions) -> None:
    """Say what a filter dropped: interactions, users and items."""
    if len(after) == len(before):
        return
    users = len(np.unique(before.users)) - len(np.unique(after.users))
    items = len(np.unique(before.items)) - len(np.unique(after.items))
    log.info("%s dropped %d of %d interactions, %d users and %d items", rule,
             len(before) - len(after), len(before), users, items)


#: The paper protocol's ``min_user_interactions`` when the config leaves it ``None``.
PAPER_MIN_USER_INTERACTIONS = 10


def _filter(data: Interactions, config: ProtocolConfig, min_user_interactions: int | None
            ) -> Interactions:
    """Steps 1–2 of the paper protocol (step 2 skipped when ``min_user_interactions`` is None);
    each filter logs what it dropped; ``ValueError`` when nothing is left."""
    if data.ratings is not None:
        rated = data.take(data.ratings >= config.min_rating)
        _log_filter(f"protocol.min_rating = {config.min_rating}", data, rated)
        data = rated
    if min_user_interactions is not None:
        _, user_codes = _encode(data.users)
        counts = np.bincount(user_codes)
        long_enough = data.take(counts[user_codes] >= min_user_interactions)
        _log_filter(f"protocol.min_user_interactions = {min_user_interactions}", data,
                    long_enough)
        data = long_enough
    if len(data) == 0:
        floor = f"≥ {min_user_interactions} interactions" if min_user_interactions else "any"
        raise ValueError(
            f"no user has {floor} with rating ≥ {config.min_rating}; lower"
            " protocol.min_user_interactions or protocol.min_rating"
        )
    return data


def _time_ordered(data: Interactions) -> tuple[np.ndarray, np.ndarray, Sequences]:
    """``(user ids (U,), item ids (V,), one time-ordered row per user)``; ties (and logs
    without timestamps) keep file order."""
    user_ids, user_codes = _encode(data.users)
    item_ids, item_codes = _encode(data.items)
    file_order = np.arange(len(data))
    ts = data.timestamps if data.timestamps is not None else file_order
    order = np.lexsort((file_order, ts, user_codes))
    return user_ids, item_ids, _group(user_codes[order], item_codes[order], len(user_ids),
                                      ordered=True)


def default_holdout_size(n_users: int) -> int:
    """Held-out users per set: ``min(1000, max(100, round(0.1 · n_users)))``, at most a quarter of
    them.

    ML-20M (129,797 eligible users) gets the paper's 1,000; small sets proportionally fewer,
    but never fewer than 100 so the averages stay meaningful.
    """
    return int(min(1000, max(100, round(0.1 * n_users)), n_users // 4))


def _encode(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """External ids → (sorted unique ids ``(V,)``, internal codes ``(N,)`` int64)."""
    uniques, codes = np.unique(values, return_inverse=True)
    return uniques, codes.astype(np.int64).reshape(-1)


def _group(
    user_codes: np.ndarray, item_codes: np.ndarray, n_users: int, ordered: bool
) -> Sequences:
    """Rows by user code, keeping the given (already time-sorted) order inside each row."""
    order = np.argsort(user_codes, kind="stable")
    counts = np.bincount(user_codes, minlength=n_users)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return Sequences(indptr, item_codes[order], ordered)


def split_rows(seqs: Sequences, cut: np.ndarray) -> tuple[Sequences, Sequences]:
    """Each row split at ``cut[u]``: (first ``cut[u]`` items, the rest)."""
    pos = np.arange(seqs.n_interactions) - np.repeat(seqs.indptr[:-1], seqs.lengths)
    in_head = pos < np.repeat(cut, seqs.lengths)
    head_len = np.minimum(cut, seqs.lengths)
    tail_len = seqs.lengths - head_len

    def build(lengths: np.ndarray, mask: np.ndarray) -> Sequences:
        indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        return Sequences(indptr, seqs.items[mask], seqs.ordered)

    return build(head_len, in_head), build(tail_len, ~in_head)


def unique_rows(seqs: Sequences) -> Sequences:
    """Each row with duplicates removed (first occurrence kept, order preserved)."""
    rows = seqs.row_ids()
    n_items = int(seqs.items.max()) + 1 if len(seqs.items) else 1
    _, first = np.unique(rows * n_items + seqs.items, return_index=True)
    keep = np.zeros(len(rows), dtype=bool)
    keep[first] = True
    lengths = np.bincount(rows[keep], minlength=len(seqs))
    indptr = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return Sequences(indptr, seqs.items[keep], seqs.ordered)


def paper_split(data: Interactions, config: ProtocolConfig = ProtocolConfig()) -> Split:
    """The TDM/JTM protocol used by the DR paper (see the module docstring for the rules).

    Raises:
        ValueError: when too few users survive the filters to form the held-out sets.
    """
    floor = config.min_user_interactions
    data = _filter(data, config, PAPER_MIN_USER_INTERACTIONS if floor is None else floor)
    user_ids, item_ids, seqs = _time_ordered(data)
    n_users = len(user_ids)

    n_valid = (
        config.n_valid_users if config.n_valid_users is not None else default_holdout_size(n_users)
    )
    n_test = (
        config.n_test_users if config.n_test_users is not None else default_holdout_size(n_users)
    )
    if n_valid < 0 or n_test < 1 or n_valid + n_test >= n_users:
        raise ValueError(
            f"{n_users} eligible users cannot give {n_valid} validation + {n_test} test users"
            " and still leave training users; set protocol.n_valid_users / protocol.n_test_users,"
            " or train on every user with the all-users protocol (train --all-users)"
        )
    rng = np.random.default_rng(config.seed)
    perm = rng.permutation(n_users)
    valid_users = np.sort(perm[:n_valid])
    test_users = np.sort(perm[n_valid : n_valid + n_test])
    train_users = np.sort(perm[n_valid + n_test :])

    def held_out(users: np.ndarray) -> tuple[Sequences, Sequences, Sequences | None]:
        rows = seqs.rows(users)
        first, second = split_rows(rows, rows.lengths // 2)
        exclude = unique_rows(first) if config.filter_seen else None
        return first.last(config.history_len), unique_rows(second), exclude

    test_history, test_truth, test_exclude = held_out(test_users)
    valid_history, valid_truth, valid_exclude = held_out(valid_users)
    return Split(
        protocol="paper",
        item_ids=item_ids,
        train=seqs.rows(train_users),
        train_user_ids=user_ids[train_users],
        test_user_ids=user_ids[test_users],
        test_history=test_history,
        test_truth=test_truth,
        test_exclude=test_exclude,
        valid_user_ids=user_ids[valid_users],
        valid_history=valid_history,
        valid_truth=valid_truth,
        valid_exclude=valid_exclude,
        n_interactions=len(data),
    )


def fixed_split(data: FixedSplit, config: ProtocolConfig = ProtocolConfig()) -> Split:
    """Given train/test(/valid) logs: history = the user's train items, truth = the test items.

    Train items are excluded from each held-out user's ranking. Users with an empty test list
    are not evaluated. ``config.history_len`` is not applied here: rows are unordered sets when
    the files carry no time, so the model decides how to read a long history.
    """
    parts = [data.train, data.test] + ([data.valid] if data.valid is not None else [])
    item_ids, _ = _encode(np.concatenate([p.items for p in parts]))
    user_ids, _ = _encode(np.concatenate([p.users for p in parts]))
    n_users = len(user_ids)
    ordered = data.train.timestamps is not None

    def rows_of(part: Interactions) -> Sequences:
        u = np.searchsorted(user_ids, part.users).astype(np.int64)
        i = np.searchsorted(item_ids, part.items).astype(np.int64)
        if part.timestamps is not None:
            o = np.lexsort((np.arange(len(part)), part.timestamps))
            u, i = u[o], i[o]
        return unique_rows(_group(u, i, n_users, ordered))

    train_all = rows_of(data.train)

    def held_out(part: Interactions) -> tuple[np.ndarray, Sequences, Sequences, Sequences]:
        truth_all = rows_of(part)
        users = np.flatnonzero(truth_all.lengths > 0)
        history = train_all.rows(users)
        return users, history, truth_all.rows(users), history

    test_users, test_history, test_truth, test_exclude = held_out(data.test)
    valid_history: Sequences | None
    valid_truth: Sequences | None
    valid_exclude: Sequences | None
    if data.valid is not None:
        valid_users, valid_history, valid_truth, valid_exclude = held_out(data.valid)
    else:
        valid_users = np.zeros(0, dtype=np.int64)
        valid_history = valid_truth = valid_exclude = None
    train_users = np.flatnonzero(train_all.lengths > 0)
    return Split(
        protocol="fixed-split",
        item_ids=item_ids,
        train=train_all.rows(train_users),
        train_user_ids=user_ids[train_users],
        test_user_ids=user_ids[test_users],
        test_history=test_history,
        test_truth=test_truth,
        test_exclude=test_exclude,
        valid_user_ids=user_ids[valid_users],
        valid_history=valid_history,
        valid_truth=valid_truth,
        valid_exclude=valid_exclude,
        n_interactions=int(sum(len(p) for p in parts)),
    )


def all_users_split(
    data: Interactions | FixedSplit, config: ProtocolConfig = ProtocolConfig()
) -> Split:
    """Every user trains, no one is held out: the production protocol (module docstring).

    Only ``min_rating`` filters by default; ``min_user_interactions`` drops short histories
    when set. The held-out parts of the returned split are empty.
    """
    if isinstance(data, FixedSplit):
        parts = [data.train, data.test] + ([data.valid] if data.valid is not None else [])

        def joined(arrays: list[np.ndarray | None]) -> np.ndarray | None:
            present = [a for a in arrays if a is not None]
            return np.concatenate(present) if len(present) == len(arrays) else None

        data = Interactions(
            np.concatenate([p.users for p in parts]),
            np.concatenate([p.items for p in parts]),
            joined([p.ratings for p in parts]),
            joined([p.timestamps for p in parts]),
        )
    data = _filter(data, config, config.min_user_interactions)
    user_ids, item_ids, seqs = _time_ordered(data)
    none = Sequences.from_lists([], ordered=True)
    return Split(
        protocol="all-users",
        item_ids=item_ids,
        train=seqs,
        train_user_ids=user_ids,
        test_user_ids=user_ids[:0],
        test_history=none,
        test_truth=none,
        test_exclude=None,
        n_interactions=len(data),
    )


def make_split(
    data: Interactions | FixedSplit, protocol: str | None, config: ProtocolConfig
) -> Split:
    """Apply ``protocol`` (``"paper"`` | ``"fixed-split"`` | ``"all-users"`` | ``None`` = the
    data's natural one: ``fixed-split`` for a :class:`FixedSplit`, else ``paper``)."""
    natural = "fixed-split" if isinstance(data, FixedSplit) else "paper"
    protocol = protocol or natural
    if protocol == "paper":
        if isinstance(data, FixedSplit):
            raise ValueError(
                "the paper protocol needs a single time-stamped log; this data set is a fixed"
                " train/test split: use --protocol fixed-split"
            )
        return paper_split(data, config)
    if protocol == "fixed-split":
        if not isinstance(data, FixedSplit):
            raise ValueError(
                "the fixed-split protocol needs given train/test files (--train-file/--test-file);"
                " this data set is a single log: use --protocol paper"
            )
        return fixed_split(data, config)
    if protocol == "all-users":
        return all_users_split(data, config)
    raise ValueError(
        f"unknown protocol {protocol!r}; choose 'paper', 'fixed-split' or 'all-users'"
    )
