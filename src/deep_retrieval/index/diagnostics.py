"""What a fitted index looks like: path sizes, beam calibration, per-epoch log, and a plot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .retrieval import RECALL_NS, QueryStats, beam_size_for
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
        out["beam_for_n"] = _beam_for_n(state)
    if stats is not None and stats.queries:
        out["candidates_per_query"] = stats.candidates_per_query
        out["fraction_scored"] = stats.candidates_per_query / state.n_items
    return out


def summary_line(state: DRState) -> str:
    """``"N items on P of K^D paths, largest path S"``: the index's shape in one line."""
    d = diagnostics(state)
    return (
        f"{d['n_items']:,} items on {d['occupied_paths']:,} of {d['n_paths']:,} paths, largest"
        f" path {d['largest_path_size']}"
    )


def _beam_for_n(state: DRState) -> dict[int, dict[str, float]]:
    """Per calibrated result count ``n``: the beam a request gets, its mean candidates on the
    calibration users, the share of the catalogue that is, and (recall-targeted calibration)
    its recall@n against the reranker's exhaustive top n."""
    assert state.beam_calibration is not None
    beams, means = state.beam_calibration
    ns = (
        state.recall_calibration[0]
        if state.recall_calibration is not None
        else [n for n in RECALL_NS if n <= state.n_items]
    )
    out: dict[int, dict[str, float]] = {}
    for i, n in enumerate(ns):
        b = beam_size_for(state, int(n))
        row: dict[str, float] = {"beam": b}
        j = np.flatnonzero(beams == b)
        if len(j):
            row["candidates"] = round(float(means[j[0]]), 2)
            row["fraction_scored"] = round(float(means[j[0]]) / state.n_items, 5)
            if state.recall_calibration is not None:
                row["recall"] = round(float(state.recall_calibration[1][i, j[0]]), 4)
        out[int(n)] = row
    return out


def plot_path_sizes(state: DRState, png: str | os.PathLike) -> Path:
    """Write a histogram of items per occupied path (log-scaled counts) to ``png``."""
    from ..utils import require

    require("matplotlib", "plotting").use("Agg")
    plt = require("matplotlib.pyplot", "plotting")

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
