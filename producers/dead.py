"""Dead letters: images set aside because their worker was lost each time they ran.

`producer dead` lists them; `producer dead --requeue ID` sends one back through the whole chain,
as a batch of its own, on the least-loaded live queue (or the one given). Its prepared bytes were
kept for this (until their TTL); readers show the new batch's record instead of the error.
"""

from __future__ import annotations

import uuid

from celery import Celery

from app.pipeline import batch_chain, chain_task_ids
from app.routing import route_for_model
from app.schemas import BatchState, DeadLetter, ItemState
from app.store import JobStore
from config.errors import PipelineError


def requeue(store: JobStore, celery_app: Celery, letter_id: str, queue: str | None = None) -> str:
    """Publish the dead letter's image as a new one-image batch; returns the new batch id."""
    letter = store.take_dead_letter(letter_id)
    if letter is None:
        raise PipelineError(f"no dead letter {letter_id!r} (see `producer dead`)")
    spec = store.load_spec(letter.job_id)
    if spec is None:
        store.dead_letter(letter)  # leave it as it was
        raise PipelineError(f"dead letter {letter_id}: its job {letter.job_id} no longer exists")
    target = queue or route_for_model(store.r, spec.model, spec.queues)  # like a shipped batch: by the job's model
    batch_id = f"{letter.batch_id}-r{uuid.uuid4().hex[:6]}"
    batch = BatchState(job_id=letter.job_id, batch_id=batch_id, items=[ItemState(ref=letter.ref)])
    try:
        batch_chain(celery_app, batch, target).apply_async()
    except Exception:
        store.dead_letter(letter)  # not sent: it stays listed
        raise
    store.add_chain(letter.job_id, batch_id, chain_task_ids(batch_id))
    store.supersede(letter.job_id, letter.ref.names, batch_id, "failed")  # its error record is replaced
    if target not in spec.queues:  # so that Job.wait rebalances it if this queue's workers go
        spec.queues.append(target)
        store.set_fields(letter.job_id, spec=spec.model_dump_json())
    return batch_id


def describe(letter: DeadLetter) -> list[str]:
    return [letter.id, letter.job_id, letter.batch_id, letter.stage, ", ".join(letter.ref.names), letter.reason]
