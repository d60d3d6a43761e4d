"""Progress: the library logs through `logging` at INFO, and shows per-step bars only inside
show_progress (the CLI's, on a terminal)."""

from __future__ import annotations

import logging

import numpy as np
from test_model import TINY

from deep_retrieval import DeepRetrieval, DRConfig, DRIndex, load_config
from deep_retrieval.data.types import Sequences
from deep_retrieval.utils import show_progress


class Recorder:
    """A stand-in for tqdm: records each bar's description, total and updates."""

    def __init__(self) -> None:
        self.bars: list[dict] = []

    def __call__(self, *, total, desc, unit):
        bar = {"desc": desc, "total": total, "unit": unit, "n": 0, "closed": False}
        self.bars.append(bar)

        class Bar:
            def update(self, n=1):
                bar["n"] += n

            def close(self):
                bar["closed"] = True

        return Bar()


def _rows(n_users=60, seed=0):
    rng = np.random.default_rng(seed)
    return Sequences.from_lists([rng.choice(30, 8, replace=False) for _ in range(n_users)])


def test_fit_shows_a_bar_per_step_and_logs_each_epoch(caplog):
    config = load_config(DRConfig, overrides=[*TINY, "train.reranker_epochs=1"])
    record = Recorder()
    with caplog.at_level(logging.INFO, logger="deep_retrieval"), show_progress(record):
        DeepRetrieval(config, device="cpu").fit(_rows(), 30)
    descs = [b["desc"] for b in record.bars]
    assert descs.count("reranker step") == 1 and "network step" in descs
    assert "path scoring" in descs and "path assignment" in descs
    assert all(b["closed"] and b["n"] >= 1 for b in record.bars)
    step = next(b for b in record.bars if b["desc"] == "network step")
    assert step["unit"] == "batch" and step["n"] == step["total"]  # the total is right
    sweeps = next(b for b in record.bars if b["desc"] == "path assignment")
    assert sweeps["n"] == sweeps["total"] == config.assignment.n_sweeps
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("fitting DR on 60 rows (480 interactions), 30 items")
    n_epochs = 1 + config.train.epochs
    assert sum(m.startswith("epoch ") for m in messages) == n_epochs
    assert messages[-1].startswith("fitted in ") and "items on" in messages[-1]


def test_no_bars_outside_show_progress(capsys):
    rng = np.random.default_rng(0)
    items = rng.normal(size=(300, 8)).astype(np.float32)
    record = Recorder()
    with show_progress(record):
        DRIndex(n_nodes=8, epochs=1).fit(items, queries=items[:200])
    assert {"network step", "path scoring", "path assignment"} <= {b["desc"] for b in record.bars}
    DRIndex(n_nodes=8, epochs=1).fit(items, queries=items[:200])
    assert capsys.readouterr().err == ""
