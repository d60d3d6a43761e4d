"""Training an index over given vectors (:class:`~deep_retrieval.DRIndex`): the structure network
and the paths learn to find what exact search over the vectors returns.

The instances are ``(query vector, item)`` pairs: each training query with its exact top
``distill_k`` items under ``⟨q, v⟩ + b_v`` (distillation), or with the positives the caller
observed. Per epoch: a network step of the structure network on the pairs (the same
:func:`~deep_retrieval.training.step.network_step` as a history model's, with the reranker fixed:
it is the exact scorer), then a path assignment over the pairs' beam-search path scores
(:func:`~deep_retrieval.training.step.score_path_batches`, :func:`reassign_paths`). Items that
no pair holds are scored through *anchor* contexts instead (the anchor queries under whose
threshold they fall the least, :func:`~deep_retrieval.index.catalogue.anchor_contexts`), so
they join the assignment rather than keep their random paths; the network never trains on
those contexts. Every query's beam is searched once per assignment, for all its instances.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
import torch

from ..index.state import DRState
from .step import (
    epoch_entry,
    kmeans_paths,
    make_optimizer,
    network_step,
    reassign_paths,
    score_path_batches,
)

log = logging.getLogger("deep_retrieval")


def _pair_batches(
    queries: torch.Tensor, pair_q: np.ndarray, pair_v: np.ndarray, batch_size: int,
    rng: np.random.Generator,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled pass of ``(query vectors (n, E), items (n,))`` network-step batches."""
    perm = rng.permutation(len(pair_q))
    for lo in range(0, len(perm), batch_size):
        take = perm[lo : lo + batch_size]
        yield queries[torch.as_tensor(pair_q[take])], torch.as_tensor(pair_v[take])


def _scoring_batches(
    queries: torch.Tensor, pair_q: np.ndarray, pair_v: np.ndarray, block: int = 1024
) -> Iterator[tuple[torch.Tensor, np.ndarray, np.ndarray | None]]:
    """Path-scoring instances, ``block`` queries at a time: each query's beam is searched once
    for all its pairs (``pair_q`` ascending)."""
    starts = np.searchsorted(pair_q, np.arange(0, len(queries) + block, block))
    for i, lo in enumerate(range(0, len(queries), block)):
        sel = slice(int(starts[i]), int(starts[i + 1]))
        if sel.stop > sel.start:
            yield queries[lo : lo + block], pair_v[sel], pair_q[sel] - lo


def fit_index_state(
    state: DRState,
    queries: np.ndarray,
    pair_q: np.ndarray,
    pair_v: np.ndarray,
    contexts: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Train ``state``'s structure network and paths on ``(query, item)`` pairs, in place.

    Args:
        queries: ``(Q, E)`` float32 query vectors.
        pair_q: ``(N,)`` row of ``queries`` of each pair; ``pair_v``: its item.
        contexts: ``(rows of queries (M,), items (M,))``: the anchor contexts of the items no
            pair holds, scored with the pairs but never trained on.
    """
    cfg = state.config
    t = cfg.train
    q_t = torch.as_tensor(queries, device=state.device)
    score_q, score_v = pair_q, pair_v
    if contexts is not None:
        score_q, score_v = np.r_[pair_q, contexts[0]], np.r_[pair_v, contexts[1]]
    order = np.argsort(score_q, kind="stable")
    score_q, score_v = score_q[order], score_v[order]
    optimizer = make_optimizer(state)
    rng = np.random.default_rng(cfg.seed)
    if cfg.assignment.init == "kmeans":
        kmeans_paths(state)  # residual k-means of the given item vectors
    for epoch in range(t.epochs):
        t0 = time.perf_counter()
        structure_sum, _, n_batches = network_step(
            state, optimizer, _pair_batches(q_t, pair_q, pair_v, t.batch_size, rng),
            joint=False, sampling_probs=None, total=-(-len(pair_q) // t.batch_size),
        )
        t1 = time.perf_counter()
        timings: dict[str, float] = {}
        scores = score_path_batches(state, _scoring_batches(q_t, score_q, score_v), timings)
        t2 = time.perf_counter()
        stats, moved = reassign_paths(state, scores, cfg.seed + epoch)
        entry = {
            "event": "epoch",
            "epoch": epoch + 1,
            "structure_loss": round(structure_sum / max(n_batches, 1), 5),
            "network_seconds": round(t1 - t0, 2),
            "scoring_seconds": round(t2 - t1 - timings["accumulation_seconds"], 2),
            "accumulation_seconds": round(timings["accumulation_seconds"], 2),
            "assignment_seconds": round(time.perf_counter() - t2, 2),
            **epoch_entry(stats, state, moved),
        }
        state.history.append(entry)
        log.info(
            "index epoch %d/%d: structure loss %.4f, largest path %d, %.1f s", epoch + 1,
            t.epochs, entry["structure_loss"], entry["largest_path_size"],
            time.perf_counter() - t0,
        )
