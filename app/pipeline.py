"""Builds the Celery chain of one batch: classify → score → summarize, all on one queue."""

from __future__ import annotations

from typing import get_args

from celery import Celery, chain

from app.schemas import PRIORITY, BatchState, Stage

TASKS = tuple((f"app.tasks.{stage}", stage) for stage in get_args(Stage))


def chain_task_ids(batch_id: str) -> list[str]:
    return [f"{batch_id}-{stage}" for _, stage in TASKS]


def batch_chain(celery_app: Celery, batch: BatchState, queue: str) -> chain:
    """One chain per batch, every link on the same GPU queue (the prefix cache holds the images).

    Only the first link names its queue; the later ones follow wherever it ran (app.routing).

    Task ids are derived from the batch id, so a link published twice (a redelivered step
    re-sending its successor) is recognised by `worker_deduplicate_successful_tasks`.
    """
    links = []
    # What Flower and the logs show instead of the payload: a line, not kilobytes of JSON.
    label = f"(batch {batch.batch_id}: {len(batch.items)} images)"
    for i, ((name, stage), task_id) in enumerate(zip(TASKS, chain_task_ids(batch.batch_id))):
        first = i == 0
        # The first link's result is never stored (ignore_result): saying so also keeps Celery's
        # send_task from SUBSCRIBEing the producer to its result channel, one channel per batch
        # that nothing would ever publish to or unsubscribe (Redis memory growing with the job).
        options = {"queue": queue, "ignore_result": True} if first else {}
        links.append(
            celery_app.signature(
                name,
                args=(batch.model_dump(mode="json", exclude_defaults=True),) if first else (),
                priority=PRIORITY[stage],
                task_id=task_id,
                argsrepr=label,
                kwargsrepr="{}",
                **options,
            )
        )
    return chain(*links)
