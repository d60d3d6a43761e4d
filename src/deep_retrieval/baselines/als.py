"""Implicit-feedback matrix factorisation (Hu, Koren & Volinsky 2008) through implicit's ALS.

Preference ``p_ui = 1`` for observed pairs, confidence ``c_ui = 1 + alpha · r_ui`` with
``r_ui = 1`` (binary data), 1 for unobserved pairs. implicit reads its matrix values as the
confidence itself (its own ``alpha`` only multiplies them), so the matrix handed over holds
``1 + alpha`` and implicit's ``alpha`` stays 1.

Query users are never training rows: each one is folded in from its history by implicit's
``recalculate_user`` (an exact least-squares solve against the fixed item factors), then scored
against every item.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..config import ALSConfig
from ..core.contract import check_query, check_train, empty_results, topk_from_scores
from ..data.types import Sequences
from ..utils import require


def _one_blas_thread() -> Any:
    return require("threadpoolctl", "the als baseline").threadpool_limits(1, "blas")


class ALS:
    """Weighted ALS with users folded in from their history at query time.

    Args:
        config: :class:`~deep_retrieval.config.ALSConfig` (``factors``, ``alpha``,
            ``regularization``, ``iterations``).
        seed: ``random_state`` of the factor initialisation.
        device: unused (implicit's CPU solver).
        query_batch_size: users scored per dense ``(batch, V)`` block in ``recommend``.

    Attributes:
        item_factors_: ``(V, F)`` float32.
        model_: the fitted ``implicit`` model.
    """

    name = "als"

    def __init__(
        self,
        config: ALSConfig | None = None,
        *,
        seed: int = 0,
        device: str = "cpu",
        query_batch_size: int = 256,
    ) -> None:
        self.config = config if config is not None else ALSConfig()
        self.seed = seed
        self.device = device
        self.query_batch_size = query_batch_size
        self.model_: Any = None  # implicit's AlternatingLeastSquares (untyped)
        self.item_factors_: np.ndarray | None = None
        self.n_items_: int | None = None

    def _confidence(self, seqs: Sequences) -> sp.csr_matrix:
        """Binary user×item csr → confidences ``1 + alpha`` on the observed pairs."""
        assert self.n_items_ is not None  # set by fit before any call
        m = seqs.to_csr(self.n_items_)
        m.data[:] = 1.0 + self.config.alpha
        return m

    def fit(self, train: Sequences, n_items: int) -> ALS:
        """Factorise the training confidence matrix."""
        als = require("implicit.cpu.als", "the als baseline")

        train = check_train(train, n_items, self.name)
        cfg = self.config
        self.n_items_ = int(n_items)
        # implicit parallelises over users itself; a multithreaded BLAS underneath only thrashes
        # (its constructor warns when BLAS is multithreaded, hence the constructor inside too).
        with _one_blas_thread():
            # The CPU class directly: implicit's factory would pick the GPU build when present,
            # and the factors are used as numpy arrays below.
            model = als.AlternatingLeastSquares(
                factors=cfg.factors,
                regularization=cfg.regularization,
                alpha=1.0,
                iterations=cfg.iterations,
                random_state=self.seed,
            )
            model.fit(self._confidence(train), show_progress=False)
        self.model_ = model
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        return self

    def user_factors(self, histories: Sequences) -> np.ndarray:
        """``(U, F)`` float32 factors of query users, solved from their histories (empty → 0)."""
        histories, _ = check_query(histories, 1, None, self.n_items_, self.name)
        with _one_blas_thread():
            factors = self.model_.recalculate_user(
                np.arange(len(histories)), self._confidence(histories)
            )
        return np.asarray(factors, dtype=np.float32).reshape(len(histories), -1)

    def recommend(
        self, histories: Sequences, n: int, *, exclude: Sequences | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` items by ``user_factor · item_factor``.

        Returns:
            ``(item_ids (U, n) int64 padded -1, scores (U, n) float32 padded -inf)``.
        """
        histories, exclude = check_query(histories, n, exclude, self.n_items_, self.name)
        assert self.item_factors_ is not None  # fitted: check_query raised otherwise
        n_rows = len(histories)
        out_ids, out_scores = empty_results(n_rows, n)
        for start in range(0, n_rows, self.query_batch_size):
            stop = min(start + self.query_batch_size, n_rows)
            users = self.user_factors(histories.rows(np.arange(start, stop)))  # (B, F)
            block = users @ self.item_factors_.T  # (B, V)
            out_ids[start:stop], out_scores[start:stop] = topk_from_scores(
                block, n, exclude=exclude, row_offset=start
            )
        return out_ids, out_scores
