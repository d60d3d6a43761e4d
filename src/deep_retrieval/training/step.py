"""The pieces every training loop shares (batch :mod:`.batch`, streaming :mod:`.stream`, and
torchrun through both): the network step, path scoring of training instances, and path
assignment from the scores.

- *Network step*: gradient descent with the item → path map fixed, on
  ``−log Σ_j p(π_j(y) | x) − w·log p_softmax(y | x)`` (the reranker's term only when ``joint``).
- *Path scoring*: for each instance ``(user x, item v)``, the beam's ``S`` paths with
  ``p(c | x)`` and the exact probabilities of ``v``'s ``J`` current paths.
- *Path assignment*: penalised greedy coordinate descent over the scores
  (:func:`~deep_retrieval.core.assignment.assign_paths`, sharded under torchrun).

Shapes: ``N`` instances, ``L`` history length, ``E`` embedding width, ``V`` items, ``S`` beam
paths per instance, ``J`` paths per item, ``D`` layers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from ..core.assignment import PathScoreAccumulator, PathScores, assign_paths
from ..core.modules.encoder import UserEncoder
from ..core.modules.softmax import (
    draw_negatives,
    popularity_sampling_probs,
    sampled_cross_entropy,
)
from ..core.paths import kmeans_path_ids
from ..data.samples import TrainingSamples, drop_history
from ..index.retrieval import beam
from ..index.state import DRState
from ..utils import adam, fault_point, progress
from . import distributed


def make_optimizer(state: DRState) -> torch.optim.Optimizer:
    """Adam (fused where supported) over the reranker (with the shared encoder) at ``lr``, the
    structure network at ``structure_lr`` (default ``lr``) and the attention term, if any, at
    ``lr``."""
    t, net = state.config.train, state.net
    groups = [
        {"params": list(net.reranker.parameters()), "lr": t.lr},
        {"params": list(net.structure.parameters()), "lr": t.structure_lr or t.lr},
    ]
    if net.attention is not None:
        groups.append({"params": list(net.attention.parameters()), "lr": t.lr})
    return adam(groups, t.lr, t.weight_decay)


@torch.no_grad()
def kmeans_paths(state: DRState) -> None:
    """Put every item on paths from residual k-means of the reranker's item vectors
    (``assignment.init="kmeans"``; :func:`~deep_retrieval.core.paths.kmeans_path_ids`).

    Deterministic in ``config.seed``, so every torchrun process computes the same paths.
    """
    keys = state.net.reranker.keys().float().cpu().numpy()  # (V, E)
    j = state.config.structure.paths_per_item
    state.set_paths(kmeans_path_ids(keys, state.codec, j, np.random.default_rng(state.config.seed)))


def negative_sampling_probs(state: DRState, counts: np.ndarray, joint: bool) -> torch.Tensor | None:
    """``(V,)`` the reranker's negative-sampling distribution from item ``counts``, or ``None``
    (uniform negatives, or no reranker term)."""
    if not joint or state.config.train.negative_sampling != "popularity":
        return None
    return popularity_sampling_probs(torch.from_numpy(np.asarray(counts))).to(state.device)


def sample_batches(
    encoder: UserEncoder,
    samples: TrainingSamples,
    batch_size: int,
    *,
    history_dropout: float,
    causal: bool,
    grad: bool,
    device: torch.device | str,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(user vectors (N, E), targets (N,))`` training batches from ``samples``.

    ``causal`` (mean encoder only) embeds each row segment once and reads every position's
    history off prefix sums (:meth:`TrainingSamples.causal_epoch`); otherwise each sample's
    ``(L,)`` history is gathered and encoded on its own (:meth:`TrainingSamples.epoch`, the
    reference). ``grad=False`` encodes without autograd (frozen encoder).
    """
    # Grad mode is switched around each encoding only: a generator that yields inside
    # ``set_grad_enabled`` would leave it switched while the caller computes its loss.
    if causal:
        causal_batches = samples.causal_epoch(batch_size, history_dropout=history_dropout)
        for items, lengths, target, keep in causal_batches:
            items_t = torch.as_tensor(items, device=device)
            mask = torch.as_tensor(target, device=device)
            with torch.set_grad_enabled(grad):
                u = encoder.encode_positions(
                    items_t,
                    torch.as_tensor(lengths, device=device),
                    samples.history_len,
                    ordered=samples.ordered,
                    keep=None if keep is None else torch.as_tensor(keep, device=device),
                )[mask]
            yield u, items_t[mask]
    else:
        for hist, target in samples.epoch(batch_size, history_dropout=history_dropout):
            with torch.set_grad_enabled(grad):
                u = encoder(torch.as_tensor(hist, device=device))
            yield u, torch.as_tensor(target, device=device)


def history_batches(
    samples: TrainingSamples, batch_size: int, *, history_dropout: float,
    device: torch.device | str,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(histories (N, L), targets (N,))`` batches: what the attention term trains
    on (it reads the history item by item, not one pooled vector)."""
    for hist, target in samples.epoch(batch_size, history_dropout=history_dropout):
        yield torch.as_tensor(hist, device=device), torch.as_tensor(target, device=device)


def array_batches(
    encoder: UserEncoder,
    hist: np.ndarray,
    target: np.ndarray,
    batch_size: int,
    *,
    history_dropout: float,
    rng: np.random.Generator,
    grad: bool,
    device: torch.device | str,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled pass of ``(user vectors (n, E), targets (n,))`` batches over given
    ``(hist (N, L), target (N,))`` samples (streaming's chunks)."""
    perm = rng.permutation(len(target))
    for lo in range(0, len(perm), batch_size):
        take = perm[lo : lo + batch_size]
        h = drop_history(hist[take].copy(), history_dropout, rng)
        with torch.set_grad_enabled(grad):
            u = encoder(torch.as_tensor(h, device=device))
        yield u, torch.as_tensor(target[take], device=device)


def batch_loss(
    state: DRState,
    u: torch.Tensor,
    target: torch.Tensor,
    item_paths: torch.Tensor | None,
    joint: bool,
    sampling_probs: torch.Tensor | None,
) -> tuple[float, float]:
    """The network step's loss on one batch, back-propagated: the multi-path likelihood of the
    targets' paths (unless ``item_paths`` is ``None``: a reranker epoch) plus, when ``joint``,
    the reranker's sampled softmax. Returns the two loss values; raises ``FloatingPointError``
    when the loss is not finite (the network diverged).

    Args:
        u: ``(N, E)`` user vectors; ``target``: ``(N,)`` items; ``item_paths``: ``(V, J, D)``.
    """
    t, net = state.config.train, state.net
    loss = torch.zeros((), device=u.device)
    structure_value = softmax_value = 0.0
    if item_paths is not None:
        structure_loss = net.structure.path_loss(u, item_paths[target]).mean()
        loss = loss + structure_loss
        structure_value = float(structure_loss.detach())
    if joint:
        softmax_loss = net.reranker.sampled_softmax_loss(
            u, target, t.n_negatives, sampling_probs=sampling_probs
        )
        # A reranker epoch trains the softmax alone, at weight 1 as the brute-force model does.
        loss = loss + (t.softmax_weight if item_paths is not None else 1.0) * softmax_loss
        softmax_value = float(softmax_loss.detach())
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"the training loss became {float(loss.detach())}: the network diverged; lower train.lr"
            " (or structure_lr), or check the data for extreme values"
        )
    loss.backward()
    return structure_value, softmax_value


def attention_loss(
    state: DRState, hist: torch.Tensor, target: torch.Tensor, sampling_probs: torch.Tensor | None
) -> float:
    """The attention term's loss on one batch, back-propagated: the sampled softmax
    (``train.attention_negatives`` shared negatives, log-Q corrected) of the reranker's logit
    ``⟨q(u), k(v)⟩ + b_v + t(u, v)`` with the dot-product part frozen, so only ``t`` learns.

    Args:
        hist: ``(N, L)`` history ids (``-1`` padded); ``target``: ``(N,)`` items.
    """
    net, t = state.net, state.config.train
    assert net.attention is not None
    negatives, log_q = draw_negatives(
        state.n_items, t.attention_negatives, sampling_probs, device=hist.device
    )
    with torch.no_grad():  # the dot-product model and the item vectors are frozen
        u = net.reranker.user_embedding(hist)
        pos_dot = net.reranker.scores(u, target[:, None])[:, 0]  # (N,)
        neg_dot = net.reranker.scores(u, negatives)  # (N, n)
        history, mask = net.attention_history(hist)  # (N, L, E)
        pos_items = net.attention_items(target)[:, None]  # (N, 1, E)
        neg_items = net.attention_items(negatives)  # (n, E)
    pos = pos_dot + net.attention(history, mask, pos_items)[:, 0] - log_q(target)
    neg = neg_dot + net.attention(history, mask, neg_items) - log_q(negatives)
    loss = sampled_cross_entropy(pos, neg, target, negatives)
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"the attention loss became {float(loss.detach())}: lower train.lr"
        )
    loss.backward()
    return float(loss.detach())


def network_step(
    state: DRState,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    joint: bool,
    sampling_probs: torch.Tensor | None,
    structure: bool = True,
    attention: bool = False,
    fault: str | None = None,
    total: int | None = None,
) -> tuple[float, float, int]:
    """One network step over ``batches`` of ``(user vectors, targets)``, the paths fixed;
    ``joint=False`` freezes the reranker and the shared encoder, ``structure=False`` the
    structure network (a reranker epoch: the reranker's softmax alone). ``attention=True``
    trains the attention term alone (:func:`attention_loss`) on ``(histories, targets)``
    batches (:func:`history_batches`). Returns the summed structure and softmax (or attention)
    losses and the number of batches.

    Under ``torch.distributed`` the processes step together: one that runs out of batches keeps
    joining the gradient all-reduce with zeros until every process is done. ``fault`` names the
    crash-test point hit after the first batch (see
    :func:`~deep_retrieval.utils.fault_point`). ``total``: the number of batches,
    for the progress bar (:func:`~deep_retrieval.utils.show_progress`).
    """
    net = state.net
    if attention and (joint or structure or net.attention is None):
        raise ValueError("an attention step trains the attention term alone, and needs one")
    if not (joint or structure or attention):
        raise ValueError("a network step trains the reranker, the structure network, or both")
    item_paths = (
        torch.as_tensor(state.item_paths.paths, device=state.device) if structure else None
    )  # (V, J, D)
    net.train()
    net.reranker.requires_grad_(joint)
    net.structure.requires_grad_(structure)
    if net.attention is not None:
        net.attention.requires_grad_(attention)
    ctx = distributed.current()
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    structure_sum = softmax_sum = 0.0
    n_batches = 0
    it = iter(batches)
    desc = "attention step" if attention else "network step" if structure else "reranker step"
    with progress(total, desc, "batch") as bar:
        while True:
            batch = next(it, None)
            if batch is None and not (ctx.active and distributed.any_process(False)):
                break
            if ctx.active and batch is not None:
                distributed.any_process(True)
            optimizer.zero_grad(set_to_none=True)
            if batch is not None:
                structure_loss, softmax_loss = (
                    (0.0, attention_loss(state, *batch, sampling_probs))
                    if attention
                    else batch_loss(state, *batch, item_paths, joint, sampling_probs)
                )
                structure_sum += structure_loss
                softmax_sum += softmax_loss
                n_batches += 1
                bar.update(1)
            if ctx.active:
                distributed.average_gradients(params, contributing=batch is not None)
            optimizer.step()
            if fault is not None and n_batches == 1:
                fault_point(fault)  # mid-epoch
    net.requires_grad_(True)
    net.eval()
    state.changed()
    return structure_sum, softmax_sum, n_batches


@torch.no_grad()
def score_instances(
    state: DRState, u: torch.Tensor, items: np.ndarray, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Path scores of training instances: ``(beam path ids (N, S'), p(c | x) (N, S'),
    p(π_j(v) | x) of each instance's item's held paths (N, J))``, probabilities as float64.

    Args:
        u: user vectors, one per instance, or one per row of ``rows``.
        items: ``(N,)`` the instances' items.
        rows: ``(N,)`` the row of ``u`` of each instance, when instances share a user (the beam
            is searched once per user).
    """
    path_ids, log_probs = beam(state, u, state.config.assignment.n_candidates)  # S' = min(S, K^D)
    probs = np.exp(log_probs.astype(np.float64))
    if rows is not None:
        path_ids, probs = path_ids[rows], probs[rows]
        u = u[torch.as_tensor(rows, device=u.device)]
    held = torch.as_tensor(  # (N, J, D)
        state.codec.decode(state.item_paths.path_ids[items]), device=u.device
    )
    held_probs = np.exp(state.net.structure.log_prob(u, held).double().cpu().numpy())
    return path_ids, probs, held_probs


@torch.no_grad()
def score_path_batches(
    state: DRState,
    batches: Iterable[tuple[torch.Tensor, np.ndarray, np.ndarray | None]],
    timings: dict[str, float] | None = None,
) -> PathScores:
    """Top-``S`` path scores per item summed over ``batches`` of ``(user vectors (U, E), items
    (N,), rows (N,) or None)`` instances (:func:`score_instances`), with each item's held paths
    scored exactly (:func:`~deep_retrieval.core.assignment.with_held_paths`).

    ``timings``, when given, receives ``accumulation_seconds``: the time spent merging
    ``(item, path, p)`` triples into the per-item top-``S`` (the rest is the network's beam
    search). Under ``torch.distributed`` the rows of this process's users go to the processes
    owning their items, and the result holds this process's item range only
    (:mod:`deep_retrieval.training.distributed`).
    """
    ctx = distributed.current()
    a = state.config.assignment
    # Distributed: every process scores its own users and accumulates the items it owns.
    bounds = distributed.item_bounds(state.n_items, ctx.world)
    lo, hi = int(bounds[ctx.rank]), int(bounds[ctx.rank + 1])
    acc = PathScoreAccumulator(hi - lo, a.n_candidates)
    outgoing: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    spent = 0.0
    held = state.item_paths.path_ids  # (V, J)
    held_scores = np.zeros(held.shape, dtype=np.float64)  # exact s[v, π_j(v)]
    with progress(None, "path scoring", "batch") as bar:
        for u, items, rows in batches:
            path_ids, probs, held_probs = score_instances(state, u, items, rows)
            np.add.at(held_scores, items, held_probs)
            t0 = time.perf_counter()
            if ctx.active:
                outgoing.append((items, path_ids, probs))
            else:
                acc.add(items, path_ids, probs)
            spent += time.perf_counter() - t0
            bar.update(1)
    t0 = time.perf_counter()
    if ctx.active:
        width = a.n_candidates
        parts = outgoing or [
            (np.zeros(0, np.int64), np.zeros((0, width), np.int64), np.zeros((0, width)))
        ]
        all_items, all_paths, all_probs = (np.concatenate(x) for x in zip(*parts, strict=True))
        items, path_ids, probs = distributed.route_rows(all_items, all_paths, all_probs, bounds)
        acc.add(items - lo, path_ids, probs)
        held_scores = distributed.all_reduce_numpy(held_scores)
    # = with_held_paths(acc.result(), ...), without the (V, S) intermediate
    out = acc.result(held[lo:hi], held_scores[lo:hi])
    if timings is not None:
        timings["accumulation_seconds"] = spent + time.perf_counter() - t0
    return out


def reassign_paths(state: DRState, scores: PathScores, seed: int) -> tuple[dict[str, Any], float]:
    """Path assignment from ``scores`` with the state's settings, starting from its current
    paths; installs the new item → path map. Returns ``(assign_paths stats, share of items
    moved)``."""
    s, a = state.config.structure, state.config.assignment
    ctx = distributed.current()
    old = state.item_paths.path_ids
    settings: dict[str, Any] = {
        "paths_per_item": s.paths_per_item, "penalty": state.penalty(),
        "n_paths": state.codec.n_paths, "n_sweeps": a.n_sweeps, "power": a.power,
    }
    if ctx.active:
        lo = int(distributed.item_bounds(state.n_items, ctx.world)[ctx.rank])
        new_ids, stats = distributed.assign_paths_sharded(scores, lo, old, seed=seed, **settings)
    else:
        new_ids, stats = assign_paths(scores, previous=old, rng=seed, **settings)
    moved = float((np.sort(new_ids, 1) != np.sort(old, 1)).any(1).mean())
    state.set_paths(new_ids)
    return stats, moved


def epoch_entry(stats: dict[str, Any], state: DRState, moved: float) -> dict[str, Any]:
    """The log figures of one path assignment."""
    return {
        "objective": [round(float(o), 3) for o in stats["objective"]],
        "largest_path_size": int(stats["largest_path_size"]),
        "occupied_paths": int(len(state.item_paths.path_sizes())),
        "items_moved": round(moved, 4),
    }
