"""bench-speed: the speed.json contract, exact twins agreeing, DR's recall floor, plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deep_retrieval.cli import main
from deep_retrieval.data.types import Sequences
from deep_retrieval.experiments.speed import (
    CURVES,
    METHODS,
    overlap_at_k,
    peak_rss_mb,
    truth_recall,
)

TINY = [
    "n_users=1500", "n_test_users=60", "n_single=5", "dim=16",
    "dr.structure.n_nodes=16", "dr.train.epochs=1", "dr.train.joint_epochs=0",
    "dr.train.reranker_epochs=0",
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
    assert doc["n_items"] == 3000 and (out / "speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Training figures: one epoch (TINY), the headline numbers are the train section's.
    train = doc["train"]
    assert train["epochs"] == len(train["network_seconds_per_epoch"]) == 1
    assert (
        doc["train_interactions_per_second"]
        == train["interactions_per_second"]
        == pytest.approx(
            train["samples_per_epoch"] / np.mean(train["network_seconds_per_epoch"]), rel=1e-3
        )
    )
    assert doc["path_assignment_seconds"] == train["path_assignment_seconds_last"] == pytest.approx(
        train["score_accumulation_seconds"][-1] + train["coordinate_descent_seconds"][-1], abs=0.011
    )
    # Peak RSS of this very process (bench-speed ran in it): torch alone takes > 100 MiB.
    assert 100 < doc["peak_rss_mb"] <= peak_rss_mb() + 0.1
    methods = doc["methods"]
    assert set(methods) == set(METHODS)
    ran = {name: m for name, m in methods.items() if "skipped" not in m}
    assert set(methods) - set(ran) <= {"scann"}  # skipped only where scann is not installed
    exact_p50 = methods["exact-torch"]["query_ms_p50"]
    for name, m in ran.items():
        assert 0 < m["query_ms_p50"] <= m["query_ms_p99"], name
        assert 0 <= m["recall@100_vs_exact"] <= 1 and 0 < m["truth_recall@100"] <= 1, name
        speedup = round(exact_p50 / m["query_ms_p50"], 2)
        assert doc["speedup_p50_vs_exact_torch"][name] == speedup, name
        # The contract's per-method fields.
        assert m["index_bytes_per_item"] >= 0 and m["build_seconds"] >= 0, name
        for key in ("add_seconds_per_1pct", "delete_seconds_per_1pct"):
            assert m[key] is None or m[key] >= 0, (name, key)
        assert m["curve"], name
        for point in m["curve"]:
            assert set(point) >= {
                "knob", "value", "query_ms_p50", "query_ms_p99", "batch_queries_per_second",
                "recall@100_vs_exact", "truth_recall@100",
            }, (name, point)
            assert 0 < point["query_ms_p50"] <= point["query_ms_p99"], (name, point)
            assert point["batch_queries_per_second"] > 0, (name, point)
    for name in ("exact-faiss", "ivf", "dr"):  # these can add and delete
        assert ran[name]["add_seconds_per_1pct"] is not None, name
        assert ran[name]["delete_seconds_per_1pct"] is not None, name
    assert ran["hnsw"]["delete_seconds_per_1pct"] is None  # faiss HNSW cannot remove
    # Graph, lists, codes: every ANN index keeps more than nothing beyond the vectors.
    assert methods["exact-torch"]["index_bytes_per_item"] == 0
    assert all(ran[name]["index_bytes_per_item"] > 0 for name in ran if name[:5] != "exact")
    # The two exact searches are the same search.
    assert methods["exact-torch"]["recall@100_vs_exact"] == 1.0
    assert methods["exact-faiss"]["recall@100_vs_exact"] > 0.99
    exact_truth = methods["exact-torch"]["truth_recall@100"]
    assert methods["exact-faiss"]["truth_recall@100"] == pytest.approx(exact_truth, abs=0.01)
    assert exact_truth > 0.5  # the planted model finds the held-out items (observed 0.74)
    # DR finds nearly what exact search finds among the held-out items (observed 0.96 of it).
    dr = methods["dr"]
    assert dr["truth_recall@100"] >= 0.9 * exact_truth
    assert dr["candidates_per_query"] < 3000
    # DR's curve is over beams, its calibrated beam among them and reported at the top level;
    # a wider beam never finds fewer candidates.
    beams = [p["value"] for p in dr["curve"]]
    assert beams == sorted(beams) and dr["beam_size"] in beams
    at_default = dr["curve"][beams.index(dr["beam_size"])]
    assert at_default["truth_recall@100"] == dr["truth_recall@100"]
    cands = [p["candidates_per_query"] for p in dr["curve"]]
    assert cands == sorted(cands)
    # Each ANN method's default point is the first of its curve to reach DR's overlap with
    # exact search (or the last one).
    target = dr["recall@100_vs_exact"]
    for name in set(ran) & {"hnsw", "ivf", "ivf-pq", "scann"}:
        m, knob = ran[name], CURVES[name][0]
        overlaps = [p["recall@100_vs_exact"] for p in m["curve"]]
        first = next((i for i, o in enumerate(overlaps) if o >= target), len(overlaps) - 1)
        assert m[knob] == m["curve"][first]["value"], name
        assert m["recall@100_vs_exact"] == overlaps[first], name
        # The matched point: the fastest point at DR's truth recall, and DR's ratios to it.
        match = doc["matched_truth_recall"][name]
        ok = [p for p in m["curve"] if p["truth_recall@100"] >= dr["truth_recall@100"]]
        assert match["reached"] == bool(ok), name
        if ok:
            best = min(ok, key=lambda p: p["query_ms_p50"])
            assert match["value"] == best["value"], name
            assert match["latency_ratio"] == round(best["query_ms_p50"] / dr["query_ms_p50"], 3)
            assert match["throughput_ratio"] == round(
                dr["batch_queries_per_second"] / best["batch_queries_per_second"], 3
            )
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The printed table: one row per method, in the JSON's order, with the JSON's figures.
    printed = capsys.readouterr().out.split("\n\n")
    table = next(block for block in printed if block.startswith("| method | p50 ms"))
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows[1:]]
    assert [c[0].split(" (")[0] for c in cells] == list(methods)
    for c in cells:
        if c[1].startswith("skipped"):
            continue
        m = methods[c[0].split(" (")[0]]
        assert c[1:6] == [
            f"{m['query_ms_p50']:.3f}", f"{m['query_ms_p99']:.3f}",
            f"{m['batch_queries_per_second']:,.0f}", f"{m['recall@100_vs_exact']:.3f}",
            f"{m['truth_recall@100']:.3f}",
        ], c
    dr = methods["dr"]
    dr_row = cells[list(methods).index("dr")][0]
    assert dr_row == f"dr (beam {dr['beam_size']}, {dr['candidates_per_query']:.0f} candidates)"
    assert main(["bench-speed", "--n-items", "3000", "--out", str(out), "--set", "colour=red"]) == 2


def test_multi_interest_corpus_needs_joint_training(tmp_path, capsys) -> None:
    out = tmp_path / "multi"
    args = ["-q", "bench-speed", "--n-items", "3000", "--out", str(out), "--set", *TINY]
    assert main([*args, "corpus=multi-interest"]) == 2
    assert "set joint=true" in capsys.readouterr().err
    assert main([*args, "corpus=multi-interest", "joint=true", "dr.train.epochs=4",
                 "dr.train.joint_epochs=4"]) == 0
    doc = json.loads((out / "speed.json").read_text())
    assert doc["corpus"] == "multi-interest" and doc["config"]["joint"] is True
    # Every method searches the jointly trained model; exact search finds held-out items
    # (observed 0.28; 100 random items of 3,000 would find 0.03).
    assert doc["methods"]["exact-torch"]["truth_recall@100"] > 0.1
