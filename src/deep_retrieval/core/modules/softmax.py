"""The YouTube-DNN-style softmax model: user encoder + output item table.

``logit(u, v) = ⟨q(u), k(v)⟩ + b[v]`` over all ``V`` items, trained with a (sampled) softmax
cross-entropy, where ``q(u) = encoder(u) / τ`` and ``k(v) = W[v]``, or with ``normalize`` the
L2-normalised versions (cosine similarity over a temperature ``τ``). The same module is DR's
reranker (paper notes §1.4, "a simple dot-product type of model").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .encoder import UserEncoder


def popularity_sampling_probs(item_counts: torch.Tensor, power: float = 0.75) -> torch.Tensor:
    """Negative-sampling proposal ``q(v) ∝ (count(v) + 1)^power`` (``(V,)`` float32, normalised).

    word2vec's smoothed unigram distribution: hard (popular) negatives more often than uniform
    sampling gives them, without ignoring the tail; the +1 keeps items unseen in training
    drawable. Pass it as ``sampling_probs`` to :meth:`SoftmaxModel.sampled_softmax_loss`.
    """
    q = (item_counts.to(torch.float64) + 1.0) ** power
    return (q / q.sum()).to(torch.float32)


class SoftmaxModel(nn.Module):
    """Encoder + item table (+ per-item bias).

    Args:
        n_items: ``V``.
        dim: embedding width ``E`` of the encoder and of the item table.
        encoder: ``"gru"`` or ``"mean"`` (see :class:`UserEncoder`).
        bias: learn a per-item bias ``b`` (absorbs popularity, leaving ``W`` for taste).
        project: mean encoder only: linear layer after pooling.
        normalize: L2-normalise user and item vectors (logits are cosines / ``temperature``).
        temperature: ``τ``, divides the dot product (not the bias).
    """

    def __init__(
        self,
        n_items: int,
        dim: int,
        encoder: str = "gru",
        *,
        bias: bool = True,
        project: bool = False,
        normalize: bool = False,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.n_items = n_items
        self.normalize = normalize
        self.temperature = temperature
        self.encoder = UserEncoder(n_items, dim, encoder, project=project)
        self.item_table = nn.Embedding(n_items, dim)
        nn.init.normal_(self.item_table.weight, std=dim**-0.5)
        self.item_bias = nn.Parameter(torch.zeros(n_items)) if bias else None

    @classmethod
    def fixed(
        cls, vectors: np.ndarray, bias: np.ndarray | None = None, *, temperature: float = 1.0
    ) -> SoftmaxModel:
        """A frozen model whose logit is the exact ``⟨u, v⟩ / τ + b_v`` over given ``(V, E)``
        item ``vectors``: mean encoder over the same vectors, item table = the vectors (one
        shared float32 copy, plus the encoder's zero padding row), ``bias`` ``(V,)`` or none."""
        table = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
        n_items, dim = table.shape
        with torch.device("meta"):  # shapes only: every tensor is replaced below
            model = cls(n_items, dim, "mean", bias=bias is not None, temperature=temperature)
        padded = torch.cat([table, torch.zeros(1, dim)])
        model.encoder.item_embedding.weight = nn.Parameter(padded, requires_grad=False)
        model.item_table.weight = nn.Parameter(padded[:n_items], requires_grad=False)
        if bias is not None:
            b = torch.as_tensor(np.asarray(bias, dtype=np.float32))
            model.item_bias = nn.Parameter(b, requires_grad=False)
        return model.eval()

    @torch.no_grad()
    def append_items(self, inputs: np.ndarray, keys: np.ndarray, bias: np.ndarray | None) -> None:
        """Grow the vocabulary by ``n`` items with the given ``(n, E)`` input embeddings, raw
        item-table rows and ``(n,)`` biases (ignored when the model has no bias)."""
        self.encoder.append_items(inputs)
        old = self.item_table.weight
        self.item_table = nn.Embedding.from_pretrained(
            torch.cat([old, torch.as_tensor(keys, dtype=old.dtype, device=old.device)]),
            freeze=False,
        )
        if self.item_bias is not None:
            extra = torch.as_tensor(
                np.zeros(len(keys)) if bias is None else bias, dtype=old.dtype, device=old.device
            )
            self.item_bias = nn.Parameter(torch.cat([self.item_bias.detach(), extra]))
        self.n_items += len(keys)

    def user_embedding(self, hist: torch.Tensor) -> torch.Tensor:
        """``(N, L)`` int64 history ids (``-1`` padded) → ``(N, E)`` raw encoder output."""
        return self.encoder(hist)

    def query(self, u: torch.Tensor) -> torch.Tensor:
        """``(N, E)`` encoder output → query vectors ``q`` (normalised if asked, over ``τ``)."""
        if self.normalize:
            u = F.normalize(u, dim=-1)
        return u / self.temperature

    def keys(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Item vectors ``k``: ``(V, E)`` for all items, or ``items.shape + (E,)``."""
        w = self.item_table.weight if items is None else self.item_table(items)
        return F.normalize(w, dim=-1) if self.normalize else w

    def item_embeddings(self) -> torch.Tensor:
        """``(V, E)`` item vectors ``k`` (normalised when the model normalises)."""
        return self.keys()

    def bias(self) -> torch.Tensor | None:
        """``(V,)`` per-item bias, or ``None``."""
        return self.item_bias

    def scores(self, u: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of users (encoder output ``u (N, E)``) for ``items``.

        Args:
            items: ``None`` → all items, ``(N, V)``; ``(C,)`` ids shared by every user →
                ``(N, C)``; ``(N, C)`` ids per user → ``(N, C)``.
        """
        q = self.query(u)
        if items is None:
            out = q @ self.keys().T  # (N, V)
            return out + self.item_bias if self.item_bias is not None else out
        if items.dim() == 1:
            out = q @ self.keys(items).T  # (N, C)
        else:
            out = torch.einsum("ne,nce->nc", q, self.keys(items))  # (N, C)
        return out + self.item_bias[items] if self.item_bias is not None else out

    def sampled_softmax_loss(
        self,
        u: torch.Tensor,
        targets: torch.Tensor,
        n_negatives: int,
        *,
        sampling_probs: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy of ``targets`` under a full or sampled softmax.

        ``n_negatives >= V``: the exact softmax over all items. Otherwise ``n_negatives`` items
        are drawn (with replacement) from ``sampling_probs`` (uniform when ``None``) once per
        batch and shared by every row. Each logit gets the log-Q correction
        ``− log(n_negatives · q(v))`` (Bengio & Senécal; Jean et al. 2015) so that the sampled
        softmax is a consistent estimate of the full one whatever ``q`` is; a negative equal to
        the row's own target is masked out (it is not a negative for that row).

        Args:
            u: ``(N, E)`` user embeddings.
            targets: ``(N,)`` int64 item ids.
            sampling_probs: ``(V,)`` proposal ``q`` (need not be normalised).
        """
        if n_negatives >= self.n_items:
            logits = self.scores(u)  # (N, V)
            return F.cross_entropy(logits, targets)
        negatives, log_q = draw_negatives(
            self.n_items, n_negatives, sampling_probs, device=u.device, generator=generator
        )
        # One lookup for targets and negatives: a single (dense) gradient for the item table.
        both = torch.cat([targets, negatives])
        k = self.keys(both)  # (N + n_negatives, E)
        b = (
            self.item_bias[both]
            if self.item_bias is not None
            else torch.zeros_like(both, dtype=u.dtype)
        )
        q = self.query(u)  # (N, E)
        n = len(targets)
        pos = (q * k[:n]).sum(dim=1) + b[:n] - log_q(targets)  # (N,)
        neg = q @ k[n:].T + b[n:] - log_q(negatives)  # (N, n_negatives)
        return sampled_cross_entropy(pos, neg, targets, negatives)


def draw_negatives(
    n_items: int,
    n_negatives: int,
    sampling_probs: torch.Tensor | None,
    *,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """``n_negatives`` item ids drawn with replacement from ``sampling_probs`` ``(V,)`` (need not
    be normalised; ``None``: uniform), and ``log_q(ids)``: the log-Q correction
    ``log(n_negatives · q(v))`` to subtract from each sampled logit (Bengio & Senécal; Jean et
    al. 2015), so that the sampled softmax is a consistent estimate of the full one."""
    if sampling_probs is None:
        negatives = torch.randint(n_items, (n_negatives,), device=device, generator=generator)
        constant = math.log(n_negatives / n_items)
        return negatives, lambda ids: torch.full(ids.shape, constant, device=device)
    q = sampling_probs / sampling_probs.sum()
    negatives = torch.multinomial(q, n_negatives, replacement=True, generator=generator)
    return negatives, lambda ids: torch.log(n_negatives * q[ids])


def sampled_cross_entropy(
    pos: torch.Tensor, neg: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy of the target column: ``pos`` ``(N,)`` target logits and ``neg``
    ``(N, n)`` logits of the shared ``negatives`` ``(n,)`` (both log-Q corrected); a negative
    equal to the row's own target is masked out (it is not a negative for that row)."""
    neg = neg.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([pos[:, None], neg], dim=1)  # (N, 1 + n); the target is column 0
    return F.cross_entropy(logits, torch.zeros_like(targets))
