"""Data-parallel training and sharded path assignment over ``torch.distributed``.

Run under ``torchrun`` (``torchrun --nproc_per_node N -m deep_retrieval train …``; several
machines with the usual ``--nnodes/--node_rank/--rdzv_*`` flags): every process reads the same
data, trains on its shard of the training rows, and

* **network step**: gradients are averaged over the processes after every batch (an all-reduce
  of one flat buffer, what ``DistributedDataParallel`` does without its bucketing); processes
  that run out of batches first join the remaining all-reduces with zero gradients, so every
  process takes the same optimiser steps and the weights stay identical;
* **path scores**: each process runs beam search for its own training users; each instance's
  ``(item, S paths, S probabilities)`` row is sent to the process that owns the item (items are
  split into contiguous ranges, ``all_to_all``), which accumulates them exactly;
* **path assignment**: the greedy coordinate descent runs over each process's own items, with
  the path sizes of all items summed over the processes (all-reduce) before every block of a
  sweep (32 blocks per sweep); the full item → path table is then gathered on every process;
* **batches**: each process takes ``batch_size / N`` samples per step, so N processes take the
  same optimiser steps on the same global batch size as one.

gloo on CPU, NCCL on GPU (tensors then travel through the GPU). One process (``world == 1``)
takes exactly the single-process code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..core.assignment import GreedySweep, PathScores, assignment_objective


@dataclass(frozen=True)
class Dist:
    """This process's place: ``rank`` of ``world`` (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1


def current() -> Dist:
    """The initialised process group's rank and size, else a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size())
    return Dist()


def init_from_environment(device: str = "cpu") -> Dist:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1);
    gloo for CPU training, NCCL for CUDA. Without those variables: a single process."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return current()


def _device() -> torch.device:
    import torch.distributed as dist

    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def gather_objects(obj):
    """``[obj of rank 0, obj of rank 1, …]`` on every process (``[obj]`` for one process)."""
    import torch.distributed as dist

    if not current().active:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every process (nothing for one process)."""
    import torch.distributed as dist

    if current().active:
        dist.barrier()


def all_reduce_numpy(arr: np.ndarray, op: str = "sum") -> np.ndarray:
    """Element-wise sum (or max) of ``arr`` over the processes (a new array)."""
    import torch.distributed as dist

    t = torch.from_numpy(np.ascontiguousarray(arr)).to(_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.cpu().numpy()


def any_process(flag: bool) -> bool:
    """Whether ``flag`` holds on at least one process."""
    return bool(all_reduce_numpy(np.array([int(flag)], dtype=np.int64), "max")[0])


def average_gradients(params: list[torch.nn.Parameter], contributing: bool) -> None:
    """Replace every parameter's gradient by its mean over the processes that had a batch
    (``contributing``); a process without one contributes zeros."""
    import torch.distributed as dist

    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        elif not contributing:
            p.grad.zero_()
        grads.append(p.grad)
    flat = torch.cat(
        [g.reshape(-1) for g in grads]
        + [torch.tensor([float(contributing)], device=grads[0].device)]
    )
    dist.all_reduce(flat)
    n = max(float(flat[-1]), 1.0)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g) / n)
        offset += g.numel()


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Make every process start from rank 0's weights."""
    import torch.distributed as dist

    for t in module.state_dict().values():
        dist.broadcast(t, 0)


def item_bounds(n_items: int, world: int) -> np.ndarray:
    """``(world + 1,)`` boundaries of the contiguous item range each process owns."""
    return np.linspace(0, n_items, world + 1).round().astype(np.int64)


def route_rows(
    items: np.ndarray, path_ids: np.ndarray, probs: np.ndarray, bounds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Send each row ``(item, path_ids[i], probs[i])`` to the process owning ``item``; returns the
    rows this process received (``items`` still global ids)."""
    import torch.distributed as dist

    world = len(bounds) - 1
    owner = np.searchsorted(bounds, items, side="right") - 1
    order = np.argsort(owner, kind="stable")
    items, path_ids, probs = items[order], path_ids[order], probs[order]
    send = np.bincount(owner, minlength=world).astype(np.int64)
    recv_counts = torch.empty(world, dtype=torch.int64)
    dist.all_to_all_single(recv_counts, torch.from_numpy(send))
    recv = recv_counts.numpy()
    width = path_ids.shape[1]

    def exchange(arr: np.ndarray, per_row: int) -> np.ndarray:
        src = torch.from_numpy(np.ascontiguousarray(arr).reshape(-1))
        out = torch.empty(int(recv.sum()) * per_row, dtype=src.dtype)
        dist.all_to_all_single(out, src, (recv * per_row).tolist(), (send * per_row).tolist())
        return out.numpy()

    got_items = exchange(items, 1)
    got_paths = exchange(path_ids, width).reshape(-1, width)
    return got_items, got_paths, exchange(probs, width).reshape(-1, width)


def assign_paths_sharded(
    scores: PathScores,
    lo: int,
    previous: np.ndarray,
    *,
    paths_per_item: int,
    penalty: float,
    n_paths: int,
    n_sweeps: int,
    seed: int,
    power: float = 4,
    rounds: int = 32,
) -> tuple[np.ndarray, dict]:
    """Penalised greedy descent over this process's items ``lo .. lo + len(scores) - 1``.

    Args:
        scores: path scores of the owned items (row ``i`` is item ``lo + i``).
        previous: ``(V, J)`` every item's current paths (the same on every process).
        rounds: blocks per sweep, with the path sizes all-reduced before each.

    Returns:
        ``(paths (V, J), stats)``: the new full table (gathered on every process) and
        ``objective`` (after each sweep, over all items), ``largest_path_size``.
    """
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    n_own = scores.n_items
    prev_own = np.ascontiguousarray(previous[lo : lo + n_own], dtype=np.int64)
    # A path can hold every item of every process, hence max_path_size = V, not n_own.
    greedy = GreedySweep(
        scores, prev_own, penalty=penalty, power=power, max_path_size=len(previous)
    )
    active = greedy.active
    visit = np.flatnonzero(active)
    rng = np.random.default_rng([seed, rank])
    assign = prev_own.copy()
    # Sweep 1 starts from the items nobody places (the paper's empty start) and adds items as
    # they are placed; later sweeps start from every item's paths. Each sweep runs in `rounds`
    # blocks with the sizes summed over the processes before each block: with one block per
    # sweep, the processes moved items into the same small paths at once and overshot (on
    # latest-small, the largest path was 193 items against 109 for one process).
    counted = ~active
    objective = []
    for sweep in range(n_sweeps):
        order = rng.permutation(visit).astype(np.int64)
        for block in np.array_split(order, rounds):
            sizes = all_reduce_numpy(
                np.bincount(assign[counted].ravel(), minlength=n_paths).astype(np.int64)
            )
            greedy.sweep(block, assign, sizes, release=sweep > 0)
            counted[block] = True
        global_sizes = all_reduce_numpy(
            np.bincount(assign.ravel(), minlength=n_paths).astype(np.float64)
        )
        like = assignment_objective(scores, assign, 0.0, power)
        like = float(all_reduce_numpy(np.array([like]))[0])
        objective.append(like - penalty * float((global_sizes**power / power).sum()))
    # Gather the full table: ranges differ by at most one item, so pad to the widest.
    bounds = item_bounds(len(previous), world)
    width = int(np.diff(bounds).max())
    mine = torch.full((width, paths_per_item), -1, dtype=torch.int64)
    mine[:n_own] = torch.from_numpy(assign)
    parts = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(parts, mine)
    full = np.concatenate([parts[r].numpy()[: bounds[r + 1] - bounds[r]] for r in range(world)])
    return full, {"objective": objective, "largest_path_size": int(global_sizes.max(initial=0))}
