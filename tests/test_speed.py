"""bench-speed: the speed.json contract, exact twins agreeing, DR's recall floor, plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deep_retrieval.cli import main
from deep_retrieval.speed import overlap_at_k, truth_recall
from deep_retrieval.data.types import Sequences

TINY = [
    "n_users=1500", "n_test_users=60", "n_single=5", "dim=16",
    "dr.structure.n_nodes=16", "dr.train.epochs=1", "dr.train.joint_epochs=0",
    "hnsw.ef_construction=16",
]


def test_overlap_and_truth_recall() -> None:
    ids = np.array([[1, 2, 3, -1], [4, 5, 6, 7]])
    exact = np.array([[3, 2, 9, 8], [7, 6, 5, 4]])
    assert overlap_at_k(ids, exact) == pytest.approx((2 / 4 + 4 / 4) / 2)
    truth = Sequences.from_lists([[1, 9], [5]])
    assert truth_recall(ids, truth) == pytest.approx((0.5 + 1.0) / 2)


def test_bench_speed_writes_the_contract(tmp_path, capsys) -> None:
    out = tmp_path / "speed"
    assert main(["-q", "bench-speed", "--n-items", "3000", "--out", str(out), "--set", *TINY]) == 0
    doc = json.loads((out / "speed.json").read_text())
    assert doc["n_items"] == 3000 and (out / "speed.png").stat().st_size > 0
    for key in ("path_assignment_seconds", "train_interactions_per_second", "peak_rss_mb"):
        assert doc[key] > 0
    methods = doc["methods"]
    assert set(methods) == {"dr", "exact-torch", "exact-faiss", "hnsw", "ivf"}
    for m in methods.values():
        for key in ("query_ms_p50", "query_ms_p99", "batch_queries_per_second", "recall@100_vs_exact", "truth_recall@100"):
            assert m[key] > 0, key
    # The two exact searches are the same search.
    assert methods["exact-torch"]["recall@100_vs_exact"] == 1.0
    assert methods["exact-faiss"]["recall@100_vs_exact"] > 0.99
    # DR finds nearly what exact search finds among the held-out items (observed 0.98 of it).
    assert methods["dr"]["truth_recall@100"] >= 0.9 * methods["exact-torch"]["truth_recall@100"]
    assert methods["dr"]["candidates_per_query"] < 3000
    assert "| dr (beam" in capsys.readouterr().out
    assert main(["bench-speed", "--n-items", "3000", "--out", str(out), "--set", "colour=red"]) == 2
