"""Where DR's serving time goes, per stage, one query and batches of 256.

Builds the bench-speed corpus and model (planted two-tower reranker, DR's structure network
trained on it, the `bench-speed` settings), then times each stage of `index.retrieval.recommend`
separately: encode the users, beam search, and after it both ways of ranking the beam's items:
the numpy reference path (candidate union, rerank as gather + dot, top-n) and the fused numba
kernel that serving uses (`index/kernels.py`: candidates, scores and top-n in one pass). Whole
`recommend` calls are timed both ways too (`fused=False` is the reference), interleaved so that
a noisy machine affects both alike. Writes `OUT/profile.json` and `OUT/profile.md`.

    .venv/bin/python benchmarks/profile_retrieval.py --n-items 1000000 \
        --out benchmarks/results/speed/profile-1000000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from deep_retrieval.data.corpus import make_corpus
from deep_retrieval.data.types import Sequences
from deep_retrieval.estimator import DeepRetrieval
from deep_retrieval.experiments.speed import SpeedConfig, planted_softmax
from deep_retrieval.index import kernels, retrieval

#: The reference path's stages, then the fused kernel that replaces the last three.
STAGES = ("encode", "beam", "candidates", "rerank", "top_n", "fused_rank")
TOTALS = ("reference", "fused")
LABELS = {"fused_rank": "fused: candidates + rerank + top_n (numba)"}


def stage_times(state, histories: Sequences, n: int, beam_size: int) -> dict[str, float]:
    """Seconds per stage of one `recommend(histories, n)` call (rerank on, no exclude);
    `fused_rank`: the kernel doing candidates + rerank + top_n on the same beam."""
    out = {}
    t = time.perf_counter()
    u = retrieval.user_embeddings(state, histories)
    out["encode"] = time.perf_counter() - t
    t = time.perf_counter()
    path_ids, _ = retrieval.beam(state, u, beam_size, ordered=False)
    out["beam"] = time.perf_counter() - t
    t = time.perf_counter()
    cand = retrieval.candidates(state, path_ids, None)
    rows = np.repeat(np.arange(len(histories)), cand.counts)
    out["candidates"] = time.perf_counter() - t
    t = time.perf_counter()
    keys, bias = retrieval.rerank_table(state)
    q = state.net.reranker.query(u).float().cpu().numpy()
    items = cand.items
    if len(q) == 1:
        scores = keys[items] @ q[0] + bias[items]
    else:
        scores = np.einsum("ce,ce->c", q[rows], keys[items]) + bias[items]
    out["rerank"] = time.perf_counter() - t
    t = time.perf_counter()
    retrieval.segment_topk(rows, items, scores, len(histories), n)
    out["top_n"] = time.perf_counter() - t
    t = time.perf_counter()
    kernels.serve(
        state.item_paths, retrieval.path_slots(state), path_ids,
        state.net.reranker.query(u).float().numpy(), keys, bias, n,
    )
    out["fused_rank"] = time.perf_counter() - t
    return out


def totals(state, histories: Sequences, n: int, beam_size: int) -> dict[str, float]:
    """Seconds of one whole `retrieval.recommend` call, reference path and fused."""
    out = {}
    for name in TOTALS:
        t = time.perf_counter()
        retrieval.recommend(state, histories, n, beam_size=beam_size, fused=name == "fused")
        out[name] = time.perf_counter() - t
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-items", type=int, default=1_000_000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    c = SpeedConfig(n_items=args.n_items)
    n_users = int(np.clip(c.n_items // 10, 20_000, 1_000_000))
    n_inter = int(round(n_users * c.interactions_per_user))
    corpus = make_corpus(n_users, c.n_items, n_inter, dim=c.dim, seed=c.seed)
    split = corpus.split(c.n_test_users, seed=c.seed)
    train = Sequences(split.train.indptr, split.train.items, ordered=c.ordered)
    softmax = planted_softmax(corpus, c)
    cfg = dataclasses.replace(c.dr, train=dataclasses.replace(c.dr.train, embedding_dim=c.dim))
    t0 = time.perf_counter()
    model = DeepRetrieval(cfg, device="cpu").fit(train, c.n_items, reranker=softmax.model_)
    fit_seconds = time.perf_counter() - t0
    state, hist = model.state, split.test_history
    beam = model.beam_size_for(c.k)

    single: dict[str, list[float]] = {s: [] for s in (*STAGES, *TOTALS)}
    rows = [hist.rows(np.array([i])) for i in range(len(hist))]
    for row in rows[:20]:  # warm up (and load the compiled kernel)
        totals(state, row, c.k, beam)
    for row in rows:
        for s, v in (stage_times(state, row, c.k, beam) | totals(state, row, c.k, beam)).items():
            single[s].append(v)
    batched: dict[str, float] = dict.fromkeys((*STAGES, *TOTALS), 0.0)
    n_batches = 0
    for s in range(0, len(hist), c.batch_size):
        part = hist.rows(np.arange(s, min(s + c.batch_size, len(hist))))
        times = stage_times(state, part, c.k, beam) | totals(state, part, c.k, beam)
        for stage, v in times.items():
            batched[stage] += v
        n_batches += 1
    stats = retrieval.QueryStats()
    model.recommend(hist, c.k, beam_size=beam, stats=stats)
    doc = {
        "n_items": c.n_items, "k": c.k, "beam_size": beam, "batch_size": c.batch_size,
        "threads": kernels.pool_size(),
        "candidates_per_query": round(stats.candidates_per_query, 1),
        "fit_seconds": round(fit_seconds, 1),
        "single_query_ms_p50": {
            s: round(1e3 * float(np.median(single[s])), 4) for s in STAGES
        },
        "single_query_ms_p50_total": {
            s: round(1e3 * float(np.median(single[s])), 4) for s in TOTALS
        },
        "batch_ms_per_batch": {s: round(1e3 * batched[s] / n_batches, 3) for s in STAGES},
        "batch_ms_per_batch_total": {
            s: round(1e3 * batched[s] / n_batches, 3) for s in TOTALS
        },
        "batch_queries_per_second": {s: round(len(hist) / batched[s], 1) for s in TOTALS},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"# DR serving profile: {c.n_items:,} items, n = {c.k}, beam {beam},"
        f" {doc['candidates_per_query']} candidates per query",
        "",
        "Command: `.venv/bin/python benchmarks/profile_retrieval.py --n-items"
        f" {c.n_items} --out {args.out}` (2 threads; the fused kernel splits a batch over"
        f" {doc['threads']}).",
        "",
        "| stage | one query: p50 ms | batch of 256: ms per batch |",
        "|---|---|---|",
        *(
            f"| {LABELS.get(s, s)} | {doc['single_query_ms_p50'][s]} |"
            f" {doc['batch_ms_per_batch'][s]} |"
            for s in STAGES
        ),
        *(
            f"| whole `recommend`, {s} | {doc['single_query_ms_p50_total'][s]} |"
            f" {doc['batch_ms_per_batch_total'][s]}"
            f" ({doc['batch_queries_per_second'][s]} queries/s) |"
            for s in TOTALS
        ),
        "",
    ]
    (out / "profile.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
