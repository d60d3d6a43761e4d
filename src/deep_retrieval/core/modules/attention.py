"""The candidate-aware reranker's attention term (``dr.reranker = "attention"``).

Target attention, as in DIN (Zhou et al. 2018) and TDM's attention-DNN: the user is read off
their history *conditioned on the item being scored*. For a candidate ``v`` with item vector
``e_v`` and history item vectors ``h_1 … h_L``::

    a_l(v) = softmax_l(⟨P h_l, Q e_v⟩ / √d)          (padding masked out)
    t(u, v) = ⟨Σ_l a_l(v) · R h_l, S e_v⟩

with ``P, Q, R, S`` learned ``E → d`` projections. The reranker's logit is the dot-product
model's plus this term, ``⟨q(u), k(v)⟩ + b_v + t(u, v)``: an item that matches one strand of a
varied history can score high although it is far from the history's mean. No inner-product
index can search it (the user side depends on ``v``); DR only scores its candidates with it.

Cost: ``O(C · L · d)`` per user for ``C`` candidates and ``L`` history items.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TargetAttention(nn.Module):
    """``t(u, v)`` above, over raw (unnormalised) item vectors of width ``E``.

    Args:
        dim: ``E``, the width of the history and candidate vectors.
        attention_dim: ``d``, the width the four projections map to.
    """

    def __init__(self, dim: int, attention_dim: int) -> None:
        super().__init__()
        if dim < 1 or attention_dim < 1:
            raise ValueError(f"TargetAttention needs dim ≥ 1 and attention_dim ≥ 1, got {dim},"
                             f" {attention_dim}")
        self.attention_dim = attention_dim
        self.query = nn.Linear(dim, attention_dim, bias=False)  # Q, candidate side
        self.key = nn.Linear(dim, attention_dim, bias=False)  # P, history side
        self.value = nn.Linear(dim, attention_dim, bias=False)  # R, history side
        self.out = nn.Linear(dim, attention_dim, bias=False)  # S, candidate side
        # Start at t ≡ 0: training begins from the dot-product model's ranking exactly.
        nn.init.zeros_(self.out.weight)

    def forward(
        self, history: torch.Tensor, mask: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """Attention terms of ``N`` users for their candidates.

        Args:
            history: ``(N, L, E)`` history item vectors.
            mask: ``(N, L)`` bool, ``False`` on padding. A row with no history gets ``t = 0``.
            items: ``(C, E)`` candidates shared by every user, or ``(N, C, E)`` per user.

        Returns:
            ``(N, C)`` terms ``t(u, v)``.
        """
        keys = self.key(history)  # (N, L, d)
        values = self.value(history)  # (N, L, d)
        q, o = self.query(items), self.out(items)  # (C, d) or (N, C, d)
        if items.dim() == 2:
            logits = torch.einsum("cd,nld->ncl", q, keys)  # (N, C, L)
        else:
            logits = torch.bmm(q, keys.transpose(1, 2))  # (N, C, L)
        logits = logits / math.sqrt(self.attention_dim)
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
        weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # empty rows: all -inf → 0
        pooled = torch.bmm(weights, values)  # (N, C, d)
        return (pooled * (o if items.dim() == 3 else o[None])).sum(dim=-1)  # (N, C)
