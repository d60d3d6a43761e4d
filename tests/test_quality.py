"""Quality floors on the real data sets with the library defaults, relative to the brute-force
model of the same run (no per-data-set settings).

Slow (minutes each): run with ``make test-slow`` (``pytest -m slow``). The committed benchmark
results in ``benchmarks/results/`` come from the same runs through the CLI
(``benchmarks/run_benchmarks.sh``); the observed values below are theirs. ``dr`` is DR as
``train`` produces it, ``dr-shared`` DR's index over the brute-force model's reranker. The floors
sit below the observed values by about the spread of a rerun on another machine; the issue-14
target (0.99 × brute force) is reported in the README, not asserted where it is missed.
"""

from __future__ import annotations

import pytest

from deep_retrieval.config import BenchmarkConfig
from deep_retrieval.data.protocols import make_split
from deep_retrieval.data.registry import load_dataset
from deep_retrieval.experiments.benchmark import run_benchmark

pytestmark = pytest.mark.slow


def _ratio(doc, name, k):
    key = f"recall@{k}"
    return doc["methods"][name]["metrics"][key] / doc["methods"]["brute-force"]["metrics"][key]


def _run(name, methods, k, data_dir=None, protocol=None):
    data = load_dataset(name, data_dir) if data_dir else load_dataset(name)
    split = make_split(data, protocol, BenchmarkConfig().protocol)
    return run_benchmark(split, methods, [k])


def test_movielens_latest_small_paper_protocol():
    doc = _run("movielens-latest-small", ["most-popular", "item-cf", "brute-force", "dr",
                                          "dr-shared"], 10, protocol="paper")
    assert _ratio(doc, "most-popular", 10) < 1 and _ratio(doc, "item-cf", 10) < 1
    assert _ratio(doc, "dr", 10) >= 1.0  # observed 0.0839 / 0.0737 = 1.138
    assert _ratio(doc, "dr-shared", 10) >= 0.97  # observed 1.002
    assert doc["methods"]["dr"]["fraction_scored"] <= 0.10  # observed 0.093


def test_movielens_100k_paper_protocol(shared_data):
    doc = _run("movielens-100k", ["brute-force", "dr", "dr-shared", "dr-attention",
                                  "attention-exhaustive"], 10, shared_data, "paper")
    assert _ratio(doc, "dr", 10) >= 0.95  # observed 0.1079 / 0.1090 = 0.990
    assert _ratio(doc, "dr-shared", 10) >= 0.97  # observed 1.022
    assert doc["methods"]["dr"]["fraction_scored"] <= 0.10  # observed 0.073
    # the candidate-aware reranker (benchmarks/results/movielens-100k/attention/)
    assert _ratio(doc, "dr-attention", 10) >= 0.95  # observed 0.1089 / 0.1090 = 0.999
    assert _ratio(doc, "attention-exhaustive", 10) >= 0.95  # observed 1.021 (all 100 users)
    assert doc["methods"]["dr-attention"]["fraction_scored"] <= 0.10  # observed 0.073


def test_movielens_1m_dr_against_brute_force(shared_data):
    doc = _run("movielens-1m-m1", ["brute-force", "dr", "dr-shared"], 20, shared_data)
    assert _ratio(doc, "dr", 20) >= 0.95  # observed 0.2541 / 0.2612 = 0.973
    assert _ratio(doc, "dr-shared", 20) >= 0.95  # observed 0.977
    assert doc["methods"]["dr"]["fraction_scored"] <= 0.11  # observed 0.0987 (budget 10 %)


def test_gowalla_fixed_split(shared_data):
    doc = _run("gowalla", ["most-popular", "item-cf", "als", "brute-force", "dr", "dr-shared"],
               20, shared_data)
    for name in ("most-popular", "item-cf", "als"):
        assert _ratio(doc, name, 20) < 1, name
    assert _ratio(doc, "dr", 20) >= 0.97  # observed 0.1826 / 0.1846 = 0.989
    assert _ratio(doc, "dr-shared", 20) >= 0.97  # observed 0.993
    # The budget (2 % from 30K items) holds on the calibration users; test users' histories can
    # reach a little further.
    assert doc["methods"]["dr"]["fraction_scored"] <= 0.022  # observed 0.0191


def test_amazon_book_fixed_split(shared_data):
    doc = _run("amazon-book", ["brute-force", "dr", "dr-shared"], 20, shared_data)
    assert _ratio(doc, "dr", 20) >= 0.97  # observed 0.1664 / 0.1667 = 0.998
    assert _ratio(doc, "dr-shared", 20) >= 0.97  # observed 0.996
    assert doc["methods"]["dr"]["fraction_scored"] <= 0.10  # observed 0.0838 (24,915 items)
