"""The programmatic API: submit a folder, get a Job handle, poll it, read its records.

from producers.api import submit
job = submit("./images")                  # settings from env / YAML, or pass Settings(...)
job.group().ready()                       # Celery GroupResult of the batch chains
job.wait()                                # until every image has its record (collecting them)
for record in job.records(): ...          # ImageRecord, one per submitted image, streamed
rerun(job.id, ["score", "summarize"], settings)   # a new job: new scores, the same classification
retry(job.id)                             # a new job over only the images that failed
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from celery import Celery
from celery.result import AsyncResult, GroupResult
from redis.exceptions import RedisError

from app import redis_full
from app.collect import collect, drop_in_flight_if_collected, free_results
from app.factory import create_app
from app.heartbeat import live_workers
from app.progress import JobProgress
from app.results import ResultsDataset
from app.routing import Rebalancer, parking_queue
from app.schemas import ImageRecord
from app.store import JobStore
from config.errors import JobStateError, PipelineError
from config.settings import Settings, load_settings
from producers.submit import Submitter


class Job:
    def __init__(
        self,
        job_id: str,
        settings: Settings | None = None,
        celery_app: Celery | None = None,
        store: JobStore | None = None,
    ) -> None:
        self.id = job_id
        self.settings = settings or load_settings()
        self.celery = celery_app or create_app(self.settings)
        self.store = store or JobStore.from_settings(self.settings)

    def group(self) -> GroupResult | None:
        """The job's GroupResult, for Celery-style polling: the saved one, or (a job of more than
        GROUP_MAX_BATCHES batches, or one still being submitted) one built from its batches."""
        saved = GroupResult.restore(self.id, app=self.celery)
        if saved is not None:
            return saved
        results = self.async_results()
        return GroupResult(self.id, results, app=self.celery) if results else None

    def async_results(self) -> list[AsyncResult]:
        """One AsyncResult per batch: the chain's last task, whose result is the batch's records
        while they wait in Redis (or where the dataset holds them), until a collector frees it."""
        return [AsyncResult(ids[-1], app=self.celery) for _, ids in sorted(self.store.chains(self.id).items())]

    def progress(self) -> JobProgress:
        return self.store.progress(self.id)

    def wait(
        self,
        timeout: float | None = None,
        poll_s: float = 0.5,
        on_progress: Callable[[JobProgress], None] | None = None,
    ) -> JobProgress:
        """Poll until every image has a record; rides out Redis restarts instead of failing."""
        deadline = None if timeout is None else time.monotonic() + timeout
        rebalancer, next_rebalance = Rebalancer(self.store.r), time.monotonic()
        while True:
            try:
                redis_full.check(self.store.r)  # say so while workers wait for room
                progress = self.progress()
                if time.monotonic() >= next_rebalance:  # move work off queues whose workers are gone
                    spec = self.store.load_spec(self.id)
                    rebalancer.run(spec.queues if spec else [])
                    next_rebalance = time.monotonic() + 5
            except RedisError:
                progress = None  # Redis restarting: keep polling until it answers again
            if progress is not None:
                if on_progress:
                    on_progress(progress)
                if progress.finished or progress.status in ("cancelled", "interrupted"):
                    self.collect()
                    return progress  # interrupted: nobody is submitting the rest; `producer resume`
                self.collect()  # as it goes: Redis holds only what finished since the last poll
            if deadline is not None and time.monotonic() > deadline:
                raise PipelineError(f"job {self.id} not finished after {timeout:g} s")
            time.sleep(poll_s)

    def dataset(self) -> ResultsDataset:
        spec = self.store.load_spec(self.id)
        return ResultsDataset(spec.results if spec is not None and spec.results else self.settings.results_dir)

    def collect(self, free: bool = True) -> int:
        """Move records waiting in Redis into the results dataset; once the job is over, also free
        its chains' stored results and its in-flight state. Returns how many records moved."""
        spec = self.store.load_spec(self.id)
        fingerprint = spec.cache_fingerprint if spec is not None else ""
        try:
            moved = collect(self.store, self.dataset(), self.id, fingerprint)
        except RedisError:
            return 0  # Redis restarting: the next poll collects
        if free:
            try:
                free_results(self.store, self.celery.backend.get_key_for_task, self.id)
            except RedisError:
                return moved
            if self.progress().finished:
                drop_in_flight_if_collected(self.store, self.id)
        return moved

    def records(self) -> Iterator[ImageRecord]:
        """Every record of the job, streamed from the results dataset in flat memory (records that
        still wait in Redis are collected first)."""
        self.collect(free=False)
        yield from self.dataset().iter_records(self.id, self.store.superseded(self.id))

    def batch_records(self, result: list[dict[str, Any]] | dict[str, Any]) -> list[ImageRecord]:
        """The records of one batch from its AsyncResult's value: the records themselves while they
        wait in Redis, or {"part": …} once its worker wrote them into the dataset."""
        if isinstance(result, dict):
            return [r for r in self.dataset().read_part(result["part"])]
        return [ImageRecord.model_validate(r) for r in result]

    def record_count(self) -> int:
        return self.dataset().count(self.id, self.store.superseded(self.id))

    def stage_counts(self) -> dict[str, dict[str, int]]:
        """Per stage: images done, skipped by a condition, failed there; and batches running now."""
        counts = {stage: {"done": 0, "skipped": 0, "failed": 0} for stage in ("classify", "score", "summarize")}
        for r in self.records():
            done = {"classify": r.classification is not None, "score": bool(r.scores), "summarize": bool(r.summaries)}
            for stage, row in counts.items():
                row["done"] += done[stage]
                row["skipped"] += stage in r.skipped
                row["failed"] += r.error_stage == stage
        running = [w for w in live_workers(self.store.r) if (w.get("current") or {}).get("job_id") == self.id]
        counts["running"] = {w["hostname"]: w["current"]["task"] for w in running}
        return counts

    def refuse_if_over(self) -> None:
        """A finished (or already cancelled) job has nothing left to cancel: say so, change nothing."""
        progress = self.progress()
        if progress.finished or progress.status in ("done", "cancelled"):
            raise JobStateError(
                f"job {self.id} is {'done' if progress.finished else progress.status}: nothing left to cancel"
            )

    def cancel(self) -> int:
        """Mark cancelled, revoke unfinished chains, remove their queued messages; returns how many.

        Refused (nothing written) for an unknown job; `refuse_if_over` is the check for a finished one."""
        self.store.require_job(self.id)
        self.store.set_fields(self.id, status="cancelled")
        spec = self.store.load_spec(self.id)
        pending = [
            tid
            for batch, ids in self.store.chains(self.id).items()
            if not self.store.is_batch_done(self.id, batch)
            for tid in ids
        ]
        if pending:
            self.celery.control.revoke(pending)
        queues = [*spec.queues, parking_queue(spec.model)] if spec else []  # parked batches too
        return self.store.purge_queued(queues, self.id)


def submit(
    folder: str | Path | list[str | Path],
    settings: Settings | None = None,
    recursive: bool = True,
    queues: list[str] | None = None,
    job_id: str | None = None,
) -> Job:
    """Submit a folder (or several) as a job. With the id of an interrupted job: finish that job."""
    settings = settings or load_settings()
    submitter = Submitter(settings)
    roots = folder if isinstance(folder, list) else [folder]
    job_id = submitter.submit(roots, recursive=recursive, queues=queues, job_id=job_id)
    return Job(job_id, settings, submitter.celery, submitter.store)


def resume(job_id: str, settings: Settings | None = None, queues: list[str] | None = None) -> Job:
    """Finish a job whose producer was killed mid-submission; nothing already shipped goes twice."""
    settings = settings or load_settings()
    submitter = Submitter(settings)
    submitter.resume(job_id, queues)
    return Job(job_id, settings, submitter.celery, submitter.store)


def rerun(job_id: str, stages: list[str], settings: Settings | None = None, queues: list[str] | None = None) -> Job:
    """A new job over JOB's images that runs only `stages` with these settings' prompts and takes
    the other stages' outputs from JOB's records (`producer rerun`)."""
    from producers.rerun import resubmit

    submitter = Submitter((settings or load_settings()).with_overrides(stages=stages))
    new_id = resubmit(submitter, job_id, False, queues)
    return Job(new_id, submitter.settings, submitter.celery, submitter.store)


def retry(job_id: str, settings: Settings | None = None, queues: list[str] | None = None) -> Job:
    """A new job over only JOB's failed images, with JOB's own spec (`producer retry`)."""
    from producers.rerun import resubmit

    submitter = Submitter(settings or load_settings())
    new_id = resubmit(submitter, job_id, True, queues)
    return Job(new_id, submitter.settings, submitter.celery, submitter.store)
