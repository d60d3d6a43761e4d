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
from typing import Any

import numpy as np
import torch

from ..config import DRConfig, HNSWConfig, IVFConfig, SoftmaxConfig
from ..data.types import Sequences, Split

METHODS = ("dr", "exact-torch", "exact-faiss", "hnsw", "ivf")
_HNSW_EF = (16, 32, 64, 128, 256, 512, 1024, 2048)
_IVF_PROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def _speed_dr_config() -> DRConfig:
    d = DRConfig()
    return dataclasses.replace(
        d,
        structure=dataclasses.replace(d.structure, n_nodes=100),
        train=dataclasses.replace(d.train, epochs=2, embedding_dim=64),
    )


@dataclass(frozen=True)
class SpeedConfig:
    """What ``deep-retrieval bench-speed`` generates, trains and times.

    ``n_users`` ``None`` → ``clip(n_items / 10, 20_000, 1_000_000)``. ``dim`` is the planted
    embedding width (``dr.train.embedding_dim`` follows it). ``joint``: DR trains its own encoder
    and reranker (needs a catalogue small enough for dense Adam); otherwise the planted model is
    the frozen reranker and only the structure network learns. ``hnsw_max_items``: HNSW is
    skipped above this size (its build is the slow part). ``dr``: the DR settings (K = 100, two
    epochs by default here).
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
    batch_size: int = 256
    k: int = 100
    hnsw_max_items: int = 2_000_000
    seed: int = 0
    dr: DRConfig = field(default_factory=_speed_dr_config)
    hnsw: HNSWConfig = field(default_factory=lambda: HNSWConfig(m=32, ef_construction=40))
    ivf: IVFConfig = field(default_factory=IVFConfig)


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

    vectors = torch.from_numpy(corpus.item_vectors)
    n_items, dim = vectors.shape
    rec = SoftmaxRecommender(
        SoftmaxConfig(
            encoder="mean", embedding_dim=dim, normalize=False, temperature=config.temperature
        )
    )
    with torch.device("meta"):  # shapes only: every tensor is replaced below
        model = SoftmaxModel(
            n_items, dim, "mean", bias=True, normalize=False, temperature=config.temperature
        )
    table = torch.cat([vectors, torch.zeros(1, dim)])  # + the padding row
    model.encoder.item_embedding.weight = torch.nn.Parameter(table, requires_grad=False)
    model.item_table.weight = torch.nn.Parameter(table[:n_items], requires_grad=False)
    model.item_bias = torch.nn.Parameter(torch.from_numpy(corpus.item_bias), requires_grad=False)
    model.eval()
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
    out = []
    t0 = time.perf_counter()
    for s in range(0, len(histories), batch):
        out.append(fn(histories.rows(np.arange(s, min(s + batch, len(histories))))))
    return np.concatenate(out), len(histories) / (time.perf_counter() - t0)


class _ExactFaiss:
    """``IndexFlatIP`` over ``[k, b]`` with queries ``[q, 1]``: the logit as an inner product."""

    def __init__(self, softmax: Any) -> None:
        import faiss

        self.softmax = softmax
        vectors = softmax.item_embeddings()  # (V, E + 1)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)

    def recommend(self, histories: Sequences, n: int) -> np.ndarray:
        _, ids = self.index.search(np.ascontiguousarray(self.softmax.user_embeddings(histories)), n)
        return ids


def run_speed(config: SpeedConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Generate, fit, time every method; returns the ``speed.json`` document."""
    from ..baselines.ann import FaissHNSW, FaissIVF
    from ..data.corpus import make_corpus
    from ..estimator import DeepRetrieval
    from ..index.retrieval import QueryStats

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
        "config": dataclasses.asdict(c),
    }

    t0 = time.perf_counter()
    corpus = make_corpus(n_users, c.n_items, n_inter, dim=c.dim, seed=c.seed)
    split: Split = corpus.split(c.n_test_users, seed=c.seed)
    train = Sequences(split.train.indptr, split.train.items, ordered=c.ordered)
    doc["corpus_seconds"] = round(time.perf_counter() - t0, 2)
    say(
        f"corpus: {n_users:,} users, {c.n_items:,} items, {n_inter:,} interactions"
        f" ({doc['corpus_seconds']} s)"
    )

    dr_cfg = dataclasses.replace(c.dr, train=dataclasses.replace(c.dr.train, embedding_dim=c.dim))
    dr = DeepRetrieval(dr_cfg, device="cpu")
    if c.joint:
        dr.fit(train, c.n_items, on_event=lambda e: say(_epoch_line(e)))
        softmax = _softmax_of(dr, c)
    else:
        softmax = planted_softmax(corpus, c)
        del corpus  # the planted model holds its own copy of the vectors
        gc.collect()
        dr.fit(train, c.n_items, reranker=softmax.model_, on_event=lambda e: say(_epoch_line(e)))
    doc["train"] = _train_figures(dr, train)
    doc["path_assignment_seconds"] = doc["train"]["path_assignment_seconds_last"]
    doc["train_interactions_per_second"] = doc["train"]["interactions_per_second"]
    doc["dr"] = {
        "largest_path_size": int(dr.item_paths_.largest_path_size()),
        "occupied_paths": int(len(dr.item_paths_.path_sizes())),
    }

    hist, truth = split.test_history, split.test_truth
    methods: dict[str, dict[str, Any]] = {}

    say("exact-torch")
    exact_fn = lambda h: softmax.recommend(h, c.k)[0]  # noqa: E731
    exact, qps = _time_batched(exact_fn, hist, _exact_batch(c))
    p50, p99 = _time_single(exact_fn, hist, c.n_single)
    methods["exact-torch"] = _figures(p50, p99, qps, exact, exact, truth, c.k)

    say("dr")
    beam = dr.beam_size_for(c.k)
    dr_fn = lambda h: dr.recommend(h, c.k, beam_size=beam)[0]  # noqa: E731
    ids, qps = _time_batched(dr_fn, hist, c.batch_size)
    stats = QueryStats()
    p50, p99 = _time_single(
        lambda h: dr.recommend(h, c.k, beam_size=beam, stats=stats)[0], hist, c.n_single
    )
    methods["dr"] = _figures(p50, p99, qps, ids, exact, truth, c.k)
    methods["dr"].update(
        beam_size=beam,
        candidates_per_query=round(stats.candidates_per_query, 1),
    )
    target = methods["dr"][f"recall@{c.k}_vs_exact"]

    say("exact-faiss")
    t0 = time.perf_counter()
    flat = _ExactFaiss(softmax)
    build = time.perf_counter() - t0
    # The lambdas run before the `del flat` below (ruff's F821 sees only the deletion).
    ids, qps = _time_batched(lambda h: flat.recommend(h, c.k), hist, c.batch_size)  # noqa: F821
    p50, p99 = _time_single(lambda h: flat.recommend(h, c.k), hist, c.n_single)  # noqa: F821
    methods["exact-faiss"] = {
        **_figures(p50, p99, qps, ids, exact, truth, c.k),
        "build_seconds": round(build, 2),
    }
    del flat
    gc.collect()

    # cfg as Any: dataclasses.replace(cfg, **{knob: v}) cannot be checked on a union of configs.
    sweeps: tuple[tuple[str, type[FaissHNSW | FaissIVF], str, tuple[int, ...], Any], ...] = (
        ("hnsw", FaissHNSW, "ef_search", _HNSW_EF, c.hnsw),
        ("ivf", FaissIVF, "n_probe", _IVF_PROBES, c.ivf),
    )
    for name, cls, knob, values, cfg in sweeps:
        if name == "hnsw" and c.n_items > c.hnsw_max_items:
            methods[name] = {
                "skipped": f"n_items > hnsw_max_items = {c.hnsw_max_items:,} (build time)"
            }
            continue
        say(f"{name}: build")
        t0 = time.perf_counter()
        index = cls(cfg, softmax, seed=c.seed, query_batch_size=c.batch_size).fit(train, c.n_items)
        build = time.perf_counter() - t0
        # The smallest knob value whose overlap with exact search reaches DR's (on 200 queries).
        probe = hist.rows(np.arange(min(200, len(hist))))
        chosen, sweep = values[-1], {}
        for v in values:
            index.config = dataclasses.replace(cfg, **{knob: v})
            sweep[v] = overlap_at_k(index.recommend(probe, c.k)[0], exact[: len(probe)])
            if sweep[v] >= target:
                chosen = v
                break
        index.config = dataclasses.replace(cfg, **{knob: chosen})
        say(f"{name}: {knob} = {chosen}")
        fn = lambda h, index=index: index.recommend(h, c.k)[0]  # noqa: E731
        ids, qps = _time_batched(fn, hist, c.batch_size)
        p50, p99 = _time_single(fn, hist, c.n_single)
        methods[name] = {
            **_figures(p50, p99, qps, ids, exact, truth, c.k),
            "build_seconds": round(build, 2),
            knob: chosen,
            f"{knob}_sweep_overlap": {str(k): round(v, 4) for k, v in sweep.items()},
        }
        del index
        gc.collect()

    doc["methods"] = methods
    exact_p50 = methods["exact-torch"]["query_ms_p50"]
    doc["speedup_p50_vs_exact_torch"] = {
        m: round(exact_p50 / v["query_ms_p50"], 2)
        for m, v in methods.items()
        if "query_ms_p50" in v
    }
    doc["peak_rss_mb"] = round(peak_rss_mb(), 1)
    doc["threads"] = torch.get_num_threads()
    return doc


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
    """One table per corpus size: every method's latency, throughput and recall."""
    lines = []
    for d in docs:
        k = d["k"]
        lines += [
            f"### {d['n_items']:,} items ({d['n_users']:,} users,"
            f" {d['n_interactions']:,} interactions)",
            "",
            f"| method | p50 ms | p99 ms | queries/s (batched) | recall@{k} vs exact"
            f" | truth recall@{k} | build s | × exact-torch (p50) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, m in d["methods"].items():
            if "skipped" in m:
                lines.append(f"| {name} | skipped: {m['skipped']} | | | | | | |")
                continue
            extra = (
                ""
                if name != "dr"
                else f" (beam {m['beam_size']}, {m['candidates_per_query']:.0f} candidates)"
            )
            lines.append(
                f"| {name}{extra} | {m['query_ms_p50']:.3f} | {m['query_ms_p99']:.3f}"
                f" | {m['batch_queries_per_second']:,.0f} |"
                f" {m[f'recall@{k}_vs_exact']:.3f} | {m[f'truth_recall@{k}']:.3f}"
                f" | {m.get('build_seconds', '')} |"
                f" {d['speedup_p50_vs_exact_torch'][name]:.1f} |"
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


def plot_speed(docs: list[dict[str, Any]], path: Any) -> None:
    """Latency per method against corpus size (log-log), and the phase costs, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    "METHODS",
    "SpeedConfig",
    "overlap_at_k",
    "peak_rss_mb",
    "plot_speed",
    "run_speed",
    "speed_markdown",
    "truth_recall",
]
