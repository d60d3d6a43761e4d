"""Quality floors on the real data sets, relative to the other methods of the same run.

Slow (minutes each): run with ``make test-slow`` (``pytest -m slow``). The committed benchmark
results in ``benchmarks/results/`` come from the same commands through the CLI.
"""

from __future__ import annotations

import pytest

from deep_retrieval.benchmark import run_benchmark
from deep_retrieval.config import BenchmarkConfig
from deep_retrieval.data.protocols import make_split
from deep_retrieval.data.registry import load_dataset

pytestmark = pytest.mark.slow


def _recall(doc, name, k):
    return doc["methods"][name]["metrics"][f"recall@{k}"]


def test_movielens_latest_small_paper_protocol():
    split = make_split(load_dataset("movielens-latest-small"), "paper", BenchmarkConfig().protocol)
    doc = run_benchmark(split, ["most-popular", "item-cf", "brute-force", "dr"], [10])
    bf = _recall(doc, "brute-force", 10)
    assert bf > _recall(doc, "most-popular", 10)
    assert bf > _recall(doc, "item-cf", 10)
    assert _recall(doc, "dr", 10) >= 0.97 * bf


def test_gowalla_fixed_split(shared_data):
    split = make_split(load_dataset("gowalla", shared_data), None, BenchmarkConfig().protocol)
    doc = run_benchmark(split, ["most-popular", "item-cf", "als", "brute-force"], [20])
    bf = _recall(doc, "brute-force", 20)
    assert bf > _recall(doc, "most-popular", 20)
    assert bf > _recall(doc, "item-cf", 20)
    assert bf >= _recall(doc, "als", 20)
