"""Celery tasks: thin adapters from messages to the plain stage functions in app.stages."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from celery.exceptions import Ignore
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from app import keys, refs
from app.celery import app
from app.chat import serve_batch
from app.finish import BROKER_RETRIES, finish, ignore_duplicate
from app.poison import isolate
from app.routing import route_for_model
from app.runtime import RuntimeTask, WorkerRuntime
from app.schemas import BatchState, DeadLetter, ItemState, LinkStats, Stage
from app.stages import StageContext, run_stage
from config.errors import BrokerUnavailableError, PermanentError
from workers.engine import engine_model_id

log = logging.getLogger(__name__)
ATTEMPTS_TTL_S = 7 * 24 * 3600


class StageTask(RuntimeTask):
    """A chain step; counts deliveries so that a batch that kills its worker is isolated."""

    @property
    def attempts_key(self) -> str:
        return keys.attempts(self.request.id, self.request.retries)

    def deliveries(self) -> int:
        pipe = self.runtime.store.r.pipeline()
        pipe.incr(self.attempts_key)
        pipe.expire(self.attempts_key, ATTEMPTS_TTL_S)
        return int(pipe.execute()[0])


BROKER_ERRORS = (RedisError, OperationalError, BrokerUnavailableError)


def run(task: StageTask, stage: Stage, payload: dict[str, Any]) -> BatchState:
    rt, settings = task.runtime, task.settings
    batch = BatchState.model_validate(payload)
    fetch = rt.blobs_to_fetch(batch.items, batch.job_id)  # the first link's: later ones hold them
    standing, attempt, blobs = rt.store.begin_delivery(
        batch.job_id, batch.batch_id, task.attempts_key, ATTEMPTS_TTL_S, fetch
    )
    rt.keep_blobs(fetch, blobs)
    if standing == "cancelled":
        batch.fail_remaining(stage, "job cancelled")
        return batch
    if standing == "finished":
        ignore_duplicate(batch)
    hand_back_if_foreign(task, batch)
    refuse_foreign_refs(batch, stage, settings.shared_dir)
    ids = {"job_id": batch.job_id, "batch_id": batch.batch_id, "stage": stage}
    log.info("stage start", extra={**ids, "images": len(batch.items), "attempt": attempt})
    before = rt.engine_stats()
    try:
        batch = _run_delivery(task, stage, batch, attempt)
    except PermanentError as exc:  # a missing job spec, an engine that cannot be configured …
        log.error("stage failed for good", extra={**ids, "error": str(exc)})
        batch.fail_remaining(stage, f"{type(exc).__name__}: {exc}")
        return batch
    except BROKER_ERRORS as exc:  # Redis hiccup: the engine is fine, keep it
        _retry_or_give_up(task, stage, batch, exc, BROKER_RETRIES, ids)
        return batch
    except Exception as exc:  # EngineDeadError, or an unexpected fault that may have broken the engine
        rt.reset_engine()
        _retry_or_give_up(task, stage, batch, exc, settings.engine.stage_retries, ids)
        return batch
    after = rt.engine_stats()
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    if stage in rt.spec(batch.job_id).stages:  # a stage the job did not select did not run
        # written with the batch's records (app.finish): one transaction for the three links
        batch.link_stats.append(LinkStats(worker=task.request.hostname or "worker", stage=stage, counters=delta))
    return batch


def hand_back_if_foreign(task: StageTask, batch: BatchState) -> None:
    """A batch of a job whose model this worker does not serve goes back untouched, chain and all, to
    a queue of that model (else its parking queue): records never mix models, whatever the route."""
    try:
        wanted = task.runtime.spec(batch.job_id).model
    except PermanentError:
        return  # no spec: the stage fails the batch plainly
    own = engine_model_id(task.settings)
    if wanted == own:
        return
    target = route_for_model(task.runtime.store.r, wanted)
    log.warning(
        "batch of another model handed back",
        extra={"job_id": batch.job_id, "batch_id": batch.batch_id, "model": wanted, "own": own, "queue": target},
    )
    task.runtime.store.r.decr(task.attempts_key)  # not a delivery of this batch: its next one is its first
    task.signature_from_request(queue=target).apply_async()
    raise Ignore()


def _run_delivery(task: StageTask, stage: Stage, batch: BatchState, attempt: int) -> BatchState:
    """First delivery: the whole batch in one engine call. A redelivery (its worker was lost):
    one image at a time, so that only an image that kills its worker is set aside."""
    rt, settings = task.runtime, task.settings
    ctx = StageContext(
        engine=lambda: rt.engine,
        spec=rt.spec(batch.job_id),
        cache=rt.store,
        images=lambda items: rt.images(items, batch.job_id),
    )
    if attempt == 1:
        return run_stage(stage, batch, ctx)
    if attempt > settings.max_attempts * (len(batch.items) + 1):  # lost with no image running: give up
        reason = f"dead-lettered at {stage}: delivered {attempt} times, worker lost each time"
        for item in batch.items:
            if not item.error:
                _dead_letter(rt, batch, stage, item, reason)
        return batch
    log.warning(
        "redelivered after a lost worker: one image at a time",
        extra={"job_id": batch.job_id, "batch_id": batch.batch_id, "stage": stage, "attempt": attempt},
    )
    return isolate(
        rt.store.r,
        task.request.id,
        stage,
        batch,
        max(1, settings.max_attempts - 1),
        lambda one: run_stage(stage, one, ctx),
        lambda item, reason: _dead_letter(rt, batch, stage, item, reason),
    )


def _dead_letter(rt: WorkerRuntime, batch: BatchState, stage: Stage, item: ItemState, reason: str) -> None:
    letter = DeadLetter(
        id=uuid.uuid4().hex[:12], job_id=batch.job_id, batch_id=batch.batch_id, stage=stage, ref=item.ref, reason=reason
    )
    rt.store.dead_letter(letter)
    item.fail(stage, reason)
    item.dead_letter = letter.id
    log.error(
        reason,
        extra={"job_id": batch.job_id, "batch_id": batch.batch_id, "sha256": item.ref.sha256, "dead_letter": letter.id},
    )


def _retry_or_give_up(
    task: StageTask, stage: Stage, batch: BatchState, exc: Exception, retries: int, ids: dict[str, str]
) -> None:
    if task.request.retries < retries:
        log.warning("stage failed, retrying", extra={**ids, "error": f"{type(exc).__name__}: {exc}"})
        raise task.retry(exc=exc, countdown=min(30, 2 * (task.request.retries + 1))) from exc
    log.error("stage failed for good", extra={**ids, "error": f"{type(exc).__name__}: {exc}"})
    batch.fail_remaining(stage, f"{type(exc).__name__}: {exc}")


def refuse_foreign_refs(batch: BatchState, stage: Stage, shared_dir: Path | None) -> None:
    """An item whose reference this job did not issue fails here: nothing of it is read or deleted."""
    for item in batch.items:
        why = None if item.error else refs.refusal(item.ref.blob, item.ref.sha256, batch.job_id, shared_dir)
        if why:
            log.warning(why, extra={"job_id": batch.job_id, "batch_id": batch.batch_id, "ref": item.ref.blob[:300]})
            item.fail(stage, why)


# Only the chain's last link keeps a result (what AsyncResult polling reads): a link's return value
# travels to the next link inside the message, so the first two need no result in Redis.
@app.task(bind=True, base=StageTask, name="app.tasks.classify", ignore_result=True)
def classify(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
    return run(self, "classify", payload).model_dump(mode="json", exclude_defaults=True)


@app.task(bind=True, base=StageTask, name="app.tasks.score", ignore_result=True)
def score(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
    return run(self, "score", payload).model_dump(mode="json", exclude_defaults=True)


@app.task(bind=True, base=StageTask, name="app.tasks.summarize")
def summarize(self: StageTask, payload: dict[str, Any]) -> list[dict[str, Any]] | dict[str, Any]:
    return finish(self.runtime, run(self, "summarize", payload), self.request.hostname, self.request.id)


@app.task(bind=True, base=StageTask, name="app.tasks.chat")
def chat(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
    """A micro-batch of chat requests from the HTTP service (app.chat)."""
    return serve_batch(
        self.runtime, payload, self.request.hostname or "worker", self.deliveries(), self.settings.max_attempts
    )
