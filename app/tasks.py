"""Celery tasks: thin adapters from messages to the plain stage functions in app.stages."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from celery import Task, signals

from app import logs
from app.heartbeat import Heartbeat
from app.celery import app, settings
from app.runtime import get_runtime
from app.schemas import BatchState, ImageRecord, Stage
from app.stages import StageContext, run_stage
from app.store import JobStore
from workers.orphans import stop_orphaned_engines
from workers.engine import engine_model_id

log = logging.getLogger(__name__)
ATTEMPTS_TTL_S = 7 * 24 * 3600


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _json_logs(logger, **_):
    if settings.log_json:
        logs.use_json(logger)


_heartbeat: Heartbeat | None = None


@signals.worker_ready.connect
def _start_heartbeat(sender=None, **_):
    global _heartbeat
    stopped = stop_orphaned_engines()
    if stopped:
        log.warning("stopped vLLM engine processes left by a dead worker", extra={"pids": stopped})
    queues = [q.name for q in sender.app.amqp.queues.consume_from.values()] if sender else []
    _heartbeat = Heartbeat(get_runtime(settings).store.r, sender.hostname, queues).start()


@signals.worker_shutting_down.connect
def _stop_heartbeat(**_):
    if _heartbeat is not None:
        _heartbeat.stop()


@signals.task_prerun.connect
def _enter_batch(task=None, args=(), **_):
    payload = args[0] if args and isinstance(args[0], dict) else {}
    fields = logs.set_batch(task.name if task else "", payload)
    if _heartbeat is not None:
        _heartbeat.current = {"task": fields["stage"], "job_id": fields["job_id"], "batch_id": fields["batch_id"],
                              "images": len(payload.get("items", [])), "since": time.time()}


@signals.task_postrun.connect
def _leave_batch(task=None, **_):
    logs.clear_batch()
    if _heartbeat is not None:
        _heartbeat.current = {}
        _heartbeat.batches_done += task is not None and task.name.endswith("summarize")


class StageTask(Task):
    """A chain step; counts deliveries so a batch that kills its worker is dead-lettered."""

    typing = False

    def deliveries(self) -> int:
        store = get_runtime(settings).store
        key = f"vlmq:attempts:{self.request.id}:{self.request.retries}"  # a retry is not a redelivery
        pipe = store.r.pipeline()
        pipe.incr(key)
        pipe.expire(key, ATTEMPTS_TTL_S)
        return int(pipe.execute()[0])


def run(task: StageTask, stage: Stage, payload: dict[str, Any]) -> BatchState:
    rt = get_runtime(settings)
    batch = BatchState.model_validate(payload)
    if rt.store.is_cancelled(batch.job_id):
        batch.fail_remaining(stage, "job cancelled")
        return batch
    attempt = task.deliveries()
    if attempt > settings.max_attempts:
        # Redelivered after killing its worker max_attempts times: stop the loop here.
        reason = f"batch dead-lettered at {stage}: delivered {attempt} times, worker lost each time"
        log.error(reason, extra={"job_id": batch.job_id, "batch_id": batch.batch_id})
        rt.store.dead_letter(batch.job_id, batch.batch_id, reason)
        batch.fail_remaining(stage, reason)
        return batch
    ctx = StageContext(engine=lambda: rt.engine, spec=rt.spec(batch.job_id), images=rt.images, cache=rt.store)
    log.info("stage start", extra={"job_id": batch.job_id, "batch_id": batch.batch_id, "stage": stage,
                                   "images": len(batch.items), "attempt": attempt})
    before = rt.engine_stats()
    try:
        batch = run_stage(stage, batch, ctx)
    except Exception as exc:  # engine would not start or died: rebuild and retry, then give up per image
        rt.reset_engine()
        if task.request.retries < settings.stage_retries:
            log.warning("stage failed, retrying", extra={"job_id": batch.job_id, "batch_id": batch.batch_id,
                                                         "stage": stage, "error": str(exc)})
            raise task.retry(exc=exc, countdown=2 * (task.request.retries + 1)) from exc
        log.error("stage failed for good", extra={"job_id": batch.job_id, "batch_id": batch.batch_id,
                                                  "stage": stage, "error": str(exc)})
        batch.fail_remaining(stage, f"{type(exc).__name__}: {exc}")
        return batch
    after = rt.engine_stats()
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    rt.store.add_worker_stats(task.request.hostname or "worker", stage, delta)
    return batch


def finish(batch: BatchState, worker: str | None) -> list[dict[str, Any]]:
    """Write one record per submitted name, cache good records, delete the batch's blobs."""
    rt = get_runtime(settings)
    spec = rt.spec(batch.job_id)
    model = engine_model_id(rt.settings)  # the worker's own model, which may differ from the job's wish
    records, record_cache = [], {}
    for item in batch.items:
        base = ImageRecord.from_item(item, item.ref.names[0], batch.job_id, batch.batch_id, model, worker)
        records += [base.model_copy(update={"image": n}) for n in item.ref.names]
        if not item.error:
            record_cache[rt.store.record_cache_key(spec.fingerprint, item.ref.sha256)] = base.model_dump_json()
    blob_keys = [i.ref.blob for i in batch.items if JobStore.is_blob_key(i.ref.blob)]
    rt.store.finish_batch(batch.job_id, batch.batch_id, records, blob_keys, record_cache)
    rt.forget_images([i.ref.blob for i in batch.items])
    for item in batch.items:  # prepared files on a shared folder: done with them too
        if not JobStore.is_blob_key(item.ref.blob):
            Path(item.ref.blob).unlink(missing_ok=True)
    aliased = _alias_records(batch, records, rt.store)
    if aliased:
        rt.store.write_records(aliased)
    rt.store.mark_finished_if_complete(batch.job_id)
    log.info("batch done", extra={"job_id": batch.job_id, "batch_id": batch.batch_id,
                                  "images": len(records), "failed": sum(r.error is not None for r in records)})
    return [r.model_dump(mode="json") for r in records + aliased]


def _alias_records(batch: BatchState, records: list[ImageRecord], store: JobStore) -> list[ImageRecord]:
    by_sha = {r.sha256: r for r in records}
    aliases = store.aliases(batch.job_id, [i.ref.sha256 for i in batch.items])
    return [by_sha[sha].model_copy(update={"image": name}) for sha, names in aliases.items() for name in names]


@app.task(bind=True, base=StageTask, name="app.tasks.classify")
def classify(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
    return run(self, "classify", payload).model_dump(mode="json")


@app.task(bind=True, base=StageTask, name="app.tasks.score")
def score(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
    return run(self, "score", payload).model_dump(mode="json")


@app.task(bind=True, base=StageTask, name="app.tasks.summarize")
def summarize(self: StageTask, payload: dict[str, Any]) -> list[dict[str, Any]]:
    return finish(run(self, "summary", payload), self.request.hostname)
