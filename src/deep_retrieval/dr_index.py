"""Deep Retrieval as an index over your own vectors, the way faiss is used: ``fit`` on item vectors
and a sample of query vectors, ``search`` query vectors for the top ``k`` by ``⟨q, v⟩ + b_v``.

A :class:`DRIndex` is a :class:`~deep_retrieval.index.state.DRState` whose reranker is the exact
scorer over the given vectors (:meth:`SoftmaxModel.fixed`): beam search over the learned grid
picks the candidates, and the given vectors score them exactly. Its structure network and paths
are trained on ``(query, item)`` pairs (:mod:`deep_retrieval.training.vectors`). It is saved as a
model bundle (:mod:`deep_retrieval.index.bundle`) whose manifest says it is an index.

Shapes: ``V`` items, ``E`` vector width, ``Q`` training queries, ``N`` search queries.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ConfigError, IndexConfig, from_mapping, to_dict
from .core.contract import as_sequences
from .core.modules.softmax import SoftmaxModel
from .data.types import Sequences
from .index import bundle, catalogue, diagnostics, retrieval
from .index.ids import rows_of, to_external
from .index.retrieval import QueryStats
from .index.state import DRState, build_state
from .training.vectors import fit_index_state
from .utils import resolve_device, seed_everything

__all__ = ["DRIndex"]

log = logging.getLogger("deep_retrieval")

#: ``manifest["training"]["kind"]`` of an index bundle.
INDEX_KIND = "vector-index"
#: Queries (at most) that calibrate the beam; held out of training when there are ≥ 4× as many.
CALIBRATION_QUERIES = 500


def _vectors(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    """A finite float32 ``(n, E)`` array, or a one-line error naming ``name``."""
    arr = np.asarray(x)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_:
        raise ValueError(f"{name} must be a numeric (n, E) array, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has {arr.shape[1]} columns; the index's vectors have {dim}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr


def _bias(x: Any, n: int, name: str = "item_bias") -> np.ndarray | None:
    if x is None:
        return None
    arr = np.asarray(x, dtype=np.float32)
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be {n} finite numbers (one per item), got shape {arr.shape}")
    return arr


def _ids(ids: Any, n: int) -> np.ndarray:
    """External ids as an int64 array when they are all integers, else as strings; distinct."""
    arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    if arr.shape != (n,):
        raise ValueError(f"ids must hold one id per item ({n}), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.int64)
    elif arr.dtype.kind != "U":
        arr = arr.astype(str)
    if len(np.unique(arr)) != n:
        raise ValueError("ids must be distinct")
    return arr


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer ≥ 1, got {k!r}")


def _positives(positives: Any, n_queries: int, n_items: int) -> Sequences:
    """The query → items relation as ``Q`` rows of item positions (:func:`as_sequences`: a
    :class:`Sequences`, a list of lists, or a scipy sparse ``(Q, V)`` matrix)."""
    shape = getattr(positives, "shape", None)
    if hasattr(positives, "tocsr") and shape != (n_queries, n_items):
        raise ValueError(
            f"positives is a {shape} matrix; it must be (queries, items) = ({n_queries}, {n_items})"
        )
    rows = as_sequences(positives, "positives", "DRIndex.fit")
    if len(rows) != n_queries:
        raise ValueError(f"positives has {len(rows)} rows for {n_queries} queries")
    if len(rows.items) and (rows.items.min() < 0 or rows.items.max() >= n_items):
        raise ValueError(
            f"positives must hold item positions in [0, {n_items}) (rows of item_vectors, not"
            f" ids), got {rows.items.min()}..{rows.items.max()}"
        )
    return rows


class DRIndex:
    """An index over given item vectors, searched with query vectors by ``⟨q, v⟩ + b_v``.

    Args:
        config: an :class:`~deep_retrieval.config.IndexConfig` (default: the defaults).
        device: ``"cpu"`` (default), ``"auto"`` or ``"cuda[:N]"``: where the structure network
            trains and searches.
        **settings: any :class:`IndexConfig` field by its bare name, over ``config``
            (``DRIndex(n_nodes=100, distill_k=20)``); an unknown name is an error.

    Example::

        index = DRIndex().fit(item_vectors, queries=user_vectors, ids=item_ids)
        ids, scores = index.search(user_vectors[:5], k=100)  # (5, 100) each
    """

    def __init__(
        self, config: IndexConfig | None = None, *, device: str = "cpu", **settings: Any
    ) -> None:
        self.config = IndexConfig.from_settings(config, **settings) if settings else (
            config or IndexConfig()
        )
        if not isinstance(self.config, IndexConfig):
            raise ConfigError(f"config must be an IndexConfig, got {type(self.config).__name__}")
        self.device = device
        self.state_: DRState | None = None

    @property
    def state(self) -> DRState:
        """The fitted state; ``ValueError`` before :meth:`fit` / :meth:`load`."""
        if self.state_ is None:
            raise ValueError("this DRIndex is not fitted yet: call fit() or DRIndex.load()")
        return self.state_

    @property
    def n_items(self) -> int:
        """Items held, removed ones included (their rows stay)."""
        return self.state.n_items

    @property
    def dim(self) -> int:
        return self.state.config.train.embedding_dim

    @property
    def ids(self) -> np.ndarray:
        """``(V,)`` the external id of each item row."""
        assert self.state.item_ids is not None
        return self.state.item_ids

    def __len__(self) -> int:
        """Items that can be returned (removed ones left out)."""
        return int((~self.state.removed).sum())

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        item_vectors: Any,
        *,
        queries: Any,
        positives: Any = None,
        ids: Any = None,
        item_bias: Any = None,
    ) -> DRIndex:
        """Learn the structure network and the paths from a sample of query vectors.

        Args:
            item_vectors: ``(V, E)`` item vectors: with ``item_bias``, the exact scorer of the
                rerank (kept in the index, float32).
            queries: ``(Q, E)`` a sample of the query vectors the index will be searched with
                (e.g. user-tower outputs); a few per item is plenty. Up to 500 of them are held
                out to calibrate the beam when there are at least 2,000.
            positives: optional query → items relation (``Q`` rows of item *positions*, rows of
                ``item_vectors``, not ids: a list of lists, :class:`Sequences` or a scipy sparse
                ``(Q, V)`` matrix). Without it each query's exact top ``distill_k`` are its
                items (the index learns to return what exact search returns).
            ids: ``(V,)`` external ids (ints or strings, distinct); default ``0 .. V-1``,
                recorded as such. :meth:`search` returns these.
            item_bias: ``(V,)`` per-item bias ``b_v`` of the score, or ``None``.
        """
        x = _vectors(item_vectors, "item_vectors")
        n_items, dim = x.shape
        q = _vectors(queries, "queries", dim)
        if not len(q):
            raise ValueError("fit needs at least one query vector")
        bias = _bias(item_bias, n_items)
        item_ids = _ids(np.arange(n_items) if ids is None else ids, n_items)
        relation = None if positives is None else _positives(positives, len(q), n_items)
        cfg = self.config
        dr_config = cfg.dr_config(dim)
        device = resolve_device(self.device)
        seed_everything(cfg.seed)
        t0 = time.perf_counter()
        rng = np.random.default_rng(cfg.seed)

        # Beam calibration queries: held out of training when there are enough.
        order = rng.permutation(len(q))
        n_cal = min(CALIBRATION_QUERIES, len(q))
        held_out = len(q) >= 4 * CALIBRATION_QUERIES
        cal_rows = np.sort(order[:n_cal])
        train_rows = np.sort(order[n_cal:]) if held_out else np.arange(len(q))

        head = SoftmaxModel.fixed(x, bias)
        state = build_state(dr_config, n_items, ordered=False, device=device, encoder="mean",
                            reranker=head, item_ids=item_ids)
        train_q = q[train_rows]
        k = min(cfg.train.distill_k, n_items)
        # The exact top k: the distilled pairs, and (with positives too) the anchors' thresholds.
        top, top_scores = retrieval.exhaustive_top(state, train_q, k)  # (Q', k)
        if relation is None:
            pair_q = np.repeat(np.arange(len(train_rows)), k)
            pair_v = top.ravel()
            keep = pair_v >= 0
            pair_q, pair_v = pair_q[keep], pair_v[keep]
        else:
            sub = relation.rows(train_rows)
            pair_q, pair_v = sub.row_ids(), sub.items
        if not len(pair_v):
            raise ValueError("positives holds no (query, item) pair for the training queries")
        state.item_counts = np.bincount(pair_v, minlength=n_items).astype(np.int64)

        a = min(cfg.train.anchor_queries, len(train_rows))
        anchor_rows = np.sort(rng.choice(len(train_rows), size=a, replace=False))
        state.anchors = (train_q[anchor_rows], top_scores[anchor_rows, -1].copy())
        unseen = np.flatnonzero(state.item_counts == 0)
        contexts = None
        if len(unseen):
            rows, _ = catalogue.anchor_contexts(
                state.anchors, x[unseen], None if bias is None else bias[unseen],
                cfg.train.anchors_per_item,
            )
            contexts = (anchor_rows[rows.ravel()], np.repeat(unseen, rows.shape[1]))
        log.info(
            "fitting a DR index: %d items × %d dims, %d training queries, %d pairs, %d items"
            " placed through anchor queries", n_items, dim, len(train_rows), len(pair_v),
            len(unseen),
        )
        fit_index_state(state, train_q, pair_q, pair_v, contexts)
        retrieval.calibrate_on(state, q[cal_rows])
        state.training = {
            "kind": INDEX_KIND, "index_config": to_dict(cfg), "training_queries": len(train_rows),
            "calibration_queries_held_out": bool(held_out), "pairs": int(len(pair_v)),
            "positives": relation is not None, "items_placed_by_anchors": int(len(unseen)),
            "fit_seconds": round(time.perf_counter() - t0, 2),
        }
        self.state_ = state
        return self

    # ------------------------------------------------------------------ search
    def search(
        self, queries: Any, k: int, *, exclude: Sequence[Sequence[Any]] | None = None,
        beam_size: int | None = None, stats: QueryStats | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` items per query vector by ``⟨q, v⟩ + b_v`` among DR's candidates.

        Args:
            queries: ``(N, E)`` query vectors, or one ``(E,)`` vector.
            k: results per query (≥ 1).
            exclude: per query, external ids never to return (``KeyError`` for an unknown id);
                one list for one ``(E,)`` query.
            beam_size: override the calibrated beam.
            stats: a caller-owned :class:`QueryStats` receiving the candidate counts.

        Returns:
            ``(ids, scores)``: ``(N, k)`` arrays for ``(N, E)`` queries, ``(k,)`` for one
            ``(E,)`` query; ids are the external ids given to :meth:`fit` (padded with ``-1``
            for integer ids, ``""`` for string ids, scores with ``-inf``, when fewer than ``k``
            items are found).
        """
        _check_k(k)
        arr = np.asarray(queries)
        single = arr.ndim == 1
        q = _vectors(arr[None] if single else arr, "queries", self.dim)
        if not len(q):
            return to_external(self.state, np.zeros((0, k), np.int64)), np.zeros((0, k), np.float32)
        banned = None
        if exclude is not None:
            rows = [exclude] if single else list(exclude)
            if len(rows) != len(q):
                raise ValueError(f"exclude has {len(rows)} rows for {len(q)} queries")
            banned = Sequences.from_lists([rows_of(self.state, r).tolist() for r in rows])
        internal, scores = retrieval.recommend(self.state, q, int(k), exclude=banned,
                                               beam_size=beam_size, stats=stats)
        ids = to_external(self.state, internal)
        return (ids[0], scores[0]) if single else (ids, scores)

    def search_exact(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` by scoring every item (brute force over the same vectors; for checking
        the index)."""
        _check_k(k)
        arr = np.asarray(queries)
        single = arr.ndim == 1
        q = _vectors(arr[None] if single else arr, "queries", self.dim)
        internal, scores = retrieval.exhaustive_top(self.state, q, int(k))
        ids = to_external(self.state, internal)
        return (ids[0], scores[0]) if single else (ids, scores)

    # ------------------------------------------------------------------ catalogue

    def add(self, item_vectors: Any, ids: Any = None, item_bias: Any = None) -> np.ndarray:
        """Add items without retraining: each is placed on ``J`` paths by the penalised choice
        against the current path sizes, from the path scores of the anchor queries under whose
        threshold it falls the least (:func:`~deep_retrieval.index.catalogue.anchor_contexts`).
        Returns their rows ``V .. V + n - 1``.

        Args:
            item_vectors: ``(n, E)``. ids: ``(n,)`` new, distinct external ids (default: the
                next integers, for an index with integer ids). item_bias: ``(n,)``; required
                when the index was fitted with a bias (and refused when it was not).
        """
        state = self.state
        x = _vectors(item_vectors, "item_vectors", self.dim)
        n = len(x)
        if n < 1:
            raise ValueError("add needs at least one item vector")
        head = state.net.reranker
        if (head.item_bias is None) != (item_bias is None):
            raise ValueError(
                "give item_bias for every added item: the index was fitted with one"
                if head.item_bias is not None
                else "this index was fitted without item_bias: add items without one"
            )
        bias = _bias(item_bias, n)
        if ids is None:
            if self.ids.dtype.kind not in "iu":
                raise ValueError("this index has string ids: give ids for the new items")
            start = int(self.ids.max(initial=-1)) + 1
            ids = np.arange(start, start + n)
        new_ids = _ids(ids, n)
        if (new_ids.dtype.kind in "iu") != (self.ids.dtype.kind in "iu"):
            raise ValueError("new ids must be of the index's kind (all integers or all strings)")
        taken = np.isin(new_ids.astype(str), self.ids.astype(str))
        if taken.any():
            raise ValueError(f"ids already in the index: {new_ids[taken][:3].tolist()}")
        if state.anchors is None:
            raise ValueError("this index holds no anchor queries to place new items with")
        rows, entered = catalogue.anchor_contexts(
            state.anchors, x, bias, self.config.train.anchors_per_item
        )
        u = torch.as_tensor(state.anchors[0][rows.ravel()], device=state.device)
        # Each new item weighs in the placement as often as training would have met it: the
        # training queries whose top distill_k it would enter, estimated from the anchors.
        training = state.training if isinstance(state.training, dict) else {}
        per_anchor = training.get("training_queries", len(state.anchors[0])) / len(state.anchors[0])
        weights = np.maximum(entered * per_anchor, 1.0)
        paths = catalogue.place_by_contexts(
            state, u, np.repeat(np.arange(n), rows.shape[1]), n, weights
        )
        # One copy of the vectors serves both tables, as in fit.
        old_bias = head.item_bias
        grown = SoftmaxModel.fixed(
            np.concatenate([head.item_table.weight.detach().cpu().numpy(), x]),
            None if bias is None or old_bias is None
            else np.concatenate([old_bias.detach().cpu().numpy(), bias]),
        ).to(state.device)
        state.net.reranker = grown
        state.item_counts = np.r_[state.item_counts, np.zeros(n, np.int64)]
        state.cold = np.r_[state.cold, np.ones(n, bool)]
        state.removed = np.r_[state.removed, np.zeros(n, bool)]
        state.grow_attributes(n)
        state.item_ids = np.concatenate([self.ids, new_ids])
        state.set_paths(np.vstack([state.item_paths.path_ids, paths]))
        return np.arange(state.n_items - n, state.n_items)

    def remove(self, ids: Sequence[Any] | np.ndarray) -> int:
        """Take items out of the index by external id (their rows stay, so nothing shifts);
        returns how many were newly removed. ``KeyError`` for an unknown id."""
        return catalogue.remove_items(self.state, rows_of(self.state, ids))

    # ------------------------------------------------------------------ diagnostics, persistence
    def diagnostics(self, stats: QueryStats | None = None) -> dict[str, Any]:
        """Path sizes, beam calibration, the per-epoch log (and with ``stats`` the candidates
        per query)."""
        return {**diagnostics.diagnostics(self.state, stats), "training": self.state.training}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index into directory ``path``, atomically: a model bundle
        (:mod:`deep_retrieval.index.bundle`: versioned, checksummed, no pickle)."""
        return bundle.save_bundle(self.state, path)

    @staticmethod
    def is_index(state: DRState) -> bool:
        """Whether ``state`` (a loaded bundle's) is an index over given vectors."""
        return isinstance(state.training, dict) and state.training.get("kind") == INDEX_KIND

    @classmethod
    def from_state(cls, state: DRState, *, device: str = "cpu") -> DRIndex:
        """The index around a loaded index state; ``ValueError`` for a history model's."""
        if not cls.is_index(state):
            raise ValueError("this bundle holds a history model, not a DRIndex: load it with"
                             " DeepRetrieval.load")
        assert isinstance(state.training, dict)
        config = from_mapping(IndexConfig, state.training.get("index_config", {}))
        index = cls(config, device=device)
        index.state_ = state
        return index

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu", verify: bool = True) -> DRIndex:
        """Read an index written by :meth:`save`; refuses a bundle that is not an index (a
        history model: use :meth:`DeepRetrieval.load`) or is missing, truncated or altered."""
        state = bundle.load_bundle(path, device=resolve_device(device), verify=verify)
        try:
            return cls.from_state(state, device=device)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
