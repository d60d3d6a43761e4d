"""What a fitted index looks like: path sizes, beam calibration, per-epoch log, and a plot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .retrieval import QueryStats
from .state import DRState


def diagnostics(state: DRState, stats: QueryStats | None = None) -> dict[str, Any]:
    """Path-size distribution, beam calibration and the per-epoch log; with ``stats`` (a
    caller-owned tally of served queries) also candidates per query and the share of the
    catalogue they are (``candidates_per_query / V``)."""
    sizes = state.item_paths.path_sizes()
    out: dict[str, Any] = {
        "n_items": state.n_items,
        "n_paths": int(state.codec.n_paths),
        "occupied_paths": int(len(sizes)),
        "largest_path_size": int(sizes.max(initial=0)),
        "items_per_path_mean": float(sizes.mean()) if len(sizes) else 0.0,
        "items_per_path_median": float(np.median(sizes)) if len(sizes) else 0.0,
        "items_per_path_p99": float(np.percentile(sizes, 99)) if len(sizes) else 0.0,
        "epochs": state.history,
    }
    if state.beam_calibration is not None:
        beams, means = state.beam_calibration
        out["beam_calibration"] = {
            int(b): round(float(m), 2) for b, m in zip(beams, means, strict=True)
        }
    if stats is not None and stats.queries:
        out["candidates_per_query"] = stats.candidates_per_query
        out["fraction_scored"] = stats.candidates_per_query / state.n_items
    return out


def plot_path_sizes(state: DRState, png: str | os.PathLike) -> Path:
    """Write a histogram of items per occupied path (log-scaled counts) to ``png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = state.item_paths.path_sizes()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.unique(np.geomspace(1, max(int(sizes.max(initial=1)), 2) + 1, 40).astype(int))
    ax.hist(sizes, bins=bins.tolist(), color="#3b6ea8")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("items on the path")
    ax.set_ylabel("paths")
    ax.set_title(
        f"{len(sizes):,} occupied paths of {state.codec.n_paths:,};"
        f" largest {int(sizes.max(initial=0))}"
    )
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return Path(png)
