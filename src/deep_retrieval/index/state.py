"""The fitted state of a Deep Retrieval model: one owner for what fit, streaming, checkpoints,
bundles and catalogue edits change.

:class:`DRState` is a plain container; :func:`build_state` is the one factory (fit, streaming and
bundle loading all start from it). Everything else is a function over a state in its own module:
:mod:`.retrieval` (beam search, candidates, rerank), :mod:`.bundle` (save / load),
:mod:`.catalogue` (add / remove items), :mod:`.ids` (external ids, known users),
:mod:`deep_retrieval.training` (the network step and path assignment).

Derived serving tables (the reranker as numpy, the compiled structure network, id lookups, the
popularity order) are cached on the state by :meth:`DRState.derived`; whoever changes the
network or the catalogue calls :meth:`DRState.changed`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import PENALTY_REFERENCE_DENSITY, DRConfig
from ..core.assignment import PathScores
from ..core.modules.attention import TargetAttention
from ..core.modules.softmax import SoftmaxModel
from ..core.modules.structure import StructureNet
from ..core.paths import ItemPathMap, PathCodec
from ..data.types import Sequences

# item_flags.npy bits
#: What an item attribute may be called (it names a file of the bundle).
ATTRIBUTE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
FLAG_COLD = 1
FLAG_REMOVED = 2

T = TypeVar("T")


class DRNet(nn.Module):
    """Shared user encoder → structure network (paths) and softmax head (reranker), plus the
    candidate-aware attention term when ``config.reranker == "attention"``."""

    def __init__(
        self,
        n_items: int,
        config: DRConfig,
        encoder: str,
        *,
        reranker: SoftmaxModel | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        t, s = config.train, config.structure
        options = {"normalize": t.normalize, "temperature": t.temperature, **options}
        # A given reranker is used as is: building a second (V, E) table pair first would cost
        # gigabytes at 10M items.
        self.reranker = (
            reranker
            if reranker is not None
            else SoftmaxModel(n_items, t.embedding_dim, encoder, **options)
        )
        self.structure = StructureNet(
            t.embedding_dim, s.n_layers, s.n_nodes, s.node_dim, s.hidden_dim
        )
        self.attention: TargetAttention | None = None
        if config.reranker == "attention":
            # Its own seeded generator: the rest of the model (and so the index a fit builds)
            # is the same as with reranker="dot".
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                self.attention = TargetAttention(t.embedding_dim, t.attention_dim)

    def user_embedding(self, hist: torch.Tensor) -> torch.Tensor:
        """``(U, L)`` history ids (``-1`` padded) → ``(U, E)``."""
        return self.reranker.user_embedding(hist)

    def attention_terms(self, hist: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The attention term ``t(u, v)`` (:class:`TargetAttention`) of users ``hist`` ``(N, L)``
        for ``items``: ``(C,)`` ids shared by every user or ``(N, C)`` per user → ``(N, C)``.
        The reranker's logit is ``reranker.scores(u, items)`` plus this."""
        assert self.attention is not None, "the model has no attention term (reranker='dot')"
        history, mask = self.attention_history(hist)
        return self.attention(history, mask, self.attention_items(items))

    def attention_history(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the attention term reads of a history: ``(N, L)`` ids → ``((N, L, E)`` vectors,
        ``(N, L)`` mask``)``, the encoder's item vectors, L2-normalised like the reranker's
        when it normalises."""
        history, mask = self.reranker.encoder.history_vectors(hist)
        return (F.normalize(history, dim=-1) if self.reranker.normalize else history), mask

    def attention_items(self, items: torch.Tensor) -> torch.Tensor:
        """``items.shape + (E,)``: the candidates' vectors the attention term reads (the
        reranker's item vectors ``k``)."""
        return self.reranker.keys(items)


@dataclass(eq=False)
class DRState:
    """Everything a fitted model is (``V`` items, ``J`` paths per item).

    Attributes:
        config: the settings it was built and trained with.
        net: structure network and reranker.
        codec: path id ↔ ``(D,)`` node tuple.
        item_paths: item → ``J`` paths, and the inverted index (removed items left out).
        item_counts: ``(V,)`` training occurrences (tie-breaks, popularity fallback).
        cold: ``(V,)`` placed without interactions. removed: ``(V,)`` taken out of the index.
        ordered: trained on time-ordered rows. encoder_kind: ``"mean"`` or ``"gru"``.
        device: where the network lives.
        beam_calibration: ``(beams (b,), mean candidates (b,))``, or ``None`` before calibration.
        recall_calibration: ``(ns (m,), recall (m, b))``: recall@n against the reranker's
            exhaustive top n per calibrated beam (``retrieval.target_recall``), or ``None``.
        history: one log entry per epoch (or per streaming path assignment).
        item_ids: ``(V,)`` external item ids, or ``None`` (internal ids are the ids).
        user_ids / user_histories: known users and their histories (internal item ids).
        training: free JSON metadata saved in the bundle manifest.
        path_scores: streaming only: the merged per-item path scores of the last assignment.
        anchors: an index over given vectors only (:class:`~deep_retrieval.DRIndex`):
            ``(queries (A, E) float32, thresholds (A,) float32)``, a sample of its training
            query vectors and each one's ``distill_k``-th best exact score, the contexts that
            place new items.
        item_attributes: name → ``(V,)`` int64 or str values (a category, a brand), for the
            query-time filters (:mod:`~deep_retrieval.index.filters`); items added later get
            ``-1`` / ``""`` until set.
    """

    config: DRConfig
    net: DRNet
    codec: PathCodec
    item_paths: ItemPathMap
    item_counts: np.ndarray
    cold: np.ndarray
    removed: np.ndarray
    ordered: bool
    encoder_kind: str
    device: torch.device | str
    beam_calibration: tuple[np.ndarray, np.ndarray] | None = None
    recall_calibration: tuple[np.ndarray, np.ndarray] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    item_ids: np.ndarray | None = None
    user_ids: np.ndarray | None = None
    user_histories: Sequences | None = None
    training: dict[str, Any] | None = None
    path_scores: PathScores | None = None
    anchors: tuple[np.ndarray, np.ndarray] | None = None
    item_attributes: dict[str, np.ndarray] = field(default_factory=dict)
    _derived: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n_items(self) -> int:
        return int(self.item_paths.n_items)

    def derived(self, key: str, build: Callable[[], T]) -> T:
        """A serving table computed once from the current network and catalogue."""
        if key not in self._derived:
            self._derived[key] = build()
        value: T = self._derived[key]
        return value

    def changed(self) -> None:
        """The network or the catalogue changed: drop every derived table."""
        self._derived.clear()

    def penalty(self) -> float:
        """The path-size penalty α that path assignment and placement use
        (``assignment.penalty``, scaled by ``assignment.penalty_scale``)."""
        a = self.config.assignment
        if a.penalty_scale is None or not len(self.item_counts):
            return float(a.penalty)
        return float(a.penalty * self.item_counts.mean() / PENALTY_REFERENCE_DENSITY)

    def set_paths(self, path_ids: np.ndarray) -> None:
        """Install a new ``(V, J)`` item → path table (removed items stay out of the index)."""
        self.item_paths = ItemPathMap(path_ids, self.codec, excluded=self.removed)
        self.changed()

    def item_flags(self) -> np.ndarray:
        """``(V,)`` uint8: ``FLAG_COLD`` (placed without interactions), ``FLAG_REMOVED``."""
        flags = np.zeros(self.n_items, dtype=np.uint8)
        flags[self.cold] |= FLAG_COLD
        flags[self.removed] |= FLAG_REMOVED
        return flags

    def history_length(self) -> int:
        """Newest items of a query history the encoder sees (ordered rows: the training window)."""
        t = self.config.train
        return t.history_len if self.ordered else max(t.history_len, t.query_history_len)

    def set_item_attribute(self, name: str, values: Any) -> None:
        """Set attribute ``name`` of every item: ``values`` ``(V,)``, integers or text."""
        if not isinstance(name, str) or not ATTRIBUTE_NAME.fullmatch(name):
            raise ValueError(
                f"attribute names are letters, digits and _ (not first a digit), got {name!r}"
            )
        arr = np.asarray(values)
        if arr.shape != (self.n_items,):
            raise ValueError(f"attribute {name!r} needs one value per item ({self.n_items}),"
                             f" got shape {arr.shape}")
        self.item_attributes[name] = (
            arr.astype(np.int64) if arr.dtype.kind in "iub" else arr.astype(str)
        )

    def grow_attributes(self, n: int) -> None:
        """``n`` items were appended: their attributes are missing (``-1`` / ``""``)."""
        for name, column in self.item_attributes.items():
            fill = np.full(n, -1 if column.dtype.kind == "i" else "", dtype=column.dtype)
            self.item_attributes[name] = np.concatenate([column, fill])

    def set_known_users(self, user_ids: np.ndarray, histories: Sequences) -> None:
        """Keep ``histories`` (internal item ids) of users ``user_ids`` (saved with the bundle)."""
        user_ids = np.asarray(user_ids)
        if len(user_ids) != len(histories):
            raise ValueError(f"{len(user_ids)} user ids for {len(histories)} histories")
        self.user_ids = user_ids.astype(str) if user_ids.dtype == object else user_ids
        self.user_histories = histories
        self._derived.pop("user_lookup", None)


def build_state(
    config: DRConfig,
    n_items: int,
    *,
    ordered: bool,
    device: torch.device | str = "cpu",
    encoder: str | None = None,
    reranker: SoftmaxModel | None = None,
    reranker_options: dict[str, Any] | None = None,
    item_paths: ItemPathMap | None = None,
    item_counts: np.ndarray | None = None,
    item_ids: np.ndarray | None = None,
) -> DRState:
    """A new state: network built (random weights, or around a given trained ``reranker``), paths
    uniformly random (paper §1.1; ``J`` distinct per item, from ``config.seed``) unless given.

    Args:
        encoder: the user encoder kind; default ``config.train.encoder`` with ``"auto"``
            resolved (GRU for ordered rows, mean pooling otherwise), or the reranker's.
        reranker: an already trained :class:`SoftmaxModel` of ``n_items`` rows and
            ``train.embedding_dim`` columns, used as is.
        reranker_options: constructor options of the reranker (a loaded bundle's).
        item_counts: ``(V,)`` training occurrences (default zeros).
        item_ids: ``(V,)`` external item ids; default the identity ``0 .. V-1``, recorded as
            such, so that every model knows its ids (nothing reads ids sent to it as rows).
    """
    if n_items < 1:
        raise ValueError(f"a model needs n_items ≥ 1, got {n_items}")
    if item_ids is not None and len(item_ids) != n_items:
        raise ValueError(f"item_ids has {len(item_ids)} entries for n_items = {n_items}")
    s = config.structure
    if encoder is None:
        encoder = config.train.encoder
        if encoder == "auto":
            encoder = "gru" if ordered else "mean"
    if reranker is not None and (
        reranker.n_items != n_items or reranker.encoder.dim != config.train.embedding_dim
    ):
        raise ValueError(
            "the given reranker does not fit: it has"
            f" {reranker.n_items} items × {reranker.encoder.dim} dims, the model needs"
            f" {n_items} × {config.train.embedding_dim} (set train.embedding_dim)"
        )
    net = DRNet(n_items, config, encoder, reranker=reranker, **(reranker_options or {})).to(device)
    if reranker is not None:
        encoder = reranker.encoder.kind
    codec = PathCodec(s.n_layers, s.n_nodes)
    if item_paths is None:
        item_paths = ItemPathMap.random(
            n_items, codec, s.paths_per_item, np.random.default_rng(config.seed)
        )
    counts = (
        np.zeros(n_items, np.int64) if item_counts is None else np.asarray(item_counts, np.int64)
    )
    return DRState(
        config=config,
        net=net,
        codec=codec,
        item_paths=item_paths,
        item_counts=counts,
        cold=np.zeros(n_items, dtype=bool),
        removed=np.zeros(n_items, dtype=bool),
        ordered=bool(ordered),
        encoder_kind=encoder,
        device=device,
        item_ids=np.arange(n_items, dtype=np.int64) if item_ids is None else np.asarray(item_ids),
    )
