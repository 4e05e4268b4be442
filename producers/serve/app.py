"""The FastAPI application: chat completions, models, health, metrics; jobs come from producers.serve.jobs.

    create_app(settings) → FastAPI      (uvicorn runs it: `producer serve`)

Every response carries X-Request-ID (the client's, when it sent a sane one, else a new id); the id
travels in the chat task's payload and headers and is on the worker's log lines for that batch.
"""

from __future__ import annotations

import hmac
import re
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis
from anyio import to_thread
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from app.factory import create_app as create_celery
from app.heartbeat import live_models, live_workers
from app.redis_client import redis_client
from app.routing import queue_for_model
from app.store import JobStore
from config.settings import Settings
from producers.serve import convert, errors, images, jobs
from producers.serve.batcher import MicroBatcher
from producers.serve.errors import ApiError
from producers.serve.metrics import ServiceMetrics
from producers.serve.openai_schema import ChatCompletion, ChatCompletionRequest, ModelCard, ModelList

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MODELS_TTL_S = 1.0  # live models are re-read from the heartbeats at most this often


class Fleet:
    """The service's view of the fleet: live models, cached for a second (a SCAN per request is waste)."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self._models: dict[str, list[dict[str, Any]]] = {}
        self._read_at = 0.0

    def models(self) -> dict[str, list[dict[str, Any]]]:
        if time.monotonic() - self._read_at > MODELS_TTL_S:
            self._models, self._read_at = live_models(self.r), time.monotonic()
        return self._models

    def pick_queue(self, model: str) -> str | None:
        return queue_for_model(self.r, model)


def async_redis(settings: Settings) -> aioredis.Redis:
    """For BLPOP: no socket timeout (a wait for answers may last request_timeout_s)."""
    kwargs: dict[str, Any] = settings.redis.tls() or {}
    # redis-py 8 defaults to a 5 s socket timeout, which would cut a long BLPOP short
    return aioredis.Redis.from_url(settings.redis.url, socket_timeout=None, socket_connect_timeout=5, **kwargs)


def create_app(settings: Settings) -> FastAPI:
    serve = settings.serve
    keys = [k.encode() for k in serve.api_keys]

    async def authorize(request: Request) -> None:
        if not keys:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(given.strip().encode(), k) for k in keys):
            raise ApiError(401, "missing or invalid API key: send Authorization: Bearer KEY", None, "invalid_api_key")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        state.store = JobStore(redis_client(settings, retry_s=5), settings.redis.job_ttl_s)
        state.aredis = async_redis(settings)
        state.http = httpx.AsyncClient(timeout=serve.fetch_timeout_s)
        state.celery = create_celery(settings)
        state.celery.backend.on_task_call = lambda producer, task_id: None  # answers come by BLPOP
        state.fleet = Fleet(state.store.r)
        state.metrics = ServiceMetrics(state.store, list(settings.queues), serve.job_history)
        state.batcher = MicroBatcher(
            state.celery,
            state.aredis,
            state.fleet.pick_queue,
            serve.batch_window_ms / 1000,
            serve.max_batch_size,
            serve.request_timeout_s,
            state.metrics,
        )
        state.jobs = jobs.JobRunner(settings, state.store)
        yield
        state.jobs.close()
        await state.http.aclose()
        await state.aredis.aclose()

    app = FastAPI(
        title="vlmq",
        lifespan=lifespan,
        dependencies=[Depends(authorize)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    errors.install(app)
    app.include_router(jobs.router)

    @app.middleware("http")
    async def request_id_and_size(request: Request, call_next):
        given = request.headers.get("x-request-id", "")
        request.state.request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > serve.max_request_bytes:
            response: Response = errors.error_response(
                413,
                f"request body is {declared} bytes, over the limit of {serve.max_request_bytes}",
                "invalid_request_error",
                None,
                "request_too_large",
            )
        else:
            response = await call_next(request)
        response.headers["X-Request-ID"] = request.state.request_id
        return response

    @app.post("/v1/chat/completions", response_model=ChatCompletion)
    async def chat_completions(body: ChatCompletionRequest, request: Request, response: Response):
        state, model = request.app.state, body.model
        status = 200
        try:
            convert.refuse_unsupported(body)
            models = await to_thread.run_sync(state.fleet.models)
            if model not in models:
                raise ApiError(
                    404,
                    f"the model {model!r} does not exist or no live worker serves it; served now: {sorted(models)}",
                    "model",
                    "model_not_found",
                )
            url, _, _ = convert.image_and_text(body)
            raw = await images.load_image(url, settings, state.http)
            prepared = await images.prepare(raw, settings, model)
            item = convert.chat_item(body, request.state.request_id, prepared.sha256)
            answer = await state.batcher.answer(model, item, prepared.data)
            if answer.error:
                raise ApiError(502, f"the worker could not answer: {answer.error}", None, "engine_error")
        except ApiError as exc:
            status = exc.status
            raise
        except Exception:
            status = 500
            raise
        finally:
            state.metrics.requests.labels(model, str(status)).inc()
        response.headers["X-Usage-Estimated"] = "true" if answer.usage_estimated else "false"
        return convert.completion(model, answer)

    @app.get("/v1/models", response_model=ModelList)
    async def list_models(request: Request):
        models = await to_thread.run_sync(request.app.state.fleet.models)
        return ModelList(
            data=[ModelCard(id=m, created=int(min(w["started"] for w in ws))) for m, ws in sorted(models.items())]
        )

    @app.get("/v1/models/{model:path}", response_model=ModelCard)
    async def get_model(model: str, request: Request):
        workers = (await to_thread.run_sync(request.app.state.fleet.models)).get(model)
        if not workers:
            raise ApiError(
                404, f"the model {model!r} does not exist or no live worker serves it", "model", "model_not_found"
            )
        return ModelCard(id=model, created=int(min(w["started"] for w in workers)))

    @app.get("/health")
    def health(request: Request):
        try:
            request.app.state.store.r.ping()
            workers = live_workers(request.app.state.store.r)
        except redis.RedisError as exc:
            return JSONResponse(
                {"status": "unavailable", "redis": False, "error": str(exc), "models": {}}, status_code=503
            )
        models: dict[str, dict[str, Any]] = {}
        for w in workers:
            entry = models.setdefault(w.get("model") or "unknown", {"workers": 0, "engines": {}, "queues": []})
            entry["workers"] += 1
            entry["engines"][w.get("engine", "unknown")] = entry["engines"].get(w.get("engine", "unknown"), 0) + 1
            entry["queues"] = sorted(set(entry["queues"]) | set(w["queues"]))
        return {
            "status": "ok" if workers else "no_workers",
            "redis": True,
            "models": models,
            "workers": [
                {
                    "hostname": w["hostname"],
                    "model": w.get("model"),
                    "queues": w["queues"],
                    "engine": w.get("engine", "unknown"),
                    "busy": bool(w.get("current")),
                    "batches_done": w.get("batches_done", 0),
                }
                for w in workers
            ],
        }

    @app.get("/metrics")
    def metrics(request: Request):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
