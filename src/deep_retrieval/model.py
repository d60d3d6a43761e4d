"""The Deep Retrieval estimator: fit, retrieve, recommend, save, load.

``DeepRetrieval(config).fit(train, n_items)`` alternates the *network step* (one epoch of gradient
descent on the multi-path likelihood plus the sampled-softmax reranker) with *path assignment*
(beam-search path scores per item, then penalised greedy coordinate descent); see
:mod:`deep_retrieval.training`. ``recommend`` runs beam search over the grid, takes the union of
the items on the ``B`` best paths and reranks them with the softmax head.

Shapes: ``U`` query users, ``V`` items, ``B`` beam, ``D`` layers, ``J`` paths per item,
``C`` candidates, ``M`` recommendations, ``E`` embedding width.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._utils import _umask, resolve_device, seed_everything, versions
from .baselines.base import pad_results
from .beam import CompiledStructure, beam_search
from .config import ConfigError, DRConfig, _from_mapping, to_dict
from .data.protocols import split_rows
from .data.types import Sequences, Split
from .modules.softmax import SoftmaxModel
from .modules.structure import StructureNet
from .paths import ItemPathMap, PathCodec

log = logging.getLogger("deep_retrieval")

FORMAT = "deep-retrieval-model"
FORMAT_VERSION = 1


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
    """Deep Retrieval with the recommend contract of :mod:`deep_retrieval.baselines.base`.

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
    ) -> DeepRetrieval:
        """Train from scratch on ``train`` rows (items ``0 .. n_items-1``).

        Args:
            reranker: optional already trained :class:`SoftmaxModel` (e.g. the brute-force
                baseline's) to start from; it stays frozen, so only the structure network trains.
            on_event: called with a dict after each phase (``{"event": "epoch", …}``); the CLI
                prints these.
        """
        from .training import fit_deep_retrieval

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
        self.__dict__.pop("_rerank_cache", None)
        self.__dict__.pop("_compiled_structure", None)
        fit_deep_retrieval(self, train, frozen_reranker=reranker is not None, on_event=on_event)
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

    # ------------------------------------------------------------------ persistence
    def save(
        self,
        path: str | os.PathLike,
        *,
        item_ids: np.ndarray | None = None,
        training: dict[str, Any] | None = None,
    ) -> Path:
        """Write the model into directory ``path`` (replaced atomically: written beside, then renamed).

        Files: ``manifest.json`` (format version, config, sizes, history, versions),
        ``weights.safetensors``, ``item_paths.npy`` ``(V, J)`` path ids, ``beam_calibration.npy``,
        ``item_counts.npy`` and, when given, ``item_ids.npy`` (external ids). ``training`` is free
        JSON metadata (data set, protocol settings) kept in the manifest. No pickle anywhere.
        """
        from safetensors.torch import save_file

        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp"))
        try:
            tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; give the usual permissions
            state, storages = {}, set()
            for k, v in self.net_.state_dict().items():
                v = v.detach().cpu().contiguous()
                # safetensors refuses tensors that share memory (tied tables, e.g. an encoder
                # and item table that are one matrix): store each such tensor on its own.
                ptr = v.untyped_storage().data_ptr()
                state[k] = v.clone() if ptr in storages else v
                storages.add(ptr)
            save_file(state, tmp / "weights.safetensors")
            np.save(tmp / "item_paths.npy", self.item_paths_.path_ids, allow_pickle=False)
            np.save(tmp / "item_counts.npy", self.item_counts_, allow_pickle=False)
            np.save(tmp / "beam_calibration.npy", np.stack(self.beam_calibration_).astype(np.float64), allow_pickle=False)
            if item_ids is None:
                item_ids = getattr(self, "item_ids_", None)
            if item_ids is not None:
                ids = np.asarray(item_ids)
                if ids.dtype == object:
                    ids = ids.astype(str)
                np.save(tmp / "item_ids.npy", ids, allow_pickle=False)
            manifest = {
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
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "auto") -> DeepRetrieval:
        """Read a model written by :meth:`save`; refuses unknown formats with a clear message."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        manifest_file = path / "manifest.json"
        if not manifest_file.is_file():
            raise FileNotFoundError(f"{path} is not a saved Deep Retrieval model (no manifest.json)")
        try:
            manifest = json.loads(manifest_file.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{manifest_file} is corrupt: {exc}") from exc
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{path} holds {manifest.get('format')!r}, not a {FORMAT}")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{path} has model format version {version}; this deep-retrieval reads version"
                f" {FORMAT_VERSION}: upgrade the package or retrain"
            )
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
        try:
            state = load_file(path / "weights.safetensors")
            net.load_state_dict(state)
            item_paths = np.load(path / "item_paths.npy", allow_pickle=False)
            model.item_counts_ = np.load(path / "item_counts.npy", allow_pickle=False)
            calib = np.load(path / "beam_calibration.npy", allow_pickle=False)
        except (SafetensorError, RuntimeError, ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{path} is incomplete or corrupt ({exc}); re-save or retrain the model") from exc
        model.net_ = net.to(model.device_).eval()
        model.item_paths_ = ItemPathMap(item_paths, model.codec_)
        model.beam_calibration_ = (calib[0].astype(np.int64), calib[1])
        ids_file = path / "item_ids.npy"
        model.item_ids_ = np.load(ids_file, allow_pickle=False) if ids_file.exists() else None
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
