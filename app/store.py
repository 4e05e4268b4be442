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
from typing import Any

import redis

from app.batch_marks import BatchMarks
from app.blobs import Blobs
from app.dead_letters import DeadLetters
from app.duplicates import Duplicates
from app.job_meta import JobMeta
from app.progress import ProgressReads
from app.record_window import RecordWindow, count_fields
from app.redis_client import redis_client
from app.schemas import ImageRecord, LinkStats
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
        link_stats: Sequence[LinkStats] = (),
        shas: Sequence[str] = (),
    ) -> tuple[tuple[int | None, int], dict[str, list[str]]]:
        """A batch's records are in: counters, the cache index, its links' engine counters and blob
        deletion in one transaction, which then reads the job's total and accounted images, and the
        alias names of `shas` (copies a producer added before the batch was marked done: one added
        after it sees the mark and writes its record itself).

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
        for link in link_stats:
            self.add_worker_stats(link.worker, link.stage, link.counters, pipe)
        self._accounted(job_id, pipe)
        for sha in shas:
            pipe.smembers(self.key(job_id, f"alias:{sha}"))
        replies = pipe.execute()[-2 - len(shas) :]
        aliases = {sha: sorted(m.decode() for m in names) for sha, names in zip(shas, replies[2:]) if names}
        return self._accounted_from(*replies[:2]), aliases

    def begin_delivery(
        self, job_id: str, batch_id: str, attempts_key: str, ttl_s: int, blob_keys: Sequence[str] = ()
    ) -> tuple[str, int, list[bytes | None]]:
        """What a chain link learns before any work, in one round trip: the batch's standing
        ("cancelled", "finished": a duplicate delivery of a batch already done, or "running"),
        this delivery's number (its counter at `attempts_key`, incremented) and the blobs asked for."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hget(self.key(job_id), "status")
        self.is_batch_done(job_id, batch_id, pipe)
        pipe.incr(attempts_key)
        pipe.expire(attempts_key, ttl_s)
        if blob_keys:
            pipe.mget(blob_keys)
        status, done, attempt, _, *blobs = pipe.execute()
        standing = "cancelled" if status == b"cancelled" else "finished" if done else "running"
        return standing, int(attempt), blobs[0] if blobs else []

    def _accounted(self, job_id: str, pipe: Any) -> None:
        pipe.hget(self.key(job_id), "total")
        pipe.hmget(self.key(job_id, "counts"), ["done", "cached", "failed"])

    @staticmethod
    def _accounted_from(total: bytes | None, counts: list[bytes | None]) -> tuple[int | None, int]:
        return (int(total) if total is not None else None), sum(int(c) for c in counts if c is not None)

    def accounted(self, job_id: str) -> tuple[int | None, int]:
        """The job's total (None until its submission is complete) and the images accounted for."""
        pipe = self.r.pipeline(transaction=False)
        self._accounted(job_id, pipe)
        return self._accounted_from(*pipe.execute())

    def mark_finished_if_complete(self, job_id: str, accounted: tuple[int | None, int] | None = None) -> bool:
        """Mark the job finished once every image is accounted for (`accounted`: as just read)."""
        total, done = accounted or self.accounted(job_id)
        if total is None or done < total:
            return False
        self.r.hsetnx(self.key(job_id), "finished_at", time.time())
        return True

    def drop_in_flight(self, job_id: str) -> None:
        """A finished, collected job keeps its counters; the per-image and per-batch state goes."""
        keys = [self.key(job_id, part) for part in IN_FLIGHT_PARTS]
        keys += list(self.r.scan_iter(self.key(job_id, "alias:*"), count=1000))
        self.r.delete(*keys)
