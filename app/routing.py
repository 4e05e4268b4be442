"""Where batches go: the least-loaded live queue; work on a queue nobody serves is moved.

Strategy, in three parts:
1. The producer sends each batch's first link to the live queue with the least work waiting
   (live = served by a worker whose heartbeat is fresh), so a slow or busy worker gets less.
2. A batch's later links follow the queue its first link actually ran on (`follow_current_queue`),
   so the whole chain stays on one worker and its prefix cache.
3. `rebalance` moves messages waiting on a queue whose workers are gone to the least-loaded live
   queue; callers run it periodically (`producer submit --wait`, `Job.wait`, `producer workers`).
   A batch that was *running* on a vanished worker comes back to its queue when the Redis
   visibility timeout expires, and is then moved too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import redis

from app.heartbeat import live_queues

PRIORITY_SEP = "\x06\x16"  # kombu's separator between a queue name and its priority level
LEVELS = range(10)


def level_keys(queue: str) -> list[str]:
    return [queue if level == 0 else f"{queue}{PRIORITY_SEP}{level}" for level in LEVELS]


def pending(r: redis.Redis, queues: Sequence[str]) -> dict[str, int]:
    pipe = r.pipeline(transaction=False)
    for queue in queues:
        for key in level_keys(queue):
            pipe.llen(key)
    counts = pipe.execute()
    n = len(LEVELS)
    return {q: sum(counts[i * n : (i + 1) * n]) for i, q in enumerate(queues)}


def least_loaded(r: redis.Redis, queues: Sequence[str]) -> str:
    waiting = pending(r, queues)
    return min(queues, key=lambda q: waiting[q])  # ties: the first, in the caller's (rotating) order


def follow_current_queue(name, args, kwargs, options, task=None, **_):
    """Celery router: a link published from inside a task goes to the queue that task came from."""
    from celery import current_task

    info = getattr(getattr(current_task, "request", None), "delivery_info", None) or {}
    queue = info.get("routing_key")
    return {"queue": queue} if queue else None


def _retarget(raw: bytes, queue: str) -> bytes:
    message = json.loads(raw)
    info = message.setdefault("properties", {}).setdefault("delivery_info", {})
    info["routing_key"] = queue
    info["exchange"] = queue
    return json.dumps(message).encode()


def move_queue(r: redis.Redis, source: str, target: str) -> int:
    """Move every message waiting on `source` to `target`, keeping priority levels."""
    moved = 0
    for src_key, dst_key in zip(level_keys(source), level_keys(target)):
        while (raw := r.rpop(src_key)) is not None:
            r.rpush(dst_key, _retarget(raw, target))  # oldest first, next to be consumed
            moved += 1
    return moved


class Rebalancer:
    """Moves work off queues that have had no live worker for `grace_s` seconds."""

    def __init__(self, r: redis.Redis, grace_s: float = 10.0) -> None:
        self.r = r
        self.grace_s = grace_s
        self.orphaned_since: dict[str, float] = {}

    def run(self, queues: Sequence[str]) -> int:
        live = live_queues(self.r)
        if not live:
            return 0  # nobody to give the work to; it waits where it is
        now, moved = time.monotonic(), 0
        waiting = pending(self.r, [q for q in queues if q not in live])
        for queue, count in waiting.items():
            if not count:
                self.orphaned_since.pop(queue, None)
                continue
            since = self.orphaned_since.setdefault(queue, now)
            if now - since >= self.grace_s:
                moved += move_queue(self.r, queue, least_loaded(self.r, live))
        return moved
