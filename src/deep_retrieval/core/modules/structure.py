"""The structure model: ``p(c | u) = Π_d p(c_d | u, c_1, …, c_{d-1})`` (paper Eq. 1).

Shape letters as in :mod:`deep_retrieval.core.paths` (``N`` users, ``J`` paths per item, ``D``
layers, ``K`` nodes, ``E`` user-embedding width).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class StructureNet(nn.Module):
    """``D`` per-layer MLPs, each ending in ``K`` logits, over the user and the path prefix.

    Layer ``d`` (1-based) sees ``concat(u, node_emb[1][c_1], …, node_emb[d-1][c_{d-1}])``: there is
    one embedding table per layer ``1 .. D-1`` (the paper's Fig. 1 draws an embedding inside every
    node; layer ``D``'s nodes are never consumed, so they have none).

    Args:
        input_dim: ``E``, width of the user embedding ``u``.
        n_layers: ``D``.
        n_nodes: ``K``.
        node_dim: width of each node embedding.
        hidden_dim: ``None`` gives ``Linear(E + (d-1)·node_dim → K)`` per layer (the paper's
            Θ(K·d) parameters per layer); an int gives ``Linear → ReLU → Linear`` with that width.

    Example::

        >>> net = StructureNet(input_dim=8, n_layers=3, n_nodes=5, node_dim=4)
        >>> u = torch.randn(2, 8)
        >>> paths = torch.randint(0, 5, (2, 3, 3))  # (N, J, D)
        >>> net.log_prob(u, paths).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        input_dim: int,
        n_layers: int,
        n_nodes: int,
        node_dim: int,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("input_dim", input_dim), ("n_layers", n_layers),
                            ("n_nodes", n_nodes), ("node_dim", node_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if hidden_dim is not None and hidden_dim < 1:
            raise ValueError(f"hidden_dim must be None or >= 1, got {hidden_dim}")
        self.input_dim = input_dim
        self.n_layers = n_layers
        self.n_nodes = n_nodes
        self.node_dim = node_dim
        self.hidden_dim = hidden_dim
        # node_emb[d] embeds the node chosen at layer d + 1 (0-based list, layers 1 .. D-1).
        self.node_emb = nn.ModuleList(nn.Embedding(n_nodes, node_dim) for _ in range(n_layers - 1))
        self.layers = nn.ModuleList(
            self._make_layer(input_dim + d * node_dim, n_nodes, hidden_dim) for d in range(n_layers)
        )

    @staticmethod
    def _make_layer(in_dim: int, out_dim: int, hidden_dim: int | None) -> nn.Module:
        if hidden_dim is None:
            return nn.Linear(in_dim, out_dim)
        return nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim)
        )

    def layer_log_probs(self, user_emb: Tensor, prefix: Tensor) -> Tensor:
        """``log p(c_d = · | u, c_<d)`` for layer ``d = prefix.shape[-1] + 1``.

        Args:
            user_emb: ``(N, E)``, or ``(..., E)`` whose leading dims broadcast to ``prefix``'s
                (beam search passes ``(N, 1, E)`` with a ``(N, B, d)`` prefix).
            prefix: ``(N, d)`` (or ``(..., d)``) long node indices ``c_1 .. c_d`` in ``[0, K)``,
                ``0 ≤ d < D``.

        Returns:
            ``(N, K)`` (or ``(..., K)``) log-probabilities (``log_softmax``, rows sum to 1 in
            probability space).
        """
        depth = prefix.shape[-1]
        if not 0 <= depth < self.n_layers:
            raise ValueError(
                f"prefix length must be in [0, n_layers={self.n_layers}), got {depth}"
            )
        if user_emb.shape[-1] != self.input_dim:
            raise ValueError(
                f"user_emb must have last dim input_dim={self.input_dim}, "
                f"got {tuple(user_emb.shape)}"
            )
        lead = prefix.shape[:-1]
        parts = [user_emb.expand(*lead, self.input_dim)]
        parts += [self.node_emb[i](prefix[..., i]) for i in range(depth)]  # each (..., node_dim)
        logits = self.layers[depth](torch.cat(parts, dim=-1))  # (..., K)
        return F.log_softmax(logits, dim=-1)

    def log_prob(self, user_emb: Tensor, paths: Tensor) -> Tensor:
        """``log p(c | u) = Σ_d log p(c_d | u, c_<d)`` by teacher forcing, for ``J`` paths per user.

        Args:
            user_emb: ``(N, E)``.
            paths: ``(N, J, D)`` long, values in ``[0, K)``.

        Returns:
            ``(N, J)`` log-probabilities.
        """
        if paths.dim() != 3 or paths.shape[-1] != self.n_layers:
            raise ValueError(
                f"paths must have shape (N, J, n_layers={self.n_layers}), got {tuple(paths.shape)}"
            )
        if user_emb.dim() != 2 or user_emb.shape[0] != paths.shape[0]:
            raise ValueError(
                f"user_emb must have shape (N={paths.shape[0]}, E), got {tuple(user_emb.shape)}"
            )
        # Layer 1 depends on u only: compute it once per user, not once per path.
        first = self.layer_log_probs(user_emb, paths[:, 0, :0])  # (N, K)
        total = first.gather(1, paths[:, :, 0])  # (N, J)
        u = user_emb[:, None, :]  # (N, 1, E)
        for d in range(1, self.n_layers):
            step = self.layer_log_probs(u, paths[:, :, :d])  # (N, J, K)
            total = total + step.gather(2, paths[:, :, d : d + 1]).squeeze(2)  # (N, J)
        return total

    def forward(self, user_emb: Tensor, paths: Tensor) -> Tensor:
        """Same as :meth:`log_prob`: ``(N, E), (N, J, D) -> (N, J)``."""
        return self.log_prob(user_emb, paths)

    def path_loss(self, user_emb: Tensor, paths: Tensor) -> Tensor:
        """Multi-path negative log-likelihood ``-log Σ_j p(π_j(y) | u)`` per user.

        Args:
            user_emb: ``(N, E)``.
            paths: ``(N, J, D)`` long, the ``J`` paths of each user's target item.

        Returns:
            ``(N,)`` losses (average them for a batch loss).
        """
        return -torch.logsumexp(self.log_prob(user_emb, paths), dim=1)
