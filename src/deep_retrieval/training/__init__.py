"""Training over a ``DRState``: the shared step (``step``), the epoch schedule (``batch``),
streaming, torchrun, checkpoints."""
