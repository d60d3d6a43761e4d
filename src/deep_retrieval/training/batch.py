"""Deep Retrieval training: the network step and path assignment, alternated per epoch.

Per epoch ``t`` (paper §2): (1) *network step*: one pass of gradient descent over every training
sample on ``−log Σ_j p(π_j(y) | x) − w·log p_softmax(y | x)`` with the item→path map fixed;
(2) *path assignment* with the network fixed: beam search (beam ``S``) for every training sample's
user, ``s[v, c] += p(c | x)`` per item, keep the top-``S`` paths per item, then greedy coordinate
descent under the path-size penalty. The first ``joint_epochs`` train the reranker too; after that
the reranker and the shared encoder are frozen (paper §2.5) and only the structure network learns.

Choices the paper leaves open (measured; see the README):

- Paths start uniformly random (paper §1.1), J distinct per item.
- Path scores use the batch form (a sum over the epoch's interactions), not the streaming decay.
- Unordered rows (fixed splits, no time) score a path once per *row* with the whole row as the
  history and credit it to every item of the row; a leave-one-out sample's history is a random
  subset of that same row, so this is the same estimate at a fraction of the cost.
- Items that never occur in training keep their random paths.
- An item's current J paths are always among its candidates, scored exactly
  (``Σ_i p(π_j(v) | x_i)``). The beam alone lists only each user's top paths, which early in
  training are the same few popular paths for every user: all items then crowd onto about S
  paths (measured on latest-small: 32 distinct candidate paths over 5,345 items, largest path
  798 items at any α). With the held paths the largest path settles at 120 and DR matches
  brute force.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .. import distributed
from ..core.assignment import PathScoreAccumulator, PathScores, assign_paths, with_held_paths
from ..data.samples import TrainingSamples
from ..data.types import Sequences
from ..core.modules.encoder import UserEncoder
from ..core.modules.softmax import popularity_sampling_probs
from ..core.paths import ItemPathMap

if TYPE_CHECKING:
    from ..estimator import DeepRetrieval

log = logging.getLogger("deep_retrieval")


def user_batches(
    encoder: UserEncoder,
    samples: TrainingSamples,
    batch_size: int,
    *,
    history_dropout: float,
    causal: bool,
    grad: bool,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(user vectors (N, E), targets (N,))`` training batches.

    ``causal`` (mean encoder only) embeds each row segment once and reads every position's
    history off prefix sums (:meth:`TrainingSamples.causal_epoch`); otherwise each sample's
    ``(L,)`` history is gathered and encoded on its own (:meth:`TrainingSamples.epoch`, the
    reference). ``grad=False`` encodes without autograd (frozen encoder).
    """
    # Grad mode is switched around each encoding only: a generator that yields inside
    # ``set_grad_enabled`` would leave it switched while the caller computes its loss.
    if causal:
        for items, lengths, target, keep in samples.causal_epoch(batch_size, history_dropout=history_dropout):
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


def batch_loss(
    model: DeepRetrieval,
    u: torch.Tensor,
    target: torch.Tensor,
    item_paths: torch.Tensor,
    joint: bool,
    sampling_probs: torch.Tensor | None,
) -> tuple[float, float]:
    """The network step's loss on one batch, back-propagated: the multi-path likelihood of the
    targets' paths plus, when ``joint``, the reranker's sampled softmax. Returns the two loss
    values; raises ``FloatingPointError`` when the loss is not finite (the network diverged).

    Args:
        u: ``(N, E)`` user vectors; ``target``: ``(N,)`` items; ``item_paths``: ``(V, J, D)``.
    """
    t, net = model.config.train, model.net_
    structure_loss = net.structure.path_loss(u, item_paths[target]).mean()
    loss, softmax_value = structure_loss, 0.0
    if joint:
        softmax_loss = net.reranker.sampled_softmax_loss(u, target, t.n_negatives, sampling_probs=sampling_probs)
        loss = loss + t.softmax_weight * softmax_loss
        softmax_value = float(softmax_loss.detach())
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"the training loss became {float(loss.detach())}: the network diverged; lower train.lr"
            " (or structure_lr), or check the data for extreme values"
        )
    loss.backward()
    return float(structure_loss.detach()), softmax_value


def network_epoch(
    model: DeepRetrieval,
    samples: TrainingSamples,
    optimizer: torch.optim.Optimizer,
    *,
    joint: bool,
    fault: str | None = None,
) -> dict[str, float]:
    """One pass over ``samples``; returns mean structure and softmax losses. ``fault`` names the
    crash-test point hit after the pass's first batch (see :func:`~deep_retrieval.training.checkpoint.fault_point`)."""
    t = model.config.train
    net, device = model.net_, model.device_
    item_paths = torch.as_tensor(model.item_paths_.paths, device=device)  # (V, J, D)
    net.train()
    net.reranker.requires_grad_(joint)
    sampling_probs = None
    if joint and t.negative_sampling == "popularity":
        counts = torch.from_numpy(np.bincount(samples.train.items, minlength=model.n_items_))
        sampling_probs = popularity_sampling_probs(counts).to(device)
    sums = {"structure_loss": 0.0, "softmax_loss": 0.0}
    n_batches = 0
    encoder = net.reranker.encoder
    ctx = distributed.current()
    # N processes step together on N per-process batches: keep the global batch size.
    batch_size = max(1, -(-t.batch_size // ctx.world))
    batches = iter(user_batches(
        encoder, samples, batch_size, history_dropout=t.history_dropout,
        causal=t.causal and encoder.kind == "mean", grad=joint, device=device,
    ))
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    while True:
        batch = next(batches, None)
        # Distributed: keep stepping together until every process is out of batches.
        if batch is None and not (ctx.active and distributed.any_process(False)):
            break
        if ctx.active and batch is not None:
            distributed.any_process(True)
        optimizer.zero_grad(set_to_none=True)
        if batch is not None:
            u, target_t = batch
            structure_loss, softmax_loss = batch_loss(model, u, target_t, item_paths, joint, sampling_probs)
            sums["structure_loss"] += structure_loss
            sums["softmax_loss"] += softmax_loss
            n_batches += 1
        if ctx.active:
            distributed.average_gradients(params, contributing=batch is not None)
        optimizer.step()
        if fault is not None and n_batches == 1:
            from .checkpoint import fault_point

            fault_point(fault)  # mid-epoch
    net.reranker.requires_grad_(True)
    net.eval()
    return {k: v / max(n_batches, 1) for k, v in sums.items()}


def _scoring_batches(
    model: DeepRetrieval, train: Sequences, samples: TrainingSamples, batch_size: int
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
            yield model._history_matrix(train.rows(rows)), rows


@torch.no_grad()
def score_paths(
    model: DeepRetrieval, train: Sequences, samples: TrainingSamples, timings: dict[str, float] | None = None
) -> PathScores:
    """Top-``S`` path scores per item from beam search over the training samples' users.

    ``timings``, when given, receives ``accumulation_seconds``: the time spent merging
    ``(item, path, p)`` triples into the per-item top-``S`` (the rest is the network's beam search).
    Under ``torch.distributed`` the rows of this process's users go to the processes owning their
    items, and the result holds this process's item range only (:mod:`deep_retrieval.training.distributed`).
    """
    ctx = distributed.current()
    a = model.config.assignment
    n_items = model.n_items_
    net, device = model.net_, model.device_
    net.eval()
    # Distributed: every process scores its own users and accumulates the items it owns.
    bounds = distributed.item_bounds(n_items, ctx.world)
    lo, hi = int(bounds[ctx.rank]), int(bounds[ctx.rank + 1])
    acc = PathScoreAccumulator(hi - lo, a.n_candidates)
    outgoing: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    spent = 0.0

    held = model.item_paths_.path_ids  # (V, J)
    held_paths = torch.as_tensor(model.item_paths_.paths, device=device)  # (V, J, D)
    held_scores = np.zeros(held.shape, dtype=np.float64)  # exact s[v, π_j(v)]
    for hist, key in _scoring_batches(model, train, samples, 1024):
        u = net.user_embedding(torch.as_tensor(hist, device=device))
        path_ids, log_probs = model._beam(u, a.n_candidates)  # (N, S)
        probs = np.exp(log_probs.astype(np.float64))
        if train.ordered:
            items, user = key, u
        else:
            sub = train.rows(key)
            local = sub.row_ids()
            items, path_ids, probs = sub.items, path_ids[local], probs[local]
            user = u[torch.as_tensor(local, device=device)]
        exact = net.structure.log_prob(user, held_paths[torch.as_tensor(items, device=device)])
        np.add.at(held_scores, items, np.exp(exact.double().cpu().numpy()))
        t0 = time.perf_counter()
        if ctx.active:
            outgoing.append((items, path_ids, probs))
        else:
            acc.add(items, path_ids, probs)
        spent += time.perf_counter() - t0
    t0 = time.perf_counter()
    if ctx.active:
        width = a.n_candidates
        parts = outgoing or [(np.zeros(0, np.int64), np.zeros((0, width), np.int64), np.zeros((0, width)))]
        items, path_ids, probs = distributed.route_rows(*(np.concatenate(x) for x in zip(*parts)), bounds)
        acc.add(items - lo, path_ids, probs)
        held_scores = distributed.all_reduce_numpy(held_scores)
    out = with_held_paths(acc.result(), held[lo:hi], held_scores[lo:hi])
    if timings is not None:
        timings["accumulation_seconds"] = spent + time.perf_counter() - t0
    return out


def reassign_paths(model: DeepRetrieval, scores: PathScores, seed: int) -> tuple[dict[str, Any], float]:
    """Path assignment from ``scores`` with the model's settings, starting from its current paths;
    installs the new item → path map. Returns ``(assign_paths stats, share of items moved)``."""
    s, a = model.config.structure, model.config.assignment
    ctx = distributed.current()
    settings = dict(paths_per_item=s.paths_per_item, penalty=a.penalty, n_paths=model.codec_.n_paths,
                    n_sweeps=a.n_sweeps, power=a.power)
    if ctx.active:
        lo = int(distributed.item_bounds(model.n_items_, ctx.world)[ctx.rank])
        new_ids, stats = distributed.assign_paths_sharded(scores, lo, model.item_paths_.path_ids, seed=seed, **settings)
    else:
        new_ids, stats = assign_paths(scores, previous=model.item_paths_.path_ids, rng=seed, **settings)
    moved = float((np.sort(new_ids, 1) != np.sort(model.item_paths_.path_ids, 1)).any(1).mean())
    model.item_paths_ = ItemPathMap(new_ids, model.codec_, excluded=getattr(model, "removed_", None))
    return stats, moved


def _fingerprint(model: DeepRetrieval, train: Sequences, frozen_reranker: bool, world: int) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the config and the training data."""
    import hashlib

    from ..config import to_dict

    digest = hashlib.sha256(np.ascontiguousarray(train.indptr).tobytes())
    digest.update(np.ascontiguousarray(train.items).tobytes())
    return {"config": to_dict(model.config), "n_items": int(model.n_items_), "data_sha256": digest.hexdigest(),
            "frozen_reranker": frozen_reranker, "processes": world}


def fit_deep_retrieval(
    model: DeepRetrieval,
    train: Sequences,
    *,
    frozen_reranker: bool = False,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
) -> None:
    """Run the alternating schedule on ``model`` (its ``net_``/``codec_`` already built).

    With ``checkpoint_dir``, a checkpoint is written after every network step that a path
    assignment follows, and after every epoch (:mod:`deep_retrieval.training.checkpoint`); with
    ``resume``, the fit continues from the newest valid one there and ends exactly where an
    uninterrupted fit with the same seed ends.
    """
    from .checkpoint import capture_rng, fault_point, latest_checkpoint, load_checkpoint, save_checkpoint

    cfg = model.config
    t, s = cfg.train, cfg.structure
    rng = np.random.default_rng(cfg.seed)
    model.item_paths_ = ItemPathMap.random(model.n_items_, model.codec_, s.paths_per_item, rng)
    ctx = distributed.current()
    fingerprint = _fingerprint(model, train, frozen_reranker, ctx.world) if checkpoint_dir is not None else {}
    if ctx.active:
        # Data parallel: this process trains on every world-th row, from rank 0's weights, and
        # draws its own negatives and shuffles.
        train = train.rows(np.arange(ctx.rank, len(train), ctx.world))
        distributed.broadcast_parameters(model.net_)
        torch.manual_seed(cfg.seed + 7919 * ctx.rank)
    samples = TrainingSamples(train, t.history_len, seed=cfg.seed + ctx.rank)
    structure_params = list(model.net_.structure.parameters())
    optimizer = torch.optim.Adam(
        [
            {"params": model.net_.reranker.parameters(), "lr": t.lr},
            {"params": structure_params, "lr": t.structure_lr or t.lr},
        ],
        weight_decay=t.weight_decay,
    )
    start, pending = 0, None
    if resume:
        if checkpoint_dir is None:
            raise ValueError("resume needs a checkpoint directory")
        found = latest_checkpoint(checkpoint_dir)
        if found is not None:
            doc = load_checkpoint(found, model=model, optimizer=optimizer, sampler_rng=samples.rng,
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
            save_checkpoint(checkpoint_dir, epoch=epoch, phase=phase, model=model, optimizer=optimizer,
                            rng=rng_states, fingerprint=fingerprint, pending=entry)
        distributed.barrier()

    for epoch in range(start, t.epochs):
        assign = (epoch + 1) % t.assign_every == 0 or epoch == t.epochs - 1
        if pending is not None:  # resumed between this epoch's network step and its assignment
            entry, pending = pending, None
        else:
            joint = not frozen_reranker and epoch < t.joint_epochs
            t0 = time.perf_counter()
            losses = network_epoch(model, samples, optimizer, joint=joint, fault=f"network-{epoch}")
            entry = {
                "event": "epoch",
                "epoch": epoch + 1,
                "joint": joint,
                **{k: round(v, 5) for k, v in losses.items()},
                "network_seconds": round(time.perf_counter() - t0, 2),
            }
            if assign:
                checkpoint(epoch, "network", entry)
        if assign:
            t1 = time.perf_counter()
            timings: dict[str, float] = {}
            scores = score_paths(model, train, samples, timings)
            fault_point(f"assignment-{epoch}")
            t2 = time.perf_counter()
            stats, changed = reassign_paths(model, scores, cfg.seed + epoch)
            entry.update(
                scoring_seconds=round(t2 - t1 - timings["accumulation_seconds"], 2),
                accumulation_seconds=round(timings["accumulation_seconds"], 2),
                assignment_seconds=round(time.perf_counter() - t2, 2),
                objective=[round(float(o), 3) for o in stats["objective"]],
                largest_path_size=int(stats["largest_path_size"]),
                occupied_paths=int(len(model.item_paths_.path_sizes())),
                items_moved=round(changed, 4),
            )
        model.history_.append(entry)
        checkpoint(epoch, "epoch")
        if on_event is not None:
            on_event(entry)
