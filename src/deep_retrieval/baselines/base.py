"""The one recommend contract shared by Deep Retrieval and every baseline.

``fit(train, n_items) -> self`` then ``recommend(histories, n, exclude=None) -> (item_ids, scores)``:

- ``train``: :class:`~deep_retrieval.data.Sequences`, one row per training user.
- ``histories``: :class:`~deep_retrieval.data.Sequences`, one row per query user (``U`` rows).
- ``exclude``: optional :class:`~deep_retrieval.data.Sequences` aligned with ``histories``; those
  items never appear in that user's result.
- returns ``item_ids`` int64 ``(U, n)`` padded with ``-1`` and ``scores`` float32 ``(U, n)`` padded
  with ``-inf``, best first.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

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
