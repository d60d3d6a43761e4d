"""Where DR's fit time goes with the library defaults, beside the brute-force model's fit: the
reranker epochs, the structure network steps, path scoring (the beam over every training
sample), path assignment and the beam calibration. Writes benchmarks/results/fit-profile.md.
Run it on an otherwise idle machine:

    .venv/bin/python benchmarks/profile_fit.py [NAME ...]   # default: the two small sets
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from deep_retrieval import DeepRetrieval, DRConfig, ProtocolConfig, load_dataset, make_split
from deep_retrieval.baselines import SoftmaxRecommender
from deep_retrieval.config import SoftmaxConfig
from deep_retrieval.index import retrieval
from deep_retrieval.utils import seed_everything

ROOT = Path(__file__).resolve().parent.parent
DATA = os.environ.get("DEEP_RETRIEVAL_DATA", str(ROOT.parent / "shared" / "data"))


def profile(name: str) -> dict[str, float]:
    split = make_split(load_dataset(name, DATA), None, ProtocolConfig())
    seed_everything(0)
    t0 = time.perf_counter()
    SoftmaxRecommender(SoftmaxConfig()).fit(split.train, split.n_items)
    brute_force = time.perf_counter() - t0

    spent: dict[str, float] = {}
    calibrate = retrieval.calibrate

    def timed(*args, **kwargs):
        t = time.perf_counter()
        calibrate(*args, **kwargs)
        spent["calibration"] = time.perf_counter() - t

    retrieval.calibrate = timed
    try:
        seed_everything(0)
        t0 = time.perf_counter()
        model = DeepRetrieval(DRConfig()).fit(split.train, split.n_items)
        total = time.perf_counter() - t0
    finally:
        retrieval.calibrate = calibrate
    h = model.history_
    phases = {
        "reranker epochs": sum(e["network_seconds"] for e in h if e.get("reranker_only")),
        "structure network steps": sum(
            e["network_seconds"] for e in h if not e.get("reranker_only")
        ),
        "path scoring": sum(e.get("scoring_seconds", 0) + e.get("accumulation_seconds", 0)
                            for e in h),
        "path assignment": sum(e.get("assignment_seconds", 0) for e in h),
        "calibration": spent["calibration"],
    }
    phases["other"] = total - sum(phases.values())
    return {"brute-force fit": brute_force, "dr fit": total, **phases,
            "training samples": float(len(split.train.items))}


def main() -> None:
    names = sys.argv[1:] or ["movielens-latest-small", "movielens-100k"]
    rows = {name: profile(name) for name in names}
    keys = list(next(iter(rows.values())))
    lines = ["# DR fit time by phase, library defaults (seconds; 2 CPU cores)", "",
             "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in keys:
        cells = [f"{rows[n][key]:,.0f}" if key == "training samples" else f"{rows[n][key]:.1f}"
                 for n in names]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    ratio = [f"{rows[n]['dr fit'] / rows[n]['brute-force fit']:.2f}" for n in names]
    lines.append("| dr ÷ brute force | " + " | ".join(ratio) + " |")
    text = "\n".join(lines) + "\n"
    (ROOT / "benchmarks" / "results" / "fit-profile.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
