"""Per-worker engine counters (batches, prefix-cache queries and hits) for the status page and /metrics."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from app import keys


class WorkerStats:
    """Mixed into app.store.JobStore: `self.r` comes from there."""

    r: Any

    def add_worker_stats(self, worker: str, stage: str, delta: Mapping[str, float], pipe: Any = None) -> None:
        """Per-stage engine counters per worker (e.g. prefix-cache queries and hits); queued on
        `pipe` when one is given (a batch's links are counted in its finishing transaction)."""
        own = pipe is None
        pipe = self.r.pipeline(transaction=False) if own else pipe
        key = keys.worker_stats(worker)
        pipe.hincrbyfloat(key, f"{stage}.batches", 1)
        for name, value in delta.items():
            pipe.hincrbyfloat(key, f"{stage}.{name}", value)
        pipe.hset(key, "last_seen", time.time())
        if own:
            pipe.execute()

    def forget_worker(self, worker: str) -> None:
        """Drop the counters of a worker that will not come back (a one-off local worker)."""
        self.r.delete(keys.worker_stats(worker), keys.alive(worker))

    def worker_stats(self, worker: str) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.r.hgetall(keys.worker_stats(worker)).items()}
