"""Poison isolation: find the one image that kills its worker, and set only it aside.

A batch whose worker was lost (SIGKILL, segfault, the OOM killer) comes back from Redis. Run
whole again, one poison image would take the whole batch down every time. So a redelivered
batch runs one image at a time, and before each image its sha256 is written to Redis: when the
worker dies, the next delivery reads which image was running. An image that was running alone
when its worker was lost `threshold` times is dead-lettered; every other image is processed.
A stray kill (a node lost, an operator) blames an image only once: it takes `threshold`
losses on that same image to condemn it.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from app import keys
from app.schemas import BatchState, ItemState

TTL_S = 7 * 24 * 3600


def isolate(
    r: redis.Redis,
    task_id: str,
    stage: str,
    batch: BatchState,
    threshold: int,
    run_one: Callable[[BatchState], BatchState],
    set_aside: Callable[[ItemState, str], None],
) -> BatchState:
    running, losses_key = keys.running_alone(task_id), keys.losses(task_id)
    culprit = r.get(running)
    if culprit is not None:  # the previous delivery died while this image ran alone
        pipe = r.pipeline()
        pipe.hincrby(losses_key, culprit, 1)
        pipe.expire(losses_key, TTL_S)
        pipe.execute()
    losses = {k.decode(): int(v) for k, v in r.hgetall(losses_key).items()}
    try:
        for item in batch.items:
            if item.error:
                continue
            lost = losses.get(item.ref.sha256, 0)
            if lost >= threshold:
                set_aside(
                    item,
                    f"dead-lettered at {stage}: its worker was lost {lost} times "
                    f"while this image was being processed alone",
                )
                continue
            r.set(running, item.ref.sha256, ex=TTL_S)
            run_one(BatchState(job_id=batch.job_id, batch_id=batch.batch_id, items=[item]))  # updates item
    finally:  # an exception is not a lost worker: blame nobody for it
        r.delete(running)
    return batch


def forget_running(r: redis.Redis, task_id: str) -> None:
    """The batch was handed back on purpose (SIGTERM): the running image is not to blame."""
    r.delete(keys.running_alone(task_id))
