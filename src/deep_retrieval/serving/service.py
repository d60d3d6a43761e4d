"""The HTTP retrieval service: a thin FastAPI shell over a saved model bundle.

Endpoints (OpenAPI schema at ``/openapi.json``, browsable at ``/docs``):

* ``POST /v1/recommend`` — ``{"history": [item ids…]}`` or ``{"user_id": …}``, or for an index
  over given vectors (:class:`~deep_retrieval.DRIndex` bundles) ``{"vector": [floats…]}``;
  optional ``n``, ``beam_size``, ``exclude``; returns items (external ids, best first) and
  scores.
* ``POST /v1/recommend/batch`` — ``{"requests": [...]}``, answered in one batched model call per
  distinct ``(n, beam_size)``.
* ``GET /healthz``, ``GET /v1/info`` — liveness; bundle, sizes, config, limits.
* ``POST /v1/reload`` — admin: load a bundle (the same path, or ``{"path": …}`` inside the
  bundle root) and swap it in. Requests already running finish on the model they started with; a
  bundle that fails to load leaves the current one serving. ``SIGHUP`` does the same for the
  current path.

Admin endpoints are off unless an admin token is configured; then a request carries
``Authorization: Bearer TOKEN`` (compared in constant time) or gets 401 (none) / 403 (wrong). One
reload runs at a time: another one meanwhile gets 409 at once, and a load that takes longer than
the reload timeout is abandoned (504) with the current bundle still serving, so recommend traffic
never waits on a reload.

Unknown history items are reported and ignored; a history with no known item is answered from
popularity (``"fallback": "popularity"``). Bad requests get a 4xx that says what is wrong.
"""

import hmac
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError
from ..data.types import Sequences
from ..dr_index import DRIndex
from ..estimator import DeepRetrieval
from ..index.retrieval import QueryStats
from ..utils import require

log = logging.getLogger("deep_retrieval")

ItemId = int | str
#: Unknown ids echoed in a response: the first ones, with the count of all (a huge request does
#: not come back whole).
MAX_UNKNOWN_ECHO = 20


@dataclass(frozen=True)
class ServiceLimits:
    """Request limits; a request over one gets a 422 that names the field.

    Attributes:
        max_n: the largest ``n`` a request may ask for.
        max_history: the longest ``history`` list.
        max_exclude: the longest ``exclude`` list.
        max_batch: the most requests in one ``/v1/recommend/batch`` call.
        max_request_beam_size: the largest ``beam_size`` a request may ask for. Not the model's
            ``RetrievalConfig.max_beam_size``, which is the largest beam the serving calibration
            considers for a request that gives no ``beam_size``. (Was ``max_beam_size``.)
        max_body_bytes: the largest request body; a larger one gets 413 before it is parsed
            (by its ``Content-Length``, or as it streams in).
        body_timeout_s: a client that sends no part of its body for this long gets 408 (a
            stalled or very slow client does not hold a worker).
    """

    max_n: int = 1000
    max_history: int = 1000
    max_exclude: int = 10_000
    max_batch: int = 256
    max_request_beam_size: int = 1024
    max_body_bytes: int = 1 << 20
    body_timeout_s: int = 10

    def __post_init__(self) -> None:
        bad = [f"{k} must be ≥ 1, got {v!r}" for k, v in asdict(self).items()
               if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1)]
        if bad:
            raise ConfigError("service limits: " + "; ".join(bad))


class _Live:
    """One loaded bundle; requests take a reference at their start and keep it."""

    def __init__(self, path: Path, model: DeepRetrieval, generation: int) -> None:
        self.path = path
        self.model = model
        self.generation = generation
        self.loaded_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ids = model.item_ids_
        if ids is None:  # only bundles of older versions; reading ids as rows would be wrong
            raise ValueError(
                f"{path} records no item ids (saved by an older version): load it with"
                " DeepRetrieval.load and save it again with item_ids=… (numpy.arange(n_items) if"
                " the internal ids are the ids)"
            )
        # External ids as JSON values (numpy scalars are not serialisable).
        self.names: list[ItemId] = ids.tolist()
        # An index over given vectors also answers vector queries.
        self.index = DRIndex.from_state(model.state) if DRIndex.is_index(model.state) else None


def _load(path: Path, device: str, generation: int) -> _Live:
    model = DeepRetrieval.load(path, device=device)
    # Warm the caches (numpy beam tables, reranker table, id lookup, popularity order) before the
    # model takes traffic, so the first requests after a swap are not slow.
    model.recommend(Sequences.from_lists([[0]]), 10)
    model.item_index([])
    model.popular_items(1)
    return _Live(path, model, generation)


#: The environment variable an admin token may come from (else ``serve --admin-token-file``).
ADMIN_TOKEN_ENV = "DEEP_RETRIEVAL_ADMIN_TOKEN"
#: Endpoints that need the admin token.
ADMIN_PATHS = frozenset({"/v1/reload"})


class ReloadRefused(Exception):
    """A reload not done, with the HTTP status that says why (403, 409, 422, 504)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class ServiceState:
    """The live bundle, the admin settings and the reload lock, shared by every request of one
    app.

    Args:
        admin_token: the bearer token admin endpoints require; ``None`` turns them off.
        bundle_root: reload paths must resolve (symlinks resolved first) inside this directory;
            relative paths are taken from it. Default: the served bundle's parent directory.
        reload_timeout_s: a load that takes longer is abandoned (the current bundle serves on).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        limits: ServiceLimits | None = None,
        admin_token: str | None = None,
        bundle_root: str | Path | None = None,
        reload_timeout_s: float = 120.0,
    ) -> None:
        if admin_token is not None and not admin_token.strip():
            raise ValueError("the admin token is empty; put a long random string in it")
        if not reload_timeout_s > 0:
            raise ValueError(f"the reload timeout must be > 0 seconds, got {reload_timeout_s}")
        self.device = device
        self.limits = limits or ServiceLimits()
        self.admin_token = None if admin_token is None else admin_token.strip()
        self.live = _load(Path(path), device, 1)
        self.bundle_root = Path(bundle_root or Path(path).resolve().parent).resolve()
        self.reload_timeout_s = float(reload_timeout_s)
        self.reloads = 0
        self.reload_results: dict[str, int] = {"ok": 0, "failed": 0, "refused": 0}
        self._reload_lock = threading.Lock()

    def bundle_path(self, path: str | Path | None) -> Path:
        """The bundle a reload of ``path`` loads: the current one for ``None``; otherwise inside
        the bundle root, or :class:`ReloadRefused`."""
        if path is None:
            return self.live.path
        if not str(path).strip():
            raise ReloadRefused(422, "path is empty; leave it out to reload the current bundle")
        target = (self.bundle_root / path).resolve()  # an absolute path stays itself
        if not target.is_relative_to(self.bundle_root):
            raise ReloadRefused(
                403, f"{path} is outside the bundle root {self.bundle_root} (serve --bundle-root)"
            )
        return target

    def check_admin(self, authorization: str | None) -> None:
        """Raise :class:`ReloadRefused` (403 off or wrong, 401 missing) unless ``authorization``
        (the request's header) carries the admin token."""
        if self.admin_token is None:
            raise ReloadRefused(
                403, "admin endpoints are off: start the service with --admin-token-file FILE"
                f" (or ${ADMIN_TOKEN_ENV})"
            )
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ReloadRefused(401, "admin endpoint: send Authorization: Bearer TOKEN")
        if not hmac.compare_digest(given.strip().encode(), self.admin_token.encode()):
            raise ReloadRefused(403, "wrong admin token")

    def reload(self, path: str | Path | None = None) -> _Live:
        """Load ``path`` (default: the current bundle's) and swap it in. A bad bundle raises
        ``ValueError`` / ``OSError`` and the old one keeps serving; :class:`ReloadRefused` when
        ``path`` is outside the bundle root, another reload runs (409) or the load times out."""
        try:
            return self._reload(path)
        except ReloadRefused:
            self.reload_results["refused"] += 1
            raise
        except (ValueError, OSError):
            self.reload_results["failed"] += 1
            raise

    def _reload(self, path: str | Path | None) -> _Live:
        target = self.bundle_path(path)
        if not self._reload_lock.acquire(blocking=False):
            raise ReloadRefused(409, "a reload is already running; try again when it is done")
        try:
            generation = self.live.generation + 1
            box: dict[str, Any] = {}
            done = threading.Event()

            def load() -> None:
                try:
                    box["live"] = _load(target, self.device, generation)
                except BaseException as exc:  # handed to the waiting request
                    box["error"] = exc
                finally:
                    done.set()

            # The load runs on its own thread so that one which hangs (a FIFO in the bundle, a
            # stalled network mount) is abandoned after the timeout instead of holding the lock.
            threading.Thread(target=load, name="dr-reload", daemon=True).start()
            if not done.wait(self.reload_timeout_s):
                raise ReloadRefused(
                    504, f"loading {target} took longer than {self.reload_timeout_s:g} s and was"
                    f" abandoned; still serving generation {self.live.generation}"
                )
            if "error" in box:
                raise box["error"]
            new: _Live = box["live"]
            self.live = new  # one reference assignment: atomic for the readers
            self.reloads += 1
            self.reload_results["ok"] += 1
            log.info("reloaded %s (generation %d)", target, new.generation)
            return new
        finally:
            self._reload_lock.release()


def create_app(
    bundle: str | Path | ServiceState, *, device: str = "cpu", limits: ServiceLimits | None = None,
    access_log: bool = False, batch_window_s: float = 0.001,
):  # -> fastapi.FastAPI (imported lazily: the service's dependencies are an extra)
    """The FastAPI application serving ``bundle`` (a model directory written by ``save``, or a
    :class:`ServiceState` with admin settings). ``access_log``: one JSON line per request on the
    ``deep_retrieval.access`` logger. ``batch_window_s``: how long a ``/v1/recommend`` request
    waits for others to share its model call (0: only those already queued)."""
    if not batch_window_s >= 0:
        raise ValueError(f"the batch window must be ≥ 0 seconds, got {batch_window_s}")
    require("fastapi", "the HTTP service")
    from typing import Annotated

    from fastapi import Body, FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import (
        AfterValidator,
        BaseModel,
        BeforeValidator,
        ConfigDict,
        Field,
        StrictBool,
        StrictFloat,
        StrictInt,
    )

    def utf8(text: str) -> str:
        text.encode("utf-8")  # a lone surrogate ("\ud800") is no text: a 422, not a 500 later
        return text

    # Strict: true is no item 1 and "5" is no n = 5.
    def whole(value: Any) -> Any:
        # JSON Schema's integers include 381.0; true and "5" are no integers.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    # (No "pattern" in the schema for what utf8() refuses: schema tools reject a regex over
    # surrogates, so a lone surrogate stays the one refusal the schema cannot state.)
    Text = Annotated[str, Field(strict=True), AfterValidator(utf8)]
    Count = Annotated[StrictInt, BeforeValidator(whole)]
    Id = Count | Text

    from ..utils import __version__

    state = (
        bundle
        if isinstance(bundle, ServiceState)
        else ServiceState(bundle, device=device, limits=limits)
    )
    lim = state.limits

    class RecommendRequest(BaseModel):
        # Exactly one of history, user_id and vector, said in the schema too (a client generated
        # from it must not send none or two).
        model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
            {"required": ["history"], "properties": {"history": {"type": "array"}}},
            {"required": ["user_id"], "properties": {"user_id": {"type": ["integer", "string"]}}},
            {"required": ["vector"], "properties": {"vector": {"type": "array"}}},
        ]})
        history: list[Id] | None = Field(
            None,
            description="item ids the user interacted with, oldest first",
            max_length=lim.max_history,
        )
        user_id: Id | None = Field(None, description="a user whose history the bundle holds")
        vector: list[StrictFloat | StrictInt] | None = Field(
            None, description="a query vector (index bundles): the top n by ⟨q, v⟩ + b_v"
        )
        n: Count = Field(100, ge=1, le=lim.max_n, description="how many items to return")
        beam_size: Count | None = Field(
            None,
            ge=1,
            le=lim.max_request_beam_size,
            description="override the beam (default: calibrated to n)",
        )
        exclude: list[Id] = Field(
            default_factory=list, description="item ids never to return (the deny-list)",
            max_length=lim.max_exclude,
        )
        allow: list[Id] | None = Field(
            None, description="the only item ids to return (the allow-list)",
            max_length=lim.max_exclude,
        )
        where: dict[Text, list[Id]] | None = Field(
            None, description='item attributes the results must have: {"category": ["shoes"]}',
            max_length=8,
        )
        exclude_seen: StrictBool = Field(
            False, description="never return the items of the history (or the user's own)"
        )

    class Recommendation(BaseModel):
        items: list[ItemId]
        scores: list[float]
        unknown_items: list[ItemId] = Field(
            description=f"history / exclude ids the model does not know (ignored): the first"
            f" {MAX_UNKNOWN_ECHO}"
        )
        unknown_count: int = Field(description="how many history / exclude ids were unknown")
        fallback: str | None = Field(
            description='"popularity" when no history item was known, else null'
        )
        source: str = Field(
            description='"model": scores are the model\'s logits; "popularity": no history item'
            " was known, and scores are the items' training counts (not comparable to logits)"
        )
        complete: bool = Field(
            description="false when fewer than n items came back though more pass the filters"
        )
        beam_size: int | None = Field(
            description="the beam used (null for the popularity fallback)"
        )
        model_generation: int

    class BatchItem(RecommendRequest):
        # Without the oneOf: a batch entry that breaks it gets its own error entry, not a 422.
        model_config = ConfigDict(extra="forbid", json_schema_extra={})

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        requests: list[BatchItem] = Field(min_length=1, max_length=lim.max_batch)

    class Problem(BaseModel):
        status: int = Field(description="the HTTP status this request alone would get")
        detail: str

    class Located(BaseModel):
        loc: list[str]
        msg: str

    class Invalid(BaseModel):
        """The body of every 422: one line, and each problem with its location."""

        detail: str
        problems: list[Located] = Field(default_factory=list)

    class Refused(BaseModel):
        """The body of every other 4xx / 5xx."""

        detail: str

    class BatchResult(BaseModel):
        error: Problem | None = Field(None, description="why this request got no result")

    class BatchResponse(BaseModel):
        results: list[Recommendation | BatchResult] = Field(
            description="one per request, in order: a recommendation, or {error: {status,"
            " detail}} for a request that failed alone (an unknown user, a bad filter)"
        )

    class ReloadRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        path: Text | None = Field(
            None, description="bundle directory to load (default: the current one)"
        )

    app = FastAPI(
        title="deep-retrieval",
        version=__version__,
        description="Candidate retrieval with a Deep Retrieval model bundle.",
        # Swagger UI and ReDoc load their scripts from a CDN (blank offline): off; the schema
        # is at /openapi.json for any OpenAPI viewer.
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = state
    metrics = _Metrics(state)
    # Pure ASGI middlewares (no per-request task group): the outer one counts every answer and
    # refuses unauthorised admin calls before the inner one reads the body.
    app.add_middleware(_BodyLimit, max_bytes=lim.max_body_bytes, timeout_s=lim.body_timeout_s)
    app.add_middleware(_Gate, state=state, metrics=metrics, access_log=access_log)

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    def prometheus() -> Any:
        from fastapi.responses import Response

        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Pydantic's details carry the offending input, which can be any JSON value; keep the
        # message and location (always serialisable).
        problems = [
            {"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "invalid"))}
            for e in exc.errors()
        ]
        text = "; ".join(f"{'.'.join(p['loc'])}: {p['msg']}" for p in problems)
        return JSONResponse(status_code=422, content={"detail": text, "problems": problems})

    class Resolved:
        """One request in internal ids: history, exclude, allow (or None), the unknown ids."""

        def __init__(self, live: _Live, req: RecommendRequest) -> None:
            model = live.model
            if sum(x is not None for x in (req.history, req.user_id, req.vector)) > 1:
                raise HTTPException(422, "give one of history, user_id or vector")
            self.unknown: list[ItemId] = []
            self.history: np.ndarray = np.zeros(0, np.int64)
            if req.vector is not None:
                if live.index is None:
                    raise HTTPException(
                        422, "this bundle is a history model: send history or user_id, not vector"
                    )
                if len(req.vector) != live.index.dim:
                    raise HTTPException(
                        422,
                        f"vector has {len(req.vector)} numbers; this index takes {live.index.dim}",
                    )
                if not np.isfinite(req.vector).all():
                    raise HTTPException(422, "vector holds NaN or infinite values")
                if req.allow is not None or req.where is not None:
                    raise HTTPException(422, "allow and where filter history and user_id requests;"
                                             " a vector request takes exclude")
            elif req.user_id is not None:
                try:
                    self.history = model.user_history(req.user_id)
                except KeyError:
                    raise HTTPException(
                        404, f"unknown user_id {req.user_id!r}; send its history instead"
                    ) from None
            elif req.history is not None:
                self.history, self.unknown = model.item_index(req.history)
            else:
                raise HTTPException(
                    422, "give history (a list of item ids, may be empty), user_id or vector"
                )
            exclude, unknown_ex = model.item_index(req.exclude)
            self.unknown += unknown_ex
            if req.exclude_seen:
                exclude = np.concatenate([exclude, self.history])
            self.exclude = exclude
            self.allow: np.ndarray | None = None
            if req.allow is not None:
                self.allow, unknown_allow = model.item_index(req.allow)
                self.unknown += unknown_allow
            columns = model.state.item_attributes
            for name, values in (req.where or {}).items():
                if name not in columns:
                    known = ", ".join(sorted(columns)) or "none"
                    raise HTTPException(422, f"unknown item attribute {name!r}; this model has:"
                                             f" {known}")
                if columns[name].dtype.kind == "i" and not all(
                    isinstance(v, int) for v in values
                ):
                    raise HTTPException(422, f"attribute {name!r} holds integers")
            self.filtered = self.allow is not None or req.where is not None

    def result(
        live: _Live, ids, scores, r: Resolved, source: str, beam: int | None, complete: bool
    ) -> Recommendation:
        keep = ids >= 0
        return Recommendation.model_construct(  # built from checked values: no validation pass
            items=[live.names[i] for i in ids[keep].tolist()],
            scores=[float(s) for s in scores[keep]],
            unknown_items=r.unknown[:MAX_UNKNOWN_ECHO],
            unknown_count=len(r.unknown),
            fallback="popularity" if source == "popularity" else None,
            source=source,
            complete=complete,
            beam_size=beam,
            model_generation=live.generation,
        )

    def answer(
        live: _Live, reqs: Sequence[RecommendRequest], *, alone: bool
    ) -> list[Recommendation | BatchResult]:
        """The answers, one per request; a request that fails on its own raises when ``alone``,
        else gets an error entry."""
        model = live.model
        out: list[Recommendation | BatchResult | None] = [None] * len(reqs)
        resolved: dict[int, Resolved] = {}
        for i, req in enumerate(reqs):
            try:
                resolved[i] = Resolved(live, req)
            except HTTPException as exc:
                if alone:
                    raise
                out[i] = BatchResult(error=Problem(status=exc.status_code, detail=str(exc.detail)))
        groups: dict[tuple[str, int, int | None], list[int]] = {}
        for i, res in resolved.items():
            req = reqs[i]
            if req.vector is not None:
                kind = "vector"
            elif len(res.history) == 0:
                ids, scores = model.popular_items(req.n, res.exclude, allow=res.allow,
                                                  where=req.where)
                out[i] = result(live, ids, scores, res, "popularity", None, True)
                continue
            else:
                kind = "filtered" if res.filtered else "history"
            groups.setdefault((kind, req.n, req.beam_size), []).append(i)
        for (kind, n, beam), rows in groups.items():
            used = beam or model.beam_size_for(n)
            excl = Sequences.from_lists([resolved[i].exclude for i in rows])
            if kind == "vector":
                assert live.index is not None
                names, scores = live.index.search(
                    np.array([reqs[i].vector for i in rows], dtype=np.float64), n,
                    exclude=[[live.names[x] for x in resolved[i].exclude.tolist()] for i in rows],
                    beam_size=used,
                )
                for r, i in enumerate(rows):
                    keep = np.isfinite(scores[r])
                    out[i] = Recommendation.model_construct(
                        items=names[r][keep].tolist(), scores=scores[r][keep].tolist(),
                        unknown_items=resolved[i].unknown[:MAX_UNKNOWN_ECHO],
                        unknown_count=len(resolved[i].unknown), fallback=None, source="model",
                        complete=True, beam_size=used, model_generation=live.generation,
                    )
                continue
            histories = Sequences.from_lists([resolved[i].history for i in rows])
            if kind == "filtered":
                ids, scores, complete = model.recommend_filtered(
                    histories, n, exclude=excl, beam_size=used,
                    allow=[resolved[i].allow for i in rows], where=[reqs[i].where for i in rows],
                )
            else:
                stats = QueryStats()
                ids, scores = model.recommend(histories, n, exclude=excl, beam_size=used,
                                              stats=stats)
                metrics.candidates(stats)
                complete = np.ones(len(rows), bool)
            for r, i in enumerate(rows):
                out[i] = result(live, ids[r], scores[r], resolved[i], "model", used,
                                bool(complete[r]))
        return out  # type: ignore[return-value]

    # Every status a recommend call can answer, in the schema (a client generated from it must
    # know them); the bodies of the refusals are {"detail": "…"}.
    refusals: dict[int | str, dict[str, Any]] = {
        400: {"description": "a Content-Length that is not a number", "model": Refused},
        404: {"description": "an unknown user_id", "model": Refused},
        408: {"description": "the body stalled for longer than the body timeout",
              "model": Refused},
        413: {"description": "a body over the size limit", "model": Refused},
        422: {"description": "an invalid request", "model": Invalid},
    }

    import asyncio

    from fastapi.responses import Response

    # Micro-batching: concurrent /v1/recommend requests are answered together, one batched
    # model call per (n, beam_size), on the event loop (no thread-pool hop). A request waits up
    # to batch_window_s for others (0: only those already queued in this loop turn). Waiting
    # only after a batch of several did worse under 8 clients when measured, so it was dropped.
    pending: list[tuple[RecommendRequest, asyncio.Future]] = []
    scheduled = [False]

    def flush() -> None:
        scheduled[0] = False
        batch = pending[:]
        pending.clear()
        if not batch:
            return
        try:
            results = answer(state.live, [req for req, _ in batch], alone=False)
        except Exception as exc:  # handed to every waiting request (each gets its 500)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), res in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(res)

    def as_json(model: Any) -> Response:
        return Response(model.model_dump_json(), media_type="application/json")

    @app.post("/v1/recommend", response_model=Recommendation, summary="Top-n items for one user",
              responses=refusals)
    async def recommend(req: RecommendRequest) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        pending.append((req, future))
        if len(pending) >= lim.max_batch:
            flush()
        elif not scheduled[0]:
            scheduled[0] = True
            if batch_window_s > 0:
                loop.call_later(batch_window_s, flush)
            else:
                loop.call_soon(flush)
        res = await future
        if isinstance(res, Recommendation):
            return as_json(res)
        raise HTTPException(res.error.status, res.error.detail)

    @app.post(
        "/v1/recommend/batch", response_model=BatchResponse,
        summary="Top-n items for several users",
        responses={k: v for k, v in refusals.items() if k != 404},
    )
    async def recommend_batch(req: BatchRequest) -> Any:
        return as_json(BatchResponse.model_construct(
            results=answer(state.live, req.requests, alone=False)))

    @app.get("/healthz", summary="Liveness")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "model_generation": state.live.generation}

    @app.get("/v1/info", summary="The bundle being served")
    def info() -> dict[str, Any]:
        live = state.live
        m = live.model
        return {
            "bundle": str(live.path),
            "model_generation": live.generation,
            "loaded_at": live.loaded_at,
            "reloads": state.reloads,
            "n_items": m.n_items_,
            "active_items": int((~m.removed_).sum()),
            "cold_items": int(m.cold_.sum()),
            "known_users": 0 if m.user_histories_ is None else len(m.user_histories_),
            "n_paths": m.codec_.n_paths,
            "occupied_paths": int(len(m.item_paths_.occupied_paths)),
            "config": asdict(m.config),
            "training": m.training_,
            "limits": asdict(lim),
            "version": __version__,
        }

    @app.post(
        "/v1/reload",
        summary="Load a bundle and swap it in without dropping requests (admin)",
        responses={
            401: {"description": "no admin token sent", "model": Refused},
            403: {"description": "admin off, wrong token, or a path outside the root",
                  "model": Refused},
            409: {"description": "another reload is running", "model": Refused},
            422: {"description": "an invalid request, or a bundle that failed to load",
                  "model": Invalid},
            504: {"description": "the load took too long and was abandoned", "model": Refused},
            **{k: v for k, v in refusals.items() if k in (400, 408, 413)},
        },
    )
    def reload(req: ReloadRequest | None = Body(None)) -> dict[str, Any]:
        path = None if req is None else req.path
        try:
            live = state.reload(path)
        except ReloadRefused as exc:
            raise HTTPException(exc.status, str(exc)) from None
        except (ValueError, OSError) as exc:
            raise HTTPException(
                422, f"reload failed, still serving generation {state.live.generation}: {exc}"
            ) from exc
        return {"status": "reloaded", "bundle": str(live.path), "model_generation": live.generation}

    return app


#: One JSON line per request (``serve --access-log``): ts, method, path, status, ms, client.
ACCESS_LOG = logging.getLogger("deep_retrieval.access")


class _Metrics:
    """The service's Prometheus metrics, in a registry of its own (several apps in one process
    do not share counters): requests and errors by endpoint and status, latency, candidates per
    query, the model generation and the reloads by outcome."""

    def __init__(self, state: ServiceState) -> None:
        prom = require("prometheus_client", "the service's /metrics")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "dr_requests", "HTTP requests by endpoint and status code", ["endpoint", "code"],
            registry=self.registry,
        )
        self.errors = prom.Counter(
            "dr_request_errors", "HTTP answers ≥ 400 by endpoint and status code",
            ["endpoint", "code"], registry=self.registry,
        )
        self.latency = prom.Histogram(
            "dr_request_seconds", "request latency in seconds, by endpoint", ["endpoint"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.candidate_count = prom.Histogram(
            "dr_candidates_per_query", "items DR scored per history query (mean of a call)",
            buckets=(10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000), registry=self.registry,
        )
        generation = prom.Gauge("dr_model_generation", "the generation of the bundle served",
                                registry=self.registry)
        generation.set_function(lambda: state.live.generation)
        reloads = prom.Gauge("dr_reloads", "reloads by outcome (ok, failed, refused)",
                             ["outcome"], registry=self.registry)
        for outcome in ("ok", "failed", "refused"):
            reloads.labels(outcome).set_function(
                lambda outcome=outcome: state.reload_results[outcome])

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def candidates(self, stats: QueryStats) -> None:
        if stats.queries:
            self.candidate_count.observe(stats.candidates / stats.queries)

    def render(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST


class _Gate:
    """ASGI middleware, outermost: refuses unauthorised admin calls (before the body is read),
    counts every answer in the metrics and writes the access log."""

    ROUTES = frozenset({"/v1/recommend", "/v1/recommend/batch", "/healthz", "/v1/info",
                        "/v1/reload", "/metrics", "/openapi.json"})

    def __init__(self, app: Any, *, state: ServiceState, metrics: _Metrics,
                 access_log: bool) -> None:
        self.app, self.state, self.metrics, self.access_log = app, state, metrics, access_log

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path = scope.get("path", "")
        status = [500]

        async def tracked(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if path in ADMIN_PATHS and scope.get("method") == "POST":  # else the router's 405
                headers = dict(scope.get("headers", []))
                try:
                    self.state.check_admin(headers.get(b"authorization", b"").decode("latin-1"))
                except ReloadRefused as exc:
                    extra = [(b"www-authenticate", b"Bearer")] if exc.status == 401 else []
                    await _send_json(tracked, exc.status, str(exc), extra)
                    return
            await self.app(scope, receive, tracked)
        finally:
            seconds = time.perf_counter() - t0
            self.metrics.request(path if path in self.ROUTES else "other", status[0], seconds)
            if self.access_log:
                client = scope.get("client")
                ACCESS_LOG.info(json.dumps({
                    "ts": round(time.time(), 3), "method": scope.get("method"), "path": path,
                    "status": status[0], "ms": round(seconds * 1e3, 3),
                    "client": client[0] if client else None,
                }))


class _BodyLimit:
    """ASGI middleware: reads the request body itself before the app sees it, so that a body
    over ``max_bytes`` gets 413 unparsed (at once from its ``Content-Length``, else as soon as
    the streamed bytes pass the limit), and a body part that takes longer than ``timeout_s`` to
    arrive gets 408; the app then reads the buffered body (memory bounded by the limit)."""

    def __init__(self, app: Any, *, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        import asyncio

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and not length.isdigit():
            await _send_json(send, 400, "Content-Length is not a number")
            return
        if length is not None and int(length) > self.max_bytes:
            await _send_json(send, 413, self._too_large())
            return
        parts: list[bytes] = []
        size, more = 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                await _send_json(send, 408, f"no request body for {self.timeout_s:g} s")
                return
            if message["type"] == "http.disconnect":
                return
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.max_bytes:
                await _send_json(send, 413, self._too_large())
                return
            more = message.get("more_body", False)
        body, replayed = b"".join(parts), False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:  # after the body, the app only waits for a disconnect
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"request body over {self.max_bytes:,} bytes (serve --max-body-bytes)"


async def _send_json(
    send: Any, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *(headers or []),
    ]})
    await send({"type": "http.response.body", "body": body})


def serve(
    bundle: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "cpu",
    limits: ServiceLimits | None = None,
    log_level: str = "info",
    admin_token: str | None = None,
    bundle_root: str | Path | None = None,
    reload_timeout_s: float = 120.0,
    access_log: bool = False,
    batch_window_s: float = 0.001,
) -> None:
    """Run the service with uvicorn until interrupted; ``SIGHUP`` reloads the bundle.
    ``admin_token`` defaults to ``$DEEP_RETRIEVAL_ADMIN_TOKEN`` (admin endpoints are off
    without one); see :class:`ServiceState` for the rest."""
    uvicorn = require("uvicorn", "the HTTP service")

    if admin_token is None:
        admin_token = os.environ.get(ADMIN_TOKEN_ENV) or None
    state = ServiceState(bundle, device=device, limits=limits, admin_token=admin_token,
                         bundle_root=bundle_root, reload_timeout_s=reload_timeout_s)
    if access_log:
        ACCESS_LOG.setLevel(logging.INFO)  # whatever the library's own level
    app = create_app(state, access_log=access_log, batch_window_s=batch_window_s)

    def on_hup(signum, frame) -> None:  # reload off the signal handler's thread
        def run() -> None:
            try:
                state.reload()
            except (ValueError, OSError, ReloadRefused) as exc:
                log.error("reload on SIGHUP failed, still serving the old bundle: %s", exc)

        threading.Thread(target=run, daemon=True).start()

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hup)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
