"""The Deep Retrieval estimator: fit, retrieve, recommend, save, load.

``DeepRetrieval(config).fit(train, n_items)`` alternates the *network step* (one epoch of gradient
descent on the multi-path likelihood plus the sampled-softmax reranker) with *path assignment*
(beam-search path scores per item, then penalised greedy coordinate descent); see
:mod:`deep_retrieval.training.batch`. ``recommend`` runs beam search over the grid, takes the union of
the items on the ``B`` best paths and reranks them with the softmax head.

Shapes: ``U`` query users, ``V`` items, ``B`` beam, ``D`` layers, ``J`` paths per item,
``C`` candidates, ``M`` recommendations, ``E`` embedding width.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .utils import check_files, resolve_device, seed_everything, versions, write_directory
from .core.contract import pad_results
from .core.beam import CompiledStructure, beam_search
from .config import ConfigError, DRConfig, _from_mapping, to_dict
from .data.protocols import split_rows
from .data.types import Sequences, Split
from .core.modules.softmax import SoftmaxModel
from .core.modules.structure import StructureNet
from .core.paths import ItemPathMap, PathCodec

log = logging.getLogger("deep_retrieval")

FORMAT = "deep-retrieval-model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
# item_flags.npy bits
FLAG_COLD = 1
FLAG_REMOVED = 2


class DRNet(nn.Module):
    """Shared user encoder → structure network (paths) and softmax head (reranker)."""

    def __init__(
        self, n_items: int, config: DRConfig, encoder: str, *, reranker: SoftmaxModel | None = None, **options: Any
    ) -> None:
        super().__init__()
        t, s = config.train, config.structure
        options = {"normalize": t.normalize, "temperature": t.temperature, **options}
        # A given reranker is used as is: building a second (V, E) table pair first would cost
        # gigabytes at 10M items.
        self.reranker = reranker if reranker is not None else SoftmaxModel(n_items, t.embedding_dim, encoder, **options)
        self.structure = StructureNet(
            t.embedding_dim, s.n_layers, s.n_nodes, s.node_dim, s.hidden_dim
        )

    def user_embedding(self, hist: torch.Tensor) -> torch.Tensor:
        """``(U, L)`` history ids (``-1`` padded) → ``(U, E)``."""
        return self.reranker.user_embedding(hist)


@dataclass
class Candidates:
    """Un-reranked retrieval output, ragged per query user.

    Attributes:
        indptr: ``(U + 1,)`` row offsets.
        items: ``(C_total,)`` candidate item ids, distinct within a row, best path first.
        path_log_probs: ``(C_total,)`` log-probability of the best beam path holding the item.
        beam_size: the beam used.
    """

    indptr: np.ndarray
    items: np.ndarray
    path_log_probs: np.ndarray
    beam_size: int

    @property
    def counts(self) -> np.ndarray:
        """``(U,)`` candidates per query."""
        return np.diff(self.indptr)


def _segment_topk(
    rows: np.ndarray, items: np.ndarray, scores: np.ndarray, n_rows: int, n: int,
    tiebreak: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``n`` (item, score) per row from flat triples → ``(ids (U, n), scores (U, n))``, padded.

    ``rows`` must be ascending (grouped). Order: score descending, then ``tiebreak`` (default:
    item id) ascending.
    """
    if n_rows == 1 and len(scores) > n:
        # One query, the latency-critical case: the same pre-filter without the dense matrix.
        nth = -np.partition(-scores, n - 1)[n - 1]
        pick = np.flatnonzero(scores >= nth)
        keys = (items[pick],) if tiebreak is None else (tiebreak[pick],)
        order = pick[np.lexsort((*keys, -scores[pick]))][:n]
        ids = np.full((1, n), -1, dtype=np.int64)
        out = np.full((1, n), -np.inf, dtype=np.float32)
        ids[0, : len(order)], out[0, : len(order)] = items[order], scores[order]
        return pad_results(ids, out, n)
    counts = np.bincount(rows, minlength=n_rows)
    if counts.max(initial=0) > n:
        # Keep per row what can reach its top n: every score ≥ the row's n-th best (ties
        # included, so the result equals a full sort), from a dense (U, widest row) partition.
        # Sorting only the survivors is what makes a batch of 256 queries fast.
        starts = np.cumsum(counts) - counts
        dense = np.full((n_rows, int(counts.max())), -np.inf)
        dense[rows, np.arange(len(rows)) - starts[rows]] = scores
        nth = -np.partition(-dense, n - 1, axis=1)[:, n - 1]
        pick = np.flatnonzero(scores >= nth[rows])
        rows, items, scores = rows[pick], items[pick], scores[pick]
        tiebreak = None if tiebreak is None else tiebreak[pick]
    keys = (items,) if tiebreak is None else (tiebreak,)
    order = np.lexsort((*keys, -scores, rows))
    rows, items, scores = rows[order], items[order], scores[order]
    first = np.searchsorted(rows, rows, side="left")
    rank = np.arange(len(rows)) - first
    keep = rank < n
    ids = np.full((n_rows, n), -1, dtype=np.int64)
    out = np.full((n_rows, n), -np.inf, dtype=np.float32)
    ids[rows[keep], rank[keep]] = items[keep]
    out[rows[keep], rank[keep]] = scores[keep]
    return pad_results(ids, out, n)


class DeepRetrieval:
    """Deep Retrieval with the recommend contract of :mod:`deep_retrieval.core.contract`.

    Args:
        config: every setting (see :class:`~deep_retrieval.config.DRConfig`).
        device: ``"auto"`` (CUDA when visible), ``"cpu"`` or ``"cuda[:N]"``.

    Fitted attributes (trailing underscore): ``net_``, ``item_paths_`` (:class:`ItemPathMap`),
    ``codec_``, ``n_items_``, ``item_counts_`` (training occurrences, for tie-breaks),
    ``history_`` (per-epoch log), ``beam_calibration_`` (beam → mean candidates).

    Example::

        model = DeepRetrieval(DRConfig()).fit(split.train, split.n_items)
        ids, scores = model.recommend(split.test_history, n=10)
    """

    name = "dr"

    def __init__(self, config: DRConfig | None = None, *, device: str = "auto") -> None:
        self.config = config or DRConfig()
        self.device = device

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        train: Sequences,
        n_items: int,
        *,
        reranker: SoftmaxModel | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        item_ids: np.ndarray | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
    ) -> DeepRetrieval:
        """Train from scratch on ``train`` rows (items ``0 .. n_items-1``).

        Args:
            reranker: optional already trained :class:`SoftmaxModel` (e.g. the brute-force
                baseline's) to start from; it stays frozen, so only the structure network trains.
            on_event: called with a dict after each phase (``{"event": "epoch", …}``); the CLI
                prints these.
            item_ids: ``(V,)`` external item ids (kept as ``item_ids_``, saved with the model).
            checkpoint_dir: write training checkpoints here (each epoch, and before each path
                assignment); see :mod:`deep_retrieval.training.checkpoint`.
            resume: continue from the newest valid checkpoint in ``checkpoint_dir`` (if any);
                the result equals an uninterrupted fit's.
        """
        from .training.batch import fit_deep_retrieval

        _check_config(self.config)
        if n_items < 1 or len(train) == 0:
            raise ValueError("fit needs at least one training row and n_items ≥ 1")
        seed_everything(self.config.seed)
        self.device_ = resolve_device(self.device)
        self.n_items_ = int(n_items)
        self.ordered_ = bool(train.ordered)
        encoder = self.config.train.encoder
        if encoder == "auto":
            encoder = "gru" if train.ordered else "mean"
        self.encoder_kind_ = encoder
        s = self.config.structure
        self.codec_ = PathCodec(s.n_layers, s.n_nodes)
        if reranker is not None:
            if reranker.n_items != n_items or reranker.encoder.dim != self.config.train.embedding_dim:
                raise ValueError(
                    "the given reranker does not fit: it has"
                    f" {reranker.n_items} items × {reranker.encoder.dim} dims, the model needs"
                    f" {n_items} × {self.config.train.embedding_dim} (set train.embedding_dim)"
                )
            self.encoder_kind_ = reranker.encoder.kind
        self.net_ = DRNet(n_items, self.config, encoder, reranker=reranker).to(self.device_)
        self.item_counts_ = np.bincount(train.items, minlength=n_items).astype(np.int64)
        self.history_: list[dict[str, Any]] = []
        self.cold_ = np.zeros(n_items, dtype=bool)
        self.removed_ = np.zeros(n_items, dtype=bool)
        if item_ids is not None and len(item_ids) != n_items:
            raise ValueError(f"item_ids has {len(item_ids)} entries for n_items = {n_items}")
        self.item_ids_ = None if item_ids is None else np.asarray(item_ids)
        self.user_ids_, self.user_histories_ = None, None
        self._clear_caches()
        fit_deep_retrieval(self, train, frozen_reranker=reranker is not None, on_event=on_event,
                           checkpoint_dir=checkpoint_dir, resume=resume)
        self.beam_calibration_ = self._calibrate_beam(train)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise ValueError("this DeepRetrieval model is not fitted yet: call fit() or DeepRetrieval.load()")

    # ------------------------------------------------------------------ encoding
    def _history_length(self) -> int:
        """Newest items of a query history the encoder sees (ordered rows: the training window)."""
        t = self.config.train
        return t.history_len if self.ordered_ else max(t.history_len, t.query_history_len)

    def _history_matrix(self, histories: Sequences) -> np.ndarray:
        length = max(1, min(self._history_length(), int(histories.lengths.max(initial=1))))
        mat = histories.padded(length)
        if mat.size and (mat.max() >= self.n_items_):
            raise ValueError(f"history holds item id {int(mat.max())} ≥ n_items = {self.n_items_}")
        return mat

    @torch.no_grad()
    def user_embeddings(self, histories: Sequences, batch_size: int = 1024) -> torch.Tensor:
        """``(U, E)`` user vectors on the model's device."""
        self._check_fitted()
        if self.net_.training:  # Module.eval() walks every submodule: ~1 µs each, per query
            self.net_.eval()
        if len(histories) == 1:
            # One query: the encoder's numpy shortcut on the same items as _history_matrix (the
            # newest `length` of the row), where it has one.
            ids = histories.items[histories.indptr[0] : histories.indptr[1]][-self._history_length():]
            if len(ids) and (ids.min() < 0 or ids.max() >= self.n_items_):
                raise ValueError(f"history holds item id {int(ids.max())} outside [0, n_items = {self.n_items_})")
            vec = self.net_.reranker.encoder.encode_row(ids)
            if vec is not None:
                return vec
        mat = self._history_matrix(histories)
        out = [
            self.net_.user_embedding(torch.as_tensor(mat[s : s + batch_size], device=self.device_))
            for s in range(0, len(mat), batch_size)
        ]
        return torch.cat(out) if out else torch.zeros((0, self.config.train.embedding_dim), device=self.device_)

    # ------------------------------------------------------------------ retrieval
    def beam_size_for(self, n: int) -> int:
        """The beam used for ``n`` results: the configured one, else the smallest calibrated beam
        whose mean candidate count reaches ``candidate_factor · n``."""
        r = self.config.retrieval
        if r.beam_size is not None:
            return r.beam_size
        beams, means = self.beam_calibration_
        target = r.candidate_factor * n
        ok = np.flatnonzero(means >= target)
        return int(beams[ok[0]] if len(ok) else beams[-1])

    @torch.no_grad()
    def _beam(self, u: torch.Tensor, beam_size: int, *, ordered: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(U, B')`` path ids and log-probs of the beam (``B' = min(B, K^D)``); ``ordered=False``
        skips sorting the beam (same paths), for callers that only need the set."""
        if not ordered and u.device.type == "cpu":
            # Serving on CPU: the numpy twin of beam_search (same paths, less per-call overhead).
            compiled = self.__dict__.get("_compiled_structure")
            if compiled is None:
                compiled = self._compiled_structure = CompiledStructure(self.net_.structure)
            paths, log_probs = compiled.beam_search(u.float().numpy(), beam_size)
            return self.codec_.encode(paths), log_probs
        paths, log_probs = beam_search(self.net_.structure, u, beam_size, ordered=ordered)
        return self.codec_.encode(paths.cpu().numpy()), log_probs.float().cpu().numpy()

    def _candidates(self, path_ids: np.ndarray, path_lp: np.ndarray | None) -> Candidates:
        """The union of the items on each row's paths; with ``path_lp``, each item's best path
        log-prob too (``None``: skipped, the reranker does not need it; filled with ``nan``)."""
        n_rows, width = path_ids.shape
        if n_rows == 1:  # one query: the 1-D lookup skips the per-row bookkeeping
            items = self.item_paths_.items_on(path_ids[0])
            indptr = np.array([0, len(items)])
        else:
            indptr, items = self.item_paths_.items_on_batch(path_ids)
        if path_lp is None:
            return Candidates(indptr, items, np.full(len(items), np.nan, np.float32), width)
        rows = np.repeat(np.arange(n_rows), np.diff(indptr))
        # Best beam log-prob among each candidate's J paths: look (row, path) up in the sorted beam.
        n_paths = self.codec_.n_paths
        beam_keys = (np.arange(n_rows)[:, None] * n_paths + path_ids).ravel()
        order = np.argsort(beam_keys)
        beam_keys, beam_lp = beam_keys[order], path_lp.ravel()[order]
        item_keys = rows[:, None] * n_paths + self.item_paths_.path_ids[items]  # (C, J)
        pos = np.clip(np.searchsorted(beam_keys, item_keys), 0, len(beam_keys) - 1)
        lp = np.where(beam_keys[pos] == item_keys, beam_lp[pos], -np.inf).max(axis=1)
        return Candidates(indptr, items, lp.astype(np.float32), width)

    def retrieve(self, histories: Sequences, *, beam_size: int | None = None, n: int = 10) -> Candidates:
        """Beam search and the union of items on the beam's paths, before reranking."""
        self._check_fitted()
        beam = beam_size or self.beam_size_for(n)
        if beam < 1:
            raise ValueError(f"beam_size must be ≥ 1, got {beam}")
        u = self.user_embeddings(histories)
        path_ids, lp = self._beam(u, beam)
        return self._candidates(path_ids, lp)

    @torch.no_grad()
    def recommend(
        self,
        histories: Sequences,
        n: int,
        *,
        exclude: Sequences | None = None,
        beam_size: int | None = None,
        rerank: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` items per query: beam search → candidates → rerank (or path order).

        Args:
            histories: ``U`` rows of item ids (the query users' behaviour).
            exclude: items never to return, per row.
            beam_size: override the beam (default: :meth:`beam_size_for` ``n``).
            rerank: ``False`` ranks candidates by their best path log-prob (ties: more popular
                first) instead of the softmax head — the "DR without reranker" ablation.

        Returns:
            ``(item_ids (U, n) int64, scores (U, n) float32)``, padded ``-1`` / ``-inf``.
        """
        self._check_fitted()
        if n < 1:
            raise ValueError(f"n must be ≥ 1, got {n}")
        rerank = self.config.retrieval.rerank if rerank is None else rerank
        beam = beam_size or self.beam_size_for(n)
        u = self.user_embeddings(histories)
        # Reranking needs only the set of beam paths: no beam sort, no per-item path log-probs.
        path_ids, lp = self._beam(u, beam, ordered=not rerank)
        cand = self._candidates(path_ids, None if rerank else lp)
        rows = np.repeat(np.arange(len(histories)), cand.counts)
        items = cand.items
        self._record_query_stats(cand.counts)
        if exclude is not None:
            n_items = self.n_items_
            banned = np.unique(exclude.row_ids() * n_items + exclude.items)
            keep = ~np.isin(rows * n_items + items, banned)
            rows, items, path_lp = rows[keep], items[keep], cand.path_log_probs[keep]
        else:
            path_lp = cand.path_log_probs
        if rerank:
            keys, bias = self._rerank_table()
            q = self.net_.reranker.query(u).float().cpu().numpy()  # (U, E)
            if len(q) == 1:  # one query: a matrix-vector product, no per-candidate copy of q
                scores = keys[items] @ q[0] + bias[items]
            else:
                scores = np.einsum("ce,ce->c", q[rows], keys[items]) + bias[items]  # (C_total,)
            return _segment_topk(rows, items, scores, len(histories), n)
        # Items on one path are indistinguishable to DR; break ties by popularity.
        return _segment_topk(rows, items, path_lp, len(histories), n, tiebreak=-self.item_counts_[items])

    def _rerank_table(self) -> tuple[np.ndarray, np.ndarray]:
        """``(keys (V, E), bias (V,))`` of the frozen reranker as float32 numpy, computed once.

        Scoring a few hundred candidates is a gather and a dot product; doing it in numpy on a
        cached table avoids re-normalising item vectors and small-tensor overhead per query.
        """
        cache = self.__dict__.get("_rerank_cache")
        if cache is None:
            head = self.net_.reranker
            with torch.no_grad():
                keys = head.keys().float().cpu().numpy()
                bias = head.item_bias.float().cpu().numpy() if head.item_bias is not None else np.zeros(len(keys), np.float32)
            cache = self._rerank_cache = (np.ascontiguousarray(keys), bias)
        return cache

    # ------------------------------------------------------------------ diagnostics
    def _record_query_stats(self, counts: np.ndarray) -> None:
        stats = self.__dict__.setdefault("query_stats_", {"queries": 0, "candidates": 0})
        stats["queries"] += int(len(counts))
        stats["candidates"] += int(counts.sum())

    @torch.no_grad()
    def _calibrate_beam(self, train: Sequences, n_users: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """Mean candidate count for a grid of beams, on up to ``n_users`` training rows."""
        rng = np.random.default_rng(self.config.seed)
        rows = rng.choice(len(train), size=min(n_users, len(train)), replace=False)
        histories = train.rows(np.sort(rows))
        if self.ordered_:
            # A held-out user's history is the first half of a sequence: use first halves too.
            histories, _ = split_rows(histories, np.maximum(histories.lengths // 2, 1))
        u = self.user_embeddings(histories)
        top = min(self.config.retrieval.max_beam_size, self.codec_.n_paths)
        path_ids, lp = self._beam(u, top)
        # Every beam up to 16, then steps of √2: with powers of 2 the chosen beam could overshoot
        # the target by up to 2×, and even √2 steps were too coarse at the 10 % line of
        # MovieLens-1M (beam 6 → 7.9 % of the items, beam 8 → 10.3 %).
        grid = np.round(np.sqrt(2) ** np.arange(2 * np.log2(top) + 1)).astype(np.int64)
        beams = np.unique(np.concatenate([np.arange(1, 17), grid, [top]]))
        beams = beams[beams <= top]
        means = np.array(
            [np.diff(self.item_paths_.items_on_batch(path_ids[:, :b])[0]).mean() for b in beams]
        )
        return beams, means

    def diagnostics(self) -> dict[str, Any]:
        """Path-size distribution, candidates per query, objective and time per epoch."""
        self._check_fitted()
        sizes = self.item_paths_.path_sizes()
        beams, means = self.beam_calibration_
        out: dict[str, Any] = {
            "n_items": self.n_items_,
            "n_paths": int(self.codec_.n_paths),
            "occupied_paths": int(len(sizes)),
            "largest_path_size": int(sizes.max(initial=0)),
            "items_per_path_mean": float(sizes.mean()) if len(sizes) else 0.0,
            "items_per_path_median": float(np.median(sizes)) if len(sizes) else 0.0,
            "items_per_path_p99": float(np.percentile(sizes, 99)) if len(sizes) else 0.0,
            "beam_calibration": {int(b): round(float(m), 2) for b, m in zip(beams, means)},
            "epochs": self.history_,
        }
        stats = getattr(self, "query_stats_", None)
        if stats and stats["queries"]:
            out["candidates_per_query"] = stats["candidates"] / stats["queries"]
        return out

    def plot_path_sizes(self, png: str | os.PathLike) -> Path:
        """Write a histogram of items per occupied path (log-scaled counts) to ``png``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        sizes = self.item_paths_.path_sizes()
        fig, ax = plt.subplots(figsize=(6, 4))
        bins = np.unique(np.geomspace(1, max(int(sizes.max(initial=1)), 2) + 1, 40).astype(int))
        ax.hist(sizes, bins=bins, color="#3b6ea8")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("items on the path")
        ax.set_ylabel("paths")
        ax.set_title(
            f"{len(sizes):,} occupied paths of {self.codec_.n_paths:,}; largest {int(sizes.max(initial=0))}"
        )
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        plt.close(fig)
        return Path(png)

    def align_split(self, split: Split) -> Split:
        """Re-express a split built from data with this model's item ids.

        Unknown history/exclude items are dropped; unknown ground-truth items get ids the model
        cannot return (``≥ n_items``), so they still count in ``|G_u|``.
        """
        self._check_fitted()
        ids = getattr(self, "item_ids_", None)
        if ids is None:
            if split.n_items != self.n_items_:
                raise ValueError(
                    f"the data has {split.n_items} items, the model {self.n_items_}, and the model"
                    " carries no item ids to match them by"
                )
            return split
        lookup = {str(v): i for i, v in enumerate(ids.tolist())}
        mapped = np.array([lookup.get(str(v), -1) for v in split.item_ids.tolist()], dtype=np.int64)
        unknown = np.flatnonzero(mapped < 0)
        truth_map = mapped.copy()
        truth_map[unknown] = self.n_items_ + np.arange(len(unknown))

        def remap(seq: Sequences | None, table: np.ndarray) -> Sequences | None:
            if seq is None:
                return None
            new = table[seq.items]
            keep = new >= 0
            lengths = np.bincount(seq.row_ids()[keep], minlength=len(seq))
            indptr = np.zeros(len(seq) + 1, dtype=np.int64)
            np.cumsum(lengths, out=indptr[1:])
            return Sequences(indptr, new[keep], seq.ordered)

        return dataclasses.replace(
            split,
            item_ids=np.concatenate([ids.astype(str), split.item_ids[unknown].astype(str)]),
            train=remap(split.train, mapped),
            test_history=remap(split.test_history, mapped),
            test_truth=remap(split.test_truth, truth_map),
            test_exclude=remap(split.test_exclude, mapped),
            valid_history=remap(split.valid_history, mapped),
            valid_truth=remap(split.valid_truth, truth_map),
            valid_exclude=remap(split.valid_exclude, mapped),
        )

    def benchmark_info(self) -> dict[str, Any]:
        """Extra figures for the benchmark's results.json."""
        d = self.diagnostics()
        info = {
            "largest_path_size": d["largest_path_size"],
            "occupied_paths": d["occupied_paths"],
        }
        if "candidates_per_query" in d:
            info["candidates_per_query"] = round(d["candidates_per_query"], 1)
            info["fraction_scored"] = round(d["candidates_per_query"] / self.n_items_, 5)
        return info

    # ------------------------------------------------------------------ catalogue and users
    def _clear_caches(self) -> None:
        for name in ("_rerank_cache", "_compiled_structure", "_item_lookup", "_user_lookup", "_popular"):
            self.__dict__.pop(name, None)

    def item_flags(self) -> np.ndarray:
        """``(V,)`` uint8: ``FLAG_COLD`` (placed without interactions), ``FLAG_REMOVED``."""
        self._check_fitted()
        flags = np.zeros(self.n_items_, dtype=np.uint8)
        flags[getattr(self, "cold_", flags.astype(bool))] |= FLAG_COLD
        flags[getattr(self, "removed_", flags.astype(bool))] |= FLAG_REMOVED
        return flags

    def item_index(self, external: list | np.ndarray) -> tuple[np.ndarray, list]:
        """External item ids → ``(internal ids (m,) of the known ones, unknown ids as given)``.

        Ids compare as strings, so ``"42"`` and ``42`` are the same item. Without stored item
        ids the model's internal ids are the ids (``0 .. V-1``).
        """
        self._check_fitted()
        lookup = self.__dict__.get("_item_lookup")
        if lookup is None:
            ids = getattr(self, "item_ids_", None)
            names = range(self.n_items_) if ids is None else ids.tolist()
            lookup = self._item_lookup = {str(v): i for i, v in enumerate(names)}
        known, unknown = [], []
        for x in external:
            i = lookup.get(str(x))
            if i is None:
                unknown.append(x)
            else:
                known.append(i)
        return np.array(known, dtype=np.int64), unknown

    def set_known_users(self, user_ids: np.ndarray, histories: Sequences) -> None:
        """Keep ``histories`` (internal item ids) of users ``user_ids``, for lookups by user id
        (:meth:`user_history`, the service's ``user_id`` requests); saved with the bundle."""
        user_ids = np.asarray(user_ids)
        if len(user_ids) != len(histories):
            raise ValueError(f"{len(user_ids)} user ids for {len(histories)} histories")
        self.user_ids_ = user_ids.astype(str) if user_ids.dtype == object else user_ids
        self.user_histories_ = histories
        self.__dict__.pop("_user_lookup", None)

    def user_history(self, user_id: Any) -> np.ndarray:
        """``(L,)`` internal item ids of a known user; ``KeyError`` for an unknown one."""
        if getattr(self, "user_histories_", None) is None:
            raise KeyError(f"unknown user {user_id!r}: this model holds no user histories")
        lookup = self.__dict__.get("_user_lookup")
        if lookup is None:
            lookup = self._user_lookup = {str(v): i for i, v in enumerate(self.user_ids_.tolist())}
        row = lookup.get(str(user_id))
        if row is None:
            raise KeyError(f"unknown user {user_id!r}")
        h = self.user_histories_
        return h.items[h.indptr[row] : h.indptr[row + 1]]

    def popular_items(self, n: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` most frequent training items not removed or in ``exclude``: the fallback for
        an empty history. Returns ``(ids (n,), counts as float32 scores (n,))``, padded."""
        self._check_fitted()
        order = self.__dict__.get("_popular")
        if order is None:
            active = np.flatnonzero(~self.removed_)
            order = self._popular = active[np.lexsort((active, -self.item_counts_[active]))]
        ranked = order if exclude is None or len(exclude) == 0 else order[~np.isin(order, exclude)]
        ids = np.full(n, -1, dtype=np.int64)
        scores = np.full(n, -np.inf, dtype=np.float32)
        top = ranked[:n]
        ids[: len(top)], scores[: len(top)] = top, self.item_counts_[top]
        return ids, scores

    def remove_items(self, items: np.ndarray) -> int:
        """Take internal item ids out of the index: they are never retrieved or returned again
        (their rows stay, so ids do not shift). Returns how many were newly removed."""
        self._check_fitted()
        items = np.asarray(items, dtype=np.int64)
        if len(items) and (items.min() < 0 or items.max() >= self.n_items_):
            raise ValueError(f"item ids must lie in [0, {self.n_items_}), got {items.min()}..{items.max()}")
        newly = int((~self.removed_[items]).sum()) if len(items) else 0
        self.removed_ = self.removed_.copy()
        self.removed_[items] = True
        self.item_paths_ = ItemPathMap(self.item_paths_.path_ids, self.codec_, excluded=self.removed_)
        self._clear_caches()
        return newly

    @torch.no_grad()
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

        Each new item gets ``J`` paths, a reranker vector, a bias and an input embedding, from
        its contexts (see :mod:`deep_retrieval.index.catalogue`): the histories of the users who
        picked it in ``interactions`` (warm items) or else its neighbours, from ``features`` or
        given in ``neighbours`` (cold items, flagged in ``cold_``). Its paths come from the
        contexts' beam-search path scores under the size penalty (:func:`~deep_retrieval.index.catalogue.place_items`);
        its input embedding is the mean over the contexts' items; its reranker row and bias are
        fitted by maximum likelihood against a background of users
        (:func:`~deep_retrieval.index.catalogue.fit_item_vectors`).

        Args:
            item_ids: external ids of the new items (required when the model stores item ids;
                must be new and distinct).
            n_new: the number of new items, for models without external ids.
            interactions: rows of internal ids in ``0 .. V + n - 1`` (new items are ``≥ V``).
            features: ``(V + n, F)`` item features; rows that are not finite (``nan``) mean
                "unknown" (such existing items are never neighbours).
            neighbours: ``n`` rows of existing item ids, one per new item (empty rows allowed
                for items placed otherwise).
            n_neighbours: neighbours taken from ``features``.
        """
        from .index.catalogue import context_path_scores, feature_neighbours, occurrence_contexts, place_items

        self._check_fitted()
        n_old = self.n_items_
        stored = getattr(self, "item_ids_", None)
        if stored is None and item_ids is not None:
            raise ValueError("this model has no external item ids: pass n_new instead of item_ids")
        if item_ids is not None:
            new_names = np.asarray(item_ids)
            n = len(new_names)
            known, _ = self.item_index(new_names)
            if len(known):
                taken = [str(stored[i]) if stored is not None else str(i) for i in known[:10]]
                raise ValueError(f"item ids already in the model: {', '.join(taken)}")
            if len({str(x) for x in new_names.tolist()}) != n:
                raise ValueError("item_ids holds duplicates")
        elif stored is not None:
            raise ValueError("this model stores external item ids: pass item_ids for the new items")
        else:
            n = int(n_new or 0)
        if n < 1:
            raise ValueError("add_items needs at least one new item")
        total = n_old + n

        ctx_items, ctx_rows = np.zeros(0, np.int64), Sequences.from_lists([])
        if interactions is not None:
            if len(interactions.items) and (interactions.items.min() < 0 or interactions.items.max() >= total):
                raise ValueError(f"interactions hold ids outside [0, {total})")
            ctx_items, ctx_rows = occurrence_contexts(interactions, n_old, self._history_length())
        warm = np.zeros(n, dtype=bool)
        warm[ctx_items - n_old] = True
        extra_items, extra_rows = [], []
        if neighbours is not None:
            if len(neighbours) != n:
                raise ValueError(f"neighbours must have one row per new item ({n}), got {len(neighbours)}")
            if len(neighbours.items) and (neighbours.items.min() < 0 or neighbours.items.max() >= n_old):
                raise ValueError(f"neighbours must be existing item ids in [0, {n_old})")
            for i in np.flatnonzero(~warm & (neighbours.lengths > 0)):
                extra_items.append(n_old + i)
                extra_rows.append(neighbours.items[neighbours.indptr[i] : neighbours.indptr[i + 1]])
        covered = warm.copy()
        covered[np.array(extra_items, dtype=np.int64) - n_old] = True
        if features is not None and (~covered).any():
            features = np.asarray(features, dtype=np.float32)
            if features.ndim != 2 or len(features) != total:
                raise ValueError(f"features must have shape (V + n = {total}, F), got {features.shape}")
            todo = n_old + np.flatnonzero(~covered & np.isfinite(features[n_old:]).all(axis=1))
            if len(todo):
                nb = feature_neighbours(features, n_old, todo, n_neighbours)
                extra_items.extend(todo.tolist())
                extra_rows.extend(nb.items[nb.indptr[i] : nb.indptr[i + 1]] for i in range(len(nb)))
                covered[todo - n_old] = True
        if not covered.all():
            missing = np.flatnonzero(~covered)[:10]
            names = [str(new_names[i]) if item_ids is not None else str(n_old + i) for i in missing]
            raise ValueError(
                f"{int((~covered).sum())} new item(s) have no interactions with existing items, no"
                f" features and no neighbours, so nothing says where to put them: {', '.join(names)}"
            )
        if extra_items:
            ctx_items = np.concatenate([ctx_items, np.array(extra_items, dtype=np.int64)])
            ctx_rows = Sequences(
                np.r_[ctx_rows.indptr, ctx_rows.indptr[-1] + np.cumsum([len(r) for r in extra_rows])],
                np.concatenate([ctx_rows.items, *extra_rows]).astype(np.int64),
                ctx_rows.ordered,
            )

        # Path scores of every context, summed per item, then the penalised choice of J paths
        # against the current path sizes (as in training's path assignment).
        a, J = self.config.assignment, self.item_paths_.paths_per_item
        u = self.user_embeddings(ctx_rows)
        # S ≥ J distinct beam paths per context, so every item has J candidates.
        path_ids, log_probs = self._beam(u, min(max(a.n_candidates, J), self.codec_.n_paths))
        scores = context_path_scores(
            ctx_items - n_old, path_ids, np.exp(log_probs.astype(np.float64)), n, self.codec_.n_paths, a.n_candidates
        )
        index = self.item_paths_
        sizes = dict(zip(index.occupied_paths.tolist(), index.path_sizes().tolist()))
        paths = place_items(scores, sizes, paths_per_item=J, penalty=a.penalty, power=a.power, n_sweeps=a.n_sweeps)

        # Input embedding: the mean over the contexts' items; reranker row and bias: fitted by
        # maximum likelihood, starting from the same means.
        head = self.net_.reranker
        ctx_owner = np.repeat(ctx_items - n_old, ctx_rows.lengths)
        per_item = np.maximum(np.bincount(ctx_owner, minlength=n), 1).astype(np.float64)[:, None]

        def context_mean(table: np.ndarray) -> np.ndarray:
            out = np.zeros((n, table.shape[1]))
            np.add.at(out, ctx_owner, table[ctx_rows.items])
            return out / per_item

        inputs = context_mean(head.encoder.item_embedding.weight.detach().cpu().numpy())
        keys, bias = self._fit_new_item_vectors(
            u, ctx_items - n_old, context_mean(head.item_table.weight.detach().cpu().numpy()), ctx_rows, ctx_owner, per_item
        )
        head.append_items(inputs, keys, bias)

        self.n_items_ = total
        self.item_paths_ = ItemPathMap(
            np.vstack([self.item_paths_.path_ids, paths]), self.codec_,
            excluded=np.r_[self.removed_, np.zeros(n, bool)],
        )
        occurrences = np.zeros(n, np.int64)
        if interactions is not None:
            occurrences = np.bincount(interactions.items[interactions.items >= n_old] - n_old, minlength=n)
        self.item_counts_ = np.r_[self.item_counts_, occurrences]
        self.cold_ = np.r_[self.cold_, ~warm]
        self.removed_ = np.r_[self.removed_, np.zeros(n, bool)]
        if stored is not None:
            self.item_ids_ = np.concatenate([stored.astype(str), new_names.astype(str)])
        self._clear_caches()
        return np.arange(n_old, total, dtype=np.int64)

    def _fit_new_item_vectors(
        self, u: torch.Tensor, owner: np.ndarray, keys0: np.ndarray, ctx_rows: Sequences,
        ctx_owner: np.ndarray, per_item: np.ndarray, n_background: int = 2000,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Reranker rows of new items: :func:`~deep_retrieval.index.catalogue.fit_item_vectors` from the
        contexts' users ``u`` against a background of stored user histories (else the contexts)."""
        from .index.catalogue import fit_item_vectors

        head = self.net_.reranker
        rng = np.random.default_rng(self.config.seed)
        pool = self.user_histories_ if getattr(self, "user_histories_", None) is not None else ctx_rows
        pool = pool.rows(np.sort(rng.choice(len(pool), size=min(n_background, len(pool)), replace=False)))
        with torch.no_grad():
            keys_old = head.keys()  # (V, E), normalised when the head normalises
            bias_old = head.item_bias

            def query_and_log_z(users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                q = head.query(users).float()
                log_z = torch.cat([
                    torch.logsumexp(q[s : s + 1024] @ keys_old.T + (bias_old if bias_old is not None else 0), dim=1)
                    for s in range(0, len(q), 1024)
                ])
                return q, log_z

            q_ctx, z_ctx = query_and_log_z(u)
            q_bg, z_bg = query_and_log_z(self.user_embeddings(pool))
            b0 = None
            if bias_old is not None:
                b = bias_old.detach().cpu().numpy()
                b0 = torch.as_tensor(np.bincount(ctx_owner, weights=b[ctx_rows.items], minlength=len(per_item)) / per_item[:, 0], dtype=torch.float32)
        weight = float(self.item_counts_.sum()) / max(len(q_bg), 1)
        k, b = fit_item_vectors(
            q_ctx.cpu(), torch.as_tensor(owner), q_bg.cpu(), z_ctx.cpu(), z_bg.cpu(),
            torch.as_tensor(keys0, dtype=torch.float32), b0,
            background_weight=weight, normalize=head.normalize,
        )
        return k.numpy(), None if b is None else b.numpy()

    # ------------------------------------------------------------------ persistence
    def save(
        self,
        path: str | os.PathLike,
        *,
        item_ids: np.ndarray | None = None,
        training: dict[str, Any] | None = None,
    ) -> Path:
        """Write the model bundle into directory ``path``, atomically.

        Everything is written into a temporary directory beside ``path``, flushed to disk, then
        renamed over it, so a crash leaves either the old bundle or the new one, never a mix.

        Files: ``manifest.json`` (format version, config, sizes, history, versions, and the byte
        size and SHA-256 of every other file), ``weights.safetensors``, ``item_paths.npy``
        ``(V, J)`` path ids, the inverted index ``occupied_paths.npy`` / ``path_indptr.npy`` /
        ``path_items.npy``, ``item_flags.npy`` ``(V,)`` (1 = cold, 2 = removed),
        ``item_counts.npy``, ``beam_calibration.npy``; when known, ``item_ids.npy`` (external
        ids) and the known users' histories ``user_ids.npy`` / ``user_indptr.npy`` /
        ``user_items.npy``. ``training`` is free JSON metadata kept in the manifest. No pickle.
        """
        from safetensors.torch import save_file

        self._check_fitted()

        def fill(tmp: Path) -> dict[str, Any]:
            state, storages = {}, set()
            for k, v in self.net_.state_dict().items():
                v = v.detach().cpu().contiguous()
                # safetensors refuses tensors that share memory (tied tables, e.g. an encoder
                # and item table that are one matrix): store each such tensor on its own.
                ptr = v.untyped_storage().data_ptr()
                state[k] = v.clone() if ptr in storages else v
                storages.add(ptr)
            save_file(state, tmp / "weights.safetensors")
            index = self.item_paths_
            arrays = {
                "item_paths": index.path_ids,
                "occupied_paths": index.occupied_paths,
                "path_indptr": index.path_indptr,
                "path_items": index.path_items,
                "item_flags": self.item_flags(),
                "item_counts": self.item_counts_,
                "beam_calibration": np.stack(self.beam_calibration_).astype(np.float64),
            }
            ids = item_ids if item_ids is not None else getattr(self, "item_ids_", None)
            if ids is not None:
                ids = np.asarray(ids)
                arrays["item_ids"] = ids.astype(str) if ids.dtype == object else ids
            users = getattr(self, "user_histories_", None)
            if users is not None:
                arrays["user_ids"] = self.user_ids_
                arrays["user_indptr"] = users.indptr
                arrays["user_items"] = users.items
            for name, arr in arrays.items():
                np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
            return {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "config": to_dict(self.config),
                "n_items": self.n_items_,
                "ordered": self.ordered_,
                "encoder": self.encoder_kind_,
                "reranker": _reranker_options(self.net_.reranker),
                "history": self.history_,
                "training": training if training is not None else getattr(self, "training_", None),
                "versions": versions(),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }

        path = Path(path)
        write_directory(path, fill)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "auto", verify: bool = True) -> DeepRetrieval:
        """Read a bundle written by :meth:`save`.

        Refuses, with a message that names the file and what is wrong: a directory without a
        manifest, another format, an unknown format version, a missing or truncated file (size
        against the manifest) and, with ``verify`` (default), a file whose SHA-256 differs
        (about 1 s per GB). Bundles of format version 1 (no checksums, no index) still load.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        manifest_file = path / "manifest.json"
        if not manifest_file.is_file():
            raise FileNotFoundError(f"{path} is not a saved Deep Retrieval model (no manifest.json)")
        try:
            manifest = json.loads(manifest_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{manifest_file} is corrupt: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            fmt = manifest.get("format") if isinstance(manifest, dict) else None
            raise ValueError(f"{path} holds {fmt!r}, not a {FORMAT}")
        version = manifest.get("format_version")
        if version not in READABLE_VERSIONS:
            raise ValueError(
                f"{path} has model format version {version}; this deep-retrieval reads versions"
                f" {', '.join(map(str, READABLE_VERSIONS))}: upgrade the package or retrain"
            )
        check_files(path, manifest.get("files"), verify=verify)
        try:
            config = _from_mapping(DRConfig, manifest["config"])
        except ConfigError as exc:
            raise ValueError(f"{manifest_file}: stored config does not fit this version: {exc}") from exc
        model = cls(config, device=device)
        model.device_ = resolve_device(device)
        model.n_items_ = int(manifest["n_items"])
        model.ordered_ = bool(manifest["ordered"])
        model.encoder_kind_ = manifest["encoder"]
        model.history_ = manifest.get("history", [])
        model.training_ = manifest.get("training")
        s = config.structure
        model.codec_ = PathCodec(s.n_layers, s.n_nodes)
        net = DRNet(model.n_items_, config, model.encoder_kind_, **manifest.get("reranker", {}))

        def array(name: str, required: bool = True) -> np.ndarray | None:
            file = path / f"{name}.npy"
            if not required and not file.exists():
                return None
            return np.load(file, allow_pickle=False)

        try:
            weights = load_file(path / "weights.safetensors")
            bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
            if bad:
                raise ValueError(f"weights.safetensors holds NaN or inf in {', '.join(bad[:5])}: the model diverged"
                                 " before it was saved; retrain it (a lower train.lr helps)")
            net.load_state_dict(weights)
            item_paths = array("item_paths")
            model.item_counts_ = array("item_counts")
            calib = array("beam_calibration")
            flags = array("item_flags", required=False)
            flags = np.zeros(model.n_items_, np.uint8) if flags is None else flags
            if item_paths.shape[0] != model.n_items_ or flags.shape != (model.n_items_,):
                raise ValueError(f"item arrays do not have n_items = {model.n_items_} rows")
            model.cold_ = (flags & FLAG_COLD) != 0
            model.removed_ = (flags & FLAG_REMOVED) != 0
            if (path / "path_items.npy").exists():
                model.item_paths_ = ItemPathMap.from_index(
                    item_paths, model.codec_, array("occupied_paths"), array("path_indptr"),
                    array("path_items"), excluded=model.removed_,
                )
            else:
                model.item_paths_ = ItemPathMap(item_paths, model.codec_, excluded=model.removed_)
            model.item_ids_ = array("item_ids", required=False)
            model.user_ids_, model.user_histories_ = None, None
            user_ids = array("user_ids", required=False)
            if user_ids is not None:
                model.set_known_users(user_ids, Sequences(array("user_indptr"), array("user_items"), model.ordered_))
        except (SafetensorError, RuntimeError, ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{path} is incomplete or corrupt ({exc}); re-save or retrain the model") from exc
        model.net_ = net.to(model.device_).eval()
        model.beam_calibration_ = (calib[0].astype(np.int64), calib[1])
        return model


def _reranker_options(head: SoftmaxModel) -> dict[str, Any]:
    """The constructor options that rebuild ``head`` (saved in the manifest)."""
    return {
        "bias": head.item_bias is not None,
        "project": head.encoder.proj is not None,
        "normalize": head.normalize,
        "temperature": head.temperature,
    }


def _check_config(config: DRConfig) -> None:
    s, t, a, r = config.structure, config.train, config.assignment, config.retrieval
    problems = []
    if s.n_layers < 1 or s.n_nodes < 2:
        problems.append(f"structure needs n_layers ≥ 1 and n_nodes ≥ 2 (got {s.n_layers}, {s.n_nodes})")
    if s.paths_per_item < 1 or s.paths_per_item > s.n_nodes**s.n_layers:
        problems.append(f"structure.paths_per_item must be in 1..K^D, got {s.paths_per_item}")
    if t.epochs < 1 or not 0 <= t.joint_epochs <= t.epochs:
        problems.append(f"train needs epochs ≥ 1 and 0 ≤ joint_epochs ≤ epochs (got {t.epochs}, {t.joint_epochs})")
    if t.negative_sampling not in ("uniform", "popularity"):
        problems.append(f"train.negative_sampling must be uniform or popularity, got {t.negative_sampling!r}")
    if t.encoder not in ("auto", "gru", "mean"):
        problems.append(f"train.encoder must be auto, gru or mean, got {t.encoder!r}")
    if a.n_candidates < s.paths_per_item:
        problems.append(f"assignment.n_candidates ({a.n_candidates}) must be ≥ paths_per_item ({s.paths_per_item})")
    if a.penalty < 0 or a.n_sweeps < 1:
        problems.append("assignment needs penalty ≥ 0 and n_sweeps ≥ 1")
    if r.beam_size is not None and r.beam_size < 1:
        problems.append(f"retrieval.beam_size must be ≥ 1 or none, got {r.beam_size}")
    if problems:
        raise ConfigError("; ".join(problems))
