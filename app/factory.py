"""Builds a configured Celery application from settings (used by workers, producer and tests)."""

from __future__ import annotations

import atexit
from typing import Any

from celery import Celery

from app import redis_full
from app.routing import PRIORITY_STEPS, follow_current_queue
from app.schemas import PRIORITY
from config.settings import Settings

WORKER_POOL = "app.pool:HandBackPool"


def _transport_options(settings: Settings) -> dict[str, Any]:
    return {
        "visibility_timeout": settings.redis.visibility_timeout_s,
        "priority_steps": PRIORITY_STEPS,
        "queue_order_strategy": "priority",
        # Sweep for unacked messages past the visibility timeout (a lost worker's batch) every few
        # seconds rather than kombu's default of ~100 s; one range query on a sorted set each time.
        "unacked_restore_interval": max(1, min(10, settings.redis.visibility_timeout_s // 6)),
        "unacked_restore_throttle": 1,
        # A worker killed while it holds the restore lock would block every restore for the lock's
        # life (kombu's default: 300 s); keep it short, a sweep takes milliseconds.
        "unacked_mutex_expire": 15,
        # Bodies are JSON (text): kombu's default base64 around them costs a third more bytes and
        # an encode and decode per message. Each message names its own encoding, so workers and
        # producers of either setting read each other's.
        "body_encoding": "utf-8",
    }


def create_app(settings: Settings) -> Celery:
    redis_full.install()  # a full Redis pauses this process's Redis calls instead of failing them
    celery_app = Celery(
        "vlmq",
        broker=settings.redis.url,
        backend=settings.redis.backend_url,
        # app.lifecycle connects the worker's signal handlers (heartbeat, hand-back, engine release)
        include=["app.tasks", "app.prepare_task", "app.lifecycle"],
    )
    transport = _transport_options(settings)
    celery_app.conf.update(
        # JSON only: a pickle message is refused, never deserialized.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # Long GPU tasks: ack after the work, redeliver if the worker dies, take one at a time.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": settings.redis.visibility_timeout_s},
        broker_use_ssl=settings.redis.tls(),
        redis_backend_use_ssl=settings.redis.tls(settings.redis.backend_url),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        result_backend_always_retry=True,
        result_backend_max_retries=1_000_000,
        result_expires=settings.redis.result_expires_s,
        # A result holds the return value only: with result_extended it would also keep the task's
        # arguments, a whole batch (about 700 bytes an image) until the result is freed.
        result_extended=False,
        worker_deduplicate_successful_tasks=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # With REMAP_SIGTERM=SIGQUIT (producers.local.WORKER_ENV) SIGTERM is a cold shutdown: a
        # running batch gets soft_shutdown_s (default 0), then goes back to Redis (app.pool).
        worker_soft_shutdown_timeout=settings.soft_shutdown_s,
        worker_enable_soft_shutdown_on_idle=False,
        # vLLM starts its engine in a child process; prefork children are daemonic and cannot.
        # One thread: the main thread answers pings and signals during a batch (app.pool).
        worker_pool=WORKER_POOL,
        worker_concurrency=1,
        # Task events off, Celery's own default: they were a third of a worker's Redis round trips
        # per batch, for monitors only. Flower turns them on in every worker while it runs (its
        # --enable_events, on by default, every 5 s); `celery worker -E` turns them on for good.
        worker_send_task_events=False,
        task_send_sent_event=False,
        # No STARTED state in the result backend: nothing reads it (Flower sees task-started events),
        # and it cost the last link a result write per batch.
        task_track_started=False,
        task_default_queue=settings.queues[0],
        task_default_priority=PRIORITY["classify"],
        worker_hijack_root_logger=False,
        task_routes=(follow_current_queue,),
    )
    celery_app.conf.vlmq_settings = settings
    atexit.register(_forget_result_subscriptions, celery_app)
    return celery_app


def _forget_result_subscriptions(celery_app: Celery) -> None:
    """At interpreter exit, drop result-channel subscriptions instead of unsubscribing over the network.

    Every AsyncResult that was waited on unsubscribes from its channel in `__del__`, at exit too; when
    Redis is already gone (a test's server, a stopped embedded one) each unsubscribe retries for tens
    of seconds and ends in a traceback. At exit the connection is about to close anyway.
    """
    consumer = getattr(celery_app.backend, "result_consumer", None)
    if consumer is not None and hasattr(consumer, "subscribed_to"):
        consumer.subscribed_to.clear()
