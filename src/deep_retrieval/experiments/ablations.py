"""DR ablations behind ``deep-retrieval ablate``: one split, one brute-force reference, DR variants.

Each ablation changes one setting of the configured DR and reports Recall@k against the
brute-force softmax model of the same run, with the cost side (candidates scored per query, the
largest path, query latency):

- ``paths_per_item`` (J), ``n_layers`` (D), ``hidden_dim`` of the structure layers (``None`` = a
  single linear layer), ``penalty`` (α), ``penalty_scale``, ``init`` (the paths items start on)
  and ``target_recall`` (the beam rule; ``None`` = 10 × k candidates): one DR fit per value;
- ``beam_size`` (B) and ``rerank`` (on/off): queries against the fit with the configured settings.

A value equal to the configured one reuses that fit. Outputs in ``out_dir``: ``ablations.json``
(``{"dataset", "protocol", "k", "data", "brute_force": {…}, "rows": [{"ablation", "value", …}],
"config", "versions"}``) and ``ablations.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from ..config import BenchmarkConfig, DRConfig, to_dict
from ..data.types import Split
from ..evaluation.evaluate import evaluate
from ..utils import atomic_write_text, resolve_device, seed_everything, versions

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AblationGrid:
    """The values tried per ablation (each list may include the configured value)."""

    paths_per_item: tuple[int, ...] = (1, 3)
    n_layers: tuple[int, ...] = (2, 3)
    hidden_dim: tuple[int | None, ...] = (None, 256)
    penalty: tuple[float, ...] = (0.0, 3e-6, 3e-5, 3e-4, 3e-3)
    penalty_scale: tuple[str | None, ...] = (None, "interactions")
    init: tuple[str, ...] = ("random", "kmeans")
    target_recall: tuple[float | None, ...] = (None, 0.99)
    reranker: tuple[str, ...] = ("dot", "attention")
    attention_dim: tuple[int, ...] = ()  # none by default: they matter with reranker=attention
    attention_negatives: tuple[int, ...] = ()
    beam_size: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)


#: The fitted ablations, each with the config section it changes ("": a key of DRConfig itself).
#: The attention term's settings matter only with reranker=attention (--set dr.reranker=attention).
_SECTIONS = {"paths_per_item": "structure", "n_layers": "structure", "hidden_dim": "structure",
             "penalty": "assignment", "penalty_scale": "assignment", "init": "assignment",
             "target_recall": "retrieval", "reranker": "", "attention_dim": "train",
             "attention_negatives": "train"}


def _variant(dr: DRConfig, ablation: str, value: Any) -> DRConfig:
    if ablation not in _SECTIONS:
        raise ValueError(f"unknown ablation {ablation!r}")
    section = _SECTIONS[ablation]
    if not section:
        return replace(dr, **{ablation: value})
    return replace(dr, **{section: replace(getattr(dr, section), **{ablation: value})})


def _current(dr: DRConfig, ablation: str) -> Any:
    section = _SECTIONS[ablation]
    return getattr(getattr(dr, section) if section else dr, ablation)


class _Fixed:
    """A fitted DR queried with a fixed beam and rerank setting (the recommend contract)."""

    def __init__(self, model: Any, beam_size: int | None, rerank: bool | None) -> None:
        from ..index.retrieval import QueryStats

        self.model, self.beam_size, self.rerank = model, beam_size, rerank
        self.stats = QueryStats()

    def recommend(self, histories, n, *, exclude=None):
        return self.model.recommend(histories, n, exclude=exclude, beam_size=self.beam_size,
                                    rerank=self.rerank, stats=self.stats)


def run_ablations(
    split: Split,
    k: int,
    config: BenchmarkConfig = BenchmarkConfig(),
    grid: AblationGrid = AblationGrid(),
    *,
    out_dir: str | Path | None = None,
    dataset: str = "custom",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fit the brute-force reference and the DR variants of ``grid``; evaluate Recall@``k``.

    DR shares the brute-force softmax model as its frozen encoder and reranker when
    ``config.share_reranker`` is on (the default), so every row differs from the reference only
    in the index.

    Returns:
        The ``ablations.json`` document as a dict; each row has ``ablation``, ``value``,
        ``recall@k``, ``recall_ratio`` (to brute force), ``candidates_per_query``,
        ``fraction_scored``, ``beam_size``, ``largest_path_size``, ``occupied_paths``,
        ``fit_seconds`` and ``query_ms_p50``.
    """
    from ..baselines import SoftmaxRecommender, make_baseline
    from ..estimator import DeepRetrieval

    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    say = progress or (lambda _msg: None)
    device = resolve_device(config.device)
    metric = f"recall@{k}"

    def run(model: Any) -> Any:
        return evaluate(model, split.test_history, split.test_truth, [k],
                        exclude=split.test_exclude, batch_size=config.query_batch_size)

    for ablation in _SECTIONS:  # a bad value fails here, not after the first fits
        for value in getattr(grid, ablation):
            _variant(config.dr, ablation, value)
    seed_everything(config.seed)
    say("fitting brute-force")
    t0 = time.perf_counter()
    brute_force = cast(SoftmaxRecommender, make_baseline("brute-force", config, device=device))
    softmax = brute_force.fit(split.train, split.n_items)
    bf_seconds = time.perf_counter() - t0
    bf = run(softmax)
    reference = {metric: bf.metrics[metric], "fit_seconds": round(bf_seconds, 3),
                 "query_ms_p50": round(bf.query_ms_p50, 4)}
    say(f"brute-force: {metric}={bf.metrics[metric]:.4f}")

    base = config.dr
    if config.share_reranker:
        base = replace(base, train=replace(base.train, embedding_dim=softmax.config.embedding_dim))
    fits: dict[DRConfig, tuple[DeepRetrieval, float]] = {}

    def fit(dr: DRConfig) -> tuple[DeepRetrieval, float]:
        if dr not in fits:
            seed_everything(config.seed)
            t = time.perf_counter()
            model = DeepRetrieval(dr, device=device)
            model.fit(split.train, split.n_items,
                      reranker=softmax.model_ if config.share_reranker else None)
            fits[dr] = (model, time.perf_counter() - t)
        return fits[dr]

    rows: list[dict[str, Any]] = []

    def row(ablation: str, value: Any, model: Any, seconds: float, beam: int | None,
            rerank: bool | None) -> None:
        fixed = _Fixed(model, beam, rerank)
        ev = run(fixed)
        candidates = fixed.stats.candidates_per_query
        d = model.diagnostics()
        rows.append({
            "ablation": ablation,
            "value": value,
            metric: round(ev.metrics[metric], 5),
            "recall_ratio": round(ev.metrics[metric] / bf.metrics[metric], 4)
            if bf.metrics[metric] > 0 else None,
            "candidates_per_query": round(candidates, 1),
            "fraction_scored": round(candidates / split.n_items, 5),
            "beam_size": beam or model.beam_size_for(k),
            "largest_path_size": d["largest_path_size"],
            "occupied_paths": d["occupied_paths"],
            "fit_seconds": round(seconds, 2),
            "query_ms_p50": round(ev.query_ms_p50, 4),
        })
        say(f"{ablation}={value}: {metric}={ev.metrics[metric]:.4f}, "
            f"{candidates:.0f} candidates")

    for ablation in _SECTIONS:
        for value in getattr(grid, ablation):
            say(f"fitting dr {ablation}={value}")
            model, seconds = fit(_variant(base, ablation, value))
            row(ablation, value, model, seconds, None, None)
    model, seconds = fit(base)
    for beam in grid.beam_size:
        row("beam_size", beam, model, seconds, beam, None)
    for rerank in (True, False):
        row("rerank", rerank, model, seconds, None, rerank)

    doc = {
        "dataset": dataset,
        "protocol": split.protocol,
        "k": k,
        "data": split.summary(),
        "brute_force": reference,
        "configured": {a: _current(base, a) for a in _SECTIONS},
        "rows": rows,
        "config": to_dict(config),
        "versions": versions(),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "ablations.json", json.dumps(doc, indent=2) + "\n")
        atomic_write_text(out / "ablations.md", ablations_markdown(doc))
    return doc


_TITLES = {
    "paths_per_item": "Paths per item J",
    "n_layers": "Layers D",
    "hidden_dim": "Hidden units per structure layer (None = one linear layer)",
    "penalty": "Penalty α",
    "penalty_scale": "Penalty scale (None = α as given)",
    "init": "Initial paths",
    "target_recall": "Beam rule: recall target within the budget (None = 10 × k candidates)",
    "reranker": "Reranker (attention: the candidate-aware term on the dot product)",
    "attention_dim": "Attention term width d",
    "attention_negatives": "Attention term negatives per batch",
    "beam_size": "Beam size B (configured fit)",
    "rerank": "Reranking (configured fit and beam)",
}


def ablations_markdown(doc: dict[str, Any]) -> str:
    """Readable tables of an ``ablations.json`` document, one per ablation."""
    k, d = doc["k"], doc["data"]
    metric = f"recall@{k}"
    bf = doc["brute_force"]
    lines = [
        f"# DR ablations — {doc['dataset']}, {doc['protocol']} protocol, k={k}",
        "",
        f"{d['n_items']:,} items, {d['n_test_users']:,} test users. Brute force (the shared "
        f"reranker scoring every item): {metric} {bf[metric]:.4f}, query p50 "
        f"{bf['query_ms_p50']:.2f} ms. Configured: "
        + ", ".join(f"{a} = {v}" for a, v in doc["configured"].items()) + ".",
    ]
    header = ["value", metric, "× brute force", "candidates/query", "% items scored", "beam",
              "largest path", "occupied paths", "fit s", "query ms p50"]
    for ablation, title in _TITLES.items():
        rows = [r for r in doc["rows"] if r["ablation"] == ablation]
        if not rows:
            continue
        lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for r in rows:
            ratio = "-" if r["recall_ratio"] is None else f"{r['recall_ratio']:.3f}"
            lines.append("| " + " | ".join([
                str(r["value"]), f"{r[metric]:.4f}", ratio, f"{r['candidates_per_query']:.0f}",
                f"{100 * r['fraction_scored']:.2f}", str(r["beam_size"]),
                str(r["largest_path_size"]), f"{r['occupied_paths']:,}",
                f"{r['fit_seconds']:.1f}", f"{r['query_ms_p50']:.2f}",
            ]) + " |")
    return "\n".join(lines) + "\n"


def parse_grid(overrides: Sequence[str]) -> AblationGrid:
    """``["penalty=0,3e-5", "hidden_dim=none,256"]`` → :class:`AblationGrid`; unknown names fail."""
    def optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
        return lambda text: None if text.strip().lower() == "none" else kind(text.strip())

    fields: dict[str, Callable[[str], Any]] = {
        "paths_per_item": int,
        "n_layers": int,
        "hidden_dim": optional(int),
        "penalty": float,
        "penalty_scale": optional(str),
        "init": str.strip,
        "target_recall": optional(float),
        "reranker": str.strip,
        "attention_dim": int,
        "attention_negatives": int,
        "beam_size": int,
    }
    values: dict[str, tuple] = {}
    for item in overrides:
        name, sep, text = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(
                f"bad --grid entry {item!r}: use NAME=V1,V2 with NAME one of {', '.join(fields)}"
            )
        try:
            values[name] = tuple(fields[name](x) for x in text.split(",") if x.strip())
        except ValueError as exc:
            raise ValueError(f"bad --grid values in {item!r}: {exc}") from exc
        if not values[name]:
            raise ValueError(f"--grid {name} needs at least one value")
    return AblationGrid(**values)

