"""Streaming training: one pass over a time-ordered interaction log (paper §2.4).

Where :meth:`DeepRetrieval.fit` makes several passes over a fixed training set, :func:`stream_train`
consumes interactions once, in timestamp order, chunk by chunk, the way the paper's production
system does:

1. **Samples.** Each event ``(user, item)`` becomes the sample "the user's ``≤ L`` items before
   this event → item" from a per-user history kept as the stream goes (a user's first event has
   no history and trains nothing, as in :class:`~deep_retrieval.data.samples.TrainingSamples`).
2. **Network step** on the chunk's samples (``passes`` times), plus ``replay`` samples drawn from a
   buffer of recent ones, with the paths fixed: the loss of
   :func:`~deep_retrieval.training.step.network_step` (multi-path likelihood + sampled softmax).
3. **Path scores.** Beam search (beam ``S``) for every sample's user under the updated network;
   each instance's list of ``(path, p(path | user))`` is merged into its item's stored top list
   with the paper's decayed merge (:func:`~deep_retrieval.core.assignment.streaming_update`, decay
   ``η``).
4. Every ``reassign_every`` interactions (and at the end of the stream), **path assignment**
   (:func:`~deep_retrieval.core.assignment.assign_paths`, the penalised greedy coordinate descent)
   from the merged scores.
5. Every ``bundle_every`` interactions, a model bundle (:meth:`DeepRetrieval.save`, atomic) in
   ``bundle_dir``; the last ``keep_bundles`` are kept and ``LATEST`` names the newest.

One change from the paper: each instance's list is the beam's ``S`` paths *plus its item's
current ``J`` paths* with their exact probabilities (stored lists hold ``S + J`` slots), the
streaming twin of :func:`~deep_retrieval.core.assignment.with_held_paths` in batch training. Why,
and the measured gap of the streamed paths on sparse data: README, "Streaming training".

Shapes: ``N`` events in a chunk, ``L`` history length, ``V`` items, ``S`` beam paths per instance
(``assignment.n_candidates``), ``J`` paths per item, ``D`` layers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import StreamConfig
from ..core.assignment import StreamingPathScores
from ..data.types import Interactions, Sequences
from ..index.bundle import save_bundle
from ..index.retrieval import calibrate as calibrate_beam
from ..index.state import DRState
from ..utils import atomic_write_text
from .step import (
    array_batches,
    epoch_entry,
    make_optimizer,
    negative_sampling_probs,
    network_step,
    reassign_paths,
    score_instances,
)

log = logging.getLogger("deep_retrieval.training.stream")

_BUNDLE = re.compile(r"^bundle-(\d{12})$")


@dataclass(frozen=True)
class StreamChunk:
    """A batch of time-ordered events.

    Attributes:
        users: ``(N,)`` user ids (any hashable numpy scalars: int or str).
        items: ``(N,)`` int64 internal item ids in ``[0, n_items)``.
        timestamps: ``(N,)`` int64, non-decreasing, or ``None``.
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None = None

    def __post_init__(self) -> None:
        users, items = np.asarray(self.users), np.asarray(self.items)
        if users.ndim != 1 or items.shape != users.shape:
            raise ValueError(
                "a chunk needs users and items of one shape (N,),"
                f" got {users.shape} and {items.shape}"
            )
        if items.size and not np.issubdtype(items.dtype, np.integer):
            raise ValueError(f"chunk items must be internal integer ids, got dtype {items.dtype}")
        ts = None if self.timestamps is None else np.asarray(self.timestamps, dtype=np.int64)
        if ts is not None and ts.shape != users.shape:
            raise ValueError(f"chunk timestamps must have shape {users.shape}, got {ts.shape}")
        object.__setattr__(self, "users", users)
        object.__setattr__(self, "items", items.astype(np.int64, copy=False))
        object.__setattr__(self, "timestamps", ts)

    def __len__(self) -> int:
        return len(self.users)

    def slice(self, lo: int, hi: int) -> StreamChunk:
        return StreamChunk(
            self.users[lo:hi],
            self.items[lo:hi],
            None if self.timestamps is None else self.timestamps[lo:hi],
        )


# --------------------------------------------------------------------------------------------
# Reading a log in time order


def _read(source: Interactions | str | os.PathLike) -> Interactions:
    if isinstance(source, Interactions):
        return source
    from ..data.readers import read_ratings_file

    return read_ratings_file(source)


def stream_vocabulary(
    source: Interactions | str | os.PathLike, *, min_rating: float | None = None
) -> np.ndarray:
    """``(V,)`` sorted distinct item ids of a log (after the rating filter): the internal-id
    vocabulary :func:`time_ordered_chunks` uses when given none (the same as
    :func:`~deep_retrieval.data.protocols.paper_split` builds from the same rows)."""
    data = _read(source)
    if min_rating is not None and data.ratings is not None:
        data = data.take(data.ratings >= min_rating)
    return np.unique(data.items)


def time_ordered_chunks(
    source: Interactions | str | os.PathLike,
    chunk_size: int,
    *,
    item_ids: np.ndarray | None = None,
    users: np.ndarray | None = None,
    min_rating: float | None = None,
) -> Iterator[StreamChunk]:
    """A log's events in timestamp order (ties keep file order), as chunks of ``chunk_size``.

    Args:
        source: an :class:`Interactions` with timestamps, or a rating file
            (:func:`~deep_retrieval.data.readers.read_ratings_file` formats).
        chunk_size: events per chunk (the last may be smaller).
        item_ids: ``(V,)`` external id of each internal item index (e.g. ``split.item_ids``);
            events with other items are dropped. ``None``: :func:`stream_vocabulary` of the log.
        users: external user ids to keep (e.g. ``split.train_user_ids``); ``None`` = all.
        min_rating: keep events rated ``≥ min_rating`` when the log has ratings.

    Yields:
        :class:`StreamChunk` with external user ids and internal item ids.

    Raises:
        ValueError: the log has no timestamps (there is no time order to stream in).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be ≥ 1, got {chunk_size}")
    data = _read(source)
    if data.timestamps is None:
        raise ValueError(
            "this interaction log has no timestamps, so it has no time order to stream in;"
            " give a log with a timestamp column (or pass StreamChunk batches in your own order)"
        )
    keep = np.ones(len(data), dtype=bool)
    if min_rating is not None and data.ratings is not None:
        keep &= data.ratings >= min_rating
    if users is not None:
        keep &= np.isin(data.users, np.asarray(users))
    data = data.take(keep)
    vocab = np.unique(data.items) if item_ids is None else np.asarray(item_ids)
    # Internal id = position in the vocabulary; item_ids need not be sorted.
    order = np.argsort(vocab, kind="stable")
    pos = np.clip(np.searchsorted(vocab[order], data.items), 0, max(len(vocab) - 1, 0))
    known = (vocab[order][pos] == data.items) if len(vocab) else np.zeros(len(data), dtype=bool)
    if not known.all():
        log.info(
            "time_ordered_chunks: %d events with items outside item_ids dropped",
            int((~known).sum()),
        )
    internal = order[pos][known].astype(np.int64)
    data = data.take(known)
    timestamps = data.timestamps
    assert timestamps is not None  # checked above, and take() keeps the log's columns
    # Stable sort on time: events with the same timestamp keep their file order, as paper_split
    # orders each user's row.
    by_time = np.argsort(timestamps, kind="stable")
    u, i, t = data.users[by_time], internal[by_time], timestamps[by_time]
    for lo in range(0, len(u), chunk_size):
        yield StreamChunk(u[lo : lo + chunk_size], i[lo : lo + chunk_size], t[lo : lo + chunk_size])


def _as_chunks(events: Iterable[Any], chunk_size: int) -> Iterator[StreamChunk]:
    """Caller batches (``StreamChunk`` or ``(users, items[, timestamps])``) re-cut to
    ``chunk_size``."""
    for batch in events:
        if not isinstance(batch, StreamChunk):
            if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
                raise ValueError(
                    "events must yield StreamChunk or (users, items[, timestamps]) tuples,"
                    f" got {type(batch).__name__}"
                )
            batch = StreamChunk(*batch)
        for lo in range(0, len(batch), chunk_size):
            yield batch.slice(lo, lo + chunk_size)


# --------------------------------------------------------------------------------------------
# Per-user histories


class _Histories:
    """The last ``L`` items of every user seen so far, ``(U, L)`` right-aligned, ``-1`` padded."""

    def __init__(self, history_len: int) -> None:
        self.L = history_len
        self.index: dict[Any, int] = {}
        self.table = np.full((1024, history_len), -1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def rows_of(self, users: np.ndarray) -> np.ndarray:
        """``(N,)`` row of each user, adding new users."""
        uniq, inverse = np.unique(users, return_inverse=True)
        rows = np.empty(len(uniq), dtype=np.int64)
        for k, u in enumerate(uniq.tolist()):
            r = self.index.get(u)
            if r is None:
                r = self.index[u] = len(self.index)
            rows[k] = r
        if len(self.index) > len(self.table):
            grown = np.full((max(2 * len(self.table), len(self.index)), self.L), -1, dtype=np.int64)
            grown[: len(self.table)] = self.table
            self.table = grown
        return rows[inverse.reshape(-1)]

    def advance(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Histories before each event, then append the events: ``(N, L)`` (``-1`` padded).

        Events of one user inside the chunk see the ones before them. Vectorised: per user, its
        stored window followed by its chunk events forms one segment; event ``p`` of the user reads
        the ``L`` entries before its own position.
        """
        L = self.L
        order = np.argsort(rows, kind="stable")  # per user, chunk order (= time order)
        r_sorted = rows[order]
        uniq, start, count = np.unique(r_sorted, return_index=True, return_counts=True)
        seg_len = L + count
        seg_off = np.cumsum(seg_len) - seg_len
        buf = np.empty(int(seg_len.sum()), dtype=np.int64)
        stored_pos = (seg_off[:, None] + np.arange(L)[None, :]).ravel()
        buf[stored_pos] = self.table[uniq].ravel()
        group = np.repeat(np.arange(len(uniq)), count)
        p = np.arange(len(rows)) - start[group]  # position of each sorted event inside its user
        buf[seg_off[group] + L + p] = items[order]
        hist_sorted = buf[(seg_off[group] + p)[:, None] + np.arange(L)[None, :]]
        self.table[uniq] = buf[(seg_off + count)[:, None] + np.arange(L)[None, :]]
        hist = np.empty_like(hist_sorted)
        hist[order] = hist_sorted
        return hist

    def sequences(self, n: int, rng: np.random.Generator) -> Sequences:
        """Up to ``n`` random users' stored windows as ordered rows (for beam calibration)."""
        rows = np.sort(rng.choice(len(self.index), size=min(n, len(self.index)), replace=False))
        return Sequences.from_lists([r[r >= 0] for r in self.table[rows]], ordered=True)


# --------------------------------------------------------------------------------------------
# Training


class _ReplayBuffer:
    """The most recent ``capacity`` samples, ``(history (L,), target)``, in a ring."""

    def __init__(self, capacity: int, history_len: int) -> None:
        self.capacity = capacity
        self.hist = np.empty((capacity, history_len), dtype=np.int64)
        self.target = np.empty(capacity, dtype=np.int64)
        self.size = 0
        self.head = 0

    def add(self, hist: np.ndarray, target: np.ndarray) -> None:
        if self.capacity == 0:
            return
        hist, target = hist[-self.capacity :], target[-self.capacity :]
        idx = (self.head + np.arange(len(target))) % self.capacity
        self.hist[idx], self.target[idx] = hist, target
        self.head = int((self.head + len(target)) % self.capacity)
        self.size = min(self.capacity, self.size + len(target))

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        pick = rng.choice(self.size, size=min(n, self.size), replace=False)
        return self.hist[pick], self.target[pick]


@torch.no_grad()
def _instance_paths(
    state: DRState, hist: np.ndarray, items: np.ndarray, held: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Each instance's scored paths: ``(path ids (N, S[+J]), probabilities (N, S[+J]))``,
    ``-1`` / 0 padded.

    The beam's ``S`` paths for the instance's user; with ``held``, also its item's ``J`` current
    paths with their exact ``p(π_j(v) | x)`` (dropped where the beam lists the path already: the
    merge sums a path repeated in one list, and the beam's probability is the exact one).
    """
    ids, probs = [], []
    for lo in range(0, len(items), 1024):
        u = state.net.user_embedding(torch.as_tensor(hist[lo : lo + 1024], device=state.device))
        v = items[lo : lo + 1024]
        path_ids, p, own_p = score_instances(state, u, v)
        if held:
            own = state.item_paths.path_ids[v]  # (n, J)
            dup = (own[:, :, None] == path_ids[:, None, :]).any(axis=2)  # (n, J)
            path_ids = np.concatenate([path_ids, np.where(dup, -1, own)], axis=1)
            p = np.concatenate([p, np.where(dup, 0.0, own_p)], axis=1)
        ids.append(path_ids)
        probs.append(p)
    return np.concatenate(ids), np.concatenate(probs)


def _prune_bundles(root: Path, keep: int) -> None:
    bundles = sorted(p for p in root.iterdir() if p.is_dir() and _BUNDLE.match(p.name))
    for old in bundles[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def as_chunks(
    events: Iterable[Any] | Interactions | str | os.PathLike,
    chunk_size: int,
    item_ids: np.ndarray | None,
) -> Iterator[StreamChunk]:
    """The events of :func:`stream_state` as chunks: caller batches re-cut, or a log streamed in
    time order with :func:`time_ordered_chunks` (which needs ``item_ids``)."""
    if isinstance(events, (Interactions, str, os.PathLike)):
        if item_ids is None:
            raise ValueError(
                "streaming an Interactions log needs item_ids (e.g. stream_vocabulary(log))"
            )
        events = time_ordered_chunks(events, chunk_size, item_ids=item_ids)
    return _as_chunks(events, chunk_size)


def stream_state(
    state: DRState,
    chunks: Iterable[StreamChunk],
    config: StreamConfig = StreamConfig(),
    *,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> DRState:
    """Train ``state`` in one pass over time-ordered chunks (see the module docstring).

    Per chunk: samples from the per-user histories, the network step (``passes`` times, with
    replay), path scores merged with decay ``η``; every ``reassign_every`` interactions, path
    assignment; every ``bundle_every``, a bundle. ``state.history`` receives one entry per path
    assignment, ``state.path_scores`` the merged per-item lists the last assignment used.

    Raises:
        ValueError: events out of time order, items outside ``[0, V)``, or no event with a history.
    """
    cfg = state.config
    if state.net.attention is not None:
        raise ValueError(
            "streaming does not train the attention reranker: set dr.reranker=dot, or fit in"
            " batch (DeepRetrieval.fit / deep-retrieval train)"
        )
    t, a, s = cfg.train, cfg.assignment, cfg.structure
    n_items = state.n_items
    rng = np.random.default_rng(cfg.seed)
    histories = _Histories(t.history_len)
    replay = _ReplayBuffer(config.replay_buffer if config.replay else 0, t.history_len)
    scores = StreamingPathScores(
        n_items, a.n_candidates + (s.paths_per_item if config.held_paths else 0)
    )
    optimizer = make_optimizer(state)
    joint = config.train_reranker
    bundle_root = Path(config.bundle_dir) if config.bundle_dir is not None else None
    state.changed()

    seen = 0  # interactions consumed
    n_samples = 0  # of which had a history (trained on)
    last_time: int | None = None
    next_assign = config.reassign_every
    next_bundle = config.bundle_every
    since: dict[str, float] = {
        "structure_loss": 0.0,
        "softmax_loss": 0.0,
        "batches": 0,
        "network_seconds": 0.0,
        "scoring_seconds": 0.0,
    }
    assigned_at = 0

    def emit(entry: dict[str, Any]) -> None:
        if on_event is not None:
            on_event(entry)

    def assign() -> None:
        nonlocal assigned_at
        t0 = time.perf_counter()
        merged = scores.snapshot()
        stats, moved = reassign_paths(state, merged, cfg.seed + len(state.history))
        state.path_scores = merged
        b = max(since["batches"], 1)
        entry: dict[str, Any] = {
            "event": "assignment",
            "interactions": seen,
            "samples": n_samples,
            "structure_loss": round(since["structure_loss"] / b, 5),
            "softmax_loss": round(since["softmax_loss"] / b, 5),
            "network_seconds": round(since["network_seconds"], 2),
            "scoring_seconds": round(since["scoring_seconds"], 2),
            "assignment_seconds": round(time.perf_counter() - t0, 2),
            **epoch_entry(stats, state, moved),
        }
        for k in since:
            since[k] = 0.0
        assigned_at = seen
        state.history.append(entry)
        log.info("streaming path assignment: %s", json.dumps(entry))
        emit(entry)

    def calibrate() -> None:
        # Its own generator: writing bundles must not change the training draws.
        sample = histories.sequences(config.calibration_users, np.random.default_rng(cfg.seed))
        calibrate_beam(state, sample)

    def bundle() -> None:
        assert bundle_root is not None
        calibrate()
        path = save_bundle(
            state, bundle_root / f"bundle-{seen:012d}",
            training={"stream": {**asdict(config), "interactions": seen, "samples": n_samples}},
        )
        atomic_write_text(bundle_root / "LATEST", path.name + "\n")
        _prune_bundles(bundle_root, config.keep_bundles)
        log.info("streaming bundle written: %s", path)
        emit({"event": "bundle", "interactions": seen, "path": str(path)})

    for chunk in chunks:
        if len(chunk) == 0:
            continue
        items = chunk.items
        if items.min() < 0 or items.max() >= n_items:
            raise ValueError(
                f"chunk items must lie in [0, n_items={n_items}),"
                f" got [{items.min()}, {items.max()}]"
            )
        if chunk.timestamps is not None:
            ts = chunk.timestamps
            first = int(ts[0]) if last_time is None else last_time
            if np.any(np.diff(ts) < 0) or int(ts[0]) < first:
                raise ValueError(
                    f"events out of time order after {seen} interactions (a timestamp decreases);"
                    " stream_train consumes interactions in timestamp order"
                )
            last_time = int(ts[-1])
        hist = histories.advance(histories.rows_of(chunk.users), items)  # (N, L)
        np.add.at(state.item_counts, items, 1)
        seen += len(chunk)
        # A user's first event has nothing before it: no sample (as TrainingSamples' skip_first).
        has_history = (hist >= 0).any(axis=1)
        hist, items = hist[has_history], items[has_history]
        n_samples += len(items)
        if len(items):
            t0 = time.perf_counter()
            probs = negative_sampling_probs(state, state.item_counts, joint)
            for _ in range(config.passes):
                h, y = hist, items
                if config.replay and replay.size:
                    rh, ry = replay.draw(config.replay, rng)
                    h, y = np.concatenate([hist, rh]), np.concatenate([items, ry])
                batches = array_batches(
                    state.net.reranker.encoder,
                    h,
                    y,
                    t.batch_size,
                    history_dropout=t.history_dropout,
                    rng=rng,
                    grad=joint,
                    device=state.device,
                )
                sl, xl, nb = network_step(
                    state, optimizer, batches, joint=joint, sampling_probs=probs
                )
                since["structure_loss"] += sl
                since["softmax_loss"] += xl
                since["batches"] += nb
            replay.add(hist, items)
            t1 = time.perf_counter()
            # Score the chunk's instances with the network that has just learned from them, as a
            # batch epoch scores after its network pass.
            path_ids, path_probs = _instance_paths(state, hist, items, config.held_paths)
            scores.merge(items, path_ids, path_probs, config.decay)
            since["network_seconds"] += t1 - t0
            since["scoring_seconds"] += time.perf_counter() - t1
        emit(
            {
                "event": "chunk",
                "interactions": seen,
                "samples": n_samples,
                "chunk_samples": int(len(items)),
            }
        )
        if seen >= next_assign:
            assign()
            next_assign = seen + config.reassign_every
        if next_bundle is not None and seen >= next_bundle:
            bundle()
            assert config.bundle_every is not None  # next_bundle stays None without it
            next_bundle = seen + config.bundle_every

    if n_samples == 0:
        raise ValueError("the stream held no event with a history before it: nothing to train on")
    if config.final_assignment and assigned_at < seen:
        assign()
    calibrate()
    state.changed()
    if bundle_root is not None and not (bundle_root / f"bundle-{seen:012d}").exists():
        bundle()
    return state
