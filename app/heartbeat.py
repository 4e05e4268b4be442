"""Worker heartbeats in Redis: liveness and what each worker is doing right now.

A solo-pool worker cannot answer Celery's broadcast pings while a batch runs (its event loop is
busy), so liveness comes from a thread writing a key with a short TTL every few seconds. The
value says which queue the worker serves and which batch and stage it is on: the producer uses
it to discover live queues and `producer fleet` shows it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from app import keys

INTERVAL_S = 3.0
TTL_S = 12


class Heartbeat:
    def __init__(
        self,
        client: redis.Redis,
        hostname: str,
        queues: list[str],
        model: str = "",
        engine_state: Callable[[], str] | None = None,
        serves: dict[str, Any] | None = None,
        capacity: Callable[[], int | None] | None = None,
    ) -> None:
        self.r = client
        self.hostname = hostname
        self.queues = queues
        self.model = model  # the model id it answers to (the HTTP service routes chat requests by it)
        self.serves = serves or {}  # what else it says of its engine: family, tensor-parallel size
        self.engine_state = engine_state
        self.capacity = capacity  # images its engine holds at once, once loaded (batch size "auto")
        self.current: dict[str, Any] = {}
        self.batches_done = 0
        self.started = time.time()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._beaten_engine_state = ""
        self._thread = threading.Thread(target=self._run, name="vlmq-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        try:
            self.r.delete(self.key)
        except redis.RedisError:
            pass

    @property
    def key(self) -> str:
        return keys.alive(self.hostname)

    def nudge_if_engine_changed(self) -> None:
        """Beat now (on the heartbeat thread) when the engine state moved since the last beat.

        /health and `fleet` must not show "not loaded" for up to INTERVAL_S after a batch ran; a
        beat per batch would cost Redis writes on every batch, so only a change wakes the thread.
        """
        if self.engine_state and self.engine_state() != self._beaten_engine_state:
            self._wake.set()

    def beat(self) -> None:
        engine = self.engine_state() if self.engine_state else "unknown"
        self._beaten_engine_state = engine
        value = {
            "hostname": self.hostname,
            "queues": self.queues,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "current": self.current,
            "batches_done": self.batches_done,
            "started": self.started,
            "at": time.time(),
            "model": self.model,
            "engine": engine,
            "capacity": self.capacity() if self.capacity else None,
            **self.serves,
        }
        pipe = self.r.pipeline(transaction=False)
        pipe.set(self.key, json.dumps(value), ex=TTL_S)
        if self.model:  # what a message left on these queues needs, should this worker go (app.routing)
            pipe.hset(keys.QUEUE_MODELS, mapping={q: self.model for q in self.queues})
        pipe.execute()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except redis.RedisError:
                pass  # Redis restarting: the next beat will do
            self._wake.wait(INTERVAL_S)
            self._wake.clear()


def live_workers(client: redis.Redis) -> list[dict[str, Any]]:
    found = list(client.scan_iter(f"{keys.ALIVE_PREFIX}*", count=1000))
    return [json.loads(v) for v in client.mget(found) if v] if found else []


def live_queues(client: redis.Redis) -> list[str]:
    return sorted({q for w in live_workers(client) for q in w["queues"]})


def live_capacities(client: redis.Redis, model: str) -> list[int]:
    """The capacities live workers of `model` advertise (those with an engine loaded that says one)."""
    return [int(w["capacity"]) for w in live_models(client).get(model, []) if w.get("capacity")]


def live_models(client: redis.Redis) -> dict[str, list[dict[str, Any]]]:
    """Live workers by the model they serve (workers older than the model field are left out)."""
    models: dict[str, list[dict[str, Any]]] = {}
    for w in live_workers(client):
        if w.get("model"):
            models.setdefault(w["model"], []).append(w)
    return models
