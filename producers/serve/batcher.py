"""Micro-batching: chat requests for one model arriving within `batch_window_ms` share one task.

The first request of a model opens a batch and starts the window's timer; the batch is sent
when the window closes or `max_batch_size` requests have joined, whichever comes first. One
`app.tasks.chat` task then carries every request (images by reference, as blobs in Redis) to
the least-loaded live queue serving the model, and the service waits for the answers on one
Redis list (BLPOP), never on Celery's result backend, which is not made for many waiters.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from anyio import to_thread
from celery import Celery

from app import keys
from app.chat import CHAT_PRIORITY, ChatAnswer, ChatBatch, ChatItem
from producers.serve.errors import ApiError

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass
class Waiting:
    item: ChatItem
    image: bytes
    answer: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MicroBatcher:
    def __init__(
        self,
        celery_app: Celery,
        r: aioredis.Redis,
        pick_queue: Callable[[str], str | None],
        window_s: float,
        max_batch: int,
        timeout_s: float,
        metrics,
    ) -> None:
        self.celery = celery_app
        self.r = r
        self.pick_queue = pick_queue  # model → live queue (blocking: run in a thread)
        self.window_s = window_s
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self.metrics = metrics  # producers.serve.metrics.ServiceMetrics
        self._open: dict[str, list[Waiting]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._sending: set[asyncio.Task] = set()

    async def answer(self, model: str, item: ChatItem, image: bytes) -> ChatAnswer:
        waiting = Waiting(item, image)
        batch = self._open.setdefault(model, [])
        batch.append(waiting)
        if len(batch) >= self.max_batch:
            self._flush(model)
        elif len(batch) == 1:
            self._timers[model] = asyncio.get_running_loop().call_later(self.window_s, self._flush, model)
        return await waiting.answer

    def _flush(self, model: str) -> None:
        timer = self._timers.pop(model, None)
        if timer is not None:
            timer.cancel()
        batch = self._open.pop(model, [])
        if batch:
            task = asyncio.create_task(self._send(model, batch))
            self._sending.add(task)  # a reference, so the task is not collected mid-flight
            task.add_done_callback(self._sending.discard)

    async def _send(self, model: str, batch: list[Waiting]) -> None:
        try:
            answers = await self._run(model, batch)
        except Exception as exc:  # every waiter gets the same refusal
            error = (
                exc
                if isinstance(exc, ApiError)
                else ApiError(
                    503,
                    f"could not hand the request to the fleet: {type(exc).__name__}: {exc}",
                    code="fleet_unavailable",
                )
            )
            for w in batch:
                if not w.answer.done():
                    w.answer.set_exception(error)
            return
        by_id = {a.request_id: a for a in answers}
        for w in batch:
            if not w.answer.done():
                w.answer.set_result(
                    by_id.get(w.item.request_id)
                    or ChatAnswer(request_id=w.item.request_id, error="the worker returned no answer for this request")
                )

    async def _run(self, model: str, batch: list[Waiting]) -> list[ChatAnswer]:
        batch_id = f"chat-{uuid.uuid4().hex}"
        items = [w.item for w in batch]
        chat = ChatBatch(batch_id=batch_id, model=model, items=items)
        queue = await to_thread.run_sync(self.pick_queue, model)
        if queue is None:
            raise ApiError(404, f"no live worker serves model {model!r}", "model", "model_not_found")
        started = time.perf_counter()
        pipe = self.r.pipeline(transaction=False)
        for key, w in zip(chat.blob_keys, batch):
            pipe.set(key, w.image, ex=int(self.timeout_s) + 60)
        await pipe.execute()
        payload = {**chat.model_dump(mode="json"), "request_ids": chat.request_ids}
        await to_thread.run_sync(
            lambda: self.celery.send_task(
                "app.tasks.chat",
                args=(payload,),
                queue=queue,
                priority=CHAT_PRIORITY,
                task_id=batch_id,
                headers={"request_ids": chat.request_ids},
                argsrepr=f"(chat {batch_id}: {len(items)} requests)",
                kwargsrepr="{}",
            )
        )
        popped = await self.r.blpop([keys.chat_answers(batch_id)], timeout=self.timeout_s)
        if popped is None:
            self.celery.control.revoke(batch_id)  # nobody waits for it any more
            await self.r.delete(*chat.blob_keys)
            raise ApiError(504, f"no answer from the fleet within {self.timeout_s:g} s", None, "timeout")
        answers = [ChatAnswer.model_validate(a) for a in json.loads(popped[1])]
        self.metrics.latency.labels(model).observe(time.perf_counter() - started)
        self.metrics.sizes.labels(model).observe(len(items))
        if any(a.engine_ms for a in answers):
            self.metrics.engine.labels(model).observe(max(a.engine_ms for a in answers) / 1000)
        return answers
