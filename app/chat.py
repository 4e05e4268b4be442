"""Free-form chat requests on the fleet: a micro-batch of (image, system, text, sampling) in one task.

The HTTP service (producers.serve) gathers requests that arrive within a few milliseconds into one
`ChatBatch`, stores each prepared image as a blob (claim check, as for jobs) and sends one
`app.tasks.chat` task to a queue whose worker serves the requested model. The worker answers every
request of the batch with one engine call and pushes the answers to a Redis list the service
waits on; an engine failure splits the batch down to the single request that fails.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from app import keys
from config.errors import EngineError
from config.sampling import StageSampling
from workers.engine import Engine, EngineRequest, split_on_reject

log = logging.getLogger(__name__)
ANSWER_TTL_S = 600
CHAT_PRIORITY = 0  # ahead of every pipeline stage: someone is waiting on the answer


class ChatItem(BaseModel):
    request_id: str
    sha256: str
    system: str = ""
    text: str
    sampling: StageSampling
    format: str = "text"  # "text" or "json"
    json_schema: dict[str, Any] | None = None  # format "json": the response's schema (None: any object)


class ChatBatch(BaseModel):
    # A plain id: every Redis key the worker touches (the images, the answers) is derived from it,
    # never taken from the message, so a forged message cannot make a worker read or delete others'.
    batch_id: str = Field(pattern=r"^chat-[0-9a-f]{32}$")
    model: str
    items: list[ChatItem]

    @property
    def blob_keys(self) -> list[str]:
        return [keys.chat_blob(self.batch_id, n) for n in range(len(self.items))]

    @property
    def request_ids(self) -> list[str]:
        return [i.request_id for i in self.items]


class ChatAnswer(BaseModel):
    request_id: str
    content: str = ""
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False
    error: str | None = None
    worker: str | None = None
    engine_ms: float = 0.0


def _engine_request(item: ChatItem, image: bytes) -> EngineRequest:
    return EngineRequest(
        image=image,
        image_key=item.sha256,
        system=item.system,
        text=item.text,
        sampling=item.sampling,
        format="json" if item.format == "json" else "text",
        schema=item.json_schema,
    )


def answer_batch(
    batch: ChatBatch, engine: Callable[[], Engine], images: Sequence[bytes | None], worker: str | None = None
) -> list[ChatAnswer]:
    """Answers in the batch's order; a missing image or a failing request gets its own error."""
    answers = [ChatAnswer(request_id=i.request_id, worker=worker) for i in batch.items]
    todo = [n for n, data in enumerate(images) if data is not None]
    for n, data in enumerate(images):
        if data is None:
            answers[n].error = "image no longer in Redis (expired or deleted before the worker ran)"
    for item in batch.items:
        log.info(
            "chat request", extra={"request_id": item.request_id, "batch_id": batch.batch_id, "format": item.format}
        )
    started = time.perf_counter()
    outputs = (
        split_on_reject(engine().complete, [_engine_request(batch.items[n], images[n]) for n in todo]) if todo else []
    )
    elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
    for n, out in zip(todo, outputs):
        if isinstance(out, EngineError):
            answers[n].error = f"engine error: {out}"
            continue
        answers[n] = answers[n].model_copy(
            update={
                "content": out.text,
                "finish_reason": out.finish_reason,
                "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.completion_tokens,
                "usage_estimated": out.estimated,
                "engine_ms": elapsed_ms,
            }
        )
    return answers


def failed_answers(batch: ChatBatch, reason: str, worker: str | None = None) -> list[ChatAnswer]:
    return [ChatAnswer(request_id=i.request_id, error=reason, worker=worker) for i in batch.items]


def publish_answers(r: Any, batch: ChatBatch, answers: Sequence[ChatAnswer]) -> None:
    """Hand the answers to the waiting service and drop the batch's blobs, in one transaction."""
    pipe = r.pipeline()
    pipe.rpush(keys.chat_answers(batch.batch_id), json.dumps([a.model_dump(mode="json") for a in answers]))
    pipe.expire(keys.chat_answers(batch.batch_id), ANSWER_TTL_S)
    pipe.delete(*batch.blob_keys)
    pipe.execute()


def serve_batch(
    rt: Any, payload: dict[str, Any], worker: str, attempt: int = 1, max_attempts: int = 3
) -> dict[str, Any]:
    """The whole task on a worker runtime (app.runtime.WorkerRuntime): images, engine, answers, stats."""
    batch = ChatBatch.model_validate(payload)
    if attempt > max_attempts:  # it killed its worker each time: answer with an error, never loop
        answers = failed_answers(batch, f"chat batch delivered {attempt} times, worker lost each time", worker)
    else:
        images = rt.store.get_blobs(batch.blob_keys)
        before = rt.engine_stats()
        try:
            answers = answer_batch(batch, lambda: rt.engine, images, worker)
        except Exception as exc:  # the engine would not start: every request gets the reason
            log.error("chat batch failed", extra={"batch_id": batch.batch_id, "error": str(exc)})
            rt.reset_engine()
            answers = failed_answers(batch, f"engine unavailable: {type(exc).__name__}: {exc}", worker)
        else:
            after = rt.engine_stats()
            rt.store.add_worker_stats(worker, "chat", {k: v - before.get(k, 0.0) for k, v in after.items()})
    publish_answers(rt.store.r, batch, answers)
    return {"batch_id": batch.batch_id, "answers": len(answers), "errors": sum(a.error is not None for a in answers)}
