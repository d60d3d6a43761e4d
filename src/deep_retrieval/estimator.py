"""The Deep Retrieval estimator: a thin scikit-learn-style facade over a fitted
:class:`~deep_retrieval.index.state.DRState`.

``DeepRetrieval(config).fit(train, n_items)`` alternates the *network step* with *path
assignment* (:mod:`deep_retrieval.training.batch`); ``recommend`` runs beam search over the grid,
takes the union of the items on the ``B`` best paths and reranks them with the softmax head
(:mod:`deep_retrieval.index.retrieval`). The state is built and changed only by the modules named
in :mod:`deep_retrieval.index.state`; this class forwards to them.

Shapes: ``U`` query users, ``V`` items, ``B`` beam, ``M`` recommendations, ``E`` embedding width.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import DRConfig, StreamConfig
from .core.contract import as_sequences, check_query, check_train, empty_results
from .core.modules.softmax import SoftmaxModel
from .data.types import Interactions, Sequences, Split
from .index import bundle, catalogue, diagnostics, ids, retrieval
from .index.filters import ItemFilter, passing, recommend_filtered
from .index.retrieval import Candidates, QueryStats
from .index.state import DRState, build_state
from .training.batch import fit_state
from .training.stream import as_chunks, stream_state
from .utils import resolve_device, seed_everything

log = logging.getLogger("deep_retrieval")

__all__ = ["Candidates", "DeepRetrieval", "QueryStats", "stream_train"]

# Read-only views of the state under the estimator's fitted-attribute names (trailing underscore).
_STATE_ATTRIBUTES = {
    "net_": "net", "codec_": "codec", "item_paths_": "item_paths", "n_items_": "n_items",
    "item_counts_": "item_counts", "history_": "history", "beam_calibration_": "beam_calibration",
    "recall_calibration_": "recall_calibration",
    "item_ids_": "item_ids", "cold_": "cold", "removed_": "removed", "ordered_": "ordered",
    "encoder_kind_": "encoder_kind", "device_": "device", "user_ids_": "user_ids",
    "user_histories_": "user_histories", "training_": "training", "path_scores_": "path_scores",
}


class DeepRetrieval:
    """Deep Retrieval with the recommend contract of :mod:`deep_retrieval.core.contract`.

    Args:
        config: every setting (see :class:`~deep_retrieval.config.DRConfig`).
        device: ``"auto"`` (CUDA when visible), ``"cpu"`` or ``"cuda[:N]"``.

    Fitted: ``state_`` (:class:`~deep_retrieval.index.state.DRState`), also readable as
    ``net_``, ``item_paths_``, ``codec_``, ``n_items_``, ``item_counts_``, ``history_`` (per-epoch
    log), ``beam_calibration_``, ``item_ids_``, ``cold_``, ``removed_``, …

    Ids: ``fit``, ``recommend``, ``retrieve``, ``user_embeddings`` and ``add_items`` take and
    return *internal* item ids, the rows ``0 .. V-1`` of ``item_ids_``; :meth:`recommend_by_id`
    and :meth:`add_items_by_id` take and return the *external* ids. Every fitted model records
    its external ids: a :class:`Split`'s, the ``item_ids`` given to ``fit``, or the identity
    ``0 .. V-1``.

    Example::

        model = DeepRetrieval(DRConfig()).fit(split)          # or fit(rows, n_items)
        ids, scores = model.recommend(split.test_history, n=10)    # internal ids
        names, scores = model.recommend_by_id([["toy story", "heat"]], n=10)  # external ids
    """

    name = "dr"

    def __init__(self, config: DRConfig | None = None, *, device: str = "auto") -> None:
        self.config = config or DRConfig()
        self.device = device

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found normally: the fitted attributes.
        if name in _STATE_ATTRIBUTES:
            state = self.__dict__.get("state_")
            if state is not None:
                return getattr(state, _STATE_ATTRIBUTES[name])
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    @property
    def state(self) -> DRState:
        """The fitted state; ``ValueError`` before ``fit`` / ``load``."""
        state = self.__dict__.get("state_")
        if state is None:
            raise ValueError(
                "this DeepRetrieval model is not fitted yet: call fit() or DeepRetrieval.load()"
            )
        return state

    @classmethod
    def from_state(cls, state: DRState, *, device: str = "auto") -> DeepRetrieval:
        """A model around an existing state (a loaded bundle's, a streamed one)."""
        model = cls(state.config, device=device)
        model.state_ = state
        return model

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        train: Sequences | Split | Any,
        n_items: int | None = None,
        *,
        reranker: SoftmaxModel | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        item_ids: np.ndarray | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
    ) -> DeepRetrieval:
        """Train from scratch on ``train`` rows (internal item ids ``0 .. n_items-1``): a
        :class:`Sequences`, a list of id lists (oldest first) or a scipy sparse users × items
        matrix; or on a :class:`Split` (``make_split``), whose item ids, item count and training
        users (kept as known users, for lookups by user id) come with it.

        Args:
            n_items: ``V``; required unless ``train`` is a :class:`Split`.
            reranker: optional already trained :class:`SoftmaxModel` (e.g. the brute-force
                baseline's) to start from; it stays frozen, so only the structure network trains.
            on_event: called with a dict after each phase (``{"event": "epoch", …}``); the CLI
                prints these.
            item_ids: ``(V,)`` external item ids (kept as ``item_ids_``, saved with the model);
                default the split's, else the identity ``0 .. V-1``.
            checkpoint_dir: write training checkpoints here (each epoch, and before each path
                assignment); see :mod:`deep_retrieval.training.checkpoint`.
            resume: continue from the newest valid checkpoint in ``checkpoint_dir`` (if any);
                the result equals an uninterrupted fit's.
        """
        split = train if isinstance(train, Split) else None
        if split is not None:
            if n_items is not None and n_items != split.n_items:
                raise ValueError(f"n_items = {n_items}, but the split has {split.n_items} items")
            train, n_items = split.train, split.n_items
            item_ids = split.item_ids if item_ids is None else item_ids
        if n_items is None:
            raise ValueError("fit needs n_items (the number of items) unless given a Split")
        train = check_train(train, n_items, "DeepRetrieval")
        s, t = self.config.structure, self.config.train
        log.info(
            "fitting DR on %d rows (%d interactions), %d items: %d layers × %d nodes, %d paths"
            " per item; %d reranker + %d network epochs", len(train), len(train.items), n_items,
            s.n_layers, s.n_nodes, s.paths_per_item,
            0 if reranker is not None else t.reranker_epochs, t.epochs,
        )
        t0 = time.perf_counter()
        seed_everything(self.config.seed)
        state = build_state(
            self.config,
            int(n_items),
            ordered=bool(train.ordered),
            device=resolve_device(self.device),
            reranker=reranker,
            item_ids=item_ids,
            item_counts=np.bincount(train.items, minlength=n_items),
        )
        fit_state(state, train, frozen_reranker=reranker is not None, on_event=on_event,
                  checkpoint_dir=checkpoint_dir, resume=resume)
        retrieval.calibrate(state, train)
        log.info("fitted in %.1f s: %s", time.perf_counter() - t0,
                 diagnostics.summary_line(state))
        self.state_ = state
        if split is not None:
            self.set_known_users(split.train_user_ids, split.train)
        return self

    # ------------------------------------------------------------------ retrieval
    def user_embeddings(self, histories: Sequences, batch_size: int = 1024) -> torch.Tensor:
        """``(U, E)`` user vectors on the model's device."""
        histories = as_sequences(histories, "histories", "DeepRetrieval.user_embeddings")
        return retrieval.user_embeddings(self.state, histories, batch_size)

    def beam_size_for(self, n: int) -> int:
        """The beam used for ``n`` results (see
        :func:`~deep_retrieval.index.retrieval.beam_size_for`)."""
        return retrieval.beam_size_for(self.state, n)

    def retrieve(
        self, histories: Sequences, *, beam_size: int | None = None, n: int = 10
    ) -> Candidates:
        """Beam search and the union of items on the beam's paths, before reranking."""
        histories = as_sequences(histories, "histories", "DeepRetrieval.retrieve")
        return retrieval.retrieve(self.state, histories, beam_size=beam_size, n=n)

    def recommend(
        self,
        histories: Sequences,
        n: int,
        *,
        exclude: Sequences | None = None,
        beam_size: int | None = None,
        rerank: bool | None = None,
        stats: QueryStats | None = None,
        exhaustive: bool = False,
        allow: Any = None,
        where: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]] | None]
        | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` items per query: beam search → candidates → rerank (or path order).

        Args:
            histories: ``U`` rows of internal item ids (the query users' behaviour): a
                :class:`Sequences`, a list of id lists (oldest first) or a scipy sparse
                ``(U, V)`` matrix (:func:`~deep_retrieval.core.contract.as_sequences`).
            exclude: items never to return, per row.
            beam_size: override the beam (default: :meth:`beam_size_for` ``n``).
            rerank: ``False`` ranks candidates by their best path log-prob (ties: more popular
                first) instead of the softmax head — the "DR without reranker" ablation.
            stats: a caller-owned :class:`QueryStats` that receives the candidate counts (the
                model itself is never changed by a query).
            exhaustive: skip the index and score every servable item with the reranker (with
                ``reranker="attention"``: the attention-exhaustive method; ``O(V · L)`` per
                user, for evaluation); ``beam_size``, ``rerank`` and ``stats`` are not used.
            allow: per row, the only items it may get (internal ids; rows as for
                ``histories``, a row may be ``None``: unfiltered), or ``None``.
            where: item attributes each result must have (``{"category": ["shoes"]}``; set
                with :meth:`set_item_attributes`), one mapping for every row or one per row.
                With ``allow`` or ``where`` the beam widens for rows with fewer than ``n``
                passing candidates (:func:`~deep_retrieval.index.filters.recommend_filtered`,
                which also says which rows stayed short).

        Returns:
            ``(item_ids (U, n) int64, scores (U, n) float32)``, padded ``-1`` / ``-inf``.
        """
        histories, exclude = check_query(
            histories, n, exclude, self.state.n_items, "DeepRetrieval"
        )
        if len(histories) == 0:
            return empty_results(0, n)
        if exhaustive:
            return retrieval.exhaustive_top(self.state, histories, n, exclude=exclude)
        if allow is not None or where is not None:
            ids, scores, _ = self.recommend_filtered(histories, n, allow=allow, where=where,
                                                     exclude=exclude, beam_size=beam_size)
            return ids, scores
        return retrieval.recommend(self.state, histories, n, exclude=exclude, beam_size=beam_size,
                                   rerank=rerank, stats=stats)

    def recommend_filtered(
        self,
        histories: Any,
        n: int,
        *,
        allow: Any = None,
        where: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]] | None]
        | None = None,
        exclude: Any = None,
        beam_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`recommend` with ``allow`` / ``where`` filters; also returns ``complete (U,)``
        bool: false for a row that got fewer than ``n`` items though more pass its filter."""
        histories, exclude = check_query(
            histories, n, exclude, self.state.n_items, "DeepRetrieval"
        )
        rows = len(histories)
        allowed: list[np.ndarray | None]
        if allow is None:
            allowed = [None] * rows
        elif isinstance(allow, list) and any(a is None for a in allow):  # some rows unfiltered
            allowed = [None if a is None else np.asarray(a, np.int64) for a in allow]
        else:
            seq = as_sequences(allow, "allow", "DeepRetrieval")
            allowed = [seq.rows(np.array([r])).items for r in range(len(seq))]
        wheres = (
            [where] * rows if where is None or isinstance(where, Mapping) else list(where)
        )
        if len(allowed) != rows or len(wheres) != rows:
            raise ValueError(f"allow and where need one entry per query ({rows}); got"
                             f" {len(allowed)} and {len(wheres)}")
        filters = [
            None if a is None and w is None else ItemFilter(allow=a, where=w)
            for a, w in zip(allowed, wheres, strict=True)
        ]
        return recommend_filtered(self.state, histories, n, filters, exclude=exclude,
                                  beam_size=beam_size)

    def set_item_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Item attributes for the ``where`` filter: name → ``(V,)`` values by internal id
        (integers or text), or name → ``{external id: value}`` (items left out keep their value,
        or get ``-1`` / ``""`` for a new attribute). Saved with the bundle."""
        for name, values in attributes.items():
            if isinstance(values, Mapping):
                known, unknown = self.item_index(list(values))
                if unknown:
                    raise KeyError(f"{len(unknown)} unknown item id(s), e.g. {unknown[:3]}")
                given = np.asarray(list(values.values()))
                numeric = given.dtype.kind in "iub"
                old = self.state.item_attributes.get(name)
                column = (np.full(self.state.n_items, -1 if numeric else "",
                                  dtype=np.int64 if numeric else object)
                          if old is None else old.astype(np.int64 if numeric else object))
                column[known] = given
                values = column
            self.state.set_item_attribute(name, values)

    def recommend_by_id(
        self,
        histories: Sequence[Sequence[Any]],
        n: int,
        *,
        exclude: Sequence[Sequence[Any]] | None = None,
        beam_size: int | None = None,
        skip_unknown: bool = False,
        allow: Sequence[Sequence[Any]] | None = None,
        where: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]] | None]
        | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`recommend` in external ids: ``U`` lists of the model's external item ids
        (``item_ids_``, oldest first) in, external ids out.

        Args:
            exclude: per row, external ids never to return. allow: per row, the only
                external ids it may get. where: as for :meth:`recommend`.
            skip_unknown: drop ids the model does not know instead of raising ``KeyError``.

        Returns:
            ``(ids (U, n), scores (U, n) float32)``: ids of the model's kind, padded ``-1`` for
            integer ids and ``""`` for string ids, scores ``-inf``.
        """
        def rows(lists: Sequence[Sequence[Any]]) -> Sequences:
            if skip_unknown:
                return Sequences.from_lists([self.item_index(list(r))[0] for r in lists])
            return Sequences.from_lists([ids.rows_of(self.state, list(r)) for r in lists])

        internal, scores = self.recommend(
            rows(histories), n, exclude=None if exclude is None else rows(exclude),
            beam_size=beam_size, allow=None if allow is None else rows(allow), where=where,
        )
        return ids.to_external(self.state, internal), scores

    def popular_items(
        self, n: int, exclude: np.ndarray | None = None, *, allow: Any = None,
        where: Mapping[str, Sequence[Any]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` most frequent active items (the empty-history fallback) that ``allow``
        (internal ids) and ``where`` pass: ``(ids, training counts)``."""
        mask = None
        if allow is not None or where is not None:
            mask = passing(self.state, ItemFilter(
                allow=None if allow is None else np.asarray(allow, np.int64), where=where))
        return ids.popular_items(self.state, n, exclude, mask)

    # ------------------------------------------------------------------ ids and users
    def item_index(self, external: list | np.ndarray) -> tuple[np.ndarray, list]:
        """External item ids → ``(internal ids of the known ones, unknown ids as given)``."""
        return ids.item_index(self.state, external)

    def set_known_users(self, user_ids: np.ndarray, histories: Sequences) -> None:
        """Keep ``histories`` (internal item ids) of users ``user_ids``, for lookups by user id
        (:meth:`user_history`, the service's ``user_id`` requests); saved with the bundle."""
        self.state.set_known_users(user_ids, histories)

    def user_history(self, user_id: Any) -> np.ndarray:
        """``(L,)`` internal item ids of a known user; ``KeyError`` for an unknown one."""
        return ids.user_history(self.state, user_id)

    def align_split(self, split: Split) -> Split:
        """Re-express a split built from data with this model's item ids."""
        return ids.align_split(self.state, split)

    def item_flags(self) -> np.ndarray:
        """``(V,)`` uint8: ``FLAG_COLD`` (placed without interactions), ``FLAG_REMOVED``."""
        return self.state.item_flags()

    # ------------------------------------------------------------------ catalogue
    def add_items(
        self,
        item_ids: list | np.ndarray | None = None,
        *,
        n_new: int | None = None,
        interactions: Sequences | None = None,
        features: np.ndarray | None = None,
        neighbours: Sequences | None = None,
        n_neighbours: int = 20,
    ) -> np.ndarray:
        """Add items without retraining; returns their internal ids ``V .. V + n - 1``.

        Each new item gets ``J`` paths (penalised placement against the current path sizes), a
        reranker vector, a bias and an input embedding, from its contexts
        (:func:`~deep_retrieval.index.catalogue.add_items`).

        Args:
            item_ids: external ids of the new items (required when the model stores item ids;
                must be new and distinct).
            n_new: the number of new items, for models without external ids.
            interactions: rows of internal ids in ``0 .. V + n - 1`` (new items are ``≥ V``): the
                users who picked a new item are its contexts (warm items).
            features: ``(V + n, F)`` item features; rows that are not finite (``nan``) mean
                "unknown" (such existing items are never neighbours).
            neighbours: ``n`` rows of existing item ids, one per new item (empty rows allowed
                for items placed otherwise); cold items are flagged in ``cold_``.
            n_neighbours: neighbours taken from ``features``.
        """
        return catalogue.add_items(
            self.state,
            item_ids,
            n_new=n_new,
            interactions=interactions,
            features=features,
            neighbours=neighbours,
            n_neighbours=n_neighbours,
        )

    def add_items_by_id(
        self,
        *,
        interactions: Interactions | None = None,
        features: Mapping[Any, Sequence[float]] | None = None,
        neighbours: Mapping[Any, Sequence[Any]] | None = None,
    ) -> tuple[np.ndarray, list]:
        """:meth:`add_items` in external ids: every item these inputs name that the model does not
        hold is added (:func:`~deep_retrieval.index.catalogue.add_items_by_id`). Returns
        ``(internal ids of the new items, neighbour ids ignored as unknown)``."""
        return catalogue.add_items_by_id(self.state, interactions=interactions, features=features,
                                         neighbours=neighbours)

    def remove_items(self, items: np.ndarray) -> int:
        """Take internal item ids out of the index (ids do not shift); returns how many were
        newly removed."""
        return catalogue.remove_items(self.state, items)

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self, stats: QueryStats | None = None) -> dict[str, Any]:
        """Path-size distribution, beam calibration, per-epoch log (and, with ``stats``,
        candidates per query)."""
        return diagnostics.diagnostics(self.state, stats)

    def plot_path_sizes(self, png: str | os.PathLike) -> Path:
        """Write a histogram of items per occupied path to ``png``."""
        return diagnostics.plot_path_sizes(self.state, png)

    # ------------------------------------------------------------------ persistence
    def save(
        self,
        path: str | os.PathLike,
        *,
        item_ids: np.ndarray | None = None,
        training: dict[str, Any] | None = None,
    ) -> Path:
        """Write the model bundle into directory ``path``, atomically (see
        :mod:`deep_retrieval.index.bundle`); ``training`` is free JSON metadata for the manifest."""
        return bundle.save_bundle(self.state, path, item_ids=item_ids, training=training)

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, device: str = "auto", verify: bool = True
    ) -> DeepRetrieval:
        """Read a bundle written by :meth:`save`; refuses a missing, truncated, altered or unknown
        version with a message that names the file
        (:func:`~deep_retrieval.index.bundle.load_bundle`)."""
        state = bundle.load_bundle(path, device=resolve_device(device), verify=verify)
        return cls.from_state(state, device=device)


def stream_train(
    model: DeepRetrieval | DRConfig | None,
    events: Iterable[Any] | Interactions | str | os.PathLike,
    n_items: int | None = None,
    config: StreamConfig = StreamConfig(),
    *,
    item_ids: np.ndarray | None = None,
    device: str = "auto",
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> DeepRetrieval:
    """Train a Deep Retrieval model in one pass over time-ordered events
    (:func:`~deep_retrieval.training.stream.stream_state`).

    Args:
        model: a :class:`DeepRetrieval` (unfitted: built from its config; fitted: its network and
            paths continue to learn, with fresh path scores and user histories), a
            :class:`DRConfig`, or ``None`` (defaults).
        events: an iterable of :class:`~deep_retrieval.training.stream.StreamChunk` /
            ``(users (N,), items (N,)[, timestamps (N,)])`` batches in time order, items as
            internal ids; or an :class:`Interactions` / rating file, streamed with
            :func:`~deep_retrieval.training.stream.time_ordered_chunks` (which needs timestamps).
        n_items: ``V``; default ``len(item_ids)`` (or the fitted model's).
        item_ids: ``(V,)`` external id of each internal item: maps an :class:`Interactions`
            source's items and is stored in saved bundles.
        device: used when the model is built here (``"auto"``: the model's own setting).
        on_event: called with a dict per chunk, per path assignment and per bundle.

    Returns:
        The fitted model; ``history_`` holds one entry per path assignment, ``path_scores_`` the
        merged per-item lists the last assignment used.
    """
    if model is None or isinstance(model, DRConfig):
        model = DeepRetrieval(model, device=device)
    fitted: DRState | None = getattr(model, "state_", None)
    if n_items is None:
        if item_ids is not None:
            n_items = len(item_ids)
        elif fitted is not None:
            n_items = fitted.n_items
        else:
            raise ValueError("stream_train needs n_items (or item_ids) for an unfitted model")
    if item_ids is not None and len(item_ids) != n_items:
        raise ValueError(f"item_ids has {len(item_ids)} entries, n_items is {n_items}")
    chunks = as_chunks(events, config.chunk_size, item_ids)
    if fitted is not None:
        if fitted.n_items != n_items:
            raise ValueError(f"the model has {fitted.n_items} items, the stream {n_items}")
        state = fitted
    else:
        seed_everything(model.config.seed)
        state = build_state(model.config, n_items, ordered=True,
                            device=resolve_device(model.device if device == "auto" else device))
    if item_ids is not None:
        state.item_ids = np.asarray(item_ids)
    model.state_ = stream_state(state, chunks, config, on_event=on_event)
    return model
