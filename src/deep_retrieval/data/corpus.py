"""Synthetic corpora at scale, with a planted two-tower model, for the speed benchmark.

Real logs of millions of items are not on this machine, so the speed benchmark generates them:
power-law item popularity, latent taste clusters, and time-ordered user sequences, shaped like
MovieLens-20M, Amazon Books or a 10M-item catalogue (:data:`SHAPES`). Generation is vectorised
numpy (about a second per 10M interactions) and fully determined by the seed.

The generative story, per user ``u``:

- ``u`` likes 1–3 taste clusters (``interests``; cluster choice ∝ cluster weight, itself a power
  law);
- each interaction picks one of ``u``'s clusters, then an item of that cluster by a Zipf law over
  the cluster's items (exponent ``zipf``); with probability ``noise`` it picks any item instead,
  by global popularity;
- timestamps increase along the user's sequence.

Every item also gets a *planted* vector: its cluster's centroid (unit norm) plus item noise, and a
bias: ``log`` of its probability within its cluster. Scoring ``⟨mean of the history's vectors,
v⟩ / τ + bias(v)`` with a small ``τ`` (0.1: the liked clusters win, popularity orders inside
them) is then a good two-tower model of this data, which is the situation the benchmark compares
in: a team's existing embeddings, served by exact search, by an ANN index or by Deep Retrieval.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils import require
from .types import Interactions, Sequences, Split

#: ``name -> (n_users, n_items, n_interactions)``: the paper's two data sets and a 10M-item one.
SHAPES: dict[str, tuple[int, int, int]] = {
    "ml-20m": (138_493, 26_744, 20_000_263),
    "amazon-books": (294_739, 1_477_922, 8_654_619),
    "10m-items": (1_000_000, 10_000_000, 20_000_000),
}


@dataclass(frozen=True)
class SyntheticCorpus:
    """A generated log plus the planted model.

    Attributes:
        sequences: one time-ordered row per user (internal ids = external ids ``0..V-1``).
        item_vectors: ``(V, E)`` float32 planted item vectors.
        item_bias: ``(V,)`` float32 ``log`` of the item's probability within its cluster.
        item_cluster: ``(V,)`` taste cluster of each item.
    """

    sequences: Sequences
    item_vectors: np.ndarray
    item_bias: np.ndarray
    item_cluster: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.item_cluster)

    def interactions(self) -> Interactions:
        """The log as :class:`Interactions` (user = row index, timestamp = position · 60 s)."""
        rows = self.sequences.row_ids()
        pos = np.arange(len(rows)) - self.sequences.indptr[:-1][rows]
        ts = 1_000_000_000 + rows.astype(np.int64) * 7 + pos * 60
        return Interactions(rows.astype(np.int64), self.sequences.items.astype(np.int64), None, ts)

    def save(self, folder: str | Path) -> list[Path]:
        """Write the corpus as a MovieLens-style data set plus the planted model.

        ``ratings.csv`` (``userId,movieId,rating,timestamp``, every rating 5.0: the log is
        implicit) reads with ``--ratings-file`` /
        :func:`~deep_retrieval.data.readers.read_movielens` like MovieLens-20M;
        ``item_vectors.npy``, ``item_bias.npy``, ``item_cluster.npy`` hold the planted model,
        indexed by ``movieId``. Each file is written to a temporary name and renamed.
        """
        pd = require("pandas", "writing a corpus")

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        log = self.interactions()
        frame = pd.DataFrame(
            {"userId": log.users, "movieId": log.items, "rating": 5.0, "timestamp": log.timestamps}
        )
        written = []
        for name, write in (
            ("ratings.csv", lambda f: frame.to_csv(f, index=False, float_format="%.1f")),
            ("item_vectors.npy", lambda f: np.save(f, self.item_vectors)),
            ("item_bias.npy", lambda f: np.save(f, self.item_bias)),
            ("item_cluster.npy", lambda f: np.save(f, self.item_cluster)),
        ):
            tmp = folder / f".{name}.tmp"
            with open(tmp, "wb") as fh:
                write(fh)
            os.replace(tmp, folder / name)
            written.append(folder / name)
        return written

    def split(self, n_test_users: int, *, seed: int = 0, history_len: int = 69) -> Split:
        """Hold out ``n_test_users`` random users: first half of their row is the history, the
        distinct items of the second half the truth (the paper protocol), every item indexed.

        Unlike :func:`~deep_retrieval.data.protocols.paper_split` the item index is the whole
        catalogue, items without interactions included, so a 10M-item corpus stays 10M items.
        """
        from .protocols import split_rows, unique_rows

        seqs = self.sequences
        eligible = np.flatnonzero(seqs.lengths >= 2)
        if not 1 <= n_test_users < len(eligible):
            raise ValueError(f"n_test_users must be in [1, {len(eligible)}), got {n_test_users}")
        rng = np.random.default_rng(seed)
        test = np.sort(rng.choice(eligible, size=n_test_users, replace=False))
        train = np.setdiff1d(np.arange(len(seqs)), test)
        rows = seqs.rows(test)
        first, second = split_rows(rows, rows.lengths // 2)
        return Split(
            protocol="paper",
            item_ids=np.arange(self.n_items),
            train=seqs.rows(train),
            train_user_ids=train,
            test_user_ids=test,
            test_history=first.last(history_len),
            test_truth=unique_rows(second),
            test_exclude=unique_rows(first),
            n_interactions=seqs.n_interactions,
        )


def _zipf_ranks(rng: np.random.Generator, sizes: np.ndarray, exponent: float) -> np.ndarray:
    """One rank in ``[0, sizes[i])`` per entry, ``P(r) ∝ (r + 1)^-exponent`` (continuous inverse
    CDF of the truncated power law, floored)."""
    u = rng.random(len(sizes))
    top = sizes.astype(np.float64) + 1.0
    if abs(exponent - 1.0) < 1e-9:
        x = np.exp(u * np.log(top))
    else:
        a = 1.0 - exponent
        x = (1.0 + u * (top**a - 1.0)) ** (1.0 / a)
    return np.minimum(np.floor(x).astype(np.int64) - 1, sizes - 1).clip(min=0)


def _zipf_mass(sizes: np.ndarray, exponent: float) -> np.ndarray:
    """Probability of each rank under :func:`_zipf_ranks`, concatenated over the segments."""
    out = []
    for n in sizes:
        edges = np.arange(1, n + 2, dtype=np.float64)
        if abs(exponent - 1.0) < 1e-9:
            cdf = np.log(edges) / np.log(n + 1.0)
        else:
            a = 1.0 - exponent
            cdf = (edges**a - 1.0) / ((n + 1.0) ** a - 1.0)
        out.append(np.diff(cdf))
    return np.concatenate(out) if out else np.zeros(0)


def make_corpus(
    n_users: int,
    n_items: int,
    n_interactions: int,
    *,
    dim: int = 32,
    n_clusters: int | None = None,
    zipf: float = 1.1,
    noise: float = 0.05,
    item_noise: float = 0.5,
    interests: tuple[int, int] = (1, 3),
    seed: int = 0,
) -> SyntheticCorpus:
    """Generate a corpus (see the module docstring for the model).

    Args:
        n_users, n_items, n_interactions: the shape; the interaction count is met to within
            rounding (every user gets at least 2).
        dim: ``E`` of the planted vectors.
        n_clusters: taste clusters; default ``≈ sqrt(V)`` between 8 and 4,096.
        zipf: popularity exponent inside a cluster (and across clusters).
        noise: share of interactions drawn from the whole catalogue by popularity.
        item_noise: spread of an item's vector around its cluster centroid (centroids are unit).
        interests: ``(low, high)``: each user likes between ``low`` and ``high`` clusters
            (uniformly), each interaction coming from one of them. ``(2, 4)`` is the
            multi-interest corpus, where the mean of a history's vectors lies between tastes.
        seed: everything is drawn from ``numpy.random.default_rng(seed)``.
    """
    if min(n_users, n_items) < 1 or n_interactions < 2 * n_users:
        raise ValueError(
            "need n_users ≥ 1, n_items ≥ 1 and n_interactions ≥ 2·n_users,"
            f" got {n_users}, {n_items}, {n_interactions}"
        )
    if not 0.0 <= noise <= 1.0 or zipf <= 0:
        raise ValueError(f"need 0 ≤ noise ≤ 1 and zipf > 0, got noise={noise}, zipf={zipf}")
    low, high = interests
    if not 1 <= low <= high:
        raise ValueError(f"interests must be (low, high) with 1 ≤ low ≤ high, got {interests}")
    rng = np.random.default_rng(seed)
    n_clusters = n_clusters or int(np.clip(round(np.sqrt(n_items)), 8, 4096))
    n_clusters = min(n_clusters, n_items)

    # Clusters own contiguous blocks of a random permutation of the ids; rank r of cluster c is
    # item perm[start[c] + r] (so popular items are scattered over the id space).
    sizes = np.full(n_clusters, n_items // n_clusters, dtype=np.int64)
    sizes[: n_items % n_clusters] += 1
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    perm = rng.permutation(n_items)
    item_cluster = np.empty(n_items, dtype=np.int64)
    item_cluster[perm] = np.repeat(np.arange(n_clusters), sizes)
    cluster_mass = _zipf_mass(np.array([n_clusters]), zipf)[rng.permutation(n_clusters)]

    # Users: activity ~ lognormal, at least 2, scaled to the interaction budget.
    activity = rng.lognormal(0.0, 1.0, size=n_users)
    share = activity / activity.sum() * (n_interactions - 2 * n_users)
    counts = 2 + np.floor(share).astype(np.int64)
    counts[: n_interactions - int(counts.sum())] += 1
    users = np.repeat(np.arange(n_users), counts)
    n_liked = rng.integers(low, high + 1, size=n_users)
    liked = rng.choice(n_clusters, size=(n_users, high), p=cluster_mass)
    pick = (rng.random(len(users)) * n_liked[users]).astype(np.int64)
    cluster = liked[users, pick]
    items = perm[start[cluster] + _zipf_ranks(rng, sizes[cluster], zipf)]
    noisy = np.flatnonzero(rng.random(len(users)) < noise)
    within = _zipf_mass(sizes, zipf)  # (V,) in cluster-block order
    bias = np.empty(n_items)
    bias[perm] = within
    freq = bias * cluster_mass[item_cluster]
    global_cdf = np.cumsum(freq) / freq.sum()
    items[noisy] = np.minimum(np.searchsorted(global_cdf, rng.random(len(noisy))), n_items - 1)

    centroids = rng.standard_normal((n_clusters, dim))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    offsets = item_noise / np.sqrt(dim) * rng.standard_normal((n_items, dim))
    vectors = centroids[item_cluster] + offsets
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return SyntheticCorpus(
        sequences=Sequences(indptr, items.astype(np.int64), ordered=True),
        item_vectors=vectors.astype(np.float32),
        item_bias=np.log(bias).astype(np.float32),
        item_cluster=item_cluster,
    )


def make_corpus_shape(
    name: str, *, scale: float = 1.0, seed: int = 0, **options
) -> SyntheticCorpus:
    """:func:`make_corpus` for a :data:`SHAPES` entry, every count multiplied by ``scale``."""
    if name not in SHAPES:
        raise ValueError(f"unknown corpus shape {name!r}; choose one of {sorted(SHAPES)}")
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    n_users, n_items, n_inter = (max(1, round(x * scale)) for x in SHAPES[name])
    return make_corpus(n_users, n_items, max(n_inter, 2 * n_users), seed=seed, **options)
