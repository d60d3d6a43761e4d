"""Brute-force baseline: the softmax model scored exactly against every item.

Paper notes §1.4: "The brute-force baseline is exactly this softmax model's inner product (user
embedding · item embedding of the softmax model) over all items." Training is next-item
prediction on :class:`~deep_retrieval.data.samples.TrainingSamples` with a (sampled) softmax and
Adam; retrieval is one matmul against the whole item table plus top-n, batch by batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..config import ENCODERS, NEGATIVE_SAMPLERS, SoftmaxConfig
from ..core.contract import check_query, check_train, empty_results
from ..core.modules.softmax import SoftmaxModel, popularity_sampling_probs
from ..data.samples import TrainingSamples
from ..data.types import Sequences
from ..utils import adam

__all__ = ["ENCODERS", "SAMPLERS", "SoftmaxRecommender"]

# The encoder and sampler choices, importable from here under their old names; they are defined,
# and checked, with SoftmaxConfig in deep_retrieval.config.
SAMPLERS = NEGATIVE_SAMPLERS


class SoftmaxRecommender:
    """YouTube-DNN-style retrieval model (``brute-force`` in the benchmark).

    Args:
        config: :class:`~deep_retrieval.config.SoftmaxConfig`.
        seed: seeds initialisation, sample order, dropout and negatives.
        device: torch device for training and scoring (``"cpu"``, ``"cuda"``, ``"cuda:1"`` …).
        query_batch_size: users per scoring block in ``recommend`` / ``user_embeddings``.

    Attributes:
        model_: the trained :class:`~deep_retrieval.core.modules.softmax.SoftmaxModel` (eval mode).
        encoder_: the encoder kind actually used (``"auto"`` resolved).
        history_ordered_: whether the training rows were time-ordered.
        losses_: mean training loss of each epoch.
    """

    name = "brute-force"

    def __init__(
        self,
        config: SoftmaxConfig | None = None,
        *,
        seed: int = 0,
        device: str = "cpu",
        query_batch_size: int = 256,
    ) -> None:
        self.config = config if config is not None else SoftmaxConfig()
        self.seed = seed
        self.device = device
        self.query_batch_size = query_batch_size
        self.model_: SoftmaxModel | None = None
        self.encoder_: str | None = None
        self.history_ordered_: bool | None = None
        self.losses_: list[float] = []
        self.n_items_: int | None = None

    # ------------------------------------------------------------------ training

    def fit(
        self,
        train: Sequences,
        n_items: int,
        *,
        on_epoch: Callable[[int, float], None] | None = None,
    ) -> SoftmaxRecommender:
        """Train from scratch on every training sample.

        Args:
            train: training rows (``train.ordered`` picks the sample construction and, with
                ``encoder="auto"``, the encoder: GRU for ordered rows, mean pooling otherwise).
            n_items: ``V``.
            on_epoch: called as ``on_epoch(epoch, mean_loss)`` after each epoch (1-based); the
                library itself never prints.
        """
        train = check_train(train, n_items, self.name)
        cfg = self.config
        device = torch.device(self.device)
        self.n_items_ = int(n_items)
        self.history_ordered_ = bool(train.ordered)
        self.encoder_ = (
            cfg.encoder if cfg.encoder != "auto" else ("gru" if train.ordered else "mean")
        )
        samples = TrainingSamples(
            train,
            cfg.history_len,
            max_samples_per_user=cfg.max_samples_per_user,
            seed=self.seed,
        )
        if len(samples) == 0:
            raise ValueError(
                "no training samples: every training row has a single item; the softmax model"
                " needs rows with at least two interactions"
            )
        # Seed the initialisation without touching the caller's global RNG state.
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed)
            model = SoftmaxModel(
                n_items,
                cfg.embedding_dim,
                self.encoder_,
                bias=cfg.item_bias,
                project=cfg.project,
                normalize=cfg.normalize,
                temperature=cfg.temperature,
            ).to(device)
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed)
        sampling_probs = None
        if cfg.negative_sampling == "popularity":
            counts = torch.from_numpy(np.bincount(train.items, minlength=n_items))
            sampling_probs = popularity_sampling_probs(counts).to(device)
        optimizer = adam(model.parameters(), cfg.lr, cfg.weight_decay)
        self.losses_ = []
        # Set before training so that on_epoch callbacks may already call recommend().
        self.model_ = model
        model.train()
        for epoch in range(1, cfg.epochs + 1):
            # Summed on the device: a float() per step would synchronise a GPU every batch.
            total, count = torch.zeros((), device=device), 0
            for hist, target in samples.epoch(cfg.batch_size, history_dropout=cfg.history_dropout):
                hist_t = torch.from_numpy(hist).to(device)
                target_t = torch.from_numpy(target).to(device)
                u = model.user_embedding(hist_t)  # (B, E)
                loss = model.sampled_softmax_loss(
                    u,
                    target_t,
                    cfg.n_negatives,
                    sampling_probs=sampling_probs,
                    generator=generator,
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(target)
                count += len(target)
            self.losses_.append(float(total) / count)
            if on_epoch is not None:
                on_epoch(epoch, self.losses_[-1])
        model.eval()
        return self

    # ------------------------------------------------------------------ inference

    def _history_matrix(self, histories: Sequences) -> np.ndarray:
        """``(U, L')`` right-aligned, ``-1``-padded id matrix for the encoder.

        Ordered rows keep their newest ``history_len`` items (as in training). Unordered rows are
        order-free sets for the mean encoder, so all their items are used (capped at
        ``query_history_len``) rather than an arbitrary id-sorted tail.
        """
        cfg = self.config
        if histories.ordered or self.encoder_ == "gru":
            width = cfg.history_len
        else:
            longest = int(histories.lengths.max(initial=0))
            width = max(1, min(longest, cfg.query_history_len))
        return histories.padded(width)

    @torch.no_grad()
    def _user_vectors(self, histories: Sequences) -> torch.Tensor:
        """``(U, E)`` float32 encoder outputs on ``self.device``."""
        assert self.model_ is not None  # fitted: the callers' check_query raised otherwise
        if len(histories) == 1:  # one query: the encoder's numpy shortcut, where it has one
            row = self._history_matrix(histories)[0]
            vec = self.model_.encoder.encode_row(row[row >= 0])
            if vec is not None:
                return vec
        hist = torch.from_numpy(self._history_matrix(histories)).to(self.device)
        return self.model_.user_embedding(hist).float()

    def user_embeddings(self, histories: Sequences) -> np.ndarray:
        """``(U, E')`` float32 query vectors: ``⟨user, item⟩`` is exactly the model's logit.

        With an item bias, ``E' = E + 1``: the user vector gets a constant 1 and the item vector
        its bias (so inner-product indexes need no special case).
        """
        histories, _ = check_query(histories, 1, None, self.n_items_, self.name)
        assert self.model_ is not None  # fitted: check_query raised otherwise
        out = []
        for start in range(0, len(histories), self.query_batch_size):
            stop = min(start + self.query_batch_size, len(histories))
            u = self.model_.query(self._user_vectors(histories.rows(np.arange(start, stop))))
            if self.model_.bias() is not None:
                u = torch.cat([u, torch.ones(len(u), 1, device=u.device)], dim=1)
            out.append(u.cpu().numpy())
        width = self.config.embedding_dim + (1 if self.config.item_bias else 0)
        return np.concatenate(out) if out else np.zeros((0, width), dtype=np.float32)

    @torch.no_grad()
    def item_embeddings(self) -> np.ndarray:
        """``(V, E')`` float32 item vectors matching :meth:`user_embeddings` (bias appended)."""
        if self.model_ is None:
            raise ValueError(f"{self.name}: call fit(train, n_items) before item_embeddings")
        w = self.model_.item_embeddings().float()
        b = self.model_.bias()
        if b is not None:
            w = torch.cat([w, b.float()[:, None]], dim=1)
        return w.cpu().numpy().astype(np.float32, copy=True)

    @torch.no_grad()
    def recommend(
        self, histories: Sequences, n: int, *, exclude: Sequences | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``n`` by logit over all ``V`` items.

        Returns:
            ``(item_ids (U, n) int64 padded -1, scores (U, n) float32 padded -inf)``; scores are
            logits.
        """
        histories, exclude = check_query(histories, n, exclude, self.n_items_, self.name)
        # Fitted: check_query raised otherwise.
        assert self.model_ is not None and self.n_items_ is not None
        n_rows = len(histories)
        out_ids, out_scores = empty_results(n_rows, n)
        k = min(n, self.n_items_)
        for start in range(0, n_rows, self.query_batch_size):
            stop = min(start + self.query_batch_size, n_rows)
            u = self._user_vectors(histories.rows(np.arange(start, stop)))  # (B, E)
            logits = self.model_.scores(u).float()  # (B, V)
            if exclude is not None:
                block = exclude.rows(np.arange(start, stop))
                rows = torch.from_numpy(block.row_ids()).to(logits.device)
                cols = torch.from_numpy(block.items).to(logits.device)
                logits[rows, cols] = float("-inf")
            top, idx = torch.topk(logits, k, dim=1)  # (B, k), sorted best first
            out_scores[start:stop, :k] = top.cpu().numpy()
            out_ids[start:stop, :k] = idx.cpu().numpy()
        out_ids[~np.isfinite(out_scores)] = -1
        out_scores[out_ids < 0] = -np.inf
        return out_ids, out_scores
