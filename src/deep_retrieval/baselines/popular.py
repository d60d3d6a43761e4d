"""Most-popular baseline.

Every query user gets the same ranking: training items by interaction count,
minus the items excluded for that user.
"""

from __future__ import annotations

import numpy as np

from ..core.contract import check_query, check_train, drop_excluded, topk_from_scores
from ..data.types import Sequences


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
        self,
        config: object | None = None,
        *,
        seed: int = 0,
        device: str = "cpu",
        query_batch_size: int = 256,
    ) -> None:
        self.config = config
        self.seed = seed
        self.device = device
        self.query_batch_size = query_batch_size
        self.counts_: np.ndarray | None = None
        self.n_items_: int | None = None

    def fit(self, train: Sequences, n_items: int) -> MostPopular:
        """Count interactions per item over all training rows (duplicates count every time)."""
        train = check_train(train, n_items, self.name)
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
        histories, exclude = check_query(histories, n, exclude, self.n_items_, self.name)
        assert self.counts_ is not None  # fitted: check_query raised otherwise
        n_rows = len(histories)
        # One global ranking; each row needs at most n + (its excluded count) of its head.
        width = n + (int(exclude.lengths.max(initial=0)) if exclude is not None else 0)
        head_ids, head_scores = topk_from_scores(self.counts_[None, :].copy(), width)  # (1, width)
        ids = np.repeat(head_ids, n_rows, axis=0)
        scores = np.repeat(head_scores, n_rows, axis=0)
        return drop_excluded(ids, scores, n, exclude)
