"""Builds the Celery chain of one batch: classify → score → summarize, all on one queue."""

from __future__ import annotations

from celery import Celery, chain

from app.schemas import PRIORITY, BatchState

TASKS = (("app.tasks.classify", "classify"), ("app.tasks.score", "score"), ("app.tasks.summarize", "summary"))


def chain_task_ids(batch_id: str) -> list[str]:
    return [f"{batch_id}-{stage}" for _, stage in TASKS]


def batch_chain(celery_app: Celery, batch: BatchState, queue: str) -> chain:
    """One chain per batch, every link on the same GPU queue (the prefix cache holds the images).

    Task ids are derived from the batch id, so a link published twice (a redelivered step
    re-sending its successor) is recognised by `worker_deduplicate_successful_tasks`.
    """
    links = []
    for i, ((name, stage), task_id) in enumerate(zip(TASKS, chain_task_ids(batch.batch_id))):
        args = (batch.model_dump(mode="json"),) if i == 0 else ()
        links.append(celery_app.signature(name, args=args, queue=queue, priority=PRIORITY[stage],
                                          task_id=task_id))
    return chain(*links)
