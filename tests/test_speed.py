"""bench-speed: the speed.json contract, exact twins agreeing, DR's recall floor, plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deep_retrieval.cli import main
from deep_retrieval.data.types import Sequences
from deep_retrieval.experiments.speed import overlap_at_k, peak_rss_mb, truth_recall

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
    assert set(methods) == {"dr", "exact-torch", "exact-faiss", "hnsw", "ivf"}
    exact_p50 = methods["exact-torch"]["query_ms_p50"]
    for name, m in methods.items():
        assert 0 < m["query_ms_p50"] <= m["query_ms_p99"], name
        assert 0 <= m["recall@100_vs_exact"] <= 1 and 0 < m["truth_recall@100"] <= 1, name
        speedup = round(exact_p50 / m["query_ms_p50"], 2)
        assert doc["speedup_p50_vs_exact_torch"][name] == speedup, name
    # The two exact searches are the same search.
    assert methods["exact-torch"]["recall@100_vs_exact"] == 1.0
    assert methods["exact-faiss"]["recall@100_vs_exact"] > 0.99
    exact_truth = methods["exact-torch"]["truth_recall@100"]
    assert methods["exact-faiss"]["truth_recall@100"] == pytest.approx(exact_truth, abs=0.01)
    assert exact_truth > 0.5  # the planted model finds the held-out items (observed 0.74)
    # DR finds nearly what exact search finds among the held-out items (observed 0.98 of it).
    assert methods["dr"]["truth_recall@100"] >= 0.9 * exact_truth
    assert methods["dr"]["candidates_per_query"] < 3000
    # Each ANN knob is the first of its sweep to reach DR's overlap with exact search (or the
    # last one tried); all 60 test users are the sweep's probe, so the chosen overlap is the
    # reported one.
    target = methods["dr"]["recall@100_vs_exact"]
    for name, knob in (("hnsw", "ef_search"), ("ivf", "n_probe")):
        sweep = {int(v): o for v, o in methods[name][f"{knob}_sweep_overlap"].items()}
        chosen = methods[name][knob]
        assert list(sweep)[-1] == chosen and sweep[chosen] == methods[name]["recall@100_vs_exact"]
        assert all(o <= target for v, o in sweep.items() if v != chosen), (name, sweep, target)
        assert sweep[chosen] >= target or chosen == max(sweep), (name, sweep, target)
    # The printed table: one row per method, in the JSON's order, with the JSON's figures.
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows[1:]]
    assert [c[0].split(" (")[0] for c in cells] == list(methods)
    for c in cells:
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
