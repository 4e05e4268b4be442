"""A job as one Celery GroupResult of its batch chains (`GroupResult.restore(job_id)`)."""

from __future__ import annotations

from celery import Celery
from celery.result import AsyncResult, GroupResult
from vine import barrier

from app.store import JobStore

GROUP_MAX_BATCHES = 1000  # jobs up to 32,000 images at batch size 32 get a saved GroupResult


def save_group(celery: Celery, store: JobStore, job_id: str) -> GroupResult:
    """Save the job as a GroupResult of the chains' last tasks: `GroupResult.restore(job_id)`.

    Only up to GROUP_MAX_BATCHES: a saved GroupResult is one Redis value that grows with the job
    (2 MB of Redis for 6,250 batches). `Job.group()` builds the same GroupResult for any job."""
    results = [AsyncResult(ids[-1], app=celery) for _, ids in sorted(store.chains(job_id).items())]
    # An empty ready barrier: the default one calls each result's then(), which SUBSCRIBEs this
    # process to every batch's result channel (Redis memory per batch, for a group only saved).
    group = GroupResult(job_id, results, app=celery, ready_barrier=barrier())
    if len(results) <= GROUP_MAX_BATCHES:
        group.save()
    return group
