"""Tuning the classic baselines per data set on validation users, inside the benchmark.

A baseline run with one data set's settings on another can fall below most-popular (ALS with the
Gowalla settings on MovieLens latest-small: recall@10 0.0086 against 0.0391), and a reader takes
that for a broken baseline. With ``BenchmarkConfig.tune_baselines`` the benchmark tunes ALS and
Item-CF on validation users before fitting them on the whole training set:

- *Validation users*: the protocol's own (paper protocol), else carved from the training rows
  (:func:`carve_validation`): never the test users.
- *Search*: one setting at a time from the configured values (coordinate search, two rounds at
  most), each candidate value fitted on the training rows without the validation users' held-out
  items and scored by recall@k of the first ``k``; ties keep the earlier value.
- *Grids* (:data:`GRIDS`): ALS ``factors`` 32–256, ``regularization`` 0.01–10, ``alpha`` 1–40
  (the ranges of ``implicit``'s examples and the ALS papers); Item-CF ``n_neighbours`` 20–400.

The chosen settings and every score tried are reported in ``results.json`` (``tuning``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ..config import BenchmarkConfig
from ..data.types import Sequences, Split
from ..evaluation.metrics import evaluate_recommendations

log = logging.getLogger("deep_retrieval")

#: Per baseline: its config section and the values tried per setting.
GRIDS: dict[str, tuple[str, dict[str, tuple[Any, ...]]]] = {
    "als": ("als", {
        "factors": (32, 64, 128, 256),
        "regularization": (0.01, 0.1, 1.0, 10.0),
        "alpha": (1.0, 5.0, 20.0, 40.0),
    }),
    "item-cf": ("item_cf", {"n_neighbours": (20, 50, 100, 200, 400)}),
}


@dataclasses.dataclass
class Validation:
    """Training rows to fit on and validation users to score on (internal item ids)."""

    train: Sequences
    history: Sequences
    truth: Sequences
    exclude: Sequences | None


def carve_validation(train: Sequences, n_users: int, seed: int, share: float = 0.2) -> Validation:
    """Hold out ``share`` of the items of ``n_users`` random training rows (of ≥ 5 items): those
    rows keep the rest for training and as their query history, and their held-out items are the
    truth (the fixed-split shape: a test user's history is its training items, which are also
    excluded from its ranking). Time-ordered rows hold out their newest items, sets a random
    share."""
    rng = np.random.default_rng(seed)
    eligible = np.flatnonzero(train.lengths >= 5)
    users = np.sort(rng.choice(eligible, size=min(n_users, len(eligible)), replace=False))
    hold = np.zeros(train.n_interactions, dtype=bool)
    for u in users:
        lo, hi = int(train.indptr[u]), int(train.indptr[u + 1])
        n_out = max(1, int(round(share * (hi - lo))))
        pos = np.arange(hi - n_out, hi) if train.ordered else rng.choice(
            np.arange(lo, hi), size=n_out, replace=False
        )
        hold[pos] = True
    rows = train.row_ids()
    kept = _grouped(rows[~hold], train.items[~hold], len(train), train.ordered)
    history = kept.rows(users)
    owner = np.searchsorted(users, rows[hold])  # (held,) index into users
    truth = _grouped(owner, train.items[hold], len(users), train.ordered)
    return Validation(kept, history, truth, history)


def _grouped(rows: np.ndarray, items: np.ndarray, n_rows: int, ordered: bool) -> Sequences:
    """:class:`Sequences` from ``(row, item)`` pairs already grouped by ascending row."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return Sequences(indptr, items, ordered)


def validation_for(split: Split, n_users: int, seed: int) -> Validation:
    """The protocol's validation users when it has any, else :func:`carve_validation`."""
    if split.valid_truth is not None and len(split.valid_truth):
        assert split.valid_history is not None
        return Validation(split.train, split.valid_history, split.valid_truth, split.valid_exclude)
    return carve_validation(split.train, n_users, seed)


def tune_baseline(
    name: str,
    config: BenchmarkConfig,
    valid: Validation,
    n_items: int,
    k: int,
    build: Callable[[str, BenchmarkConfig], Any],
) -> tuple[BenchmarkConfig, dict[str, Any]]:
    """Coordinate search over :data:`GRIDS` ``[name]`` from ``config``'s values.

    Args:
        build: ``build(name, config)`` → an unfitted baseline (the benchmark's factory).

    Returns:
        ``(config with the chosen settings, {"chosen": {…}, "tried": [{setting: value, …,
        "recall@k": r}]})``.
    """
    section, grid = GRIDS[name]
    scores: dict[tuple[tuple[str, Any], ...], float] = {}
    tried: list[dict[str, Any]] = []

    def score(values: dict[str, Any]) -> float:
        key = tuple(sorted(values.items()))
        if key not in scores:
            cfg = dataclasses.replace(
                config, **{section: dataclasses.replace(getattr(config, section), **values)}
            )
            model = build(name, cfg).fit(valid.train, n_items)
            recs, _ = model.recommend(valid.history, k, exclude=valid.exclude)
            scores[key] = float(evaluate_recommendations(recs, valid.truth, [k])[f"recall@{k}"])
            tried.append({**values, f"recall@{k}": round(scores[key], 5)})
            log.info("tuning %s: %s → recall@%d %.4f", name, values, k, scores[key])
        return scores[key]

    best = {s: getattr(getattr(config, section), s) for s in grid}
    for _ in range(2):
        before = dict(best)
        for setting, values in grid.items():
            options = sorted({best[setting], *values}, key=lambda v: (v != best[setting], v))
            best[setting] = max(options, key=lambda v: score({**best, setting: v}))
        if best == before:
            break
    chosen = dataclasses.replace(
        config, **{section: dataclasses.replace(getattr(config, section), **best)}
    )
    return chosen, {"chosen": best, f"validation_recall@{k}": round(score(best), 5),
                    "validation_users": len(valid.truth), "tried": tried}
