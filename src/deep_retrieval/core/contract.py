"""The one recommend contract shared by Deep Retrieval and every baseline.

``fit(train, n_items) -> self`` then
``recommend(histories, n, exclude=None) -> (item_ids, scores)``:

- ``train``: one row per training user; ``histories``: one row per query user (``U`` rows);
  ``exclude``: optional, aligned with ``histories``, items never to return to that user. Each is
  a :class:`~deep_retrieval.data.Sequences`, a list of item-id lists (oldest first) or a scipy
  sparse users × items matrix (a row's nonzero columns, no order; implicit's convention), always
  of *internal* item ids ``0 .. n_items-1`` (:func:`as_sequences`).
- returns ``item_ids`` int64 ``(U, n)`` padded with ``-1`` and ``scores`` float32 ``(U, n)`` padded
  with ``-inf``, best first.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..data.types import Sequences


@runtime_checkable
class Recommender(Protocol):
    name: str

    def fit(self, train: Sequences, n_items: int) -> Recommender: ...

    def recommend(
        self, histories: Sequences, n: int, *, exclude: Sequences | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


def topk_from_scores(
    scores: np.ndarray, n: int, *, exclude: Sequences | None = None, row_offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``n`` columns of a dense score block, best first.

    Args:
        scores: ``(U, V)`` float scores; modified in place when ``exclude`` is given.
        n: how many to return; rows with fewer finite scores are padded with ``-1`` / ``-inf``.
        exclude: rows ``row_offset .. row_offset + U`` of it give items to drop.
        row_offset: where this block starts inside ``exclude``.

    Returns:
        ``(item_ids (U, n) int64, scores (U, n) float32)``.
    """
    n_rows, n_cols = scores.shape
    if exclude is not None:
        block = exclude.rows(np.arange(row_offset, row_offset + n_rows))
        scores[block.row_ids(), block.items] = -np.inf
    k = min(n, n_cols)
    if k < n_cols:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols)).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    top = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    return pad_results(ids, top, n)


def pad_results(ids: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``(U, k)`` results to ``(U, n)``; entries with a ``-inf`` score become id ``-1``."""
    n_rows, k = ids.shape
    out_ids = np.full((n_rows, n), -1, dtype=np.int64)
    out_scores = np.full((n_rows, n), -np.inf, dtype=np.float32)
    out_ids[:, :k] = ids[:, :n]
    out_scores[:, :k] = scores[:, :n]
    out_ids[~np.isfinite(out_scores)] = -1
    out_scores[out_ids < 0] = -np.inf
    return out_ids, out_scores


def as_sequences(rows: Any, label: str, where: str) -> Sequences:
    """``rows`` as :class:`Sequences`: as is; a scipy sparse matrix → each row's nonzero columns
    (unordered); a list (or tuple) of item-id lists or integer arrays → those rows, ordered.
    Anything else, or ids that are not integers, is a ``ValueError`` naming ``where`` (e.g.
    ``"ALS.fit"``) and ``label`` (``"train"``)."""
    if isinstance(rows, Sequences):
        return rows
    if hasattr(rows, "tocsr"):
        csr = rows.tocsr()
        csr.eliminate_zeros()
        csr.sort_indices()
        return Sequences(np.asarray(csr.indptr, np.int64), np.asarray(csr.indices, np.int64),
                         ordered=False)
    if isinstance(rows, (list, tuple)):
        arrays = [np.asarray(r) for r in rows]
        bad = next((a for a in arrays if a.ndim != 1 or (a.size and a.dtype.kind not in "iu")),
                   None)
        if bad is None:
            return Sequences.from_lists(arrays, ordered=True)
        raise ValueError(
            f"{where}: {label} must hold lists of integer item ids, got a row {bad.tolist()!r:.60}"
        )
    raise ValueError(
        f"{where} expects {label} as deep_retrieval.data.Sequences, a list of item-id lists or a"
        f" scipy sparse matrix, got {type(rows).__name__}"
    )


def check_train(train: Any, n_items: int, name: str) -> Sequences:
    """``train`` as :class:`Sequences` (:func:`as_sequences`); a fix-it ``ValueError`` when
    ``fit(train, n_items)`` gets unusable input."""
    train = as_sequences(train, "train", f"{name}.fit")
    if n_items < 1:
        raise ValueError(f"{name}.fit: n_items must be ≥ 1, got {n_items}")
    if train.n_interactions == 0:
        raise ValueError(f"{name}.fit: the training sequences are empty; nothing to learn from")
    lo, hi = int(train.items.min()), int(train.items.max())
    if lo < 0 or hi >= n_items:
        raise ValueError(
            f"{name}.fit: training items must be internal ids in [0, {n_items}),"
            f" found [{lo}, {hi}]; pass n_items = split.n_items"
        )
    return train


def check_query(
    histories: Any, n: int, exclude: Any, n_items: int | None, name: str
) -> tuple[Sequences, Sequences | None]:
    """``(histories, exclude)`` as :class:`Sequences` (:func:`as_sequences`); a fix-it
    ``ValueError`` for a bad ``recommend`` call (including recommend before fit).

    Args:
        n_items: the fitted vocabulary size, or ``None`` when the model has not been fitted.
    """
    if n_items is None:
        raise ValueError(f"{name}: call fit(train, n_items) before recommend")
    histories = as_sequences(histories, "histories", f"{name}.recommend")
    if exclude is not None:
        exclude = as_sequences(exclude, "exclude", f"{name}.recommend")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name}.recommend: n must be a positive integer, got {n!r}")
    for label, seqs in (("histories", histories), ("exclude", exclude)):
        if seqs is None or seqs.n_interactions == 0:
            continue
        lo, hi = int(seqs.items.min()), int(seqs.items.max())
        if lo < 0 or hi >= n_items:
            raise ValueError(
                f"{name}.recommend: {label} contain item ids in [{lo}, {hi}] but the model was"
                f" fitted with n_items={n_items}; use the internal ids of the same split"
            )
    if exclude is not None and len(exclude) != len(histories):
        raise ValueError(
            f"{name}.recommend: exclude has {len(exclude)} rows but histories has {len(histories)};"
            " pass one exclude row per query user (e.g. split.test_exclude with split.test_history)"
        )
    return histories, exclude


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
        excluded = exclude.row_ids() * width + exclude.items
        dropped = np.isin(rows * width + ids, excluded) & (ids >= 0)
        # Stable sort on the drop flag moves kept candidates to the front in their original order.
        keep_order = np.argsort(dropped, axis=1, kind="stable")
        ids = np.take_along_axis(ids, keep_order, axis=1)
        scores = np.take_along_axis(np.where(dropped, -np.inf, scores), keep_order, axis=1)
    return pad_results(ids[:, :n], scores[:, :n], n)
