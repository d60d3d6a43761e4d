"""Streaming training against batch training on time-ordered MovieLens (the streaming issue's
acceptance).

For each data set: the paper protocol split (held-out users; ``ProtocolConfig()`` defaults, as
``deep-retrieval benchmark``), then per seed

- **batch**: ``DeepRetrieval(DRConfig(seed=s)).fit(split.train, …)`` with :data:`RECORDED`, the
  alternating schedule the recorded comparison was measured with (4 epochs: 2 joint + 2 structure
  only; before issue 14 trained the reranker first and scaled α with the interactions per item,
  which a stream's growing counts would move as it goes);
- **streamed**: :func:`deep_retrieval.training.stream.stream_train` with the same ``DRConfig``
  over the training users' interactions (rating ≥ 4, as the protocol keeps) in global timestamp
  order, once;

and both are evaluated on the same held-out users with
:func:`deep_retrieval.evaluation.evaluate.evaluate` (test users, and validation users as a second,
independent sample). Most-popular is listed as a floor. Writes ``results.json`` and ``results.md``
to ``--out``.

    python benchmarks/streaming_vs_batch.py                       # both data sets, seeds 0,1,2
    python benchmarks/streaming_vs_batch.py --datasets movielens-latest-small --ablate
    python benchmarks/streaming_vs_batch.py --datasets movielens-latest-small --seeds 0 \\
        --set passes=1 decay=0.99 --out /tmp/s                     # StreamConfig overrides

Each data set's rows replace that data set's earlier rows in ``results.json`` (so the data sets
can be run separately); ``results.md`` is rebuilt from the whole file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deep_retrieval import StreamConfig, stream_train, time_ordered_chunks
from deep_retrieval.baselines import MostPopular
from deep_retrieval.config import (
    PAPER_SETTINGS,
    DRConfig,
    ProtocolConfig,
    load_config,
    parse_override,
    to_dict,
)
from deep_retrieval.data.protocols import make_split
from deep_retrieval.data.registry import load_dataset
from deep_retrieval.estimator import DeepRetrieval
from deep_retrieval.evaluation.evaluate import evaluate
from deep_retrieval.evaluation.metrics import evaluate_recommendations
from deep_retrieval.utils import atomic_write_text, versions

ROOT = Path(__file__).resolve().parents[1]

# The library defaults (chosen on movielens-latest-small, see results.md): two passes over each
# chunk of 2,048 plus 2,048 replayed recent samples (about the network steps of the 4-epoch batch
# fit), η = 0.999 (the paper's), path assignment every 8,192 interactions (4 in a latest-small
# stream, as the batch fit assigns after each of its 4 epochs).
DEFAULT_STREAM = StreamConfig()
# DRConfig overrides under both models, before --dr-set: the settings of the recorded results.
RECORDED = list(PAPER_SETTINGS)
# One setting changed at a time (--ablate; first data set, first seed).
ABLATIONS = ["replay=0", "replay=6144", "passes=1", "decay=0.5", "decay=0.9", "reassign_every=4096",
             "reassign_every=16384", "held_paths=False",
             "final_assignment=False"]


def _stream_config(overrides: list[str], base: StreamConfig = DEFAULT_STREAM) -> StreamConfig:
    values = dataclasses.asdict(base)
    for text in overrides:
        keys, value = parse_override(text)
        key = ".".join(keys)
        if key not in values:
            raise SystemExit(f"unknown StreamConfig key {key!r}; valid: {', '.join(values)}")
        values[key] = value
    return StreamConfig(**values)


def _metrics(model: Any, history, truth, exclude, ks: list[int]) -> dict[str, float]:
    """Recall/NDCG/hit rate with the reranker (the served model), plus the index alone: recall of
    the path order without reranker, candidates per query and the share of truth items among
    them."""
    ev = evaluate(model, history, truth, ks, exclude=exclude, n_latency_queries=0)
    out = {
        k: float(v)
        for k, v in ev.metrics.items()
        if k.split("@")[0] in ("recall", "ndcg", "hit_rate")
    }
    n = max(ks)
    ids, _ = model.recommend(history, n, exclude=exclude, rerank=False)
    out[f"no_rerank_recall@{n}"] = evaluate_recommendations(ids, truth, [n])[f"recall@{n}"]
    cand = model.retrieve(history, n=n)
    out["candidates_per_query"] = float(cand.counts.mean())
    rows = np.repeat(np.arange(len(truth)), cand.counts)
    hit = np.isin(
        rows * (model.n_items_ + 1) + cand.items,
        truth.row_ids() * (model.n_items_ + 1) + truth.items,
    )
    out["candidate_recall"] = float(
        np.mean(np.bincount(rows[hit], minlength=len(truth)) / truth.lengths)
    )
    return out


def _stream(
    data, split, protocol, cfg: DRConfig, stream: StreamConfig
) -> tuple[DeepRetrieval, float]:
    events = time_ordered_chunks(data, stream.chunk_size, item_ids=split.item_ids,
                                 users=split.train_user_ids, min_rating=protocol.min_rating)
    t0 = time.perf_counter()
    model = stream_train(
        DeepRetrieval(cfg, device="cpu"), events, split.n_items, stream, item_ids=split.item_ids
    )
    return model, time.perf_counter() - t0


def _held(split) -> dict[str, tuple]:
    return {
        "test": (split.test_history, split.test_truth, split.test_exclude),
        "valid": (split.valid_history, split.valid_truth, split.valid_exclude),
    }


def run_ablations(name: str, data_dir: str | None, seed: int, ks: list[int], stream: StreamConfig,
                  dr_overrides: list[str], say) -> dict[str, Any]:
    """The stream with one StreamConfig setting changed at a time (one seed)."""
    data = load_dataset(name, data_dir)
    protocol = ProtocolConfig()
    split = make_split(data, "paper", protocol)
    held = _held(split)
    cfg = load_config(DRConfig, overrides=[*RECORDED, *dr_overrides, f"seed={seed}"])
    n = max(ks)
    out: dict[str, Any] = {"seed": seed, "variants": {}}
    for change in ["none", *ABLATIONS]:
        variant = stream if change == "none" else _stream_config(change.split(), stream)
        model, secs = _stream(data, split, protocol, cfg, variant)
        out["variants"][change] = {
            **{part: _metrics(model, *held[part], ks) for part in held},
            "stream_seconds": round(secs, 2),
            "largest_path": int(model.item_paths_.path_sizes().max()),
        }
        say(
            f"{name} ablation {change}: test recall@{n}"
            f" {out['variants'][change]['test'][f'recall@{n}']:.4f}"
        )
    return out


def run_dataset(
    name: str,
    data_dir: str | None,
    seeds: list[int],
    ks: list[int],
    stream: StreamConfig,
    dr_overrides: list[str],
    say,
) -> dict[str, Any]:
    data = load_dataset(name, data_dir)
    protocol = ProtocolConfig()
    split = make_split(data, "paper", protocol)
    held = {
        "test": (split.test_history, split.test_truth, split.test_exclude),
        "valid": (split.valid_history, split.valid_truth, split.valid_exclude),
    }
    out: dict[str, Any] = {
        "data": split.summary(),
        "stream_events": split.train.n_interactions,
        "runs": [],
    }
    pop = MostPopular().fit(split.train, split.n_items)
    out["most_popular"] = {part: _metrics_plain(pop, *held[part], ks) for part in held}
    for seed in seeds:
        cfg = load_config(DRConfig, overrides=[*RECORDED, *dr_overrides, f"seed={seed}"])
        t0 = time.perf_counter()
        batch = DeepRetrieval(cfg, device="cpu").fit(split.train, split.n_items)
        batch_s = time.perf_counter() - t0
        streamed, stream_s = _stream(data, split, protocol, cfg, stream)
        run = {
            "seed": seed,
            "batch_seconds": round(batch_s, 2),
            "stream_seconds": round(stream_s, 2),
            "stream_path_assignments": len(streamed.history_),
            "stream_items_moved": [e["items_moved"] for e in streamed.history_],
            "batch_items_moved": [e.get("items_moved") for e in batch.history_],
            "stream_largest_path": int(streamed.item_paths_.path_sizes().max()),
            "batch_largest_path": int(batch.item_paths_.path_sizes().max()),
        }
        for part in held:
            run[f"batch_{part}"] = _metrics(batch, *held[part], ks)
            run[f"stream_{part}"] = _metrics(streamed, *held[part], ks)
        out["runs"].append(run)
        say(
            f"{name} seed {seed}: "
            + ", ".join(
                f"{part} recall@{k} batch {run[f'batch_{part}'][f'recall@{k}']:.4f} stream"
                f" {run[f'stream_{part}'][f'recall@{k}']:.4f}"
                for part in held
                for k in ks
            )
            + f" ({batch_s:.0f} s / {stream_s:.0f} s)"
        )
    keys = [f"recall@{k}" for k in ks] + [
        f"no_rerank_recall@{max(ks)}",
        "candidates_per_query",
        "candidate_recall",
    ]
    summary: dict[str, Any] = {}
    for part in held:
        for key in keys:
            b = float(np.mean([r[f"batch_{part}"][key] for r in out["runs"]]))
            st = float(np.mean([r[f"stream_{part}"][key] for r in out["runs"]]))
            summary[f"{part}_{key}"] = {
                "batch": b,
                "stream": st,
                "ratio": st / b if b else float("nan"),
                "most_popular": out["most_popular"][part].get(key),
            }
    summary["batch_seconds"] = float(np.mean([r["batch_seconds"] for r in out["runs"]]))
    summary["stream_seconds"] = float(np.mean([r["stream_seconds"] for r in out["runs"]]))
    out["summary"] = summary
    return out


def _metrics_plain(model: Any, history, truth, exclude, ks: list[int]) -> dict[str, float]:
    ev = evaluate(model, history, truth, ks, exclude=exclude, n_latency_queries=0)
    return {k: float(v) for k, v in ev.metrics.items()}


def markdown(doc: dict[str, Any]) -> str:
    ks = doc["k"]
    n = max(ks)
    lines = [
        "# Streaming vs batch training (time-ordered MovieLens, paper protocol)",
        "",
        "Batch: `DeepRetrieval(DRConfig(seed=s)).fit(split.train)` (the library default: 4 epochs,"
        " 2 of them joint). Streamed: `stream_train` over the training users' interactions (rating"
        " ≥ 4, as the protocol keeps) in global timestamp order, once, with the same `DRConfig`."
        " Both are evaluated on the same held-out users (test, and validation as a second sample);"
        " the numbers are means over the seeds. CPU only; times were taken on a shared 2-core"
        " machine with other jobs running, so compare the two columns rather than the absolute"
        " seconds.",
        "",
        "The served model reranks the union of the items on the beam's paths; the index-alone rows"
        " show the paths by themselves: recall of the path order without the reranker, the share of"
        " each user's truth items among the candidates (candidate recall), and the candidates per"
        " query. Where one path holds more than 10 × n items, beam 1 already overshoots the budget"
        " (candidates / query = largest path in the ablations).",
        "",
    ]
    for name, d in doc["datasets"].items():
        s = d["summary"]
        dd = d["data"]
        lines += [
            f"## {name}",
            "",
            f"Command: `{d['command']}`  ",
            f"{dd['n_items']:,} items; {dd['n_train_users']:,} training users streaming"
            f" {d['stream_events']:,} interactions; {dd['n_test_users']} test and as many"
            f" validation users; seeds {', '.join(str(r['seed']) for r in d['runs'])};"
            f" {d['threads']} torch thread(s).  ",
            "StreamConfig: "
            + ", ".join(
                f"`{k}={v}`"
                for k, v in d["stream_config"].items()
                if k not in ("bundle_every", "bundle_dir", "keep_bundles")
            ),
            "",
        ]
        header = ["users", "metric", "most-popular", "batch", "streamed", "streamed / batch"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for part in ("test", "valid"):
            for key in [f"recall@{k}" for k in ks]:
                r = s[f"{part}_{key}"]
                lines.append(
                    f"| {part} | {key} | {r['most_popular']:.4f} | {r['batch']:.4f} |"
                    f" {r['stream']:.4f} | **{r['ratio']:.3f}** |"
                )
        lines += [
            "",
            f"The index alone (same runs; the beam is calibrated to 10 × n candidates, n = {n}):",
            "",
            "| users | metric | batch | streamed | streamed / batch |",
            "|---|---|---|---|---|",
        ]
        for part in ("test", "valid"):
            for key in (f"no_rerank_recall@{n}", "candidate_recall", "candidates_per_query"):
                r = s[f"{part}_{key}"]
                lines.append(
                    f"| {part} | {key} | {r['batch']:.4f} | {r['stream']:.4f} | {r['ratio']:.3f} |"
                )
        lines += ["", f"Time (mean per seed): batch fit {s['batch_seconds']:.1f} s, stream"
                  f" {s['stream_seconds']:.1f} s.", "", "Per seed (test users):", ""]
        for r in d["runs"]:
            cells = ", ".join(
                f"recall@{k} {r['batch_test'][f'recall@{k}']:.4f} →"
                f" {r['stream_test'][f'recall@{k}']:.4f}"
                for k in ks
            )
            lines.append(
                f"- seed {r['seed']}: {cells}; largest path {r['batch_largest_path']} →"
                f" {r['stream_largest_path']}; items moved per assignment: batch"
                f" {r['batch_items_moved']}, stream {r['stream_items_moved']};"
                f" {r['batch_seconds']:.0f} s → {r['stream_seconds']:.0f} s"
            )
        ab = doc.get("ablations", {}).get(name)
        if ab is not None:
            lines += [
                "",
                f"Ablations (`{ab['command']}`; seed {ab['seed']}, one StreamConfig setting changed"
                " from the row `none`):",
                "",
                f"| change | test recall@{n} | valid recall@{n} | test no-rerank recall@{n} |"
                " test candidate recall | candidates / query | largest path | stream s |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for change, r in ab["variants"].items():
                lines.append(
                    f"| {change} | {r['test'][f'recall@{n}']:.4f} | {r['valid'][f'recall@{n}']:.4f}"
                    f" | {r['test'][f'no_rerank_recall@{n}']:.4f} |"
                    f" {r['test']['candidate_recall']:.4f} |"
                    f" {r['test']['candidates_per_query']:.0f} | {r['largest_path']} |"
                    f" {r['stream_seconds']:.1f} |"
                )
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="movielens-latest-small,movielens-100k")
    p.add_argument(
        "--data-dir",
        default=os.environ.get("DEEP_RETRIEVAL_DATA", str(ROOT.parent / "shared" / "data")),
    )
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--k", default="10,20")
    p.add_argument(
        "--set", nargs="*", default=[], help="StreamConfig overrides, e.g. passes=2 decay=0.99"
    )
    p.add_argument("--dr-set", nargs="*", default=[], help="DRConfig overrides for both models")
    p.add_argument("--ablate", action="store_true",
                   help="instead of the comparison: one-change StreamConfig variants (first seed)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help=(
            "torch threads (1: these networks are small, and 2 threads measured slower on a busy"
            " machine)"
        ),
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "streaming"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    stream = _stream_config(args.set)
    seeds = [int(s) for s in args.seeds.split(",")]
    ks = [int(k) for k in args.k.split(",")]

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    out = Path(args.out)
    previous = out / "results.json"
    doc: dict[str, Any] = (
        json.loads(previous.read_text()) if previous.exists() else {"datasets": {}}
    )
    if doc.get("k") not in (None, ks):
        # Other cut-offs: the old rows do not fit the table.
        doc["datasets"], doc["ablations"] = {}, {}
    doc.update({"k": ks, "versions": versions()})
    command = "python benchmarks/streaming_vs_batch.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    for name in args.datasets.split(","):
        if args.ablate:
            result = run_ablations(name, args.data_dir, seeds[0], ks, stream, args.dr_set, say)
            result.update({"command": command.strip(), "threads": args.threads})
            doc.setdefault("ablations", {})[name] = result
        else:
            result = run_dataset(name, args.data_dir, seeds, ks, stream, args.dr_set, say)
            result.update({"command": command.strip(), "threads": args.threads,
                           "stream_config": dataclasses.asdict(stream), "dr_overrides": args.dr_set,
                           "dr_config": to_dict(load_config(DRConfig, overrides=args.dr_set))})
            doc["datasets"][name] = result
        # Written after each data set: a later one failing keeps the finished rows.
        atomic_write_text(out / "results.json", json.dumps(doc, indent=2) + "\n")
        atomic_write_text(out / "results.md", markdown(doc))
    say(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
