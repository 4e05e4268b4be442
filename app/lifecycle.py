"""The worker process's life around its tasks: logs, heartbeat, the running batch, shutdown.

Connected to Celery's signals when the worker imports it (app.factory lists it in `include`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from celery import signals

from app import keys, logs
from app.celery import app, settings
from app.heartbeat import Heartbeat
from app.poison import forget_running
from app.pool import exit_now, on_exit, on_hand_back
from app.routing import move_queue, parking_queue
from app.runtime import process_runtime
from workers.engine import engine_model_id, engine_serves
from workers.orphans import stop_orphaned_engines

log = logging.getLogger(__name__)
ENGINE_CLOSE_S = 8.0  # on shutdown, how long the engine may take to release its processes


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _json_logs(logger, **_):
    if settings.log_json:
        logs.use_json(logger)


_heartbeat: Heartbeat | None = None


@signals.worker_ready.connect
def _start_heartbeat(sender=None, **_):
    global _heartbeat
    try:
        stopped = stop_orphaned_engines()
        if stopped:
            log.warning("stopped vLLM engine processes left by a dead worker", extra={"pids": stopped})
    except Exception:  # a clean-up must never keep the heartbeat (liveness) from starting
        log.warning("orphaned engine clean-up failed", exc_info=True)
    queues = [q.name for q in sender.app.amqp.queues.consume_from.values()] if sender else []
    rt = process_runtime(app)
    _heartbeat = Heartbeat(
        rt.store.r,
        sender.hostname,
        queues,
        model=engine_model_id(settings),
        engine_state=lambda: rt.engine_state,
        serves=engine_serves(settings),
        capacity=lambda: rt.capacity,
    ).start()
    rt.on_engine_state = _heartbeat.nudge_if_engine_changed
    _unpark(rt.store.r, engine_model_id(settings), queues)


def _unpark(r, model: str, queues: list[str]) -> None:
    """Batches parked for this worker's model (sent while no worker served it) come to its queue now,
    without waiting for a producer's rebalancer (a plain `submit` runs none)."""
    if not queues:
        return
    try:
        moved = move_queue(r, parking_queue(model), queues[0])
    except redis.RedisError:
        return  # Redis restarting: a rebalancer (`submit --wait`, `Job.wait`) moves them later
    if moved:
        log.info("parked batches of this worker's model moved to its queue", extra={"batches": moved})


@signals.worker_shutting_down.connect
def _stop_heartbeat(**_):
    if _heartbeat is not None:
        _heartbeat.stop()


_running: dict[str, Any] = {}  # the task this worker runs now: {"id", "retries"}


@signals.task_prerun.connect
def _enter_batch(task=None, args=(), **_):
    payload = args[0] if args and isinstance(args[0], dict) else {}
    fields = logs.set_batch(task.name if task else "", payload)
    if task is not None:
        _running.update(id=task.request.id, retries=task.request.retries)
    if _heartbeat is not None:
        _heartbeat.current = {
            "task": fields["stage"],
            "job_id": fields["job_id"],
            "batch_id": fields["batch_id"],
            "images": len(payload.get("items", [])),
            "since": time.time(),
        }


@signals.task_postrun.connect
def _leave_batch(task=None, state=None, **_):
    logs.clear_batch()
    _running.clear()
    if _heartbeat is not None:
        _heartbeat.current = {}
        _heartbeat.batches_done += state == "SUCCESS" and task is not None and task.name.endswith("summarize")


@on_hand_back
def _uncount_delivery() -> None:
    """A batch handed back on SIGTERM was not lost: its delivery must not count towards poison."""
    if not _running:
        return
    r = process_runtime(app).store.r
    r.decr(keys.attempts(_running["id"], _running["retries"]))
    forget_running(r, _running["id"])
    log.warning("batch handed back to its queue", extra={"task_id": _running["id"]})


@on_exit
def _release_engine() -> None:
    """Release the engine within a bounded time when the worker stops.

    An idle vLLM worker otherwise lingered in interpreter shutdown for a minute and more while
    vLLM's finalizers tore its engine process down. Whatever is still running after this is
    stopped with the worker's process group, or by the next worker's orphan sweep.
    """
    rt = process_runtime(app)
    if rt.has_engine():
        closer = threading.Thread(target=rt.reset_engine, name="vlmq-engine-close", daemon=True)
        closer.start()
        closer.join(ENGINE_CLOSE_S)


@signals.worker_shutdown.connect
def _exit_promptly(sender=None, **_):
    """Warm shutdown (plain SIGTERM): the same bounded release, then exit without lingering."""
    rt = process_runtime(app)
    if rt.has_engine() or _running:
        _release_engine()
        exit_now(getattr(sender, "exitcode", 0) or 0)
