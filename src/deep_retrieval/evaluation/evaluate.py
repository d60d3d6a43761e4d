"""Run a fitted recommender over held-out users: metrics, recommendations and query latency."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..data.types import Sequences
from .metrics import evaluate_recommendations


class _Recommends(Protocol):
    """All that evaluation needs of a model: the ``recommend`` half of
    :class:`~deep_retrieval.core.contract.Recommender` (a wrapper need not ``fit``)."""

    def recommend(
        self, histories: Sequences, n: int, *, exclude: Sequences | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class Evaluation:
    """What :func:`evaluate` measured.

    Attributes:
        metrics: ``{"recall@20": mean, …}`` unweighted means over users.
        recommendations: ``(U, max(ks))`` int64 internal item ids, ``-1`` padded.
        query_ms_p50 / query_ms_p99: single-user ``recommend`` latency percentiles (ms).
    """

    metrics: dict[str, float]
    recommendations: np.ndarray
    query_ms_p50: float
    query_ms_p99: float


def recommend_all(
    model: _Recommends,
    histories: Sequences,
    n: int,
    *,
    exclude: Sequences | None = None,
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``model.recommend`` over all rows in batches → ``(ids (U, n), scores (U, n))``."""
    ids, scores = [], []
    for start in range(0, len(histories), batch_size):
        rows = np.arange(start, min(start + batch_size, len(histories)))
        block_exclude = exclude.rows(rows) if exclude is not None else None
        i, s = model.recommend(histories.rows(rows), n, exclude=block_exclude)
        ids.append(i)
        scores.append(s)
        if on_batch is not None:
            on_batch(len(rows))
    if not ids:
        return np.zeros((0, n), dtype=np.int64), np.zeros((0, n), dtype=np.float32)
    return np.concatenate(ids), np.concatenate(scores)


def query_latency(
    model: _Recommends,
    histories: Sequences,
    n: int,
    *,
    exclude: Sequences | None = None,
    n_queries: int = 200,
    n_warmup: int = 5,
) -> np.ndarray:
    """Wall time (ms) of ``n_queries`` single-user ``recommend`` calls, users cycled in order.

    The first ``n_warmup`` calls are not timed (lazy initialisation, allocator warm-up).
    """
    times = []
    n_rows = len(histories)
    for q in range(n_warmup + n_queries):
        row = np.array([q % n_rows])
        hist = histories.rows(row)
        excl = exclude.rows(row) if exclude is not None else None
        t0 = time.perf_counter()
        model.recommend(hist, n, exclude=excl)
        if q >= n_warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(times)


def evaluate(
    model: _Recommends,
    histories: Sequences,
    truth: Sequences,
    ks: Sequence[int],
    *,
    exclude: Sequences | None = None,
    batch_size: int = 256,
    n_latency_queries: int = 200,
    on_batch: Callable[[int], None] | None = None,
) -> Evaluation:
    """Recommend ``max(ks)`` items to every held-out user, score them, and time single queries."""
    n = max(ks)
    recs, _ = recommend_all(
        model, histories, n, exclude=exclude, batch_size=batch_size, on_batch=on_batch
    )
    metrics = evaluate_recommendations(recs, truth, ks)
    times = query_latency(model, histories, n, exclude=exclude, n_queries=n_latency_queries)
    return Evaluation(
        metrics=metrics,
        recommendations=recs,
        query_ms_p50=float(np.percentile(times, 50)) if len(times) else float("nan"),
        query_ms_p99=float(np.percentile(times, 99)) if len(times) else float("nan"),
    )
