"""A small Python client for the retrieval service (standard library only).

Example::

    from deep_retrieval.serving.client import RetrievalClient

    client = RetrievalClient("http://127.0.0.1:8000")
    result = client.recommend(history=["1", "50", "260"], n=20)
    result["items"], result["scores"]
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit


class ServiceError(Exception):
    """A 4xx/5xx answer: ``status`` and the service's ``detail`` message."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class RetrievalClient:
    """Calls the endpoints of ``deep-retrieval serve`` over one kept-alive connection.

    Thread-safe (calls are serialised); use one client per thread for parallel requests.
    """

    def __init__(
        self, url: str = "http://127.0.0.1:8000", *, timeout: float = 10.0,
        admin_token: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"url must look like http://HOST:PORT, got {url!r}")
        self._host, self._port, self._timeout = parts.hostname, parts.port or 80, timeout
        self._admin = {} if admin_token is None else {"Authorization": f"Bearer {admin_token}"}
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _call(self, method: str, path: str, body: Any = None, *, admin: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if admin:
            headers.update(self._admin)
        with self._lock:
            for attempt in (0, 1):  # a kept-alive connection the server closed: reconnect once
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(
                        self._host, self._port, timeout=self._timeout
                    )
                try:
                    self._conn.request(method, path, body=data, headers=headers)
                    resp = self._conn.getresponse()
                    raw = resp.read()
                    break
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    self.close()
                    if attempt:
                        raise
        payload = json.loads(raw) if raw else None
        if resp.status >= 400:
            detail = payload.get("detail", payload) if isinstance(payload, dict) else payload
            raise ServiceError(resp.status, detail)
        return payload

    def recommend(
        self,
        history: list | None = None,
        *,
        user_id: Any = None,
        vector: Any = None,
        n: int = 100,
        beam_size: int | None = None,
        exclude: list | None = None,
        allow: list | None = None,
        where: dict[str, list] | None = None,
        exclude_seen: bool = False,
    ) -> dict[str, Any]:
        """``{"items", "scores", "unknown_items", "unknown_count", "source", "complete",
        "fallback", "beam_size", "model_generation"}``; ``vector``: a query vector, for an index
        bundle (:class:`~deep_retrieval.DRIndex`); ``allow`` / ``where`` / ``exclude_seen``:
        the query-time filters (see the README, "Serving")."""
        body = _request(history, user_id, n, beam_size, exclude, vector)
        for key, value in (("allow", allow), ("where", where)):
            if value is not None:
                body[key] = value
        if exclude_seen:
            body["exclude_seen"] = True
        return self._call("POST", "/v1/recommend", body)

    def recommend_batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each request is a dict with the keys of :meth:`recommend`; one result per request."""
        return self._call("POST", "/v1/recommend/batch", {"requests": requests})["results"]

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")

    def wait_until_up(
        self, timeout_s: float = 120.0, *, alive: Callable[[], bool] | None = None
    ) -> None:
        """Poll ``/healthz`` until the service answers (a server just started, or restarting).

        Raises:
            TimeoutError: no answer within ``timeout_s``.
            RuntimeError: ``alive()`` (e.g. ``lambda: proc.poll() is None``) says the server
                process has ended.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.health()
                return
            except OSError:
                self.close()
            if alive is not None and not alive():
                raise RuntimeError(f"the service at {self._host}:{self._port} exited")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from {self._host}:{self._port} in {timeout_s:g} s")
            time.sleep(0.2)

    def info(self) -> dict[str, Any]:
        return self._call("GET", "/v1/info")

    def reload(self, path: str | None = None) -> dict[str, Any]:
        """Swap in the bundle at ``path`` (default: reload the current one); needs the client's
        ``admin_token``."""
        body = {"path": path} if path is not None else {}
        return self._call("POST", "/v1/reload", body, admin=True)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RetrievalClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _request(history, user_id, n, beam_size, exclude, vector=None) -> dict[str, Any]:
    body: dict[str, Any] = {"n": n}
    if history is not None:
        body["history"] = list(history)
    if vector is not None:
        body["vector"] = [float(x) for x in vector]
    if user_id is not None:
        body["user_id"] = user_id
    if beam_size is not None:
        body["beam_size"] = beam_size
    if exclude:
        body["exclude"] = list(exclude)
    return body
