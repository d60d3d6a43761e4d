"""Load test of a running retrieval service over real HTTP connections.

``run_load_test`` starts ``clients`` threads, each with its own kept-alive connection, sending
``POST /v1/recommend`` for histories taken round-robin, until ``duration_s`` or
``max_requests`` is reached; a reloader thread can swap the bundle every ``reload_every_s``
seconds meanwhile. Every answer other than HTTP 200 with a full item list counts as an error.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np


def _connection(url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    # hostname is None only for a URL without a host, which HTTPConnection rejects.
    return http.client.HTTPConnection(cast(str, parts.hostname), parts.port or 80, timeout=timeout)


def _post(
    conn: http.client.HTTPConnection, path: str, body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    conn.request(
        "POST", path, body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    resp = conn.getresponse()
    return resp.status, resp.read()


def run_load_test(
    url: str,
    histories: list[list],
    *,
    n: int = 100,
    clients: int = 8,
    duration_s: float = 30.0,
    max_requests: int | None = None,
    reload_every_s: float | None = None,
    reload_paths: list[str] | None = None,
    timeout: float = 30.0,
    admin_token: str | None = None,
) -> dict[str, Any]:
    """Drive ``url`` with concurrent clients; returns latency percentiles, throughput, errors.

    Args:
        histories: request histories (external item ids), used round-robin.
        reload_every_s: when set, ``POST /v1/reload`` at this interval during the test,
            cycling through ``reload_paths`` (default: reload the current bundle), with
            ``admin_token``.

    Returns:
        ``{"requests", "errors", "error_examples", "seconds", "throughput_rps", "p50_ms",
        "p90_ms", "p99_ms", "max_ms", "clients", "reloads", "reload_failures", "reload_ms",
        "generations_seen"}``; latencies are per request, measured at the client.
    """
    if not histories:
        raise ValueError("run_load_test needs at least one history")
    if clients < 1 or duration_s <= 0:
        raise ValueError("clients must be ≥ 1 and duration_s > 0")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"the service URL must look like http://HOST:PORT, got {url!r}")
    stop = threading.Event()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    generations: set[int] = set()
    sent = [0]
    reload_ms: list[float] = []
    reload_failures: list[str] = []

    def take() -> int | None:
        with lock:
            if max_requests is not None and sent[0] >= max_requests:
                return None
            sent[0] += 1
            return sent[0] - 1

    def client() -> None:
        conn = _connection(url, timeout)
        while not stop.is_set():
            k = take()
            if k is None:
                break
            body = {"history": histories[k % len(histories)], "n": n}
            t0 = time.perf_counter()
            try:
                status, raw = _post(conn, "/v1/recommend", body)
                elapsed = time.perf_counter() - t0
                doc = json.loads(raw)
                ok = status == 200 and isinstance(doc.get("items"), list)
                problem = None if ok else f"HTTP {status}: {raw[:200]!r}"
            except (OSError, http.client.HTTPException, ValueError) as exc:
                elapsed, problem, doc = time.perf_counter() - t0, f"{type(exc).__name__}: {exc}", {}
                conn.close()
                conn = _connection(url, timeout)
            with lock:
                latencies.append(elapsed)
                if problem:
                    errors.append(problem)
                elif "model_generation" in doc:
                    generations.add(doc["model_generation"])
        conn.close()

    admin = {} if admin_token is None else {"Authorization": f"Bearer {admin_token}"}

    def reloader() -> None:
        i = 0
        while not stop.wait(reload_every_s):
            body = {"path": reload_paths[i % len(reload_paths)]} if reload_paths else {}
            i += 1
            # A fresh connection each time: the server closes connections idle for longer than
            # its keep-alive timeout (uvicorn: 5 s), which a reload interval can exceed.
            conn = _connection(url, timeout)
            t0 = time.perf_counter()
            try:
                status, raw = _post(conn, "/v1/reload", body, admin)
                if status != 200:
                    reload_failures.append(f"HTTP {status}: {raw[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                reload_failures.append(f"{type(exc).__name__}: {exc}")
            finally:
                conn.close()
            reload_ms.append((time.perf_counter() - t0) * 1e3)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    if reload_every_s:
        threads.append(threading.Thread(target=reloader, daemon=True))
    start = time.perf_counter()
    for t in threads:
        t.start()
    deadline = start + duration_s
    while any(t.is_alive() for t in threads[:clients]) and time.perf_counter() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout + 5)
    seconds = time.perf_counter() - start
    lat = np.array(latencies) * 1e3
    pct = (lambda q: round(float(np.percentile(lat, q)), 3)) if len(lat) else (lambda q: None)
    return {
        "requests": len(lat),
        "errors": len(errors),
        "error_examples": errors[:5],
        "seconds": round(seconds, 2),
        "throughput_rps": round(len(lat) / seconds, 1),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(float(lat.max()), 3) if len(lat) else None,
        "clients": clients,
        "n": n,
        "reloads": len(reload_ms) - len(reload_failures),
        "reload_failures": reload_failures[:5],
        "reload_ms": [round(x, 1) for x in reload_ms],
        "generations_seen": sorted(generations),
    }
