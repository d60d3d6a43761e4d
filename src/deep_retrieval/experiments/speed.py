"""Speed benchmark: Deep Retrieval against exact search and ANN indexes, on the same embeddings.

``run_speed(SpeedConfig(n_items=N))`` generates a synthetic corpus of ``N`` items
(:mod:`deep_retrieval.data.corpus`), takes its planted two-tower model as the reranker (or, with
``joint``, trains DR's own from scratch), fits DR's structure and paths on the training users, and
then times, one method after the other in this process:

- ``dr``: user encoding, beam search, the union of the items on the beam's paths, rerank;
- ``exact-torch``: the same user vector against every item vector (matmul + ``topk``);
- ``exact-faiss``: ``faiss.IndexFlatIP`` over the same vectors;
- ``hnsw`` / ``ivf``: faiss HNSW and IVF (:mod:`deep_retrieval.baselines.ann`), their search
  knob (``efSearch`` / ``nprobe``) raised until they match DR's overlap with exact search.

Every method scores items by the same logit ``⟨q, k⟩ + b``. Per method: single-query latency
(p50/p99 over ``n_single`` one-user calls, user encoding included), batched throughput,
``recall@k_vs_exact`` (mean overlap of the top ``k`` with exact search's top ``k``, divided by
``k``) and ``truth_recall@k`` (held-out items of the user found in the top ``k``, divided by their
number, averaged over users). Training rows are sets (leave-one-out samples, one beam search per
user row when scoring paths) unless ``ordered``; nothing is excluded from the rankings.
"""

from __future__ import annotations

import dataclasses
import gc
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import (
    PAPER_SETTINGS,
    DRConfig,
    HNSWConfig,
    IVFConfig,
    IVFPQConfig,
    ScaNNConfig,
    SoftmaxConfig,
    load_config,
)
from ..data.types import Sequences, Split
from ..index.retrieval import QueryStats
from ..utils import MissingExtra, require

METHODS = ("exact-torch", "dr", "exact-faiss", "hnsw", "ivf", "ivf-pq", "scann")
#: corpus name → the range of taste clusters each user draws interactions from
#: (:func:`~deep_retrieval.data.corpus.make_corpus`'s ``interests``).
CORPORA: dict[str, tuple[int, int]] = {"planted": (1, 3), "multi-interest": (2, 4)}


def _speed_dr_config() -> DRConfig:
    """K = 100, two epochs, and the settings the recorded speed results were measured with
    (:data:`~deep_retrieval.config.PAPER_SETTINGS`, before issue 14's defaults): the paper's
    schedule where DR trains its own reranker (8 reranker epochs at 1M items would take hours),
    the 10 × k candidate rule for the default beam (the frontier sweeps the beam anyway), and α
    as given."""
    return load_config(DRConfig, overrides=[
        *PAPER_SETTINGS, "structure.n_nodes=100", "train.epochs=2", "train.embedding_dim=64",
    ])


@dataclass(frozen=True)
class SpeedConfig:
    """What ``deep-retrieval bench-speed`` generates, trains and times.

    ``n_users`` ``None`` → ``clip(n_items / 10, 20_000, 1_000_000)``. ``dim`` is the planted
    embedding width (``dr.train.embedding_dim`` follows it). ``joint``: DR trains its own encoder
    and reranker (needs a catalogue small enough for dense Adam); otherwise the planted model is
    the frozen reranker and only the structure network learns. ``hnsw_max_items``: HNSW is
    skipped above this size (its build is the slow part). ``n_single`` one-user calls time each
    point, ``n_single_exact`` the exact searches (``None``: ``n_single``; at 10M items one exact
    query takes a third of a second). ``dr_add_sample``: new items DR's add timing adds (scaled
    to 1 % of the catalogue; see ``_dr_mutations``). ``corpus``: a :data:`CORPORA` name;
    ``"multi-interest"`` needs ``joint``. ``dr``: the DR settings (K = 100, two epochs by default
    here); ``hnsw``, ``ivf``, ``ivf_pq``, ``scann``: the ANN indexes' build settings (their search
    knob is swept along :data:`CURVES`).
    """

    n_items: int = 100_000
    n_users: int | None = None
    interactions_per_user: float = 12.0
    dim: int = 64
    temperature: float = 0.1
    ordered: bool = False
    joint: bool = False
    n_test_users: int = 1_000
    n_single: int = 300
    n_single_exact: int | None = None
    dr_add_sample: int = 2_000
    batch_size: int = 256
    k: int = 100
    hnsw_max_items: int = 2_000_000
    seed: int = 0
    dr: DRConfig = field(default_factory=_speed_dr_config)
    corpus: str = "planted"
    hnsw: HNSWConfig = field(default_factory=lambda: HNSWConfig(m=32, ef_construction=40))
    ivf: IVFConfig = field(default_factory=IVFConfig)
    ivf_pq: IVFPQConfig = field(default_factory=IVFPQConfig)
    scann: ScaNNConfig = field(default_factory=ScaNNConfig)

    def __post_init__(self) -> None:
        if self.corpus not in CORPORA:
            raise ValueError(f"corpus must be one of {', '.join(CORPORA)}, got {self.corpus!r}")
        if self.corpus != "planted" and not self.joint:
            raise ValueError(
                f"corpus={self.corpus} has no planted model to hand the methods: set joint=true"
                " (every method then searches the embeddings DR's reranker learns)"
            )


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def overlap_at_k(ids: np.ndarray, exact: np.ndarray) -> float:
    """Mean ``|top_k ∩ exact_k| / k`` over rows (``ids``, ``exact``: ``(U, k)``, ``-1`` padded)."""
    k = exact.shape[1]
    hits = [np.intersect1d(a[a >= 0], b[b >= 0]).size for a, b in zip(ids, exact, strict=True)]
    return float(np.mean(hits) / k)


def truth_recall(ids: np.ndarray, truth: Sequences) -> float:
    """``mean_u |top_k(u) ∩ truth(u)| / |truth(u)|``."""
    return float(np.mean([np.isin(truth[u], ids[u]).mean() for u in range(len(truth))]))


def planted_softmax(corpus: Any, config: SpeedConfig) -> Any:
    """A :class:`SoftmaxRecommender` whose model is the corpus's planted one (no training):
    mean encoder over the item vectors, item table = the same vectors (shared storage), bias,
    logit ``⟨mean history vector, v⟩ / τ + b``."""
    from ..baselines.softmax import SoftmaxRecommender
    from ..core.modules.softmax import SoftmaxModel

    dim = corpus.item_vectors.shape[1]
    rec = SoftmaxRecommender(
        SoftmaxConfig(
            encoder="mean", embedding_dim=dim, normalize=False, temperature=config.temperature
        )
    )
    model = SoftmaxModel.fixed(
        corpus.item_vectors, corpus.item_bias, temperature=config.temperature
    )
    n_items = len(corpus.item_vectors)
    rec.model_, rec.n_items_, rec.encoder_, rec.history_ordered_ = (
        model,
        n_items,
        "mean",
        config.ordered,
    )
    return rec


def _time_single(
    fn: Callable[[Sequences], Any], histories: Sequences, n_single: int
) -> tuple[float, float]:
    rows = [histories.rows(np.array([i])) for i in range(min(n_single, len(histories)))]
    fn(rows[0])  # warm-up (lazy caches, first-call allocation)
    times = []
    for row in rows:
        t0 = time.perf_counter()
        fn(row)
        times.append(time.perf_counter() - t0)
    return _percentiles(times)


def _time_batched(
    fn: Callable[[Sequences], np.ndarray], histories: Sequences, batch: int
) -> tuple[np.ndarray, float]:
    # Warm-up, as for single queries: the first call builds lazy tables (DR's numpy reranker,
    # its path → slot table), which would otherwise be charged to the first point of a curve.
    fn(histories.rows(np.arange(min(batch, len(histories)))))
    out = []
    t0 = time.perf_counter()
    for s in range(0, len(histories), batch):
        out.append(fn(histories.rows(np.arange(s, min(s + batch, len(histories))))))
    return np.concatenate(out), len(histories) / (time.perf_counter() - t0)


class _ExactFaiss:
    """``IndexFlatIP`` over ``[k, b]`` with queries ``[q, 1]``: the logit as an inner product."""

    def __init__(self, softmax: Any) -> None:
        faiss = require("faiss", "the speed benchmark")

        self.softmax = softmax
        self.vectors = np.ascontiguousarray(softmax.item_embeddings(), np.float32)  # (V, E + 1)
        self.index = faiss.IndexFlatIP(self.vectors.shape[1])
        self.index.add(self.vectors)

    def recommend(self, histories: Sequences, n: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(self.softmax.user_embeddings(histories))
        scores, ids = self.index.search(queries, n)
        return ids, scores


#: Each method's search knob and the values its frontier sweeps (capped at what the index has:
#: lists, leaves, paths). DR's calibrated beam is added to its sweep.
CURVES: dict[str, tuple[str, tuple[int, ...]]] = {
    "dr": ("beam_size", (2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 90, 128)),
    "hnsw": ("ef_search", (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)),
    "ivf": ("n_probe", (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)),
    "ivf-pq": ("n_probe", (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)),
    "scann": ("leaves_to_search", (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)),
}
_PEERS = ("hnsw", "ivf", "ivf-pq", "scann")  # the ANN indexes, built from the same embeddings


def run_speed(config: SpeedConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Generate, fit, time every method; returns the ``speed.json`` document."""
    from ..data.corpus import make_corpus
    from ..estimator import DeepRetrieval

    say = progress or (lambda msg: None)
    c = config
    if c.n_items < 1_000 or c.k < 1 or c.n_test_users < 1:
        raise ValueError(
            "bench-speed needs n_items ≥ 1000, k ≥ 1, n_test_users ≥ 1;"
            f" got {c.n_items}, {c.k}, {c.n_test_users}"
        )
    n_users = c.n_users or int(np.clip(c.n_items // 10, 20_000, 1_000_000))
    n_inter = int(round(n_users * c.interactions_per_user))
    doc: dict[str, Any] = {
        "n_items": c.n_items,
        "n_users": n_users,
        "n_interactions": n_inter,
        "k": c.k,
        "corpus": c.corpus,
        "config": dataclasses.asdict(c),
    }

    t0 = time.perf_counter()
    corpus = make_corpus(
        n_users, c.n_items, n_inter, dim=c.dim, seed=c.seed, interests=CORPORA[c.corpus]
    )
    split: Split = corpus.split(c.n_test_users, seed=c.seed)
    train = Sequences(split.train.indptr, split.train.items, ordered=c.ordered)
    doc["corpus_seconds"] = round(time.perf_counter() - t0, 2)
    say(
        f"corpus ({c.corpus}): {n_users:,} users, {c.n_items:,} items, {n_inter:,} interactions"
        f" ({doc['corpus_seconds']} s)"
    )

    dr_cfg = dataclasses.replace(c.dr, train=dataclasses.replace(c.dr.train, embedding_dim=c.dim))
    dr = DeepRetrieval(dr_cfg, device="cpu")
    t0 = time.perf_counter()
    if c.joint:
        del corpus
        dr.fit(train, c.n_items, on_event=lambda e: say(_epoch_line(e)))
        softmax = _softmax_of(dr, c)
    else:
        softmax = planted_softmax(corpus, c)
        del corpus  # the planted model holds its own copy of the vectors
        dr.fit(train, c.n_items, reranker=softmax.model_, on_event=lambda e: say(_epoch_line(e)))
    dr_build = time.perf_counter() - t0
    gc.collect()
    doc["train"] = _train_figures(dr, train)
    doc["path_assignment_seconds"] = doc["train"]["path_assignment_seconds_last"]
    doc["train_interactions_per_second"] = doc["train"]["interactions_per_second"]
    doc["dr"] = {
        "largest_path_size": int(dr.item_paths_.largest_path_size()),
        "occupied_paths": int(len(dr.item_paths_.path_sizes())),
    }

    hist, truth = split.test_history, split.test_truth
    methods: dict[str, dict[str, Any]] = {}
    bench = _Bench(c, hist, truth)

    say("exact-torch")
    exact_fn = lambda h: softmax.recommend(h, c.k)[0]  # noqa: E731
    n_exact = c.n_single_exact or c.n_single
    point, bench.exact = bench.point(exact_fn, batch=_exact_batch(c), n_single=n_exact)
    methods["exact-torch"] = {
        **point, "curve": [], "index_bytes_per_item": 0.0, "build_seconds": 0.0,
        "add_seconds_per_1pct": None, "delete_seconds_per_1pct": None,
    }
    methods["exact-torch"]["curve"] = [_curve_point(None, None, point)]

    say("dr")
    default_beam = dr.beam_size_for(c.k)
    stats = QueryStats()

    def dr_at(beam: int) -> Callable[[Sequences], np.ndarray]:
        return lambda h: dr.recommend(h, c.k, beam_size=beam, stats=stats)[0]

    knob, values = CURVES["dr"]
    beams = sorted({min(b, dr.state_.codec.n_paths) for b in (*values, default_beam)})
    curve = []
    for b in beams:
        stats.queries = stats.candidates = 0
        point, _ = bench.point(dr_at(b))
        curve.append({**_curve_point(knob, b, point), "candidates_per_query": round(
            stats.candidates_per_query, 1)})
        if b == default_beam:
            methods["dr"] = {**point, "beam_size": b,
                             "candidates_per_query": curve[-1]["candidates_per_query"]}
    methods["dr"].update(
        curve=curve,
        index_bytes_per_item=round(dr_index_bytes(dr.state_) / c.n_items, 2),
        build_seconds=round(dr_build, 2),
    )
    target = methods["dr"][f"recall@{c.k}_vs_exact"]

    say("exact-faiss")
    t0 = time.perf_counter()
    flat = _ExactFaiss(softmax)
    build = time.perf_counter() - t0
    point, _ = bench.point(partial(_peer_search, flat, c.k), n_single=n_exact)
    methods["exact-faiss"] = {
        **point, "curve": [_curve_point(None, None, point)],
        "index_bytes_per_item": round(_faiss_extra_bytes(flat.index, flat.index.d) / c.n_items, 2),
        "build_seconds": round(build, 2),
        **_mutations(c, "exact-faiss", flat.index, flat.vectors),
    }
    del flat
    gc.collect()

    for name in _PEERS:
        skipped = _skip_reason(name, c)
        if skipped:
            methods[name] = {"skipped": skipped}
            say(f"{name}: skipped ({skipped})")
            continue
        say(f"{name}: build")
        t0 = time.perf_counter()
        index = _make_peer(name, c, softmax).fit(train, c.n_items)
        build = time.perf_counter() - t0
        knob, values = CURVES[name]
        curve = []
        for v in _knob_values(name, index, values):
            index.config = dataclasses.replace(index.config, **{knob: v})
            point, _ = bench.point(partial(_peer_search, index, c.k))
            curve.append(_curve_point(knob, v, point))
            say(f"{name}: {knob} {v}: truth {point[f'truth_recall@{c.k}']:.4f},"
                f" p50 {point['query_ms_p50']:.3f} ms")
        # The default operating point: the first knob value whose overlap with exact search
        # reaches DR's (or the last one swept).
        chosen = next((p for p in curve if p[f"recall@{c.k}_vs_exact"] >= target), curve[-1])
        methods[name] = {
            **{key: chosen[key] for key in _point_keys(c.k)},
            knob: chosen["value"],
            "curve": curve,
            "index_bytes_per_item": round(_peer_extra_bytes(name, index) / c.n_items, 2),
            "build_seconds": round(build, 2),
        }
        index.config = dataclasses.replace(index.config, **{knob: chosen["value"]})
        methods[name].update(_peer_mutations(name, c, index, train))
        del index
        gc.collect()

    say("dr: add and delete 1 %")  # last: adding items grows the reranker the peers share
    methods["dr"].update(_dr_mutations(c, dr))

    doc["methods"] = methods
    exact_p50 = methods["exact-torch"]["query_ms_p50"]
    doc["speedup_p50_vs_exact_torch"] = {
        m: round(exact_p50 / v["query_ms_p50"], 2)
        for m, v in methods.items()
        if "query_ms_p50" in v
    }
    doc["matched_truth_recall"] = matched_points(methods, c.k)
    doc["peak_rss_mb"] = round(peak_rss_mb(), 1)
    doc["threads"] = torch.get_num_threads()
    return doc


def _point_keys(k: int) -> tuple[str, ...]:
    return (
        "query_ms_p50", "query_ms_p99", "batch_queries_per_second",
        f"recall@{k}_vs_exact", f"truth_recall@{k}",
    )


def _curve_point(knob: str | None, value: int | None, point: dict[str, Any]) -> dict[str, Any]:
    return {"knob": knob, "value": value, **point}


class _Bench:
    """Times one search function: batched over every test user (recall from that output),
    then ``n_single`` one-user calls."""

    def __init__(self, c: SpeedConfig, hist: Sequences, truth: Sequences) -> None:
        self.c, self.hist, self.truth = c, hist, truth
        self.exact: np.ndarray | None = None  # exact search's top k, set by the first point

    def point(
        self, fn: Callable[[Sequences], np.ndarray], batch: int | None = None,
        n_single: int | None = None,
    ) -> tuple[dict[str, Any], np.ndarray]:
        c = self.c
        ids, qps = _time_batched(fn, self.hist, batch or c.batch_size)
        p50, p99 = _time_single(fn, self.hist, n_single or c.n_single)
        exact = ids if self.exact is None else self.exact
        return _figures(p50, p99, qps, ids, exact, self.truth, c.k), ids


def matched_points(methods: dict[str, dict[str, Any]], k: int) -> dict[str, dict[str, Any]]:
    """Per ANN method, its cheapest curve point (lowest single-query p50) whose truth recall@k
    is at least DR's at its default beam, with DR's ratios against it:
    ``latency_ratio = p50(method) / p50(DR)`` (≥ 1: DR answers one query at least as fast) and
    ``throughput_ratio = qps(DR) / qps(method)`` (batched). ``reached: false`` where no point
    of the method reaches DR's truth recall."""
    dr = methods["dr"]
    need = dr[f"truth_recall@{k}"]
    out: dict[str, dict[str, Any]] = {}
    for name in _PEERS:
        m = methods.get(name, {})
        if "curve" not in m:
            continue
        ok = [p for p in m["curve"] if p[f"truth_recall@{k}"] >= need]
        if not ok:
            best = max(p[f"truth_recall@{k}"] for p in m["curve"])
            out[name] = {"reached": False, f"best_truth_recall@{k}": best}
            continue
        p = min(ok, key=lambda p: p["query_ms_p50"])
        out[name] = {
            "reached": True,
            "knob": p["knob"],
            "value": p["value"],
            "query_ms_p50": p["query_ms_p50"],
            "batch_queries_per_second": p["batch_queries_per_second"],
            f"truth_recall@{k}": p[f"truth_recall@{k}"],
            "latency_ratio": round(p["query_ms_p50"] / dr["query_ms_p50"], 3),
            "throughput_ratio": round(
                dr["batch_queries_per_second"] / p["batch_queries_per_second"], 3
            ),
        }
    return out


def _peer_search(index: Any, k: int, histories: Sequences) -> np.ndarray:
    return index.recommend(histories, k)[0]


def _skip_reason(name: str, c: SpeedConfig) -> str | None:
    if name == "hnsw" and c.n_items > c.hnsw_max_items:
        return f"n_items > hnsw_max_items = {c.hnsw_max_items:,} (build time)"
    if name == "scann":
        try:
            require("scann", "ann-scann")
        except MissingExtra as exc:
            return str(exc)
    return None


def _make_peer(name: str, c: SpeedConfig, softmax: Any) -> Any:
    from ..baselines.ann import FaissHNSW, FaissIVF, FaissIVFPQ, ScaNN

    classes = {"hnsw": (FaissHNSW, c.hnsw), "ivf": (FaissIVF, c.ivf),
               "ivf-pq": (FaissIVFPQ, c.ivf_pq), "scann": (ScaNN, c.scann)}
    cls, cfg = classes[name]
    return cls(cfg, softmax, seed=c.seed, query_batch_size=c.batch_size)


def _knob_values(name: str, index: Any, values: tuple[int, ...]) -> list[int]:
    """The sweep's values, capped at the index's lists / leaves (duplicates dropped)."""
    faiss = require("faiss", "the speed benchmark")

    if name in ("ivf", "ivf-pq"):
        top = faiss.extract_index_ivf(index.index_).nlist
    elif name == "scann":
        top = index.n_leaves_
    else:
        return list(values)
    return sorted({min(v, top) for v in values})


def dr_index_bytes(state: Any) -> int:
    """Bytes DR keeps beyond the reranker's item vectors: the item → path table, the inverted
    index (per-path offsets and item lists), the removed-item flags, the structure network's
    parameters, and the fused kernel's dense path → slot table (``4·K**D`` bytes, built on the
    first query)."""
    from ..index.retrieval import path_slots

    paths = state.item_paths
    arrays = (paths.path_ids, paths.occupied_paths, paths.path_indptr, paths.path_items,
              paths.excluded, path_slots(state))
    params = sum(p.numel() * p.element_size() for p in state.net.structure.parameters())
    return int(sum(a.nbytes for a in arrays) + params)


def _faiss_extra_bytes(index: Any, dim: int) -> int:
    """The serialised index's size minus the ``(V, dim)`` float32 item vectors it holds."""
    faiss = require("faiss", "the speed benchmark")

    return int(faiss.serialize_index(index).nbytes - index.ntotal * dim * 4)


def _peer_extra_bytes(name: str, index: Any) -> float:
    """Bytes the ANN index keeps beyond one float32 copy of the ``(V, E')`` item vectors that
    every method keeps (for re-scoring): graph, lists, ids, codes, centroids."""

    dim = index.item_vectors_.shape[1]
    if name == "scann":
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            index.index_.serialize(tmp)
            total = sum(f.stat().st_size for f in Path(tmp).iterdir())
        return float(total - index.n_items_ * dim * 4)  # dataset.npy: the vectors, reordering
    return float(_faiss_extra_bytes(index.index_, dim))


def _new_vectors(vectors: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` new item vectors: existing ones (chosen at random) plus a little noise."""
    rng = np.random.default_rng(seed)
    src = vectors[rng.integers(0, len(vectors), n)]
    noise = 0.01 * rng.standard_normal(src.shape).astype(np.float32)
    return np.ascontiguousarray(src + noise, dtype=np.float32)


def _mutations(c: SpeedConfig, name: str, index: Any, vectors: np.ndarray) -> dict[str, Any]:
    """Seconds to add, then delete, 1 % of the catalogue in a faiss index (``None`` where the
    index type cannot)."""
    n = max(1, c.n_items // 100)
    out: dict[str, Any] = {"add_seconds_per_1pct": None, "delete_seconds_per_1pct": None}
    t0 = time.perf_counter()
    index.add(_new_vectors(vectors, n, c.seed))
    out["add_seconds_per_1pct"] = round(time.perf_counter() - t0, 4)
    doomed = np.random.default_rng(c.seed + 1).choice(c.n_items, n, replace=False)
    try:
        t0 = time.perf_counter()
        index.remove_ids(doomed.astype(np.int64))
        out["delete_seconds_per_1pct"] = round(time.perf_counter() - t0, 4)
    except RuntimeError:  # faiss: "not implemented for this type of index" (HNSW)
        pass
    return out


def _peer_mutations(name: str, c: SpeedConfig, index: Any, train: Sequences) -> dict[str, Any]:
    if name == "scann":
        # ScaNN mutates only a searcher built with docids (a second build, not timed); the
        # first searcher goes first (at 10M items each holds gigabytes).
        index.index_ = None
        gc.collect()
        mutable = _make_peer(name, c, index.softmax).fit(train, c.n_items, mutable=True)
        n = max(1, c.n_items // 100)
        new = _new_vectors(index.item_vectors_, n, c.seed)
        t0 = time.perf_counter()
        mutable.index_.upsert([str(c.n_items + i) for i in range(n)], new, batch_size=256)
        add = time.perf_counter() - t0
        doomed = np.random.default_rng(c.seed + 1).choice(c.n_items, n, replace=False)
        t0 = time.perf_counter()
        mutable.index_.delete([str(i) for i in doomed])
        delete = time.perf_counter() - t0
        del mutable
        return {"add_seconds_per_1pct": round(add, 4), "delete_seconds_per_1pct": round(delete, 4)}
    vectors = index.item_vectors_
    if name == "hnsw" and index.config.metric == "l2-reduction":
        # Keep the indexed norm: [x, sqrt(M² − |x|²)], M from the indexed items (clipped).
        new = _new_vectors(vectors, max(1, c.n_items // 100), c.seed)
        return _mutations(c, name, _Augmented(index.index_, vectors), new)
    if name == "ivf-pq":
        return _mutations(c, name, _Padded(index), vectors)
    return _mutations(c, name, index.index_, vectors)


class _Augmented:
    """An l2-reduction HNSW index, taking un-augmented vectors in ``add`` (as ``fit`` does)."""

    def __init__(self, index: Any, vectors: np.ndarray) -> None:
        self.index = index
        self.max_sq = float((vectors.astype(np.float64) ** 2).sum(axis=1).max())

    def add(self, x: np.ndarray) -> None:
        extra = np.sqrt(np.maximum(self.max_sq - (x.astype(np.float64) ** 2).sum(axis=1), 0.0))
        self.index.add(np.ascontiguousarray(np.hstack([x, extra[:, None]]), dtype=np.float32))

    def remove_ids(self, ids: np.ndarray) -> None:
        self.index.remove_ids(ids)


class _Padded:
    """An IVF-PQ index, taking un-padded vectors in ``add`` (as ``fit`` does)."""

    def __init__(self, peer: Any) -> None:
        self.peer = peer

    def add(self, x: np.ndarray) -> None:
        self.peer.index_.add(self.peer._padded(x))

    def remove_ids(self, ids: np.ndarray) -> None:
        self.peer.index_.remove_ids(ids)


_ADD_CHUNK = 1_000  # new items per DeepRetrieval.add_items call in the add timing


def _dr_mutations(c: SpeedConfig, dr: Any) -> dict[str, Any]:
    """DR: add new items as cold items, each placed from one neighbour (the existing item it was
    copied from; :meth:`DeepRetrieval.add_items` also fits their reranker rows by maximum
    likelihood), then remove 1 % of the old items.

    Items are added in calls of :data:`_ADD_CHUNK` (one call's reranker fit couples every new
    item with every other, so a call's cost grows with the square of its size), and only the
    first ``dr_add_sample`` of the 1 % are timed: each call costs the same (its log-partition
    terms run over all ``V`` old items), so the time scales linearly to 1 %
    (``add_items_timed`` says how many were).
    """
    n = max(1, c.n_items // 100)
    timed = min(n, c.dr_add_sample)
    rng = np.random.default_rng(c.seed)
    src = rng.integers(0, c.n_items, timed).astype(np.int64)
    t0 = time.perf_counter()
    for s in range(0, timed, _ADD_CHUNK):
        part = src[s : s + _ADD_CHUNK]
        dr.add_items(n_new=len(part), neighbours=Sequences(np.arange(len(part) + 1), part))
    add = (time.perf_counter() - t0) * n / timed
    doomed = np.random.default_rng(c.seed + 1).choice(c.n_items, n, replace=False)
    t0 = time.perf_counter()
    dr.remove_items(doomed)
    delete = time.perf_counter() - t0
    return {"add_seconds_per_1pct": round(add, 4), "delete_seconds_per_1pct": round(delete, 4),
            "add_items_timed": timed}


def _exact_batch(c: SpeedConfig) -> int:
    # A (batch, V) float32 score matrix: keep it near 256 MiB.
    return int(max(1, min(c.batch_size, 2**26 // c.n_items)))


def _softmax_of(dr: Any, c: SpeedConfig) -> Any:
    """DR's own (jointly trained) reranker as a SoftmaxRecommender, for the exact/ANN methods."""
    from ..baselines.softmax import SoftmaxRecommender

    t = dr.config.train
    rec = SoftmaxRecommender(
        SoftmaxConfig(
            encoder=dr.encoder_kind_,
            embedding_dim=t.embedding_dim,
            history_len=t.history_len,
            query_history_len=t.query_history_len,
            normalize=t.normalize,
            temperature=t.temperature,
        )
    )
    rec.model_, rec.n_items_, rec.encoder_, rec.history_ordered_ = (
        dr.net_.reranker,
        c.n_items,
        dr.encoder_kind_,
        c.ordered,
    )
    return rec


def _figures(
    p50: float, p99: float, qps: float, ids: np.ndarray, exact: np.ndarray, truth: Sequences, k: int
) -> dict[str, Any]:
    return {
        "query_ms_p50": round(p50, 3),
        "query_ms_p99": round(p99, 3),
        "batch_queries_per_second": round(qps, 1),
        f"recall@{k}_vs_exact": round(overlap_at_k(ids, exact), 4),
        f"truth_recall@{k}": round(truth_recall(ids, truth), 4),
    }


def _train_figures(dr: Any, train: Sequences) -> dict[str, Any]:
    from ..data.samples import TrainingSamples

    hist = dr.history_
    n_samples = len(TrainingSamples(train, dr.config.train.history_len))
    net = [e["network_seconds"] for e in hist]
    last = hist[-1]
    return {
        "epochs": len(hist),
        "samples_per_epoch": n_samples,
        "network_seconds_per_epoch": [round(x, 2) for x in net],
        "interactions_per_second": round(n_samples / (sum(net) / len(net)), 1),
        "path_scoring_seconds": [e.get("scoring_seconds") for e in hist],
        "score_accumulation_seconds": [e.get("accumulation_seconds") for e in hist],
        "coordinate_descent_seconds": [e.get("assignment_seconds") for e in hist],
        "path_assignment_seconds_last": round(
            last.get("accumulation_seconds", 0.0) + last.get("assignment_seconds", 0.0), 2
        ),
        "coordinate_descent_us_per_item": round(
            last.get("assignment_seconds", 0.0) / dr.n_items_ * 1e6, 3
        ),
        "score_accumulation_us_per_item": round(
            last.get("accumulation_seconds", 0.0) / dr.n_items_ * 1e6, 3
        ),
    }


def _epoch_line(e: dict[str, Any]) -> str:
    keys = (
        "epoch",
        "network_seconds",
        "scoring_seconds",
        "accumulation_seconds",
        "assignment_seconds",
        "largest_path_size",
    )
    return "dr " + ", ".join(f"{k} {e[k]}" for k in keys if k in e)


def speed_markdown(docs: list[dict[str, Any]]) -> str:
    """Per corpus size: every method at its default operating point (latency, throughput,
    recall, index size, build/add/delete cost), then DR against each ANN method's cheapest
    point at DR's truth recall."""
    lines = []
    for d in docs:
        k = d["k"]
        corpus = "" if d.get("corpus", "planted") == "planted" else f", {d['corpus']} corpus"
        lines += [
            f"### {d['n_items']:,} items ({d['n_users']:,} users,"
            f" {d['n_interactions']:,} interactions{corpus})",
            "",
            f"| method | p50 ms | p99 ms | queries/s (batched) | recall@{k} vs exact"
            f" | truth recall@{k} | index B/item | build s | add 1 % s | delete 1 % s"
            " | × exact-torch (p50) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, m in d["methods"].items():
            if "skipped" in m:
                lines.append(f"| {name} | skipped: {m['skipped']} | | | | | | | | | |")
                continue
            extra = (
                f" (beam {m['beam_size']}, {m['candidates_per_query']:.0f} candidates)"
                if name == "dr"
                else next((f" ({key} {m[key]})" for key in _KNOBS if key in m), "")
            )
            lines.append(
                f"| {name}{extra} | {m['query_ms_p50']:.3f} | {m['query_ms_p99']:.3f}"
                f" | {m['batch_queries_per_second']:,.0f} |"
                f" {m[f'recall@{k}_vs_exact']:.3f} | {m[f'truth_recall@{k}']:.3f}"
                f" | {_cell(m.get('index_bytes_per_item'), '.1f')}"
                f" | {_cell(m.get('build_seconds'), '.2f')}"
                f" | {_cell(m.get('add_seconds_per_1pct'), '.3f')}"
                f" | {_cell(m.get('delete_seconds_per_1pct'), '.3f')} |"
                f" {d['speedup_p50_vs_exact_torch'][name]:.1f} |"
            )
        matched = d.get("matched_truth_recall", {})
        if matched:
            dr = d["methods"]["dr"]
            lines += [
                "",
                f"At DR's truth recall@{k} ({dr[f'truth_recall@{k}']:.3f}, beam"
                f" {dr['beam_size']}: {dr['query_ms_p50']:.3f} ms,"
                f" {dr['batch_queries_per_second']:,.0f} queries/s), each ANN method's"
                " cheapest point that reaches it:",
                "",
                f"| method | point | p50 ms | queries/s | truth recall@{k}"
                " | p50 ÷ DR's (≥ 1: DR faster) | DR's queries/s ÷ its |",
                "|---|---|---|---|---|---|---|",
            ]
            for name, m in matched.items():
                if not m["reached"]:
                    lines.append(
                        f"| {name} | never (best {m[f'best_truth_recall@{k}']:.3f}) | | | | | |"
                    )
                    continue
                lines.append(
                    f"| {name} | {m['knob']} {m['value']} | {m['query_ms_p50']:.3f}"
                    f" | {m['batch_queries_per_second']:,.0f} | {m[f'truth_recall@{k}']:.3f}"
                    f" | {m['latency_ratio']:.2f} | {m['throughput_ratio']:.2f} |"
                )
        t = d["train"]
        lines += [
            "",
            f"Training (DR, {t['epochs']} epoch{'s' if t['epochs'] != 1 else ''}"
            f" of {t['samples_per_epoch']:,} samples):"
            f" {t['interactions_per_second']:,.0f}"
            f" samples/s; path assignment {d['path_assignment_seconds']} s"
            " (accumulation + coordinate descent,"
            f" {t['coordinate_descent_us_per_item']} µs per item for the descent);"
            f" largest path {d['dr']['largest_path_size']};"
            f" peak RSS {d['peak_rss_mb']:,.0f} MiB.",
            "",
        ]
    return "\n".join(lines)


_KNOBS = tuple(knob for knob, _ in CURVES.values())


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def plot_frontier(doc: dict[str, Any], path: Any) -> None:
    """Truth recall@k against single-query p50 (left) and batched queries/s (right), one line
    per method along its knob; the exact searches are single points."""
    require("matplotlib", "plotting").use("Agg")
    plt = require("matplotlib.pyplot", "plotting")

    k = doc["k"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for name, m in doc["methods"].items():
        curve = m.get("curve")
        if not curve:
            continue
        truth = [p[f"truth_recall@{k}"] for p in curve]
        style: dict[str, Any] = {"marker": "o", "markersize": 3, "label": name}
        if name == "dr":
            style.update(linewidth=2.5, color="black")
        elif len(curve) == 1:  # exact search: one point, no knob
            style.update(marker="*", markersize=11, linestyle="none")
        axes[0].plot([p["query_ms_p50"] for p in curve], truth, **style)
        axes[1].plot([p["batch_queries_per_second"] for p in curve], truth, **style)
    corpus = "" if doc.get("corpus", "planted") == "planted" else f", {doc['corpus']}"
    for ax, xlabel in zip(axes, ("single-query p50 (ms)", "batched queries/s (batches of 256)"),
                          strict=True):
        ax.set(xscale="log", xlabel=xlabel, ylabel=f"truth recall@{k}",
               title=f"{doc['n_items']:,} items{corpus}")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_speed(docs: list[dict[str, Any]], path: Any) -> None:
    """Latency per method against corpus size (log-log), and the phase costs, in one PNG."""
    require("matplotlib", "plotting").use("Agg")
    plt = require("matplotlib.pyplot", "plotting")

    docs = sorted(docs, key=lambda d: d["n_items"])
    sizes = [d["n_items"] for d in docs]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    for name in METHODS:
        pts = [
            (d["n_items"], d["methods"][name]["query_ms_p50"])
            for d in docs
            if "query_ms_p50" in d["methods"].get(name, {})
        ]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=name)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="items",
        ylabel="single-query p50 (ms)",
        title="Retrieval latency",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax = axes[1]
    ax.plot(
        sizes, [d["path_assignment_seconds"] for d in docs], marker="o", label="path assignment (s)"
    )
    ax.plot(
        sizes,
        [d["train"]["network_seconds_per_epoch"][-1] for d in docs],
        marker="o",
        label="network epoch (s)",
    )
    ax.plot(sizes, [d["peak_rss_mb"] / 1024 for d in docs], marker="o", label="peak RSS (GiB)")
    ax.set(xscale="log", yscale="log", xlabel="items", title="Training cost")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = [
    "CORPORA",
    "CURVES",
    "METHODS",
    "SpeedConfig",
    "dr_index_bytes",
    "matched_points",
    "overlap_at_k",
    "peak_rss_mb",
    "plot_frontier",
    "plot_speed",
    "run_speed",
    "speed_markdown",
    "truth_recall",
]
