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

Every part routes by model: a job's batches go only to queues whose live workers all serve the
job's model (`model_queues`). While none does, they wait on the model's parking queue, which no
worker consumes, and the rebalancer moves them once a worker of that model is live. Redis keeps
which model each queue's messages need (`keys.QUEUE_MODELS`: written by heartbeats and parking),
so work left on a queue is only ever moved to a queue of the same model.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence

import redis

from app import keys
from app.heartbeat import live_workers

PRIORITY_STEPS = list(range(10))  # the transport's priority levels (app.factory configures kombu with them)


def kombu_sep() -> str:
    from kombu.transport.redis import Channel

    return Channel.sep


def level_keys(queue: str) -> list[str]:
    """The Redis lists that hold `queue`'s messages, one per priority level (0 first).

    kombu names them (`Channel._q_for_pri`, not public): the queue's own name for level 0, else
    name + `Channel.sep` + level. Its public pieces are used here so that a kombu that changes
    the separator changes this too; this is the one place that knows the layout.
    """
    return [queue if level == 0 else f"{queue}{kombu_sep()}{level}" for level in PRIORITY_STEPS]


def pending(r: redis.Redis, queues: Sequence[str]) -> dict[str, int]:
    pipe = r.pipeline(transaction=False)
    for queue in queues:
        for key in level_keys(queue):
            pipe.llen(key)
    counts = pipe.execute()
    n = len(PRIORITY_STEPS)
    return {q: sum(counts[i * n : (i + 1) * n]) for i, q in enumerate(queues)}


def least_loaded(r: redis.Redis, queues: Sequence[str]) -> str:
    if len(queues) == 1:  # nothing to compare: no round trip
        return queues[0]
    waiting = pending(r, queues)
    return min(queues, key=lambda q: waiting[q])  # ties: the first, in the caller's (rotating) order


def model_queues(
    r: redis.Redis, model: str, workers: list[dict] | None = None, among: Sequence[str] | None = None
) -> list[str]:
    """Live GPU queues (of `among`, when given) whose live workers all serve `model`: a queue shared
    with a worker of another model is nobody's, since either worker could take the batch."""
    workers = live_workers(r) if workers is None else workers
    cpu = {q.decode() for q in r.smembers(keys.PREPARE_QUEUES)}
    models: dict[str, set[str]] = {}
    for w in workers:
        for q in w["queues"]:
            models.setdefault(q, set()).add(w.get("model") or "")
    return sorted(q for q, s in models.items() if s == {model} and q not in cpu and (among is None or q in among))


def queue_for_model(r: redis.Redis, model: str) -> str | None:
    """The least-loaded live queue served only by workers of `model` (the HTTP service's chat
    requests); None when there is none."""
    queues = model_queues(r, model)
    return least_loaded(r, queues) if queues else None


def parking_queue(model: str) -> str:
    """Where a job's batches wait while no live worker serves its model; no worker consumes it."""
    return f"{keys.PARKING_PREFIX}{hashlib.sha256(model.encode()).hexdigest()[:16]}"


def park(r: redis.Redis, model: str) -> str:
    """The model's parking queue, noted in Redis so that the rebalancer knows what its batches need."""
    queue = parking_queue(model)
    r.hset(keys.QUEUE_MODELS, queue, model)
    return queue


def route_for_model(r: redis.Redis, model: str, named: Sequence[str] = (), among: Sequence[str] | None = None) -> str:
    """The least-loaded live queue (of `among`, when given) serving `model`; while there is none, the
    first `named` queue no live worker serves yet (a worker started there takes the batch, and one of
    another model hands it back), else the model's parking queue. One snapshot of the live workers."""
    workers = live_workers(r)
    queues = model_queues(r, model, workers, among)
    if queues:
        return least_loaded(r, queues)
    live = {q for w in workers for q in w["queues"]}
    idle = [q for q in named if q not in live and not q.startswith(keys.PARKING_PREFIX)]
    return idle[0] if idle else park(r, model)


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


def _move_one(r: redis.Redis, src_key: str, dst_key: str, target: str) -> bool:
    """Move the oldest message of `src_key` to `dst_key` through a staging list; False if empty.

    LMOVE takes it from the source and puts it in the staging list in one atomic step; then one
    MULTI/EXEC transaction pushes the retargeted copy and removes the staged one. A crash between
    the two leaves it staged, and `recover_staged` finishes the move: nothing is lost, and since
    the transaction is all-or-nothing, nothing is moved twice.
    """
    staging = keys.moving(dst_key)
    raw = r.lmove(src_key, staging, "RIGHT", "LEFT")
    if raw is None:
        return False
    _deliver(r, staging, dst_key, target, raw)
    return True


def _deliver(r: redis.Redis, staging: str, dst_key: str, target: str, raw: bytes) -> None:
    pipe = r.pipeline(transaction=True)
    pipe.rpush(dst_key, _retarget(raw, target))  # the oldest, next to be consumed
    pipe.lrem(staging, 1, raw)
    pipe.execute()


def recover_staged(r: redis.Redis) -> int:
    """Finish moves that a crash interrupted (messages left in a staging list)."""
    recovered = 0
    for key in r.scan_iter(f"{keys.MOVING_PREFIX}*", count=100):
        staging = key.decode()
        dst_key = staging[len(keys.MOVING_PREFIX) :]
        target = dst_key.split(kombu_sep(), 1)[0]
        while (raw := r.lindex(staging, -1)) is not None:
            _deliver(r, staging, dst_key, target, raw)
            recovered += 1
    return recovered


def move_queue(r: redis.Redis, source: str, target: str) -> int:
    """Move every message waiting on `source` to `target`, keeping priority levels."""
    moved = 0
    for src_key, dst_key in zip(level_keys(source), level_keys(target)):
        while _move_one(r, src_key, dst_key, target):
            moved += 1
    return moved


class Rebalancer:
    """Moves work off queues that have had no live worker for `grace_s` seconds (parked batches at
    once), to a queue of the model the work needs (any live queue where Redis does not know it)."""

    def __init__(self, r: redis.Redis, grace_s: float = 10.0) -> None:
        self.r = r
        self.grace_s = grace_s
        self.orphaned_since: dict[str, float] = {}

    def run(self, queues: Sequence[str]) -> int:
        recover_staged(self.r)
        workers = live_workers(self.r)
        live = sorted({q for w in workers for q in w["queues"]})
        if not live:
            return 0  # nobody to give the work to; it waits where it is
        needs = {k.decode(): v.decode() for k, v in self.r.hgetall(keys.QUEUE_MODELS).items()}
        parked = [q for q in needs if q.startswith(keys.PARKING_PREFIX)]
        now, moved = time.monotonic(), 0
        waiting = pending(self.r, [q for q in dict.fromkeys([*queues, *parked]) if q not in live])
        for queue, count in waiting.items():
            if not count:
                self.orphaned_since.pop(queue, None)
                continue
            since = self.orphaned_since.setdefault(queue, now)
            model = needs.get(queue)
            targets = model_queues(self.r, model, workers) if model else live
            if targets and (queue in parked or now - since >= self.grace_s):
                moved += move_queue(self.r, queue, least_loaded(self.r, targets))
        return moved
