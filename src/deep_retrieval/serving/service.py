"""The HTTP retrieval service: a thin FastAPI shell over a saved model bundle.

Endpoints (OpenAPI schema at ``/openapi.json``, browsable at ``/docs``):

* ``POST /v1/recommend`` — ``{"history": [item ids…]}`` or ``{"user_id": …}``, or for an index
  over given vectors (:class:`~deep_retrieval.DRIndex` bundles) ``{"vector": [floats…]}``;
  optional ``n``, ``beam_size``, ``exclude``; returns items (external ids, best first) and
  scores.
* ``POST /v1/recommend/batch`` — ``{"requests": [...]}``, answered in one batched model call per
  distinct ``(n, beam_size)``.
* ``GET /healthz``, ``GET /v1/info`` — liveness; bundle, sizes, config, limits.
* ``POST /v1/reload`` — load a bundle (the same path, or ``{"path": …}``) and swap it in. Requests
  already running finish on the model they started with; a bundle that fails to load leaves the
  current one serving. ``SIGHUP`` does the same for the current path.

Unknown history items are reported and ignored; a history with no known item is answered from
popularity (``"fallback": "popularity"``). Bad requests get a 4xx that says what is wrong.
"""

import logging
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError
from ..data.types import Sequences
from ..dr_index import DRIndex
from ..estimator import DeepRetrieval
from ..utils import require

log = logging.getLogger("deep_retrieval")

ItemId = int | str


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
    """

    max_n: int = 1000
    max_history: int = 1000
    max_exclude: int = 10_000
    max_batch: int = 256
    max_request_beam_size: int = 1024

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


class ServiceState:
    """The live bundle and the reload lock, shared by every request of one app."""

    def __init__(
        self, path: str | Path, *, device: str = "cpu", limits: ServiceLimits | None = None
    ) -> None:
        self.device = device
        self.limits = limits or ServiceLimits()
        self.live = _load(Path(path), device, 1)
        self.reloads = 0
        self._reload_lock = threading.Lock()

    def reload(self, path: str | Path | None = None) -> _Live:
        """Load ``path`` (default: the current bundle's) and swap it in; raises on a bad bundle
        and keeps serving the old one."""
        with self._reload_lock:  # one load at a time; requests never wait on it
            target = Path(path) if path is not None else self.live.path
            new = _load(target, self.device, self.live.generation + 1)
            self.live = new  # one reference assignment: atomic for the readers
            self.reloads += 1
            log.info("reloaded %s (generation %d)", target, new.generation)
            return new


def create_app(
    bundle: str | Path | ServiceState, *, device: str = "cpu", limits: ServiceLimits | None = None
):  # -> fastapi.FastAPI (imported lazily: the service's dependencies are an extra)
    """The FastAPI application serving ``bundle`` (a model directory written by ``save``)."""
    require("fastapi", "the HTTP service")
    from fastapi import Body, FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field

    from ..utils import __version__

    state = (
        bundle
        if isinstance(bundle, ServiceState)
        else ServiceState(bundle, device=device, limits=limits)
    )
    lim = state.limits

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        history: list[ItemId] | None = Field(
            None,
            description="item ids the user interacted with, oldest first",
            max_length=lim.max_history,
        )
        user_id: ItemId | None = Field(None, description="a user whose history the bundle holds")
        vector: list[float] | None = Field(
            None, description="a query vector (index bundles): the top n by ⟨q, v⟩ + b_v"
        )
        n: int = Field(100, ge=1, le=lim.max_n, description="how many items to return")
        beam_size: int | None = Field(
            None,
            ge=1,
            le=lim.max_request_beam_size,
            description="override the beam (default: calibrated to n)",
        )
        exclude: list[ItemId] = Field(
            default_factory=list, description="item ids never to return", max_length=lim.max_exclude
        )

    class Recommendation(BaseModel):
        items: list[ItemId]
        scores: list[float]
        unknown_items: list[ItemId] = Field(
            description="history / exclude ids the model does not know (ignored)"
        )
        fallback: str | None = Field(
            description='"popularity" when no history item was known, else null'
        )
        beam_size: int | None = Field(
            description="the beam used (null for the popularity fallback)"
        )
        model_generation: int

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        requests: list[RecommendRequest] = Field(min_length=1, max_length=lim.max_batch)

    class BatchResponse(BaseModel):
        results: list[Recommendation]

    class ReloadRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        path: str | None = Field(
            None, description="bundle directory to load (default: the current one)"
        )

    app = FastAPI(
        title="deep-retrieval",
        version=__version__,
        description="Candidate retrieval with a Deep Retrieval model bundle.",
    )
    app.state.service = state

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

    def resolve(live: _Live, req: RecommendRequest) -> tuple[np.ndarray, np.ndarray, list[ItemId]]:
        model = live.model
        if sum(x is not None for x in (req.history, req.user_id, req.vector)) > 1:
            raise HTTPException(422, "give one of history, user_id or vector")
        if req.vector is not None:
            if live.index is None:
                raise HTTPException(
                    422, "this bundle is a history model: send history or user_id, not vector"
                )
            if len(req.vector) != live.index.dim:
                raise HTTPException(
                    422, f"vector has {len(req.vector)} numbers; this index takes {live.index.dim}"
                )
            if not np.isfinite(req.vector).all():
                raise HTTPException(422, "vector holds NaN or infinite values")
            history: np.ndarray = np.zeros(0, np.int64)
            unknown: list[ItemId] = []
        elif req.user_id is not None:
            try:
                history = model.user_history(req.user_id)
            except KeyError:
                raise HTTPException(
                    404, f"unknown user_id {req.user_id!r}; send its history instead"
                ) from None
            unknown = []
        elif req.history is not None:
            history, unknown = model.item_index(req.history)
        else:
            raise HTTPException(
                422, "give history (a list of item ids, may be empty), user_id or vector"
            )
        exclude, unknown_ex = model.item_index(req.exclude)
        return history, exclude, unknown + unknown_ex

    def result(
        live: _Live, ids, scores, unknown: list, fallback: str | None, beam: int | None
    ) -> Recommendation:
        keep = ids >= 0
        return Recommendation(
            items=[live.names[i] for i in ids[keep].tolist()],
            scores=[float(s) for s in scores[keep]],
            unknown_items=unknown,
            fallback=fallback,
            beam_size=beam,
            model_generation=live.generation,
        )

    def answer(live: _Live, reqs: list[RecommendRequest]) -> list[Recommendation]:
        model = live.model
        resolved = [resolve(live, r) for r in reqs]
        out: list[Recommendation | None] = [None] * len(reqs)
        groups: dict[tuple[int, int | None], list[int]] = {}
        vectors: dict[tuple[int, int | None], list[int]] = {}
        for i, (req, (history, exclude, unknown)) in enumerate(zip(reqs, resolved, strict=True)):
            if req.vector is not None:
                vectors.setdefault((req.n, req.beam_size), []).append(i)
            elif len(history) == 0:
                ids, scores = model.popular_items(req.n, exclude)
                out[i] = result(live, ids, scores, unknown, "popularity", None)
            else:
                groups.setdefault((req.n, req.beam_size), []).append(i)
        for (n, beam), rows in groups.items():
            histories = Sequences.from_lists([resolved[i][0] for i in rows])
            excl = Sequences.from_lists([resolved[i][1] for i in rows])
            used = beam or model.beam_size_for(n)
            ids, scores = model.recommend(histories, n, exclude=excl, beam_size=used)
            for r, i in enumerate(rows):
                out[i] = result(live, ids[r], scores[r], resolved[i][2], None, used)
        for (n, beam), rows in vectors.items():
            assert live.index is not None
            used = beam or model.beam_size_for(n)
            names, scores = live.index.search(
                np.array([reqs[i].vector for i in rows], dtype=np.float64), n,
                exclude=[[live.names[x] for x in resolved[i][1].tolist()] for i in rows],
                beam_size=used,
            )
            for r, i in enumerate(rows):
                keep = np.isfinite(scores[r])
                out[i] = Recommendation(
                    items=names[r][keep].tolist(), scores=[float(x) for x in scores[r][keep]],
                    unknown_items=resolved[i][2], fallback=None, beam_size=used,
                    model_generation=live.generation,
                )
        return out  # type: ignore[return-value]

    @app.post("/v1/recommend", response_model=Recommendation, summary="Top-n items for one user")
    def recommend(req: RecommendRequest) -> Recommendation:
        return answer(state.live, [req])[0]

    @app.post(
        "/v1/recommend/batch", response_model=BatchResponse, summary="Top-n items for several users"
    )
    def recommend_batch(req: BatchRequest) -> BatchResponse:
        return BatchResponse(results=answer(state.live, req.requests))

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

    @app.post("/v1/reload", summary="Load a bundle and swap it in without dropping requests")
    def reload(req: ReloadRequest | None = Body(None)) -> dict[str, Any]:
        path = None if req is None else req.path
        try:
            live = state.reload(path)
        except (ValueError, OSError) as exc:
            raise HTTPException(
                422, f"reload failed, still serving generation {state.live.generation}: {exc}"
            ) from exc
        return {"status": "reloaded", "bundle": str(live.path), "model_generation": live.generation}

    return app


def serve(
    bundle: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "cpu",
    limits: ServiceLimits | None = None,
    log_level: str = "info",
) -> None:
    """Run the service with uvicorn until interrupted; ``SIGHUP`` reloads the bundle."""
    uvicorn = require("uvicorn", "the HTTP service")

    state = ServiceState(bundle, device=device, limits=limits)
    app = create_app(state)

    def on_hup(signum, frame) -> None:  # reload off the signal handler's thread
        def run() -> None:
            try:
                state.reload()
            except (ValueError, OSError) as exc:
                log.error("reload on SIGHUP failed, still serving the old bundle: %s", exc)

        threading.Thread(target=run, daemon=True).start()

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hup)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
