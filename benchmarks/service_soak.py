"""Soak the service (issue 16, item 10): a bounded run on loopback with several clients and a
reload every few seconds, recording errors, latency and the server's resident memory over time.

    .venv/bin/python benchmarks/service_soak.py [--minutes 5] [--clients 8] [--reload-every 10]

Serves the latest-small model of ``benchmarks/service_throughput.sh`` (trained first if
missing), drives it with ``run_load_test`` one interval at a time so that every interval is a
row, and writes ``benchmarks/results/service/soak/{soak.json,soak.md}``. Run it on an otherwise
idle machine: the figures are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deep_retrieval.serving.client import RetrievalClient
from deep_retrieval.serving.loadtest import run_load_test

ROOT = Path(__file__).resolve().parents[1]
DR = [sys.executable, "-m", "deep_retrieval"]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _histories(model: Path) -> list[list]:
    from deep_retrieval import DeepRetrieval

    m = DeepRetrieval.load(model, device="cpu")
    h = m.user_histories_
    return [m.item_ids_[h.items[h.indptr[u] : h.indptr[u + 1]]].tolist()[-20:]
            for u in range(min(len(h), 500))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--reload-every", type=float, default=10.0)
    p.add_argument("--interval", type=float, default=30.0, help="seconds per recorded row")
    p.add_argument("--model", type=Path, default=ROOT / "runs/throughput-latest-small")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/service/soak")
    args = p.parse_args()
    if not args.model.is_dir():
        subprocess.run([*DR, "-q", "train", "--dataset", "movielens-latest-small", "--out",
                        str(args.model), "--no-checkpoints"], check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    token = secrets.token_hex(16)
    with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write(token)
    server = subprocess.Popen([*DR, "-q", "serve", str(args.model), "--port", str(port),
                               "--admin-token-file", f.name], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        RetrievalClient(url, timeout=2).wait_until_up(alive=lambda: server.poll() is None)
        histories = _histories(args.model)
        rows = []
        start = time.time()
        while time.time() - start < args.minutes * 60:
            r = run_load_test(url, histories, n=100, clients=args.clients,
                              duration_s=args.interval, reload_every_s=args.reload_every,
                              admin_token=token)
            rows.append({
                "minute": round((time.time() - start) / 60, 2), "requests": r["requests"],
                "errors": r["errors"], "reloads": r["reloads"],
                "reload_failures": len(r["reload_failures"]), "rps": r["throughput_rps"],
                "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "rss_mib": round(_rss_mib(
                    server.pid), 1),
            })
            print(json.dumps(rows[-1]), flush=True)
    finally:
        server.terminate()
        server.wait(10)
        os.unlink(f.name)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"minutes": args.minutes, "clients": args.clients, "reload_every_s": args.reload_every,
           "rows": rows}
    (args.out / "soak.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = ["| minute | requests | errors | reloads | reload failures | req/s | p50 ms | p99 ms |"
             " server RSS MiB |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {x['minute']} | {x['requests']:,} | {x['errors']} | {x['reloads']} |"
              f" {x['reload_failures']} | {x['rps']} | {x['p50_ms']} | {x['p99_ms']} |"
              f" {x['rss_mib']} |" for x in rows]
    total = sum(x["requests"] for x in rows)
    errors = sum(x["errors"] + x["reload_failures"] for x in rows)
    text = (f"Soak: latest-small model, {args.clients} clients on loopback, n = 100, a reload every"
            f" {args.reload_every:g} s, {args.minutes:g} minutes; {total:,} requests, {errors}"
            " errors. Command: `benchmarks/service_soak.py`.\n\n" + "\n".join(lines) + "\n")
    (args.out / "soak.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
