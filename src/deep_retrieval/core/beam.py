"""Beam search over the structure (paper Algorithm 1) and its exhaustive reference.

Shape letters as in :mod:`deep_retrieval.core.paths`.

Both functions return paths sorted by log-probability, descending; exact ties are broken by the
path itself in lexicographic order, i.e. by ascending path id. For a beam at least as wide as
``K**D`` the two functions therefore return the same paths in the same order.

Autograd: neither function switches it off. Selecting beams is not differentiable, but the returned
log-probabilities are, which keeps the door open to beam-aware training. For retrieval and for
the path-score pass, call them under ``torch.no_grad()`` (or ``torch.inference_mode()``) so no graph
is kept.
"""

from __future__ import annotations

from typing import NamedTuple, cast

import numpy as np
import torch
from torch import Tensor

from .modules.structure import StructureNet

#: ``enumerate_paths`` refuses structures with more paths than this (it is a test reference).
MAX_ENUMERATED_PATHS = 1_000_000


class BeamResult(NamedTuple):
    """Paths and their log-probabilities, best first; unpacks as ``paths, log_probs = result``."""

    paths: Tensor  # (N, B, D) long
    log_probs: Tensor  # (N, B)


def _sort_paths(paths: Tensor, log_probs: Tensor) -> BeamResult:
    """Order each row by log-prob descending, ties by path (lexicographic = path id) ascending.

    Stable sorts from the least significant key to the most significant one: layer ``D`` first,
    ..., layer 1, and the log-probability last.
    """
    n_users, width, n_layers = paths.shape
    order = torch.arange(width, device=paths.device).expand(n_users, width)  # (N, B)
    for d in reversed(range(n_layers)):
        key = paths[:, :, d].gather(1, order)
        order = order.gather(1, torch.argsort(key, dim=1, stable=True))
    key = log_probs.gather(1, order)
    order = order.gather(1, torch.argsort(key, dim=1, descending=True, stable=True))
    paths = paths.gather(1, order[:, :, None].expand(n_users, width, n_layers))  # (N, B, D)
    return BeamResult(paths, log_probs.gather(1, order))


def _check_user_emb(net: StructureNet, user_emb: Tensor) -> None:
    if user_emb.dim() != 2 or user_emb.shape[1] != net.input_dim:
        raise ValueError(
            f"user_emb must have shape (N, input_dim={net.input_dim}), got {tuple(user_emb.shape)}"
        )


def beam_search(
    net: StructureNet, user_emb: Tensor, beam_size: int, *, ordered: bool = True
) -> BeamResult:
    """The top paths of each user by cumulative log-probability (Algorithm 1).

    Layer 1 keeps the top ``min(B, K)`` nodes; every further layer scores the ``B·K`` successors
    of the current beams by ``log p(c_1..c_{d-1} | u) + log p(c_d | u, c_<d)`` and keeps the top
    ``B`` of the flattened ``B·K`` axis. Batched over users; the only Python loop is over layers.
    When fewer than ``B`` paths exist at a layer (``K**d < B``) all are kept, so a beam of at least
    ``K**D`` returns every path, exactly like :func:`enumerate_paths`.

    Beam search is approximate: for ``B < K**D`` it can miss paths whose prefix fell out of the
    beam. Which of several exactly tied candidates survives the cut at a layer is whatever
    ``torch.topk`` picks; the returned order is always the documented one (see module docstring).

    Args:
        net: the structure model.
        user_emb: ``(N, E)`` user embeddings.
        beam_size: ``B`` ≥ 1.
        ordered: sort each row as the module docstring says; ``False`` returns the same paths in
            ``topk``'s order (a serving shortcut when only the set matters).

    Returns:
        :class:`BeamResult` with ``paths (N, B', D)`` long and ``log_probs (N, B')``,
        ``B' = min(B, K**D)``, best first when ``ordered``.
    """
    if int(beam_size) != beam_size or beam_size < 1:
        raise ValueError(f"beam_size must be an integer >= 1, got {beam_size!r}")
    _check_user_emb(net, user_emb)
    n_users = user_emb.shape[0]
    n_nodes = net.n_nodes

    empty = torch.zeros(n_users, 0, dtype=torch.long, device=user_emb.device)
    first = net.layer_log_probs(user_emb, empty)  # (N, K)
    scores, nodes = first.topk(min(beam_size, n_nodes), dim=1)  # (N, B)
    paths = nodes[:, :, None]  # (N, B, 1)
    u = user_emb[:, None, :]  # (N, 1, E)
    for d in range(1, net.n_layers):
        width = paths.shape[1]
        step = net.layer_log_probs(u, paths)  # (N, B, K)
        successors = (scores[:, :, None] + step).reshape(n_users, width * n_nodes)  # (N, B·K)
        scores, flat = successors.topk(min(beam_size, width * n_nodes), dim=1)  # (N, B)
        parent = torch.div(flat, n_nodes, rounding_mode="floor")  # (N, B)
        node = flat - parent * n_nodes  # (N, B)
        kept = paths.gather(1, parent[:, :, None].expand(-1, -1, d))  # (N, B, d)
        paths = torch.cat([kept, node[:, :, None]], dim=2)  # (N, B, d + 1)
    return _sort_paths(paths, scores) if ordered else BeamResult(paths, scores)


def all_paths(n_layers: int, n_nodes: int, device: torch.device | str | None = None) -> Tensor:
    """``(K**D, D)`` long: every path, in path-id (lexicographic) order."""
    ids = torch.arange(n_nodes**n_layers, device=device)  # (K**D,)
    out = torch.empty(ids.shape[0], n_layers, dtype=torch.long, device=device)
    for d in reversed(range(n_layers)):
        out[:, d] = ids % n_nodes
        ids = torch.div(ids, n_nodes, rounding_mode="floor")
    return out


def enumerate_paths(net: StructureNet, user_emb: Tensor) -> BeamResult:
    """Exhaustive reference for :func:`beam_search`: all ``K**D`` paths scored by teacher forcing.

    Scores come from :meth:`StructureNet.log_prob` (not from the beam code), sorted like
    :func:`beam_search` output. Memory grows as ``N · K**D``; meant for tests and small structures.

    Args:
        net: the structure model.
        user_emb: ``(N, E)``.

    Returns:
        :class:`BeamResult` with ``paths (N, K**D, D)`` and ``log_probs (N, K**D)``, best first.
    """
    _check_user_emb(net, user_emb)
    n_paths = net.n_nodes**net.n_layers
    if n_paths > MAX_ENUMERATED_PATHS:
        raise ValueError(
            f"enumerate_paths scores all K**D = {n_paths} paths; it is a reference for small "
            f"structures (at most {MAX_ENUMERATED_PATHS}); use beam_search instead"
        )
    n_users = user_emb.shape[0]
    every = all_paths(net.n_layers, net.n_nodes, device=user_emb.device)  # (K**D, D)
    paths = every[None].expand(n_users, -1, -1)  # (N, K**D, D)
    log_probs = net.log_prob(user_emb, paths)  # (N, K**D)
    # Paths are already in path-id order, so one stable sort yields the documented tie rule.
    order = torch.argsort(log_probs, dim=1, descending=True, stable=True)  # (N, K**D)
    return BeamResult(
        every[order],  # (N, K**D, D)
        log_probs.gather(1, order),
    )


class CompiledStructure:
    """An inference-only numpy copy of a :class:`StructureNet` for low-latency beam search on CPU.

    The first linear map of layer ``d`` acts on ``concat(u, e_1[c_1], …, e_{d-1}[c_{d-1}])``, so it
    splits into ``W_u·u`` (once per user, not once per beam) plus one ``(K, H)`` table per earlier
    layer, ``T_{d,i} = e_i · W_iᵀ``, folded in advance: a beam step is a few gathers, one small
    matmul and a partial sort, with numpy's few-microsecond call overhead instead of torch's
    per-op dispatch. :func:`beam_search` stays the reference (and the GPU path); a test checks
    that both return the same paths and log-probabilities.

    One matmul for the ``W_u·u`` of all layers (their ``W_u`` side by side) would save ``D − 1``
    calls, but OpenBLAS then rounds some shapes differently (``E = 64, H = 100``): the results
    would move by an ulp, so each layer keeps its own.

    Args:
        net: the trained structure network (copied; later changes to it are not seen).
    """

    def __init__(self, net: StructureNet) -> None:
        self.n_layers, self.n_nodes, self.input_dim = net.n_layers, net.n_nodes, net.input_dim
        e, nd = net.input_dim, net.node_dim
        self.user_w: list[np.ndarray] = []
        self.bias: list[np.ndarray] = []
        self.tables: list[list[np.ndarray]] = []
        self.out_w: list[np.ndarray | None] = []  # None for a single-Linear layer
        self.out_b: list[np.ndarray | None] = []
        # StructureNet's ModuleLists hold plain Modules: Embeddings, and per layer a Linear or a
        # Sequential(Linear, ReLU, Linear) (StructureNet._make_layer).
        node_emb = [cast(torch.nn.Embedding, m) for m in net.node_emb]
        with torch.no_grad():
            for d, layer in enumerate(net.layers):
                if isinstance(layer, torch.nn.Linear):
                    first, last = layer, None
                else:
                    mlp = cast(torch.nn.Sequential, layer)
                    first, last = cast(torch.nn.Linear, mlp[0]), cast(torch.nn.Linear, mlp[2])
                w = first.weight.detach().cpu().double()  # (H, E + d·nd)
                self.user_w.append(np.ascontiguousarray(w[:, :e].T.float().numpy()))  # (E, H)
                self.bias.append(first.bias.detach().cpu().float().numpy())
                tables = []  # each (K, H)
                for i in range(d):
                    emb_i = node_emb[i].weight.detach().cpu().double()  # (K, nd)
                    tables.append((emb_i @ w[:, e + i * nd : e + (i + 1) * nd].T).float().numpy())
                self.tables.append(tables)
                if last is None:
                    self.out_w.append(None)
                    self.out_b.append(None)
                else:
                    w_out = last.weight.detach().cpu().float().numpy()
                    self.out_w.append(np.ascontiguousarray(w_out.T))  # (H, K)
                    self.out_b.append(last.bias.detach().cpu().float().numpy())

    def _log_probs(self, d: int, z: np.ndarray) -> np.ndarray:
        """Layer ``d``'s log-softmax from its first-linear output ``z (..., H)``, computed in
        ``z``'s memory where it can (the caller hands over a scratch array)."""
        if self.out_w[d] is not None:
            np.maximum(z, 0.0, out=z)
            z = z @ self.out_w[d]  # (..., K)
            z += self.out_b[d]
        z -= z.max(axis=-1, keepdims=True)
        norm = np.exp(z).sum(axis=-1, keepdims=True)
        z -= np.log(norm, out=norm)
        return z

    def beam_search(self, user_emb: np.ndarray, beam_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The paths of :func:`beam_search`, unordered within a row.

        Args:
            user_emb: ``(N, E)`` float32.
            beam_size: ``B`` ≥ 1.

        Returns:
            ``(paths (N, B', D) int64, log_probs (N, B') float32)``, ``B' = min(B, K**D)``.
        """
        if int(beam_size) != beam_size or beam_size < 1:
            raise ValueError(f"beam_size must be an integer >= 1, got {beam_size!r}")
        u = np.asarray(user_emb, dtype=np.float32)
        if u.ndim != 2 or u.shape[1] != self.input_dim:
            raise ValueError(
                f"user_emb must have shape (N, input_dim={self.input_dim}), got {u.shape}"
            )
        n, k = u.shape[0], self.n_nodes
        rows = np.arange(n)[:, None]
        z = u @ self.user_w[0]
        z += self.bias[0]
        scores = self._log_probs(0, z)  # (N, K)
        width = min(beam_size, k)
        nodes = _top_unordered(scores, width)  # (N, B)
        scores = scores[rows, nodes]
        paths = nodes[:, :, None]
        for d in range(1, self.n_layers):
            # (T_0[c_1] + W_u·u) + T_1[c_2] + …: the reference's sums, in its order (a + b is
            # exact-commutative), accumulated in one (N, B, H) array.
            projected = u @ self.user_w[d]
            projected += self.bias[d]
            z = self.tables[d][0][paths[:, :, 0]]  # (N, B, H)
            z += projected[:, None, :]
            for i in range(1, d):
                z += self.tables[d][i][paths[:, :, i]]
            succ = self._log_probs(d, z)  # (N, B, K)
            succ += scores[:, :, None]
            succ = succ.reshape(n, -1)  # (N, B·K)
            width = min(beam_size, succ.shape[1])
            flat = _top_unordered(succ, width, scratch=True)  # negates succ in place
            scores = -succ[rows, flat]
            parent, node = np.divmod(flat, k)
            paths = np.concatenate([paths[rows, parent], node[:, :, None]], axis=2)
        return paths.astype(np.int64), scores.astype(np.float32)


def _top_unordered(x: np.ndarray, width: int, *, scratch: bool = False) -> np.ndarray:
    """Column indices of the ``width`` largest entries of each row, in no particular order.

    ``scratch``: ``x`` is overwritten with ``-x`` (the partition's input, so no copy is made);
    the caller reads the selected values back negated.
    """
    if width >= x.shape[1]:
        if scratch:
            np.negative(x, out=x)
        return np.broadcast_to(np.arange(x.shape[1]), x.shape).copy()
    neg = np.negative(x, out=x if scratch else None)
    return np.argpartition(neg, width - 1, axis=1)[:, :width]
