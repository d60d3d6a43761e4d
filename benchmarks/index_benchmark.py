"""DRIndex over a two-tower model's vectors against faiss HNSW and exact search, on the planted
corpus of ``bench-speed`` (the planted model is the "two-tower model": query = the mean of a
user's item vectors over τ, plus a constant 1 for the item bias; item = its vector and bias).

    .venv/bin/python benchmarks/index_benchmark.py --n-items 1000000 [--set KEY=VALUE ...]
    .venv/bin/python benchmarks/index_benchmark.py --markdown 1000000   # re-render results.md

Every method indexes the same ``(V, E + 1)`` item vectors and is searched with the same test
users' query vectors (``k = 100``):

- ``exact``: faiss ``IndexFlatIP`` (brute force);
- ``dr-index``: :class:`~deep_retrieval.DRIndex` with the library defaults (plus ``--set``), fitted
  on the training users' query vectors (distilling each one's exact top ``distill_k``), searched
  at its calibrated beam (the default operating point) and along a beam sweep;
- ``hnsw``: faiss ``IndexHNSWFlat`` (M = 32, efConstruction = 40, faiss's defaults for the
  construction depth; the l2 reduction of inner product search that the ``ann-hnsw`` baseline
  uses), along an efSearch sweep.

Reports per point: overlap@100 with exact (mean ``|top_100 ∩ exact_100| / 100``), truth
recall@100 (the test users' held-out items), share of the items scored (DR), single-query
p50/p99 and batched (256) queries per second, and the fit / build seconds. Writes
``benchmarks/results/index/N/results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from deep_retrieval import DRIndex, IndexConfig
from deep_retrieval.config import load_config
from deep_retrieval.data.corpus import make_corpus
from deep_retrieval.experiments.speed import SpeedConfig, planted_softmax
from deep_retrieval.index.retrieval import QueryStats
from deep_retrieval.utils import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "index"
K = 100


def overlap(ids: np.ndarray, exact: np.ndarray) -> float:
    pairs = zip(ids, exact, strict=True)
    return float(np.mean([len(np.intersect1d(a[a >= 0], b)) / K for a, b in pairs]))


def truth_recall(ids: np.ndarray, truth) -> float:
    return float(np.mean([np.isin(truth[u], ids[u]).mean() for u in range(len(truth))]))


def timed(search, queries: np.ndarray, n_single: int = 300, batch: int = 256) -> dict:
    """Single-query p50/p99 (ms) over the first ``n_single`` queries, batched q/s over all."""
    search(queries[:1])  # warm-up: lazy tables
    times = []
    for q in queries[:n_single]:
        t0 = time.perf_counter()
        search(q[None])
        times.append(time.perf_counter() - t0)
    search(queries[:batch])
    t0 = time.perf_counter()
    ids = np.concatenate([search(queries[s : s + batch]) for s in range(0, len(queries), batch)])
    qps = len(queries) / (time.perf_counter() - t0)
    return {"ids": ids, "p50_ms": 1e3 * float(np.percentile(times, 50)),
            "p99_ms": 1e3 * float(np.percentile(times, 99)), "batched_qps": qps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-items", type=int, default=1_000_000)
    parser.add_argument("--n-test-users", type=int, default=1_000)
    parser.add_argument("--set", nargs="*", default=[], dest="overrides")
    args = parser.parse_args()
    import faiss

    n_items = args.n_items
    sc = SpeedConfig(n_items=n_items)
    n_users = int(np.clip(n_items // 10, 20_000, 1_000_000))
    t0 = time.perf_counter()
    corpus = make_corpus(n_users, n_items, int(n_users * sc.interactions_per_user), dim=sc.dim,
                         seed=0)
    split = corpus.split(args.n_test_users, seed=0)
    two_tower = planted_softmax(corpus, sc)
    del corpus
    items = two_tower.item_embeddings()  # (V, E + 1): [v, b]
    train_q = two_tower.user_embeddings(split.train)  # (Q, E + 1): [q / τ, 1]
    test_q = two_tower.user_embeddings(split.test_history)
    truth = split.test_truth
    doc: dict = {"n_items": n_items, "n_users": n_users, "dim": int(items.shape[1]), "k": K,
                 "training_queries": len(train_q), "test_queries": len(test_q),
                 "corpus_seconds": round(time.perf_counter() - t0, 1), "overrides": args.overrides}
    print(f"corpus: {n_items:,} items, {len(train_q):,} training queries"
          f" ({doc['corpus_seconds']} s)")

    flat = faiss.IndexFlatIP(items.shape[1])
    flat.add(items)
    exact_t = timed(lambda q: flat.search(q, K)[1], test_q)
    exact = exact_t.pop("ids")
    doc["exact"] = {**exact_t, "truth_recall": truth_recall(exact, truth)}
    print("exact", doc["exact"])

    config = load_config(IndexConfig, overrides=args.overrides)
    t0 = time.perf_counter()
    index = DRIndex(config).fit(items, queries=train_q)
    fit_seconds = time.perf_counter() - t0
    stats = QueryStats()
    default_beam = index.diagnostics()["beam_for_n"][K]["beam"]  # the calibrated beam for k
    points = []
    for beam in sorted({1, 2, 4, 8, 16, 32, default_beam}):
        stats.queries = stats.candidates = 0
        t = timed(lambda q, b=beam: index.search(q, K, beam_size=b, stats=stats)[0], test_q)
        ids = t.pop("ids")
        points.append({"beam": beam, **t, "overlap": overlap(ids, exact),
                       "truth_recall": truth_recall(ids, truth),
                       "fraction_scored": stats.candidates_per_query / n_items})
        print("dr-index", points[-1])
    d = index.diagnostics()
    doc["dr-index"] = {
        "fit_seconds": round(fit_seconds, 1), "default_beam": int(default_beam),
        "default": next(p for p in points if p["beam"] == default_beam), "curve": points,
        "largest_path_size": d["largest_path_size"], "occupied_paths": d["occupied_paths"],
        "training": d["training"], "epochs": d["epochs"],
    }

    hnsw_cfg = sc.hnsw
    # The l2 reduction of the ann-hnsw baseline: [x, sqrt(M² − |x|²)], queries [q, 0].
    sq = (items.astype(np.float64) ** 2).sum(1)
    augmented = np.ascontiguousarray(
        np.hstack([items, np.sqrt(np.maximum(sq.max() - sq, 0))[:, None]]), dtype=np.float32
    )
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(augmented.shape[1], hnsw_cfg.m, faiss.METRIC_L2)
    hnsw.hnsw.efConstruction = hnsw_cfg.ef_construction
    hnsw.add(augmented)
    build = time.perf_counter() - t0
    pad = np.zeros((len(test_q), 1), np.float32)
    hq = np.ascontiguousarray(np.hstack([test_q, pad]))
    curve = []
    for ef in (16, 32, 64, 128, 256, 512):
        hnsw.hnsw.efSearch = ef
        t = timed(lambda q: hnsw.search(q, K)[1], hq)
        ids = t.pop("ids")
        curve.append({"ef_search": ef, **t, "overlap": overlap(ids, exact),
                      "truth_recall": truth_recall(ids, truth)})
        print("hnsw", curve[-1])
    doc["hnsw"] = {"build_seconds": round(build, 1), "m": hnsw_cfg.m,
                   "ef_construction": hnsw_cfg.ef_construction, "curve": curve}

    out = RESULTS / str(n_items)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(out / "results.md", markdown(doc))
    print(markdown(doc))


def markdown(doc: dict) -> str:
    dr, ex = doc["dr-index"], doc["exact"]
    lines = [
        f"# DRIndex against HNSW and exact search — {doc['n_items']:,} planted items,"
        f" k = {doc['k']}",
        "",
        f"{doc['training_queries']:,} training queries, {doc['test_queries']:,} test queries,"
        f" {doc['dim']} dimensions. Command: `benchmarks/index_benchmark.py --n-items"
        f" {doc['n_items']}{' --set ' + ' '.join(doc['overrides']) if doc['overrides'] else ''}`.",
        "",
        "| method | point | overlap@100 with exact | truth recall@100 | % scored | p50 ms | p99 ms"
        " | batched q/s | fit / build s |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| exact (IndexFlatIP) | | 1.000 | {ex['truth_recall']:.4f} | 100 | {ex['p50_ms']:.2f}"
        f" | {ex['p99_ms']:.2f} | {ex['batched_qps']:,.0f} | 0 |",
    ]
    for p in dr["curve"]:
        mark = " (default)" if p["beam"] == dr["default_beam"] else ""
        lines.append(
            f"| dr-index | beam {p['beam']}{mark} | {p['overlap']:.3f} | {p['truth_recall']:.4f}"
            f" | {100 * p['fraction_scored']:.2f} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f}"
            f" | {p['batched_qps']:,.0f} | {dr['fit_seconds']:.0f} |"
        )
    for p in doc["hnsw"]["curve"]:
        lines.append(
            f"| hnsw | efSearch {p['ef_search']} | {p['overlap']:.3f} | {p['truth_recall']:.4f}"
            f" | | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | {p['batched_qps']:,.0f}"
            f" | {doc['hnsw']['build_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--markdown"]:  # re-render a recorded run: --markdown N
        folder = RESULTS / sys.argv[2]
        doc = json.loads((folder / "results.json").read_text())
        atomic_write_text(folder / "results.md", markdown(doc))
    else:
        main()
