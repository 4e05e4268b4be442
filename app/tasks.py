"""Celery tasks: thin adapters from messages to the plain stage functions in app.stages."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Task
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from app import keys, refs
from app.celery import app, settings
from app.chat import serve_batch
from app.collect import drop_in_flight_if_collected
from app.pipeline import chain_task_ids
from app.poison import isolate
from app.runtime import get_runtime
from app.schemas import BatchState, DeadLetter, ImageRecord, ItemState, JobSpec, Stage
from app.shipping import alias_sources
from app.stages import StageContext, run_stage
from app.store import JobStore
from config.errors import BrokerUnavailableError, PermanentError
from workers.engine import engine_model_id

log = logging.getLogger(__name__)
ATTEMPTS_TTL_S = 7 * 24 * 3600


class StageTask(Task):
    """A chain step; counts deliveries so that a batch that kills its worker is isolated."""

    typing = False

    def deliveries(self) -> int:
        key = keys.attempts(self.request.id, self.request.retries)
        pipe = get_runtime(settings).store.r.pipeline()
        pipe.incr(key)
        pipe.expire(key, ATTEMPTS_TTL_S)
        return int(pipe.execute()[0])


BROKER_ERRORS = (RedisError, OperationalError, BrokerUnavailableError)
BROKER_RETRIES = 10  # retries of a stage that Redis failed; the engine is kept meanwhile


def run(task: StageTask, stage: Stage, payload: dict[str, Any]) -> BatchState:
    rt = get_runtime(settings)
    batch = BatchState.model_validate(payload)
    if rt.store.is_cancelled(batch.job_id):
        batch.fail_remaining(stage, "job cancelled")
        return batch
    attempt = task.deliveries()
    refuse_foreign_refs(batch, stage)
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
        _retry_or_give_up(task, stage, batch, exc, settings.stage_retries, ids)
        return batch
    after = rt.engine_stats()
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    rt.store.add_worker_stats(task.request.hostname or "worker", stage, delta)
    return batch


def _run_delivery(task: StageTask, stage: Stage, batch: BatchState, attempt: int) -> BatchState:
    """First delivery: the whole batch in one engine call. A redelivery (its worker was lost):
    one image at a time, so that only an image that kills its worker is set aside."""
    rt = get_runtime(settings)
    ctx = StageContext(
        engine=lambda: rt.engine,
        spec=rt.spec(batch.job_id),
        cache=rt.store,
        images=lambda items: rt.images(items, batch.job_id),
    )
    if attempt == 1:
        return run_stage(stage, batch, ctx)
    set_aside = lambda item, reason: _dead_letter(batch, stage, item, reason)  # noqa: E731
    if attempt > settings.max_attempts * (len(batch.items) + 1):  # lost with no image running: give up
        reason = f"dead-lettered at {stage}: delivered {attempt} times, worker lost each time"
        for item in batch.items:
            if not item.error:
                set_aside(item, reason)
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
        set_aside,
    )


def _dead_letter(batch: BatchState, stage: Stage, item: ItemState, reason: str) -> None:
    letter = DeadLetter(
        id=uuid.uuid4().hex[:12], job_id=batch.job_id, batch_id=batch.batch_id, stage=stage, ref=item.ref, reason=reason
    )
    get_runtime(settings).store.dead_letter(letter)
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


def refuse_foreign_refs(batch: BatchState, stage: Stage) -> None:
    """An item whose reference this job did not issue fails here: nothing of it is read or deleted."""
    for item in batch.items:
        why = None if item.error else refs.refusal(item.ref.blob, item.ref.sha256, batch.job_id, settings.shared_dir)
        if why:
            log.warning(why, extra={"job_id": batch.job_id, "batch_id": batch.batch_id, "ref": item.ref.blob[:300]})
            item.fail(stage, why)


def _own_refs(batch: BatchState) -> list[ItemState]:
    """The items whose blob or shared file this job created: the only ones finish may delete.

    A dead-lettered image keeps its prepared bytes (until their TTL) so that it can be requeued."""
    return [
        i
        for i in batch.items
        if not i.dead_letter and refs.refusal(i.ref.blob, i.ref.sha256, batch.job_id, settings.shared_dir) is None
    ]


def finish(
    batch: BatchState, worker: str | None, result_id: str | None = None
) -> list[dict[str, Any]] | dict[str, Any]:
    """One record per submitted name, into the results dataset (or Redis's staging window when this
    worker cannot reach it); then counters, the cache index and blob deletion.

    Returns what AsyncResult polling sees: the records while they wait in Redis, else where they are."""
    rt = get_runtime(settings)
    spec = rt.spec(batch.job_id)
    model = engine_model_id(rt.settings)  # the worker's own model, which may differ from the job's wish
    records = []
    for item in batch.items:
        base = ImageRecord.from_item(item, item.ref.names[0], batch.job_id, batch.batch_id, model, worker)
        records += [base.model_copy(update={"image": n, "source": item.ref.sources.get(n)}) for n in item.ref.names]
    written = _write_part(spec, batch, records)
    own = _own_refs(batch)
    blob_keys = [i.ref.blob for i in own if JobStore.is_blob_key(i.ref.blob)]
    rt.store.finish_batch(
        batch.job_id,
        batch.batch_id,
        records,
        blob_keys,
        spec.cache_fingerprint,
        written,
        result_id,
        [
            keys.attempts(t, n)
            for t in chain_task_ids(batch.batch_id)
            for n in range(max(settings.stage_retries, BROKER_RETRIES) + 1)
        ],
    )
    rt.forget_images([i.ref.blob for i in batch.items])
    for item in own:  # prepared files on a shared folder: done with them too
        if not JobStore.is_blob_key(item.ref.blob):
            refs.remove_shared(item.ref.blob, item.ref.sha256, batch.job_id, settings.shared_dir)
    aliased = _alias_records(batch, records, rt.store)
    if aliased:
        rt.store.write_records(aliased)
    if rt.store.mark_finished_if_complete(batch.job_id):
        drop_in_flight_if_collected(rt.store, batch.job_id)
    failed = sum(r.error is not None for r in records)
    log.info(
        "batch done",
        extra={
            "job_id": batch.job_id,
            "batch_id": batch.batch_id,
            "images": len(records),
            "failed": failed,
            "written": bool(written),
        },
    )
    if written is None:
        return [r.model_dump(mode="json") for r in records + aliased]
    return {
        "job_id": batch.job_id,
        "batch_id": batch.batch_id,
        "part": rt.dataset(spec.results).part_path(batch.job_id, written),
        "images": len(records),
        "failed": failed,
        "aliases": len(aliased),
    }


def _write_part(spec: JobSpec, batch: BatchState, records: list[ImageRecord]) -> str | None:
    """The part written (named by the batch id: a redone batch overwrites it), or None."""
    if not spec.worker_writes_results():
        return None
    try:
        get_runtime(settings).dataset(spec.results).write_part(batch.job_id, batch.batch_id, records)
    except OSError as exc:  # unreachable from here: a collector will write them
        log.warning(
            "results location not writable here: the batch's records wait in Redis for a collector",
            extra={"job_id": batch.job_id, "batch_id": batch.batch_id, "error": str(exc)},
        )
        return None
    return batch.batch_id


def _alias_records(batch: BatchState, records: list[ImageRecord], store: JobStore) -> list[ImageRecord]:
    by_sha = {r.sha256: r for r in records}
    aliases = store.aliases(batch.job_id, [i.ref.sha256 for i in batch.items])
    sources = alias_sources(store, batch.job_id, [n for names in aliases.values() for n in names])
    return [
        by_sha[sha].model_copy(update={"image": name, "source": sources.get(name)})
        for sha, names in aliases.items()
        for name in names
    ]


# Only the chain's last link keeps a result (what AsyncResult polling reads): a link's return value
# travels to the next link inside the message, so the first two need no result in Redis.
@app.task(bind=True, base=StageTask, name="app.tasks.classify", ignore_result=True)
def classify(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
    return run(self, "classify", payload).model_dump(mode="json")


@app.task(bind=True, base=StageTask, name="app.tasks.score", ignore_result=True)
def score(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
    return run(self, "score", payload).model_dump(mode="json")


@app.task(bind=True, base=StageTask, name="app.tasks.summarize")
def summarize(self: StageTask, payload: dict[str, Any]) -> list[dict[str, Any]] | dict[str, Any]:
    return finish(run(self, "summary", payload), self.request.hostname, self.request.id)


@app.task(bind=True, base=StageTask, name="app.tasks.chat")
def chat(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
    """A micro-batch of chat requests from the HTTP service (app.chat)."""
    return serve_batch(
        get_runtime(settings), payload, self.request.hostname or "worker", self.deliveries(), settings.max_attempts
    )
