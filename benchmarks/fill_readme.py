"""Fill the README's generated tables from the recorded results, so every number there comes from
a result file (run after benchmarks/run_benchmarks.sh or benchmarks/run_speed.sh):

- ``<!-- results:NAME -->`` … ``<!-- /results -->``: the benchmark table of
  ``benchmarks/results/NAME/results.json``, with each method's recall against brute force and
  DR's beam, candidates and share of the items scored; ``results:summary`` is one row per data
  set of DR against brute force; ``results:attention`` one row per data set of the
  candidate-aware reranker's runs (``benchmarks/results/NAME/attention/results.json``).
- ``<!-- ablations:NAME -->`` … ``<!-- /ablations -->``: one table of the rows of
  ``benchmarks/results/NAME/ablations.json`` (ablations tried at one value only left out).
- ``<!-- speed:NAME -->`` … ``<!-- /speed -->``: the tables of
  ``benchmarks/results/speed/NAME/speed.md`` (``profile-1000000``: its stage table).
- ``<!-- index:N -->`` … ``<!-- /index -->``: ``benchmarks/results/index/N/results.md``, the
  DRIndex run of ``benchmarks/index_benchmark.py --n-items N`` (without its heading).

    .venv/bin/python benchmarks/fill_readme.py
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(
    r"(<!-- (?P<kind>speed|results|ablations|index):(?P<name>[\w/-]+) -->\n)(?P<body>.*?)"
    r"(<!-- /(?P=kind) -->)",
    re.S,
)
#: The data sets of the summary table, in the order of the README.
SUMMARY = ("movielens-latest-small", "movielens-100k", "movielens-1m-m1", "gowalla", "amazon-book")


def speed_body(name: str) -> str:
    folder = RESULTS / "speed" / name
    if name.startswith("profile-"):
        lines = (folder / "profile.md").read_text().splitlines()
        return "\n".join(line for line in lines if line.startswith("|")) + "\n"
    lines = (folder / "speed.md").read_text().strip().splitlines()
    return "\n".join(lines[1:]).strip() + "\n"  # without its "### N items" heading


def index_body(name: str) -> str:
    lines = (RESULTS / "index" / name / "results.md").read_text().strip().splitlines()
    return "\n".join(lines[1:]).strip() + "\n"  # without its heading


def _load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name / "results.json").read_text())


def _scored(r: dict[str, Any], n_items: int) -> str:
    return (
        f"beam {r['beam_size']}, {r['candidates_per_query']:,.0f} candidates per query ="
        f" **{100 * r['fraction_scored']:.2f} %** of the {n_items:,} items scored; largest path"
        f" {r['largest_path_size']:,} items"
    )


def results_body(name: str) -> str:
    if name == "summary":
        return summary_body()
    if name == "attention":
        return attention_body()
    doc = _load(name)
    k = doc["k"][0]
    bf = doc["methods"]["brute-force"]
    head = ["method", f"P@{k}", f"R@{k}", f"F@{k}", f"NDCG@{k}", f"R@{k} vs brute force",
            "fit s", "query ms p50"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, r in doc["methods"].items():
        x = r["metrics"]
        lines.append(
            f"| {m} | {x[f'precision@{k}']:.4f} | {x[f'recall@{k}']:.4f} | {x[f'f1@{k}']:.4f}"
            f" | {x[f'ndcg@{k}']:.4f} | {x[f'recall@{k}'] / bf['metrics'][f'recall@{k}']:.3f}"
            f" | {r['fit_seconds']:.1f} | {r['query_ms_p50']:.2f} |"
        )
    lines.append("")
    d = doc["data"]
    for m, r in doc["methods"].items():
        if "candidates_per_query" in r:
            lines.append(f"- {m}: {_scored(r, d['n_items'])}.")
        if "tuning" in r:
            t = r["tuning"]
            chosen = ", ".join(f"{key} {v:g}" for key, v in t["chosen"].items())
            lines.append(
                f"- {m}: tuned on {t['validation_users']:,} validation users"
                f" ({len(t['tried'])} settings): {chosen}."
            )
    return "\n".join(lines) + "\n"


def ablations_body(name: str) -> str:
    doc = json.loads((RESULTS / name / "ablations.json").read_text())
    k = doc["k"]
    lines = [f"| ablation | value | R@{k} | × brute force | candidates/query | % items scored"
             " | beam | largest path |", "|---|---|---|---|---|---|---|---|"]
    counts = Counter(r["ablation"] for r in doc["rows"])
    for r in doc["rows"]:
        if counts[r["ablation"]] == 1:  # only the configured value: nothing compared
            continue
        lines.append(
            f"| {r['ablation']} | {r['value']} | {r[f'recall@{k}']:.4f} | {r['recall_ratio']:.3f}"
            f" | {r['candidates_per_query']:,.0f} | {100 * r['fraction_scored']:.2f}"
            f" | {r['beam_size']} | {r['largest_path_size']:,} |"
        )
    lines.append(f"\nBrute force: recall@{k} = {doc['brute_force'][f'recall@{k}']:.4f}.")
    return "\n".join(lines) + "\n"


def summary_body() -> str:
    lines = [
        "| data set | items | k | brute force R@k | dr × brute force | % scored"
        " | dr-shared × brute force | % scored | dr fit ÷ brute-force fit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in SUMMARY:
        if not (RESULTS / name / "results.json").exists():
            continue
        doc = _load(name)
        k = doc["k"][0]
        key = f"recall@{k}"
        ms = doc["methods"]
        bf = ms["brute-force"]
        cells = [name, f"{doc['data']['n_items']:,}", str(k), f"{bf['metrics'][key]:.4f}"]
        for m in ("dr", "dr-shared"):
            r = ms.get(m)
            cells += (
                [f"{r['metrics'][key] / bf['metrics'][key]:.3f}",
                 f"{100 * r['fraction_scored']:.2f}"]
                if r else ["—", "—"]
            )
        dr = ms.get("dr")
        cells.append(f"{dr['fit_seconds'] / bf['fit_seconds']:.2f}" if dr else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def attention_body() -> str:
    lines = [
        "| data set | k | brute force R@k | dr × brute force | dr-attention × brute force"
        " | % scored | attention-exhaustive × brute force (users) | exhaustive ms per user"
        " | dr-attention ms p50 (dr) | dr-attention fit ÷ brute-force fit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in SUMMARY:
        if not (RESULTS / name / "attention" / "results.json").exists():
            continue
        doc = _load(f"{name}/attention")
        k = doc["k"][0]
        key = f"recall@{k}"
        ms = doc["methods"]
        bf, dr, att, ex = (ms[m] for m in ("brute-force", "dr", "dr-attention",
                                           "attention-exhaustive"))
        # attention-exhaustive may be evaluated on a sample: compare it on the same users
        bf_ex = ex.get("brute_force_on_sample", bf["metrics"])[key]
        users = ex.get("sample_users", doc["data"]["n_test_users"])
        lines.append(
            f"| {name} | {k} | {bf['metrics'][key]:.4f}"
            f" | {dr['metrics'][key] / bf['metrics'][key]:.3f}"
            f" | **{att['metrics'][key] / bf['metrics'][key]:.3f}**"
            f" | {100 * att['fraction_scored']:.2f}"
            f" | {ex['metrics'][key] / bf_ex:.3f} ({users:,})"
            f" | {ex['query_ms_p50']:.1f}"
            f" | {att['query_ms_p50']:.2f} ({dr['query_ms_p50']:.2f})"
            f" | {att['fit_seconds'] / bf['fit_seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    names = [f"{m.group('kind')}:{m.group('name')}" for m in BLOCK.finditer(text)]

    missing: list[str] = []

    def fill(m: re.Match[str]) -> str:
        make = {"speed": speed_body, "results": results_body, "ablations": ablations_body,
                "index": index_body}[m.group("kind")]
        try:
            return m.group(1) + "\n" + make(m.group("name")) + "\n" + m.group(5)
        except FileNotFoundError:  # not run yet: the block keeps what it had
            missing.append(f"{m.group('kind')}:{m.group('name')}")
            return m.group(0)

    readme.write_text(BLOCK.sub(fill, text))
    print(f"filled {', '.join(n for n in names if n not in missing)}")
    if missing:
        print(f"no result files yet for {', '.join(missing)}")


if __name__ == "__main__":
    main()
