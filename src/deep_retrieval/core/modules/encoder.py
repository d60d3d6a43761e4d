"""User encoder: a behaviour sequence of item ids → one user vector.

Shared by the softmax (brute-force) baseline, Deep Retrieval's structure network and its reranker
(paper notes §1.3: "a recurrent neural network with GRU is utilized to project the behavior
sequence onto a fixed dimension embedding").

Input convention: ``(N, L)`` int64 item ids, right-aligned (the newest item in the last column)
with ``-1`` padding on the left. A ``-1`` anywhere else (e.g. an item removed by history dropout)
is treated as missing too, so the encoder never sees padding as data.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ENCODER_KINDS = ("gru", "mean")


class UserEncoder(nn.Module):
    """Item-id history → user vector.

    ``kind="gru"``: item embedding → single-layer GRU; the readout is the hidden state after the
    newest real item. Real items are moved to the front before the GRU runs and the state is read
    right after the last of them, so the result does not depend on how much padding there is.

    ``kind="mean"``: masked mean of the item embeddings, optionally followed by a linear layer.
    Order-free, hence the right choice for unordered histories.

    An empty history (all ``-1``) gives a finite vector: the GRU state after one padding-token
    step (the padding embedding is fixed at zero), or the mean encoder's zero vector (→ the
    projection's bias when ``project``).

    Args:
        n_items: vocabulary size ``V``; valid ids are ``0 .. V-1``.
        dim: item-embedding and output width ``E``.
        kind: ``"gru"`` or ``"mean"``.
        project: mean encoder only: add a ``Linear(E, E)`` after pooling.
    """

    def __init__(self, n_items: int, dim: int, kind: str = "gru", *, project: bool = False) -> None:
        super().__init__()
        if kind not in ENCODER_KINDS:
            raise ValueError(f"unknown encoder kind {kind!r}; choose one of {ENCODER_KINDS}")
        if n_items < 1 or dim < 1:
            raise ValueError(f"UserEncoder needs n_items ≥ 1 and dim ≥ 1, got {n_items}, {dim}")
        self.n_items = n_items
        self.dim = dim
        self.kind = kind
        self.pad = n_items  # row of the padding token: never trained, always zero
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=self.pad)
        nn.init.normal_(self.item_embedding.weight[:n_items], std=dim**-0.5)
        self.gru = nn.GRU(dim, dim, batch_first=True) if kind == "gru" else None
        self.proj = nn.Linear(dim, dim) if (kind == "mean" and project) else None

    @property
    def output_dim(self) -> int:
        return self.dim

    def forward(self, hist: torch.Tensor) -> torch.Tensor:
        """``(N, L)`` int64 ids (``-1`` = missing) → ``(N, E)`` float user vectors."""
        if hist.dim() != 2:
            raise ValueError(
                f"UserEncoder expects a (N, L) id matrix, got shape {tuple(hist.shape)}"
            )
        mask = hist >= 0  # (N, L)
        ids = torch.where(mask, hist, torch.full_like(hist, self.pad))
        if self.kind == "mean":
            return self._mean(ids, mask)
        return self._gru(ids, mask)

    def history_vectors(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, L)`` int64 ids (``-1`` = missing) → ``((N, L, E)`` item embeddings (zero on
        padding), ``(N, L)`` bool mask of the real items``)``: the history one item at a time,
        as the candidate-aware reranker reads it."""
        mask = hist >= 0
        ids = torch.where(mask, hist, torch.full_like(hist, self.pad))
        return self.item_embedding(ids), mask

    @torch.no_grad()
    def append_items(self, vectors: np.ndarray) -> None:
        """Grow the vocabulary by ``n`` items with the given ``(n, E)`` embeddings; the padding row
        moves to the new end (it stays zero)."""
        old = self.item_embedding.weight
        n_new = self.n_items + len(vectors)
        table = torch.zeros((n_new + 1, self.dim), dtype=old.dtype, device=old.device)
        table[: self.n_items] = old[: self.n_items]
        table[self.n_items : n_new] = torch.as_tensor(vectors, dtype=old.dtype, device=old.device)
        self.item_embedding = nn.Embedding.from_pretrained(table, freeze=False, padding_idx=n_new)
        self.n_items = self.pad = n_new

    def encode_row(self, ids: np.ndarray) -> torch.Tensor | None:
        """One history (``(L,)`` item ids, no padding) → ``(1, E)``, or ``None`` where there is no
        shortcut (GRU, projection, a table off the CPU, autograd on).

        The single-query fast path of :meth:`forward` for mean pooling: a numpy mean over the
        table's rows (torch's per-op overhead was most of a one-user encoding, ~0.1 ms).
        """
        weight = self.item_embedding.weight
        if (
            self.kind != "mean"
            or self.proj is not None
            or weight.device.type != "cpu"
            or torch.is_grad_enabled()
        ):
            return None
        table = weight.detach().numpy()
        vec = table[ids].mean(axis=0) if len(ids) else np.zeros(table.shape[1], table.dtype)
        return torch.from_numpy(np.ascontiguousarray(vec[None], dtype=np.float32))

    def encode_positions(
        self,
        items: torch.Tensor,
        lengths: torch.Tensor,
        history_len: int,
        *,
        ordered: bool,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The user vector at every position of several rows, each row embedded once.

        Mean encoder only: the fast twin of calling :meth:`forward` on one history matrix per
        position. Rows are concatenated in ``items``. For ``ordered`` rows, position ``p``'s
        history is the ``min(p, history_len)`` items before it (a causal pass: prefix sums of the
        item embeddings, differenced over the window); for unordered rows it is every *other*
        item of the row (leave-one-out: the row sum minus the item). A position whose history is
        empty gets the encoder's empty-history vector, as :meth:`forward` gives it.

        Args:
            items: ``(n,)`` int64 item ids of the rows, concatenated.
            lengths: ``(G,)`` int64 row lengths, summing to ``n``.
            history_len: ``L``, the window of ordered rows (unordered rows use the whole row).
            ordered: which of the two histories above.
            keep: optional ``(n,)`` or ``(M, n)`` bool dropout masks: position ``i`` reads mask
                ``i mod M``, and the items it marks ``False`` are left out of that position's
                history.

        Returns:
            ``(n, E)`` user vectors, row-major like ``items``.
        """
        if self.kind != "mean":
            raise ValueError(
                "encode_positions needs the mean encoder (the GRU has no such shortcut)"
            )
        emb = self.item_embedding(items)  # (n, E)
        if keep is None:
            keep = torch.ones(1, len(items), dtype=torch.bool, device=items.device)
        keep = keep.reshape(-1, len(items))  # (M, n)
        w = keep.to(emb.dtype)  # (M, n)
        wemb = emb[None] * w[:, :, None]  # (M, n, E)
        csum = F.pad(torch.cumsum(wemb, dim=1), (0, 0, 1, 0))  # (M, n + 1, E): csum[:, i] = Σ_{<i}
        ccount = F.pad(torch.cumsum(w, dim=1), (1, 0))  # (M, n + 1)
        starts = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)  # (n,)
        idx = torch.arange(len(items), device=items.device)
        # Position i reads mask m = i mod M: neighbouring positions, whose windows overlap, see
        # different masks, so their dropout noise is (nearly) independent as in the reference.
        m = idx % keep.shape[0]
        if ordered:
            lo = torch.maximum(starts, idx - history_len)
            total = csum[m, idx] - csum[m, lo]
            count = ccount[m, idx] - ccount[m, lo]
        else:
            ends = starts + torch.repeat_interleave(lengths, lengths)
            total = csum[m, ends] - csum[m, starts] - wemb[m, idx]
            count = ccount[m, ends] - ccount[m, starts] - w[m, idx]
        out = total / count.clamp(min=1.0)[:, None]  # empty history → zeros, like embedding_bag
        return self.proj(out) if self.proj is not None else out

    def _mean(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # embedding_bag over the real items only (a flat id list + row offsets): its backward
        # accumulates straight into the table, several times faster on CPU than embedding +
        # sum, whose backward sorts all N·L indices, padding included.
        lengths = mask.sum(dim=1)  # (N,)
        flat = ids[mask]  # (Σ lengths,) row-major, so rows stay contiguous
        offsets = torch.cumsum(lengths, dim=0) - lengths  # (N,) start of each row in `flat`
        out = F.embedding_bag(flat, self.item_embedding.weight, offsets, mode="mean")  # (N, E)
        # Empty rows are empty bags: embedding_bag returns zeros for them.
        return self.proj(out) if self.proj is not None else out

    def _gru(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        assert self.gru is not None  # only called for kind == "gru"
        n_rows = ids.shape[0]
        lengths = mask.sum(dim=1)  # (N,)
        # Move real items to the front in their order (stable sort on "is padding"). The GRU is
        # causal, so its output at step lengths[i] − 1 has seen exactly the real items of row i;
        # what it computes on the trailing padding is never read. (Same result as a
        # PackedSequence, about twice as fast on CPU, where packed GRUs take a slow path.)
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
        ids = torch.gather(ids, 1, order)  # (N, L), left-aligned
        width = max(int(lengths.max().item()) if n_rows else 0, 1)
        # (N, width, E): the trailing columns that are all padding are dropped.
        emb = self.item_embedding(ids[:, :width])
        out, _ = self.gru(emb)  # (N, width, E)
        # Empty rows read step 0, the state after one (zero) padding embedding: finite, learned.
        last = (lengths - 1).clamp(min=0)
        return out[torch.arange(n_rows, device=ids.device), last]  # (N, E)
