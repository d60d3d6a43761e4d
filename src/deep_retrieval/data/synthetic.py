"""Synthetic data with a known answer: items in clusters, users who prefer clusters.

Used by tests (planted structure: items of one cluster should share paths) and examples. Nothing
here is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .types import Interactions


@dataclass(frozen=True)
class ClusteredData:
    """A time-stamped log plus the planted truth.

    Attributes:
        interactions: the log (external ids are the internal ones, users ``0..U-1``, items
            ``0..V-1``).
        item_cluster: ``(V,)`` cluster of each item.
        user_cluster: ``(U,)`` the cluster each user prefers.
    """

    interactions: Interactions
    item_cluster: np.ndarray
    user_cluster: np.ndarray


def make_clustered(
    n_users: int = 600,
    n_items: int = 240,
    n_clusters: int = 8,
    *,
    interactions_per_user: int = 20,
    noise: float = 0.05,
    seed: int = 0,
) -> ClusteredData:
    """Users interact with items of their preferred cluster (probability ``1 − noise``) or any item.

    Items within a cluster are drawn with a power-law popularity so that some items are much more
    frequent than others, as in real logs. Timestamps increase along each user's sequence.
    """
    if n_clusters < 1 or n_items < n_clusters or n_users < 1:
        raise ValueError("need n_users ≥ 1 and n_items ≥ n_clusters ≥ 1")
    rng = np.random.default_rng(seed)
    item_cluster = np.arange(n_items) % n_clusters
    user_cluster = rng.integers(n_clusters, size=n_users)
    popularity = 1.0 / (1.0 + rng.permutation(n_items)) ** 0.5
    members = [np.flatnonzero(item_cluster == c) for c in range(n_clusters)]
    probs = [popularity[m] / popularity[m].sum() for m in members]
    users = np.repeat(np.arange(n_users), interactions_per_user)
    items = np.empty(len(users), dtype=np.int64)
    for c in range(n_clusters):
        rows = np.flatnonzero(user_cluster[users] == c)
        items[rows] = rng.choice(members[c], size=len(rows), p=probs[c])
    noisy = rng.random(len(users)) < noise
    items[noisy] = rng.integers(n_items, size=int(noisy.sum()))
    timestamps = np.tile(np.arange(interactions_per_user), n_users) + users * 1000
    return ClusteredData(
        Interactions(users, items, None, timestamps.astype(np.int64)), item_cluster, user_cluster
    )
