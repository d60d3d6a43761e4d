"""Item-based collaborative filtering with cosine similarity (implicit's ``CosineRecommender``).

``fit`` lets implicit build the item–item cosine matrix ``S`` (each item keeps its
``n_neighbours`` most similar items, itself included). A query user with history items ``H`` gets
``score(j) = Σ_{i ∈ H} S[i, j]``: exactly what implicit's own scorer computes, done here as one
sparse product per batch of users instead of implicit's per-user loop. Items that no history item
reaches score 0; ties (those included) are broken by training popularity, so short histories are
topped up with popular items instead of arbitrary ones.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from ..config import ItemCFConfig
from ..core.contract import check_query, check_train, empty_results, topk_from_scores
from ..data.types import Sequences
from ..utils import require

# Popularity tie-break added to every score: far below any real similarity sum (one cosine
# between two items with ≥ 1 shared user is ≥ 1/#users), large enough to order the zeros.
_TIE_BREAK = 1e-7


class ItemCF:
    """Item–item cosine CF; the user is represented by the items of the given history.

    Args:
        config: :class:`~deep_retrieval.config.ItemCFConfig` (``n_neighbours``).
        seed: unused (deterministic).
        device: unused (CPU, scipy/implicit).
        query_batch_size: users scored per dense ``(batch, V)`` block in ``recommend``.

    Attributes:
        similarity_: ``(V, V)`` float32 CSR, row ``i`` = the neighbours of item ``i``.
        recommender_: the fitted ``implicit.nearest_neighbours.CosineRecommender``.
    """

    name = "item-cf"

    def __init__(
        self,
        config: ItemCFConfig | None = None,
        *,
        seed: int = 0,
        device: str = "cpu",
        query_batch_size: int = 256,
    ) -> None:
        self.config = config if config is not None else ItemCFConfig()
        self.seed = seed
        self.device = device
        self.query_batch_size = query_batch_size
        self.similarity_: sp.csr_matrix | None = None
        self.recommender_ = None
        self.n_items_: int | None = None

    def fit(self, train: Sequences, n_items: int) -> ItemCF:
        """Build the item–item cosine neighbourhoods from the binary user×item training matrix."""
        neighbours = require("implicit.nearest_neighbours", "the item-cf baseline")

        train = check_train(train, n_items, self.name)
        model = neighbours.CosineRecommender(K=self.config.n_neighbours)
        with warnings.catch_warnings():
            # implicit normalises into a COO matrix and then warns about its own conversion.
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            model.fit(train.to_csr(n_items), show_progress=False)
        sim = model.similarity.astype(np.float32).tocsr()
        if sim.shape != (n_items, n_items):  # implicit sizes it by the largest item seen
            sim = sp.csr_matrix((sim.data, sim.indices, sim.indptr), shape=(sim.shape[0], n_items))
            sim.resize((n_items, n_items))
        self.recommender_ = model
        self.similarity_ = sim
        counts = np.bincount(train.items, minlength=n_items).astype(np.float64)
        self._tie_break = (_TIE_BREAK * counts / counts.max()).astype(np.float32)  # (V,)
        self.n_items_ = int(n_items)
        return self

    def score(self, histories: Sequences) -> np.ndarray:
        """``(U, V)`` float32 dense scores ``Σ_{i ∈ history} S[i, ·]``.

        No tie-break and no exclusion.
        """
        histories, _ = check_query(histories, 1, None, self.n_items_, self.name)
        assert self.n_items_ is not None  # fitted: check_query raised otherwise
        return np.asarray(
            (histories.to_csr(self.n_items_) @ self.similarity_).todense(), dtype=np.float32
        )

    def recommend(
        self, histories: Sequences, n: int, *, exclude: Sequences | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` items by summed similarity to the history items.

        Returns:
            ``(item_ids (U, n) int64 padded -1, scores (U, n) float32 padded -inf)``.
        """
        histories, exclude = check_query(histories, n, exclude, self.n_items_, self.name)
        n_rows = len(histories)
        out_ids, out_scores = empty_results(n_rows, n)
        for start in range(0, n_rows, self.query_batch_size):
            stop = min(start + self.query_batch_size, n_rows)
            block = self.score(histories.rows(np.arange(start, stop)))  # (B, V)
            block += self._tie_break
            out_ids[start:stop], out_scores[start:stop] = topk_from_scores(
                block, n, exclude=exclude, row_offset=start
            )
        return out_ids, out_scores
