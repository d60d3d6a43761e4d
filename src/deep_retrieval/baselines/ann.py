"""Approximate inner-product search over the softmax model's embeddings: faiss HNSW, IVF-Flat,
IVF-PQ fast-scan, and ScaNN.

Both wrap an already fitted :class:`~deep_retrieval.baselines.softmax.SoftmaxRecommender`, so the
benchmark trains the softmax model once and the three methods (``brute-force``, ``ann-hnsw``,
``ann-ivf``) differ only in how the top items are searched. ``fit`` builds the index from
``softmax.item_embeddings()``; query vectors are ``softmax.user_embeddings(histories)`` (the item
bias, if any, rides along as an extra dimension, so the inner product is the model's score).

Exclusion: faiss cannot drop a different item set per query, so each row is searched for
``n + (most items excluded in any row of the batch)`` neighbours and the excluded ones are removed
afterwards; that leaves at least ``n`` results whenever the index returns that many. Returned
scores are the exact inner products of the returned items (the model's logits).

HNSW metric: the item vectors are unit vectors plus a bias coordinate, so their norms vary and
an inner-product HNSW graph finds few of the true neighbours; the default is the standard MIPS →
nearest-neighbour reduction (Bachrach et al., RecSys 2014: items ``[x, √(M² − ‖x‖²)]``, queries
``[q, 0]``, so the L2 order is the inner-product order; ``HNSWConfig.metric``). The measurements:
README, "Choices the paper leaves open", ANN baselines.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

import numpy as np

from ..config import HNSWConfig, IVFConfig, IVFPQConfig, ScaNNConfig
from ..core.contract import check_query, check_train, drop_excluded, empty_results
from ..data.types import Sequences
from ..utils import require
from .softmax import SoftmaxRecommender

if TYPE_CHECKING:
    # Named in the classes' (string) type arguments; imported at run time only where an index
    # is built, since faiss is slow to import.
    import faiss  # noqa: F401

ConfigT = TypeVar("ConfigT")  # the subclass's config dataclass
IndexT = TypeVar("IndexT")  # the subclass's index type (a faiss.Index, or a ScaNN searcher)


class _FaissInnerProduct(Generic[ConfigT, IndexT]):
    """Shared query path: embed, search, turn faiss ``(D, I)`` into ``(ids, scores)``."""

    name = "ann"
    default_config: type[ConfigT]  # the subclass's config dataclass, used when config is None

    def __init__(
        self,
        config: ConfigT | None = None,
        softmax: SoftmaxRecommender | None = None,
        *,
        seed: int = 0,
        device: str = "cpu",
        query_batch_size: int = 256,
    ) -> None:
        self.config: ConfigT = config if config is not None else self.default_config()
        self.softmax = softmax
        self.seed = seed
        self.device = device
        self.query_batch_size = query_batch_size
        self.index_: IndexT | None = None
        self.item_vectors_: np.ndarray | None = None  # (V, E') what the index holds, un-augmented
        self.n_items_: int | None = None

    def _item_vectors(self, train: Sequences, n_items: int) -> np.ndarray:
        train = check_train(train, n_items, self.name)
        if self.softmax is None or self.softmax.model_ is None:
            raise ValueError(
                f"{self.name} searches a trained softmax model's embeddings: pass a fitted"
                " SoftmaxRecommender, e.g."
                " FaissHNSW(config, SoftmaxRecommender(...).fit(train, n_items))"
            )
        if self.softmax.n_items_ != n_items:
            raise ValueError(
                f"{self.name}: the softmax model was fitted with n_items={self.softmax.n_items_},"
                f" fit() got n_items={n_items}; fit both on the same split"
            )
        return np.ascontiguousarray(self.softmax.item_embeddings(), dtype=np.float32)  # (V, E')

    def _fitted(self, index: IndexT, vectors: np.ndarray, n_items: int) -> Self:
        """Install what ``fit`` built: the index and the un-augmented vectors it re-scores with."""
        self.index_ = index
        self.item_vectors_ = vectors
        self.n_items_ = int(n_items)
        return self

    def _prepare_search(self) -> None:
        """Set per-search parameters on the index (subclasses)."""

    def _index_queries(self, queries: np.ndarray) -> np.ndarray:
        """Query vectors as the index expects them (subclasses may augment)."""
        return queries

    def _search(self, queries: np.ndarray, k: int, n: int) -> np.ndarray:
        """``(B, k)`` neighbour ids of ``queries (B, E')``, ``-1`` where none was found, for a
        request of ``n`` results (``k ≥ n`` makes room for excluded items): faiss's ``search``;
        ScaNN overrides this."""
        faiss = require("faiss", "the faiss baselines")

        index: Any = self.index_
        if len(queries) > 1:
            return index.search(self._index_queries(queries), k)[1]
        # One query, one thread: faiss's fast-scan IVF opens an OpenMP region even for a single
        # query, and right after the torch call that embedded the user (whose OpenMP threads
        # still spin) it stalled for ~8 ms instead of 0.06 ms (measured, IVF-PQ at 200K items).
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return index.search(self._index_queries(queries), k)[1]
        finally:
            faiss.omp_set_num_threads(threads)

    def recommend(
        self, histories: Sequences, n: int, *, exclude: Sequences | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``n`` items by inner product.

        Returns:
            ``(item_ids (U, n) int64 padded -1, scores (U, n) float32 padded -inf)``.
        """
        histories, exclude = check_query(histories, n, exclude, self.n_items_, self.name)
        # Fitted (check_query raised otherwise): fit set all of these before n_items_.
        assert self.n_items_ is not None and self.softmax is not None
        assert self.index_ is not None and self.item_vectors_ is not None
        self._prepare_search()
        n_rows = len(histories)
        out_ids, out_scores = empty_results(n_rows, n)
        for start in range(0, n_rows, self.query_batch_size):
            stop = min(start + self.query_batch_size, n_rows)
            rows = np.arange(start, stop)
            block_exclude = exclude.rows(rows) if exclude is not None else None
            extra = int(block_exclude.lengths.max(initial=0)) if block_exclude is not None else 0
            k = min(n + extra, self.n_items_)
            # (B, E') queries; (B, k) neighbour ids, -1 where nothing was found.
            queries = np.ascontiguousarray(self.softmax.user_embeddings(histories.rows(rows)))
            idx = self._search(queries, k, n)
            # Exact logits of the returned items, best first (the index's own distances may be
            # of a transformed problem, or rounded differently from the brute-force scores).
            scores = np.einsum("be,bke->bk", queries, self.item_vectors_[np.maximum(idx, 0)])
            scores = np.where(idx >= 0, scores, -np.inf).astype(np.float32)
            order = np.argsort(-scores, axis=1, kind="stable")
            idx = np.take_along_axis(idx, order, axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
            out_ids[start:stop], out_scores[start:stop] = drop_excluded(
                idx, scores, n, block_exclude
            )
        return out_ids, out_scores


class FaissHNSW(_FaissInnerProduct[HNSWConfig, "faiss.IndexHNSWFlat"]):
    """``faiss.IndexHNSWFlat`` over the softmax item embeddings, searched for the largest inner
    products.

    Args:
        config: :class:`~deep_retrieval.config.HNSWConfig` (``m``, ``ef_construction``,
            ``ef_search``, ``metric``: see the module docstring).
        softmax: the fitted softmax model whose embeddings are indexed.
    """

    name = "ann-hnsw"
    default_config = HNSWConfig

    def fit(self, train: Sequences, n_items: int) -> FaissHNSW:
        """Build the HNSW graph over the item vectors (``train`` is only checked)."""
        faiss = require("faiss", "the faiss baselines")

        vectors = self._item_vectors(train, n_items)
        cfg = self.config  # an HNSWConfig checks its own ranges (m ≥ 2, ef_* ≥ 1, metric)
        if cfg.metric == "l2-reduction":
            # Items [x, sqrt(M² − |x|²)] all have norm M, so |q' − x'|² = |q|² + M² − 2 q·x:
            # the L2 nearest neighbours of [q, 0] are the largest inner products.
            sq_norms = (vectors.astype(np.float64) ** 2).sum(axis=1)
            extra = np.sqrt(np.maximum(sq_norms.max() - sq_norms, 0.0))[:, None]
            indexed = np.ascontiguousarray(np.hstack([vectors, extra]), dtype=np.float32)
            index = faiss.IndexHNSWFlat(indexed.shape[1], cfg.m, faiss.METRIC_L2)
        else:
            indexed = vectors
            index = faiss.IndexHNSWFlat(vectors.shape[1], cfg.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
        index.add(indexed)
        return self._fitted(index, vectors, n_items)

    def _index_queries(self, queries: np.ndarray) -> np.ndarray:
        if self.config.metric == "l2-reduction":
            zeros = np.zeros((len(queries), 1), np.float32)
            return np.ascontiguousarray(np.hstack([queries, zeros]))
        return queries

    def _prepare_search(self) -> None:
        assert self.index_ is not None  # called by recommend, after its fitted check
        self.index_.hnsw.efSearch = self.config.ef_search


class FaissIVF(_FaissInnerProduct[IVFConfig, "faiss.IndexIVFFlat"]):
    """``faiss.IndexIVFFlat`` (inner product) over the softmax item embeddings.

    Args:
        config: :class:`~deep_retrieval.config.IVFConfig` (``n_lists``: ``None`` → about
            ``4·√V``; ``n_probe``).
        softmax: the fitted softmax model whose embeddings are indexed.
    """

    name = "ann-ivf"
    default_config = IVFConfig

    def fit(self, train: Sequences, n_items: int) -> FaissIVF:
        """Train the coarse quantiser (k-means on the item vectors) and fill the lists."""
        faiss = require("faiss", "the faiss baselines")

        vectors = self._item_vectors(train, n_items)
        cfg = self.config
        # An IVFConfig checks its own ranges (n_lists ≥ 1 or None, n_probe ≥ 1); n_items ≥ 1 here.
        n_lists = _n_lists(cfg.n_lists, n_items)
        quantizer = faiss.IndexFlatIP(vectors.shape[1])
        index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], n_lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = self.seed
        # faiss warns (to stderr) below 39 points per centroid; small vocabularies are fine here.
        index.cp.min_points_per_centroid = 1
        index.train(vectors)
        index.add(vectors)
        self.quantizer_ = quantizer  # the IVF index keeps a raw pointer to it
        return self._fitted(index, vectors, n_items)

    def _prepare_search(self) -> None:
        assert self.index_ is not None  # called by recommend, after its fitted check
        self.index_.nprobe = min(self.config.n_probe, self.index_.nlist)


def _n_lists(n_lists: int | None, n_items: int) -> int:
    """``n_lists``, or about ``4·√V`` when ``None``; k-means needs a training point per list."""
    return min(n_lists if n_lists is not None else max(1, round(4 * math.sqrt(n_items))), n_items)


class FaissIVFPQ(_FaissInnerProduct[IVFPQConfig, "faiss.Index"]):
    """faiss IVF-PQ with 4-bit fast-scan codes, refined exactly: ``IndexIVFPQFastScan`` inside an
    ``IndexRefineFlat`` (factory string ``IVF{n_lists},PQ{m}x4fs,RFlat``, inner product).

    The item vectors are zero-padded to a multiple of ``dims_per_code`` (queries likewise, which
    leaves every inner product unchanged), so ``m = padded width / dims_per_code`` sub-quantizers.

    Args:
        config: :class:`~deep_retrieval.config.IVFPQConfig`.
        softmax: the fitted softmax model whose embeddings are indexed.
    """

    name = "ann-ivfpq"
    default_config = IVFPQConfig

    def _padded(self, x: np.ndarray) -> np.ndarray:
        width = -(-x.shape[1] // self.config.dims_per_code) * self.config.dims_per_code
        if width == x.shape[1]:
            return np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros((len(x), width), np.float32)
        out[:, : x.shape[1]] = x
        return out

    def fit(self, train: Sequences, n_items: int) -> FaissIVFPQ:
        """Train the coarse quantiser and the product quantiser on the item vectors, add them."""
        faiss = require("faiss", "the faiss baselines")

        vectors = self._item_vectors(train, n_items)
        indexed = self._padded(vectors)
        n_lists = _n_lists(self.config.n_lists, n_items)
        m = indexed.shape[1] // self.config.dims_per_code
        index = faiss.index_factory(
            indexed.shape[1], f"IVF{n_lists},PQ{m}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT
        )
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = self.seed
        ivf.cp.min_points_per_centroid = 1
        index.train(indexed)
        index.add(indexed)
        return self._fitted(index, vectors, n_items)

    def _index_queries(self, queries: np.ndarray) -> np.ndarray:
        return self._padded(queries)

    def _prepare_search(self) -> None:
        faiss = require("faiss", "the faiss baselines")

        assert self.index_ is not None
        ivf = faiss.extract_index_ivf(self.index_)
        ivf.nprobe = min(self.config.n_probe, ivf.nlist)
        refine: Any = faiss.downcast_index(self.index_)  # an IndexRefineFlat
        refine.k_factor = float(self.config.refine_factor)


class ScaNN(_FaissInnerProduct[ScaNNConfig, Any]):
    """ScaNN over the softmax item embeddings (dot product): a k-means tree of ``n_leaves``,
    anisotropic 4-bit asymmetric hashing, exact reordering of ``reorder_factor · n`` hits.

    Needs the optional ``scann`` package (``pip install 'deep-retrieval[scann]'``).

    Args:
        config: :class:`~deep_retrieval.config.ScaNNConfig`.
        softmax: the fitted softmax model whose embeddings are indexed.
    """

    name = "ann-scann"
    default_config = ScaNNConfig

    def fit(self, train: Sequences, n_items: int, *, mutable: bool = False) -> ScaNN:
        """Train the tree and the quantiser on the item vectors and build the searcher.

        ``mutable``: build with ScaNN docids (the item ids as strings), which its ``upsert`` and
        ``delete`` need; searches then return strings, converted back (slower), so the default
        is an immutable searcher.
        """
        scann = require("scann", "ann-scann")
        vectors = self._item_vectors(train, n_items)
        cfg = self.config
        n_leaves = min(
            cfg.n_leaves if cfg.n_leaves is not None else max(1, round(math.sqrt(n_items))),
            n_items,
        )
        builder = scann.scann_ops_pybind.builder(vectors, 10, "dot_product")
        builder = builder.tree(
            num_leaves=n_leaves,
            num_leaves_to_search=min(cfg.leaves_to_search, n_leaves),
            training_sample_size=min(cfg.training_sample_size, n_items),
        )
        builder = builder.score_ah(
            cfg.dims_per_block,
            anisotropic_quantization_threshold=cfg.anisotropic_quantization_threshold,
        )
        # reorder(·) only switches exact reordering on: its depth is set per search.
        docids = [str(i) for i in range(n_items)] if mutable else None
        self.index_ = builder.reorder(4 * 10).build(docids=docids)
        self.n_leaves_ = n_leaves
        self.item_vectors_ = vectors
        self.n_items_ = int(n_items)
        return self

    def _search(self, queries: np.ndarray, k: int, n: int) -> np.ndarray:
        searcher: Any = self.index_
        cfg = self.config
        kwargs = {
            "final_num_neighbors": k,
            # From n, not k: k grows with the most items any row of the block excludes, and a
            # row's result must not depend on the other rows of its block.
            "pre_reorder_num_neighbors": max(k, cfg.reorder_factor * n),
            "leaves_to_search": min(cfg.leaves_to_search, self.n_leaves_),
        }
        # (B, k), padded with id 0 and distance nan where a row found fewer; one query without
        # the thread pool.
        search = searcher.search_batched if len(queries) == 1 else searcher.search_batched_parallel
        ids, dist = search(queries, **kwargs)
        ids, dist = np.asarray(ids), np.asarray(dist)
        ids = ids.astype(np.int64)  # uint32, or strings when built with docids
        out = np.full((len(queries), k), -1, np.int64)
        out[:, : ids.shape[1]] = np.where(np.isnan(dist), -1, ids)
        return out
