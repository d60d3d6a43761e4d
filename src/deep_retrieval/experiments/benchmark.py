"""The side-by-side benchmark behind ``deep-retrieval benchmark``.

Every method is fitted on the same :class:`~deep_retrieval.data.types.Split` and evaluated on the
same held-out users. Outputs in ``out_dir``:

- ``results.json``: ``{"dataset", "protocol", "k", "data": {…}, "methods": {NAME: {"metrics",
  "fit_seconds", "query_ms_p50", "query_ms_p99", …}}, "config", "versions"}``;
- ``truth.csv`` (``user,item``, external ids) — the ground truth of every test user;
- ``recommendations/NAME.csv`` (``user,rank,item``, rank from 1) — each test user's top ``max(k)``;
- ``results.md`` — the same figures as a readable table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import BenchmarkConfig, to_dict
from ..data.types import Sequences, Split
from ..evaluation.evaluate import evaluate
from ..evaluation.metrics import evaluate_recommendations
from ..utils import LazyModule, atomic_write_text, resolve_device, seed_everything, versions
from . import tuning

pd = LazyModule("pandas", "writing benchmark results")

BASELINE_METHODS = (
    "most-popular", "item-cf", "als", "brute-force", "ann-hnsw", "ann-ivf", "ann-ivfpq", "ann-scann"
)

Progress = Callable[[str], None]


#: ``dr``: DR exactly as ``train`` / ``DeepRetrieval().fit`` produces it (its own reranker);
#: ``dr-shared``: DR's index over the brute-force model's trained reranker (frozen), so DR, the
#: ANN baselines and brute force rank with the very same embeddings and the gap is the index's;
#: ``dr-attention``: ``dr`` with ``dr.reranker=attention`` (its candidates reranked by the
#: candidate-aware reranker); ``attention-exhaustive``: that model's reranker over every item
#: (on ``exhaustive_users`` test users).
DR_METHODS = ("dr", "dr-shared", "dr-attention", "attention-exhaustive")


def available_methods() -> tuple[str, ...]:
    return (*BASELINE_METHODS, *DR_METHODS)


def check_methods(methods: Sequence[str]) -> list[str]:
    """Validate method names (order kept, duplicates dropped)."""
    out: list[str] = []
    for m in methods:
        if m not in available_methods():
            raise ValueError(f"unknown method {m!r}; choose from {', '.join(available_methods())}")
        if m not in out:
            out.append(m)
    if not out:
        raise ValueError("no method given; e.g. --methods most-popular,brute-force")
    return out


class CountedRecommender:
    """A fitted DR model whose queries are tallied
    (:class:`~deep_retrieval.index.retrieval.QueryStats`) for the results' candidates-per-query
    figures; the model itself is not changed."""

    name = "dr"

    def __init__(self, model: Any, name: str = "dr") -> None:
        from ..index.retrieval import QueryStats

        self.name = name
        self.model = model
        self.stats = QueryStats()

    def recommend(self, histories: Sequences, n: int, *, exclude: Sequences | None = None):
        self.n_ = n
        return self.model.recommend(histories, n, exclude=exclude, stats=self.stats)

    def figures(self) -> dict[str, Any]:
        """Extra figures for the benchmark's results.json."""
        d = self.model.diagnostics(self.stats)
        info = {"largest_path_size": d["largest_path_size"], "occupied_paths": d["occupied_paths"]}
        if "candidates_per_query" in d:
            info["candidates_per_query"] = round(d["candidates_per_query"], 1)
            info["fraction_scored"] = round(d["fraction_scored"], 5)
        return info


class _DRMethod(CountedRecommender):
    """Benchmark adapter: fits DR, over the brute-force softmax model's reranker when given one."""

    def __init__(
        self, config: BenchmarkConfig, softmax: Any, device: str, name: str | None = None
    ) -> None:
        from ..estimator import DeepRetrieval

        dr = config.dr
        if softmax is not None:  # the reranker's width must match the shared softmax model
            dr = replace(dr, train=replace(dr.train, embedding_dim=softmax.config.embedding_dim))
        if name == "dr-attention":
            dr = replace(dr, reranker="attention")
        name = name or ("dr" if softmax is None else "dr-shared")
        super().__init__(DeepRetrieval(dr, device=device), name)
        self.softmax = softmax

    def fit(self, train: Sequences, n_items: int) -> _DRMethod:
        reranker = self.softmax.model_ if self.softmax is not None else None
        self.model.fit(train, n_items, reranker=reranker)
        return self

    def figures(self) -> dict[str, Any]:
        info = super().figures()
        info["shared_reranker"] = self.softmax is not None
        info["beam_size"] = self.model.beam_size_for(self.n_)
        return info


class Exhaustive:
    """``attention-exhaustive``: a ``dr-attention`` model's reranker over every item
    (``recommend(..., exhaustive=True)``). ``fit`` fits the model unless it is fitted already
    (in the benchmark it is the fitted ``dr-attention``)."""

    name = "attention-exhaustive"

    def __init__(self, model: Any) -> None:
        self.model = model

    def fit(self, train: Sequences, n_items: int) -> Exhaustive:
        if getattr(self.model, "state_", None) is None:
            self.model.fit(train, n_items)
        return self

    def recommend(self, histories: Sequences, n: int, *, exclude: Sequences | None = None):
        return self.model.recommend(histories, n, exclude=exclude, exhaustive=True)


def _build(name: str, config: BenchmarkConfig, fitted: dict[str, Any], device: str):
    from ..baselines import make_baseline

    if name == "attention-exhaustive":
        return Exhaustive(fitted["dr-attention"].model)
    if name in DR_METHODS:
        shared = fitted["brute-force"] if name == "dr-shared" else None
        return _DRMethod(config, shared, device, name)
    softmax = fitted.get("brute-force") if name.startswith("ann-") else None
    return make_baseline(name, config, softmax=softmax, device=device)


def run_benchmark(
    split: Split,
    methods: Sequence[str],
    ks: Sequence[int],
    config: BenchmarkConfig = BenchmarkConfig(),
    *,
    out_dir: str | Path | None = None,
    dataset: str = "custom",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fit and evaluate ``methods`` on ``split`` at every ``k``; write the outputs when ``out_dir``
    is set.

    ANN methods search the item embeddings of the ``brute-force`` softmax model, which is trained
    once and shared (its training time is included in their ``fit_seconds``); so does
    ``dr-shared``, which reranks with it (``dr`` trains its own).

    Returns:
        The ``results.json`` document as a dict.
    """
    methods = check_methods(methods)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"k values must be positive integers, got {ks}")
    say = progress or (lambda _msg: None)
    device = resolve_device(config.device)
    fit_order = list(methods)
    needs_softmax = any(m.startswith("ann-") or m == "dr-shared" for m in methods)
    if needs_softmax and "brute-force" not in methods:
        fit_order.insert(0, "brute-force")  # ANN baselines need its embeddings
    elif "brute-force" in methods:
        fit_order.remove("brute-force")
        fit_order.insert(0, "brute-force")
    if "attention-exhaustive" in fit_order:  # it is the fitted dr-attention model, exhaustively
        if "dr-attention" in fit_order:
            fit_order.remove("dr-attention")
        fit_order.insert(fit_order.index("attention-exhaustive"), "dr-attention")

    fitted: dict[str, Any] = {}
    fit_seconds: dict[str, float] = {}
    results: dict[str, Any] = {}
    recommendations: dict[str, np.ndarray] = {}
    tuned: dict[str, tuple[BenchmarkConfig, dict[str, Any]]] = {}
    to_tune = [m for m in methods if m in tuning.GRIDS] if config.tune_baselines else []
    if to_tune:
        valid = tuning.validation_for(split, 1000, config.seed)
        for name in to_tune:
            say(f"tuning {name} on {len(valid.truth):,} validation users")
            tuned[name] = tuning.tune_baseline(
                name, config, valid, split.n_items, ks[0],
                lambda n, c: _build(n, c, fitted, device),
            )
    for name in fit_order:
        seed_everything(config.seed)
        say(f"fitting {name}")
        model = _build(name, tuned[name][0] if name in tuned else config, fitted, device)
        t0 = time.perf_counter()
        model.fit(split.train, split.n_items)
        fit_seconds[name] = time.perf_counter() - t0
        if name.startswith("ann-") or name == "dr-shared":
            fit_seconds[name] += fit_seconds["brute-force"]
        if name == "attention-exhaustive":  # the fitted dr-attention model: its fit is theirs
            fit_seconds[name] = fit_seconds["dr-attention"]
        fitted[name] = model
        if name not in methods:
            continue
        say(f"evaluating {name}")
        rows = _evaluated_rows(name, config, len(split.test_truth))
        ev = evaluate(
            model,
            split.test_history.rows(rows),
            split.test_truth.rows(rows),
            ks,
            exclude=None if split.test_exclude is None else split.test_exclude.rows(rows),
            batch_size=config.query_batch_size,
        )
        recommendations[name] = np.full((len(split.test_truth), ev.recommendations.shape[1]), -1)
        recommendations[name][rows] = ev.recommendations
        results[name] = {
            "metrics": ev.metrics,
            "fit_seconds": round(fit_seconds[name], 3),
            "query_ms_p50": round(ev.query_ms_p50, 4),
            "query_ms_p99": round(ev.query_ms_p99, 4),
        }
        if len(rows) < len(split.test_truth):
            results[name]["sample_users"] = len(rows)
            if "brute-force" in recommendations:  # the comparison on the same users
                results[name]["brute_force_on_sample"] = evaluate_recommendations(
                    recommendations["brute-force"][rows], split.test_truth.rows(rows), ks
                )
        extra = getattr(model, "figures", None)
        if callable(extra):
            results[name].update(extra())
        if name in tuned:
            results[name]["tuning"] = tuned[name][1]
        say(
            f"{name}: "
            + ", ".join(f"{k}={v:.4f}" for k, v in ev.metrics.items() if k.startswith("recall"))
        )

    doc = {
        "dataset": dataset,
        "protocol": split.protocol,
        "k": ks,
        "data": split.summary(),
        "methods": {m: results[m] for m in methods},
        "config": to_dict(config),
        "versions": versions(),
    }
    if out_dir is not None:
        write_outputs(Path(out_dir), doc, split, recommendations)
    return doc


def _evaluated_rows(name: str, config: BenchmarkConfig, n_users: int) -> np.ndarray:
    """The test rows a method is evaluated on: all, but ``exhaustive_users`` of them (drawn with
    ``seed``) for ``attention-exhaustive``."""
    cap = config.exhaustive_users
    if name != "attention-exhaustive" or cap is None or cap >= n_users:
        return np.arange(n_users)
    return np.sort(np.random.default_rng(config.seed).choice(n_users, size=cap, replace=False))


def write_outputs(
    out_dir: Path, doc: dict[str, Any], split: Split, recommendations: dict[str, np.ndarray]
) -> None:
    """Write results.json, truth.csv, recommendations/NAME.csv and results.md into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    truth: Sequences = split.test_truth
    pd.DataFrame(
        {
            "user": split.test_user_ids[truth.row_ids()],
            "item": split.item_ids[truth.items],
        }
    ).to_csv(out_dir / "truth.csv", index=False)
    rec_dir = out_dir / "recommendations"
    rec_dir.mkdir(exist_ok=True)
    for name, recs in recommendations.items():
        users, ranks = np.nonzero(recs >= 0)
        pd.DataFrame(
            {
                "user": split.test_user_ids[users],
                "rank": ranks + 1,
                "item": split.item_ids[recs[users, ranks]],
            }
        ).to_csv(rec_dir / f"{name}.csv", index=False)
    atomic_write_text(out_dir / "results.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(out_dir / "results.md", results_markdown(doc))


def results_markdown(doc: dict[str, Any]) -> str:
    """A readable table of a ``results.json`` document."""
    d = doc["data"]
    lines = [
        f"# {doc['dataset']} — {doc['protocol']} protocol",
        "",
        f"{d['n_users']:,} users, {d['n_items']:,} items, {d['n_interactions']:,} interactions; "
        f"{d['n_train_users']:,} training users, {d['n_test_users']:,} test users.",
        "",
    ]
    metric_names = ["precision", "recall", "f1", "ndcg", "hit_rate"]
    header = ["method"] + [f"{m}@{k}" for k in doc["k"] for m in metric_names] + [
        "fit s",
        "query ms p50",
        "query ms p99",
    ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for name, r in doc["methods"].items():
        cells = [name]
        for k in doc["k"]:
            for m in metric_names:
                cells.append(f"{r['metrics'][f'{m}@{k}']:.4f}")
        cells += [f"{r['fit_seconds']:.1f}", f"{r['query_ms_p50']:.2f}", f"{r['query_ms_p99']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    for name, r in doc["methods"].items():
        if "candidates_per_query" in r:  # methods that score a subset of the items (DR)
            lines.append(
                f"\n{name}: beam {r.get('beam_size', '-')},"
                f" {r['candidates_per_query']:,.0f} candidates"
                f" per query ({100 * r['fraction_scored']:.2f} % of the items scored), largest path"
                f" {r['largest_path_size']:,} items, {r['occupied_paths']:,} paths occupied."
            )
        if "sample_users" in r:
            key = f"recall@{doc['k'][-1]}"
            bf = r.get("brute_force_on_sample")
            versus = f", brute force {bf[key]:.4f}" if bf else ""
            lines.append(
                f"\n{name}: evaluated on {r['sample_users']:,} of the test users ({key}"
                f" {r['metrics'][key]:.4f}{versus} on the same users)."
            )
        if "tuning" in r:
            t = r["tuning"]
            score = next(k for k in t if k.startswith("validation_recall"))
            chosen = ", ".join(f"{k} = {v:g}" for k, v in t["chosen"].items())
            lines.append(
                f"\n{name}: tuned on {t['validation_users']:,} validation users"
                f" ({len(t['tried'])} settings tried): {chosen} ({score} {t[score]:.4f})."
            )
    return "\n".join(lines) + "\n"


def recompute_metrics(
    out_dir: str | Path, name: str, ks: Sequence[int], *, sampled: bool = False
) -> dict[str, float]:
    """Metrics of method ``name`` recomputed from ``truth.csv`` and ``recommendations/NAME.csv``
    alone; ``sampled``: over the users that file has (a method evaluated on a sample of the
    test users), else over every user of ``truth.csv``.

    An independent check of a benchmark directory: it uses the external ids in the CSV files and
    the metric definitions, nothing from the run itself.
    """
    out_dir = Path(out_dir)
    truth = pd.read_csv(out_dir / "truth.csv", dtype=str)
    recs = pd.read_csv(
        out_dir / "recommendations" / f"{name}.csv", dtype={"user": str, "item": str}
    )
    if sampled:
        truth = truth[truth.user.isin(set(recs.user))]
    users = sorted(truth.user.unique())
    items = {v: i for i, v in enumerate(sorted(set(truth.item) | set(recs.item)))}
    row = {u: r for r, u in enumerate(users)}
    rec_mat = np.full((len(users), max(ks)), -1, dtype=np.int64)
    ranked = recs.item.map(items).to_numpy()
    rec_mat[recs.user.map(row).to_numpy(), recs["rank"].to_numpy() - 1] = ranked
    grouped = truth.groupby("user").item.apply(lambda s: [items[i] for i in s])
    return evaluate_recommendations(
        rec_mat, Sequences.from_lists([grouped[u] for u in users]), list(ks)
    )
