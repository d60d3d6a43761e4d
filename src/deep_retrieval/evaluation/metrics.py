"""Top-M retrieval metrics, computed per user and averaged over users without weights.

Notation for one user ``u``: ``P_u`` the first ``k`` recommended items (``-1`` padding never
counts), ``G_u`` the ground-truth set (non-empty), ``hit_r = 1`` if the item at rank ``r``
(1-based) is in ``G_u``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..data.types import Sequences


def hit_matrix(recommended: np.ndarray, truth: Sequences) -> np.ndarray:
    """``(U, M)`` bool: whether ``recommended[u, r]`` is in user ``u``'s ground truth.

    Args:
        recommended: ``(U, M)`` int64 internal item ids, ``-1`` padded.
        truth: ``U`` rows of ground-truth items.
    """
    n_users, _ = recommended.shape
    if len(truth) != n_users:
        raise ValueError(f"{n_users} recommendation rows but {len(truth)} ground-truth rows")
    width = int(max(recommended.max(initial=0), truth.items.max(initial=0))) + 1
    truth_keys = np.unique(truth.row_ids() * width + truth.items)
    rec_keys = np.arange(n_users, dtype=np.int64)[:, None] * width + recommended
    hits = np.isin(rec_keys, truth_keys)
    return hits & (recommended >= 0)


def precision_at_k(hits: np.ndarray, truth_sizes: np.ndarray, k: int) -> np.ndarray:
    """``Precision@k(u) = |P_u ∩ G_u| / k`` → ``(U,)``."""
    return hits[:, :k].sum(axis=1) / k


def recall_at_k(hits: np.ndarray, truth_sizes: np.ndarray, k: int) -> np.ndarray:
    """``Recall@k(u) = |P_u ∩ G_u| / |G_u|`` → ``(U,)``."""
    return hits[:, :k].sum(axis=1) / truth_sizes


def f1_at_k(hits: np.ndarray, truth_sizes: np.ndarray, k: int) -> np.ndarray:
    """``F@k(u) = 2·P·R / (P + R)`` per user (0 when ``P + R = 0``), as in the paper → ``(U,)``."""
    p = precision_at_k(hits, truth_sizes, k)
    r = recall_at_k(hits, truth_sizes, k)
    denom = p + r
    return np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)


def ndcg_at_k(hits: np.ndarray, truth_sizes: np.ndarray, k: int) -> np.ndarray:
    """``NDCG@k(u) = DCG/IDCG``, ``DCG = Σ_{r≤k} hit_r / log2(r+1)``,
    ``IDCG = Σ_{r ≤ min(k, |G_u|)} 1 / log2(r+1)`` → ``(U,)``."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * discounts[: hits[:, :k].shape[1]]).sum(axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])
    idcg = ideal[np.minimum(truth_sizes, k)]
    return dcg / idcg


def hit_rate_at_k(hits: np.ndarray, truth_sizes: np.ndarray, k: int) -> np.ndarray:
    """``HitRate@k(u) = 1 if |P_u ∩ G_u| > 0 else 0`` → ``(U,)``."""
    # numpy's stubs also allow a scalar from any(axis=1); on the 2-d hits it is an array.
    return hits[:, :k].any(axis=1).astype(np.float64)  # type: ignore[return-value]


METRICS = {
    "precision": precision_at_k,
    "recall": recall_at_k,
    "f1": f1_at_k,
    "ndcg": ndcg_at_k,
    "hit_rate": hit_rate_at_k,
}


def per_user_metrics(
    recommended: np.ndarray, truth: Sequences, ks: Iterable[int]
) -> dict[str, np.ndarray]:
    """Every metric at every ``k`` for every user: ``{"recall@20": (U,), …}``.

    Raises:
        ValueError: a user with an empty ground truth (protocols drop such users), or a ``k``
            larger than the number of recommendations.
    """
    sizes = truth.lengths
    if (sizes == 0).any():
        raise ValueError(
            f"{int((sizes == 0).sum())} users have an empty ground truth; drop them first"
        )
    hits = hit_matrix(recommended, truth)
    out = {}
    for k in ks:
        if k < 1 or k > recommended.shape[1]:
            raise ValueError(f"k={k} needs 1 ≤ k ≤ {recommended.shape[1]} recommendations per user")
        for name, fn in METRICS.items():
            out[f"{name}@{k}"] = fn(hits, sizes, k)
    return out


def evaluate_recommendations(
    recommended: np.ndarray, truth: Sequences, ks: Iterable[int]
) -> dict[str, float]:
    """Unweighted means over users of :func:`per_user_metrics`."""
    return {name: float(v.mean()) for name, v in per_user_metrics(recommended, truth, ks).items()}
