"""Deep Retrieval training: the network step and path assignment, alternated per epoch.

Per epoch ``t`` (paper §2): (1) *network step*: one pass of gradient descent over every training
sample on ``−log Σ_j p(π_j(y) | x) − w·log p_softmax(y | x)`` with the item→path map fixed;
(2) *path assignment* with the network fixed: beam search (beam ``S``) for every training sample's
user, ``s[v, c] += p(c | x)`` per item, keep the top-``S`` paths per item, then greedy coordinate
descent under the path-size penalty. The first ``joint_epochs`` train the reranker too; after that
the reranker and the shared encoder are frozen (paper §2.5) and only the structure network learns.
Before all of them, ``reranker_epochs`` train the encoder and reranker alone (the brute-force
model's recipe), with no path assignment; after them, with ``reranker="attention"``,
``attention_epochs`` train the candidate-aware attention term alone on the frozen reranker.

What the paper leaves open, as built (the measurements behind each: README, "Choices the paper
leaves open"): paths start uniformly random (paper §1.1), J distinct per item (or, with
``assignment.init="kmeans"``, from the reranker's item vectors when the first network epoch
starts); path scores use the batch form (a sum over the epoch's interactions); unordered rows
score a path once per row and credit it to every item of the row; items that never occur keep
their random paths; an item's current J paths are always among its candidates, scored exactly
(:func:`~deep_retrieval.core.assignment.with_held_paths`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from ..config import to_dict
from ..core.assignment import PathScores
from ..data.samples import TrainingSamples
from ..data.types import Sequences
from ..index.retrieval import history_matrix
from ..index.state import DRState
from . import distributed
from .checkpoint import (
    capture_rng,
    fault_point,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .step import (
    epoch_entry,
    history_batches,
    kmeans_paths,
    make_optimizer,
    negative_sampling_probs,
    network_step,
    reassign_paths,
    sample_batches,
    score_path_batches,
)

log = logging.getLogger("deep_retrieval")


def network_epoch(
    state: DRState, samples: TrainingSamples, optimizer: torch.optim.Optimizer, *, joint: bool,
    structure: bool = True, attention: bool = False, fault: str | None = None,
) -> dict[str, float]:
    """One pass of the network step over every training sample (``structure=False``: the
    reranker alone; ``attention=True``: the attention term alone); returns the mean losses."""
    t = state.config.train
    encoder = state.net.reranker.encoder
    # N processes step together on N per-process batches: keep the global batch size.
    batch_size = max(1, -(-t.batch_size // distributed.current().world))
    batches = (
        history_batches(samples, batch_size, history_dropout=t.history_dropout,
                        device=state.device)
        if attention
        else sample_batches(
            encoder, samples, batch_size, history_dropout=t.history_dropout,
            causal=t.causal and encoder.kind == "mean", grad=joint, device=state.device,
        )
    )
    probs = negative_sampling_probs(
        state, np.bincount(samples.train.items, minlength=state.n_items), joint or attention
    )
    causal = not attention and t.causal and encoder.kind == "mean"  # batches by row, not sample
    structure_sum, softmax_sum, n = network_step(
        state, optimizer, batches, joint=joint, sampling_probs=probs, structure=structure,
        attention=attention, fault=fault, total=None if causal else samples.n_batches(batch_size),
    )
    if attention:
        return {"attention_loss": softmax_sum / max(n, 1)}
    return {"structure_loss": structure_sum / max(n, 1), "softmax_loss": softmax_sum / max(n, 1)}


def _scoring_batches(
    state: DRState, train: Sequences, samples: TrainingSamples, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(history (N, L), item of each history row)`` batches that path scores are accumulated over.

    Ordered rows: every training sample (history = the items before it). Unordered rows: one
    history per row (the whole row), repeated for each of the row's items afterwards.
    """
    if train.ordered:
        yield from samples.in_order(batch_size)
    else:
        for start in range(0, len(train), batch_size):
            rows = np.arange(start, min(start + batch_size, len(train)))
            yield history_matrix(state, train.rows(rows)), rows


@torch.no_grad()
def score_paths(
    state: DRState,
    train: Sequences,
    samples: TrainingSamples,
    timings: dict[str, float] | None = None,
) -> PathScores:
    """Top-``S`` path scores per item from beam search over the training samples' users
    (:func:`~deep_retrieval.training.step.score_path_batches`, which says what ``timings``
    receives and how it runs under ``torch.distributed``)."""
    state.net.eval()

    def scored() -> Iterator[tuple[torch.Tensor, np.ndarray, np.ndarray | None]]:
        for hist, key in _scoring_batches(state, train, samples, 1024):
            u = state.net.user_embedding(torch.as_tensor(hist, device=state.device))
            if train.ordered:
                yield u, key, None
            else:
                sub = train.rows(key)
                yield u, sub.items, sub.row_ids()

    return score_path_batches(state, scored(), timings)


def _fingerprint(
    state: DRState, train: Sequences, frozen_reranker: bool, world: int
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the config and the training data."""
    digest = hashlib.sha256(np.ascontiguousarray(train.indptr).tobytes())
    digest.update(np.ascontiguousarray(train.items).tobytes())
    return {
        "config": to_dict(state.config),
        "n_items": int(state.n_items),
        "data_sha256": digest.hexdigest(),
        "frozen_reranker": frozen_reranker,
        "processes": world,
    }


def fit_state(
    state: DRState,
    train: Sequences,
    *,
    frozen_reranker: bool = False,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
) -> None:
    """Run the alternating schedule on a new ``state`` (from
    :func:`~deep_retrieval.index.state.build_state`).

    With ``checkpoint_dir``, a checkpoint is written after every network step that a path
    assignment follows, and after every epoch (:mod:`deep_retrieval.training.checkpoint`); with
    ``resume``, the fit continues from the newest valid one there and ends exactly where an
    uninterrupted fit with the same seed ends.
    """
    cfg = state.config
    t = cfg.train
    ctx = distributed.current()
    fingerprint = (
        _fingerprint(state, train, frozen_reranker, ctx.world) if checkpoint_dir is not None else {}
    )
    if ctx.active:
        # Data parallel: this process trains on every world-th row, from rank 0's weights, and
        # draws its own negatives and shuffles.
        train = train.rows(np.arange(ctx.rank, len(train), ctx.world))
        distributed.broadcast_parameters(state.net)
        torch.manual_seed(cfg.seed + 7919 * ctx.rank)
    samples = TrainingSamples(train, t.history_len, seed=cfg.seed + ctx.rank)
    optimizer = make_optimizer(state)
    start, pending = 0, None
    if resume:
        if checkpoint_dir is None:
            raise ValueError("resume needs a checkpoint directory")
        found = latest_checkpoint(checkpoint_dir, fingerprint)
        if found is None and latest_checkpoint(checkpoint_dir) is not None:
            raise ValueError(
                f"the checkpoints in {checkpoint_dir} come from another config or data set;"
                " resume with the same settings, or write to a fresh --out"
            )
        if found is not None:
            doc = load_checkpoint(found, state=state, optimizer=optimizer, sampler_rng=samples.rng,
                                  fingerprint=fingerprint, rank=ctx.rank)
            start = doc["epoch"] + (1 if doc["phase"] == "epoch" else 0)
            pending = doc["pending"] if doc["phase"] == "network" else None
            log.info("resuming from %s", found)

    def checkpoint(epoch: int, phase: str, entry: dict[str, Any] | None = None) -> None:
        if checkpoint_dir is None:
            return
        # Weights, optimiser and paths are the same on every process; random states are not.
        rng_states = distributed.gather_objects(capture_rng(samples.rng))
        if ctx.rank == 0:
            save_checkpoint(
                checkpoint_dir,
                epoch=epoch,
                phase=phase,
                state=state,
                optimizer=optimizer,
                rng=rng_states,
                fingerprint=fingerprint,
                pending=entry,
            )
        distributed.barrier()

    # Reranker epochs (none with a given, frozen reranker) come first, then the network epochs,
    # then the attention term's (reranker="attention"; last, so that it learns on the reranker
    # as every schedule leaves it); checkpoints count them all.
    n_reranker = 0 if frozen_reranker else t.reranker_epochs
    last = n_reranker + t.epochs  # the first attention epoch
    n_attention = t.attention_epochs if state.net.attention is not None else 0
    for epoch in range(start, last + n_attention):
        step = epoch - n_reranker  # the network epoch: < 0 for a reranker epoch
        attention = epoch >= last
        assign = 0 <= step < t.epochs and ((step + 1) % t.assign_every == 0 or step == t.epochs - 1)
        if pending is not None:  # resumed between this epoch's network step and its assignment
            entry, pending = pending, None
        else:
            if step == 0 and cfg.assignment.init == "kmeans":
                kmeans_paths(state)  # from the reranker as the reranker epochs left it
            joint = not frozen_reranker and not attention and step < t.joint_epochs
            t0 = time.perf_counter()
            losses = network_epoch(
                state, samples, optimizer, joint=joint, structure=0 <= step < t.epochs,
                attention=attention, fault=f"network-{epoch}",
            )
            phase = (
                {"attention_only": True} if attention
                else {} if step >= 0 else {"reranker_only": True}
            )
            entry = {
                "event": "epoch",
                "epoch": epoch + 1,
                "joint": joint,
                **phase,
                **{k: round(v, 5) for k, v in losses.items()},
                "network_seconds": round(time.perf_counter() - t0, 2),
            }
            if assign:
                checkpoint(epoch, "network", entry)
        if assign:
            t1 = time.perf_counter()
            timings: dict[str, float] = {}
            scores = score_paths(state, train, samples, timings)
            fault_point(f"assignment-{epoch}")
            t2 = time.perf_counter()
            stats, moved = reassign_paths(state, scores, cfg.seed + epoch)
            entry.update(
                scoring_seconds=round(t2 - t1 - timings["accumulation_seconds"], 2),
                accumulation_seconds=round(timings["accumulation_seconds"], 2),
                assignment_seconds=round(time.perf_counter() - t2, 2),
                **epoch_entry(stats, state, moved),
            )
        state.history.append(entry)
        checkpoint(epoch, "epoch")
        log.info("epoch %d of %d: %s", epoch + 1, last + n_attention, json.dumps(entry))
        if on_event is not None:
            on_event(entry)
