"""Baseline tuning on validation users (experiments/tuning.py)."""

from __future__ import annotations

import dataclasses

import numpy as np

from deep_retrieval.config import BenchmarkConfig, ProtocolConfig
from deep_retrieval.data.protocols import paper_split
from deep_retrieval.data.synthetic import make_clustered
from deep_retrieval.data.types import Sequences
from deep_retrieval.experiments import tuning
from deep_retrieval.experiments.benchmark import run_benchmark


def _rows(n_rows: int, ordered: bool, seed: int = 0) -> Sequences:
    rng = np.random.default_rng(seed)
    return Sequences.from_lists(
        [rng.choice(50, size=int(rng.integers(1, 15)), replace=False) for _ in range(n_rows)],
        ordered,
    )


def test_carved_validation_holds_out_a_share_of_training_rows_only():
    for ordered in (True, False):
        train = _rows(80, ordered)
        v = tuning.carve_validation(train, 30, seed=1)
        assert len(v.history) == len(v.truth) == 30 and v.exclude is v.history
        carved = [u for u in range(len(train)) if len(v.train[u]) != len(train[u])]
        assert len(carved) == 30 and all(len(train[u]) >= 5 for u in carved)
        for r, u in enumerate(carved):
            kept, held = v.train[u].tolist(), v.truth[r].tolist()
            assert v.history[r].tolist() == kept
            assert sorted(kept + held) == sorted(train[u].tolist())
            assert len(held) == max(1, round(0.2 * len(train[u])))
            if ordered:  # the newest items are held out, order kept
                assert kept + held == train[u].tolist()
        for u in set(range(len(train))) - set(carved):
            assert v.train[u].tolist() == train[u].tolist()


class _Stub:
    """A 'baseline' whose validation recall is a known function of its settings."""

    def __init__(self, cfg, truth: Sequences, quality):
        self.hit = quality(cfg.als)
        self.truth = truth

    def fit(self, train, n_items):
        return self

    def recommend(self, histories, n, exclude=None):
        ids = np.full((len(histories), n), -1)
        good = int(round(self.hit * len(histories)))  # that many users get their first item
        ids[:good, 0] = [self.truth[u][0] for u in range(good)]
        return ids, np.zeros(ids.shape, np.float32)


def test_coordinate_search_finds_the_best_grid_point_and_keeps_ties():
    train = _rows(60, False)
    valid = tuning.carve_validation(train, 40, seed=0)
    best = {"factors": 64, "regularization": 10.0, "alpha": 5.0}

    def quality(als):  # separable, peaked at `best`; alpha 1 ties with 5
        return (
            0.5
            - 0.1 * abs(np.log2(als.factors / best["factors"]))
            - 0.05 * abs(np.log10(als.regularization / best["regularization"]))
            - (0.0 if als.alpha in (1.0, 5.0) else 0.1)
        )

    calls = []

    def build(name, cfg):
        calls.append(cfg.als)
        return _Stub(cfg, valid.truth, quality)

    cfg = BenchmarkConfig()
    cfg = dataclasses.replace(cfg, als=dataclasses.replace(cfg.als, alpha=5.0))
    chosen, report = tuning.tune_baseline("als", cfg, valid, 50, 1, build)
    assert report["chosen"] == best and chosen.als.factors == 64
    assert chosen.als.alpha == 5.0  # tied with 1.0: the configured value stays
    assert report["validation_recall@1"] == max(r["recall@1"] for r in report["tried"])
    assert len(report["tried"]) == len(calls) == len({dataclasses.astuple(c) for c in calls})


def test_benchmark_tunes_item_cf_on_validation_users_and_reports_it():
    data = make_clustered(n_users=300, n_items=120, n_clusters=6, interactions_per_user=20, seed=0)
    split = paper_split(
        data.interactions, ProtocolConfig(n_valid_users=40, n_test_users=40, min_rating=0)
    )
    doc = run_benchmark(split, ["item-cf"], [10], BenchmarkConfig(tune_baselines=True))
    t = doc["methods"]["item-cf"]["tuning"]
    assert t["validation_users"] == 40  # the protocol's own validation users
    assert [r["n_neighbours"] for r in t["tried"]] == [200, 20, 50, 100, 400]
    best = max(t["tried"], key=lambda r: r["recall@10"])["recall@10"]
    assert t["validation_recall@10"] == best
    assert doc["config"]["tune_baselines"] is True
