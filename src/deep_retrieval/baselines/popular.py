"""Most-popular baseline, plus the input checks every baseline shares.

Every query user gets the same ranking: training items by interaction count,
minus the items excluded for that user.
"""

from __future__ import annotations

import numpy as np

from ..data.types import Sequences
from .base import pad_results, topk_from_scores


def check_train(train: Sequences, n_items: int, name: str) -> None:
    """Raise a fix-it ``ValueError`` when ``fit(train, n_items)`` gets unusable input."""
    if not isinstance(train, Sequences):
        raise ValueError(f"{name}.fit expects train as deep_retrieval.data.Sequences, got {type(train).__name__}")
    if n_items < 1:
        raise ValueError(f"{name}.fit: n_items must be ≥ 1, got {n_items}")
    if train.n_interactions == 0:
        raise ValueError(f"{name}.fit: the training sequences are empty; nothing to learn from")
    lo, hi = int(train.items.min()), int(train.items.max())
    if lo < 0 or hi >= n_items:
        raise ValueError(
            f"{name}.fit: training items must be internal ids in [0, {n_items}), found [{lo}, {hi}];"
            " pass n_items = split.n_items"
        )


def check_query(
    histories: Sequences, n: int, exclude: Sequences | None, n_items: int | None, name: str
) -> None:
    """Raise a fix-it ``ValueError`` for a bad ``recommend`` call (including recommend before fit).

    Args:
        n_items: the fitted vocabulary size, or ``None`` when the model has not been fitted.
    """
    if n_items is None:
        raise ValueError(f"{name}: call fit(train, n_items) before recommend")
    if not isinstance(histories, Sequences):
        raise ValueError(
            f"{name}.recommend expects histories as deep_retrieval.data.Sequences,"
            f" got {type(histories).__name__}; build one with Sequences.from_lists"
        )
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name}.recommend: n must be a positive integer, got {n!r}")
    for label, seqs in (("histories", histories), ("exclude", exclude)):
        if seqs is None or seqs.n_interactions == 0:
            continue
        lo, hi = int(seqs.items.min()), int(seqs.items.max())
        if lo < 0 or hi >= n_items:
            raise ValueError(
                f"{name}.recommend: {label} contain item ids in [{lo}, {hi}] but the model was fitted"
                f" with n_items={n_items}; use the internal ids of the same split"
            )
    if exclude is not None and len(exclude) != len(histories):
        raise ValueError(
            f"{name}.recommend: exclude has {len(exclude)} rows but histories has {len(histories)};"
            " pass one exclude row per query user (e.g. split.test_exclude with split.test_history)"
        )


def empty_results(n_rows: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n_rows, n)`` all-padding results: ids ``-1``, scores ``-inf``."""
    return np.full((n_rows, n), -1, dtype=np.int64), np.full((n_rows, n), -np.inf, dtype=np.float32)


def drop_excluded(
    ids: np.ndarray, scores: np.ndarray, n: int, exclude: Sequences | None
) -> tuple[np.ndarray, np.ndarray]:
    """Remove excluded items from ranked candidate lists and keep the first ``n`` of each row.

    Args:
        ids: ``(U, m)`` int64 candidates, best first, ``-1`` padded.
        scores: ``(U, m)`` their scores (``-inf`` on padding).
        n: results wanted per row; ``m`` should be ``n`` + the row's excluded count for the
            result to be complete.
        exclude: ``U`` rows of items to drop, or ``None``.

    Returns:
        ``(item_ids (U, n) int64 padded -1, scores (U, n) float32 padded -inf)``.
    """
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    if exclude is not None and exclude.n_interactions and ids.size:
        width = int(max(ids.max(initial=0), exclude.items.max(initial=0))) + 1
        rows = np.arange(len(ids), dtype=np.int64)[:, None]
        dropped = np.isin(rows * width + ids, exclude.row_ids() * width + exclude.items) & (ids >= 0)
        # Stable sort on the drop flag moves kept candidates to the front in their original order.
        keep_order = np.argsort(dropped, axis=1, kind="stable")
        ids = np.take_along_axis(ids, keep_order, axis=1)
        scores = np.take_along_axis(np.where(dropped, -np.inf, scores), keep_order, axis=1)
    return pad_results(ids[:, :n], scores[:, :n], n)


class MostPopular:
    """Recommend the most interacted-with training items to everyone.

    Args:
        config: unused (the model has no settings); accepted for the uniform constructor.
        seed: unused (the model is deterministic).
        device: unused (numpy only).
        query_batch_size: unused (one global ranking serves every user).

    Attributes:
        counts_: ``(V,)`` float64 training interaction counts (set by ``fit``).
    """

    name = "most-popular"

    def __init__(
        self, config: object | None = None, *, seed: int = 0, device: str = "cpu", query_batch_size: int = 256
    ) -> None:
        self.config = config
        self.seed = seed
        self.device = device
        self.query_batch_size = query_batch_size
        self.counts_: np.ndarray | None = None
        self.n_items_: int | None = None

    def fit(self, train: Sequences, n_items: int) -> MostPopular:
        """Count interactions per item over all training rows (duplicates count every time)."""
        check_train(train, n_items, self.name)
        self.n_items_ = int(n_items)
        self.counts_ = np.bincount(train.items, minlength=n_items).astype(np.float64)
        return self

    def recommend(
        self, histories: Sequences, n: int, *, exclude: Sequences | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` popular items per query row; ``histories`` only fix the number of rows.

        Returns:
            ``(item_ids (U, n) int64 padded -1, scores (U, n) float32 padded -inf)``; scores are
            the training counts.
        """
        check_query(histories, n, exclude, self.n_items_, self.name)
        n_rows = len(histories)
        # One global ranking; each row needs at most n + (its excluded count) of its head.
        width = n + (int(exclude.lengths.max(initial=0)) if exclude is not None else 0)
        head_ids, head_scores = topk_from_scores(self.counts_[None, :].copy(), width)  # (1, width)
        ids = np.repeat(head_ids, n_rows, axis=0)
        scores = np.repeat(head_scores, n_rows, axis=0)
        return drop_excluded(ids, scores, n, exclude)
