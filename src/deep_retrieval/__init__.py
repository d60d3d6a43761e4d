"""Deep Retrieval: a learnable path index for large-scale candidate retrieval (Gao et al., CIKM 2021)."""

from __future__ import annotations

__version__ = "0.1.0"
