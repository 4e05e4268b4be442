"""Everything the system keeps in Redis besides Celery's own keys, as one object with one client.

Each concept is its own module, mixed in here: a job's entry (app.job_meta), duplicates
(app.duplicates), image blobs (app.blobs), the records' staging window and cache index
(app.record_window), batch marks (app.batch_marks), progress (app.progress), worker counters
(app.worker_stats) and dead letters (app.dead_letters); key names are app.keys'. What is here is
the batch's completion, which touches several of them in one transaction. Writes are idempotent:
a batch redone after a worker kill overwrites and never double-counts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis

from app.batch_marks import BatchMarks
from app.blobs import Blobs
from app.dead_letters import DeadLetters
from app.duplicates import Duplicates
from app.job_meta import JobMeta
from app.progress import ProgressReads
from app.record_window import RecordWindow, count_fields
from app.redis_client import redis_client
from app.schemas import ImageRecord
from app.worker_stats import WorkerStats
from config.settings import Settings

# A finished job's per-image state: deleted once its records are collected. Per-batch state (sent,
# chains, done: a few bytes an image) stays with the job, so a late redelivery still finds its batch done.
IN_FLIGHT_PARTS = ("shas", "shipped", "named", "alias-sources", "records")


class JobStore(JobMeta, Duplicates, Blobs, RecordWindow, BatchMarks, ProgressReads, WorkerStats, DeadLetters):
    def __init__(self, client: redis.Redis, job_ttl_s: int = 30 * 24 * 3600) -> None:
        self.r = client
        self.ttl = job_ttl_s

    @classmethod
    def from_settings(cls, settings: Settings) -> JobStore:
        return cls(redis_client(settings), settings.redis.job_ttl_s)

    def finish_batch(
        self,
        job_id: str,
        batch_id: str,
        records: Sequence[ImageRecord],
        blob_keys: Sequence[str],
        fingerprint: str,
        written: str | None,
        result_id: str | None = None,
        attempt_keys: Sequence[str] = (),
    ) -> None:
        """A batch's records are in: counters, the cache index and blob deletion in one transaction.

        `written` is the dataset part that holds them; None: they wait in the staging window."""
        pipe = self.r.pipeline(transaction=True)
        if written is None:  # staged records are counted as they are staged
            self.write_records(records, pipe)
            self.mark_done(job_id, batch_id, {}, pipe)
        else:
            self.mark_done(job_id, batch_id, dict(count_fields(records)), pipe)
            self.index_records(fingerprint, f"{job_id}/{written}", records, pipe)
        if blob_keys:
            pipe.delete(*blob_keys)
        if attempt_keys:  # the chain's delivery counters: done with (a later duplicate is ignored)
            pipe.delete(*attempt_keys)
        if result_id:  # the chain's stored result, for a collector to free (app.collect)
            pipe.sadd(self.key(job_id, "results"), result_id)
            pipe.expire(self.key(job_id, "results"), self.ttl)
        pipe.execute()

    def begin_delivery(self, job_id: str, batch_id: str, attempts_key: str, ttl_s: int) -> tuple[str, int]:
        """What a chain link learns before any work, in one round trip: the batch's standing
        ("cancelled", "finished": a duplicate delivery of a batch already done, or "running") and
        this delivery's number (its counter at `attempts_key`, incremented)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hget(self.key(job_id), "status")
        self.is_batch_done(job_id, batch_id, pipe)
        pipe.incr(attempts_key)
        pipe.expire(attempts_key, ttl_s)
        status, done, attempt, _ = pipe.execute()
        return ("cancelled" if status == b"cancelled" else "finished" if done else "running"), int(attempt)

    def accounted(self, job_id: str) -> tuple[int | None, int]:
        pipe = self.r.pipeline(transaction=False)
        pipe.hget(self.key(job_id), "total")
        pipe.hmget(self.key(job_id, "counts"), ["done", "cached", "failed"])
        total, counts = pipe.execute()
        return (int(total) if total is not None else None), sum(int(c) for c in counts if c is not None)

    def mark_finished_if_complete(self, job_id: str) -> bool:
        total, accounted = self.accounted(job_id)
        if total is None or accounted < total:
            return False
        self.r.hsetnx(self.key(job_id), "finished_at", time.time())
        return True

    def drop_in_flight(self, job_id: str) -> None:
        """A finished, collected job keeps its counters; the per-image and per-batch state goes."""
        keys = [self.key(job_id, part) for part in IN_FLIGHT_PARTS]
        keys += list(self.r.scan_iter(self.key(job_id, "alias:*"), count=1000))
        self.r.delete(*keys)
