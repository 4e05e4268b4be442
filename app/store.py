"""Everything the system keeps in Redis besides Celery's own keys: jobs, in-flight state, blobs.

What Redis holds of records (a staging window, counters, the cache index) is app.record_window's.
Writes are idempotent: batch completion is set membership, so a batch redone after a worker kill
overwrites and never double-counts.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from pydantic import BaseModel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from app import redis_full
from app.batch_marks import BatchMarks
from app.heartbeat import PREFIX as ALIVE_PREFIX
from app.record_window import P, RecordWindow, count_fields
from app.routing import level_keys
from app.schemas import DeadLetter, ImageRecord, JobSpec
from config.errors import JobNotFoundError
from config.settings import Settings

# A finished job's per-image state: deleted once its records are collected. Per-batch state (sent,
# chains, done: a few bytes an image) stays with the job, so a late redelivery still finds its batch done.
IN_FLIGHT_PARTS = ("shas", "shipped", "named", "alias-sources", "records")


def redis_client(settings: Settings, url: str | None = None, retry_s: float = 60.0) -> redis.Redis:
    """A client that rides out a Redis restart (retries with backoff for about `retry_s`) and
    waits while Redis is full (app.redis_full)."""
    redis_full.install()
    kwargs: dict[str, Any] = {}
    if (url or settings.broker_url).startswith("rediss://"):
        kwargs.update(
            ssl_ca_certs=settings.redis_ssl_ca_certs,
            ssl_certfile=settings.redis_ssl_certfile,
            ssl_keyfile=settings.redis_ssl_keyfile,
            ssl_cert_reqs="required",
        )
    retries = max(1, int(retry_s / 2))
    return redis.Redis.from_url(
        url or settings.broker_url,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_timeout=30,
        socket_connect_timeout=5,
        health_check_interval=15,
        **kwargs,
    )


class JobProgress(BaseModel):
    job_id: str
    status: str
    total: int | None  # None while the producer is still scanning
    scanned: int = 0  # files found so far (a running count while total is None)
    accounted: int
    outcomes: dict[str, int]
    workers: dict[str, int]
    batches_sent: int
    batches_done: int
    created_at: float
    finished_at: float | None
    images_per_s: float
    eta_s: float | None

    @property
    def finished(self) -> bool:
        return self.total is not None and self.accounted >= self.total


class JobStore(RecordWindow, BatchMarks):
    jobs_key = f"{P}jobs"  # sorted set of job ids by creation time

    def __init__(self, client: redis.Redis, job_ttl_s: int = 30 * 24 * 3600) -> None:
        self.r = client
        self.ttl = job_ttl_s

    @classmethod
    def from_settings(cls, settings: Settings) -> JobStore:
        return cls(redis_client(settings), settings.job_ttl_s)

    # --- keys ------------------------------------------------------------------------------
    @staticmethod
    def blob_key(job_id: str, sha256: str) -> str:
        return f"{P}blob:{job_id}:{sha256}"

    @staticmethod
    def is_blob_key(ref: str) -> bool:
        """A Redis blob key, as opposed to a file path on a shared folder."""
        return ref.startswith(f"{P}blob:")

    # --- jobs ------------------------------------------------------------------------------
    def create_job(self, spec: JobSpec) -> None:
        pipe = self.r.pipeline()
        pipe.hset(
            self.key(spec.job_id),
            mapping={"spec": spec.model_dump_json(), "status": "submitting", "created_at": spec.created_at},
        )
        pipe.expire(self.key(spec.job_id), self.ttl)
        pipe.zadd(self.jobs_key, {spec.job_id: spec.created_at})
        pipe.execute()

    def job_exists(self, job_id: str) -> bool:
        """Read-only: never creates a key (unlike a write to an unknown job would)."""
        return bool(self.r.exists(self.key(job_id)))

    def require_job(self, job_id: str) -> None:
        if not self.job_exists(job_id):
            raise JobNotFoundError(f"no job {job_id} in Redis (never created, or expired); see `producer jobs`")

    # --- the submitting producer's lease ----------------------------------------------------
    def take_lease(self, job_id: str, owner: str, ttl_s: int) -> bool:
        """Become the job's one submitting producer; False while another one's lease is alive."""
        return bool(self.r.set(self.key(job_id, "lease"), owner, nx=True, ex=ttl_s))

    def renew_lease(self, job_id: str, ttl_s: int) -> bool:
        # EXPIRE, not SET: Redis accepts it even when full, so a waiting producer keeps its lease
        return bool(self.r.expire(self.key(job_id, "lease"), ttl_s))

    def drop_lease(self, job_id: str) -> None:
        self.r.delete(self.key(job_id, "lease"))

    def load_spec(self, job_id: str) -> JobSpec | None:
        raw = self.r.hget(self.key(job_id), "spec")
        return JobSpec.model_validate_json(raw) if raw else None

    def set_fields(self, job_id: str, **fields: Any) -> None:
        self.r.hset(self.key(job_id), mapping={k: str(v) for k, v in fields.items()})

    def get_field(self, job_id: str, name: str) -> str | None:
        raw = self.r.hget(self.key(job_id), name)
        return raw.decode() if raw is not None else None

    def job_ids(self, limit: int = 50) -> list[str]:
        return [j.decode() for j in self.r.zrevrange(self.jobs_key, 0, limit - 1)]

    def add_chain(self, job_id: str, batch_id: str, task_ids: Sequence[str]) -> None:
        """A batch was published."""
        pipe = self.r.pipeline()
        self.mark_sent(job_id, batch_id, list(task_ids), pipe)
        pipe.execute()

    def note_shipped(self, job_id: str, shas: Sequence[str], batch_id: str) -> None:
        """Which batch carries each image (app.claims.RedisClaims): never shipped again by a resume,
        and a duplicate found later asks whether that batch is done."""
        if shas:
            self.r.hset(self.key(job_id, "shipped"), mapping={sha: batch_id for sha in shas})
            self.r.expire(self.key(job_id, "shipped"), self.ttl)

    def shipped_in(self, job_id: str, sha256: str) -> str | None:
        raw = self.r.hget(self.key(job_id, "shipped"), sha256)
        return raw.decode() if raw is not None else None

    def already_handled(self, job_id: str, first_names: Mapping[str, str]) -> set[str]:
        """The shas (claimed by this job before) that a batch carried or whose image has a record."""
        shas = list(first_names)
        if not shas:
            return set()
        pipe = self.r.pipeline(transaction=False)
        pipe.hmget(self.key(job_id, "shipped"), shas)
        pipe.hmget(self.key(job_id, "named"), [first_names[s] for s in shas])
        shipped, named = pipe.execute()
        return {sha for sha, sent, rec in zip(shas, shipped, named) if sent or rec}

    # --- blobs (claim check) ---------------------------------------------------------------
    def put_blobs(self, job_id: str, blobs: Mapping[str, bytes], ttl_s: int) -> dict[str, str]:
        pipe = self.r.pipeline(transaction=False)
        keys = {}
        for sha, data in blobs.items():
            keys[sha] = self.blob_key(job_id, sha)
            pipe.set(keys[sha], data, ex=ttl_s)
        pipe.execute()
        return keys

    def get_blobs(self, keys: Sequence[str]) -> list[bytes | None]:
        return self.r.mget(keys) if keys else []

    def blob_bytes(self) -> int:
        """Bytes held by image blobs right now (for tests and the status page)."""
        total = 0
        for key in self.r.scan_iter(f"{P}blob:*", count=1000):
            total += self.r.strlen(key)
        return total

    # --- batches done --------------------------------------------------------------------------
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
        for key in attempt_keys:  # the chain's delivery counters: done, so kept only a little longer
            pipe.expire(key, 30)
        if result_id:  # the chain's stored result, for a collector to free (app.collect)
            pipe.sadd(self.key(job_id, "results"), result_id)
            pipe.expire(self.key(job_id, "results"), self.ttl)
        pipe.execute()

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

    # --- duplicates inside one job ---------------------------------------------------------
    def claim_shas(self, job_id: str, first_names: Mapping[str, str]) -> dict[str, str | None]:
        """Claim each sha256 for this job; None where the claim is new, else the owning name."""
        key = self.key(job_id, "shas")
        pipe = self.r.pipeline()
        for sha, name in first_names.items():
            pipe.hsetnx(key, sha, name)
        for sha in first_names:
            pipe.hget(key, sha)
        pipe.expire(key, self.ttl)
        res = pipe.execute()
        n = len(first_names)
        return {sha: None if new else owner.decode() for sha, new, owner in zip(first_names, res[:n], res[n : 2 * n])}

    def add_alias(self, job_id: str, sha256: str, name: str) -> None:
        """`name` has the same bytes as an image already claimed by this job.

        The worker marks its batch done, then reads the aliases; the producer adds the alias, then
        looks whether the original's batch is done (app.shipping.Shipper.add_alias). Whichever runs
        second sees the other's write, so the alias always gets its record: from the worker if the
        batch was not done yet, else from the producer (staged records are written once per name,
        so both writing it is harmless).
        """
        key = self.key(job_id, f"alias:{sha256}")
        self.r.sadd(key, name)
        self.r.expire(key, self.ttl)

    def aliases(self, job_id: str, shas: Sequence[str]) -> dict[str, list[str]]:
        """Alias names by sha256, for the shas that have any (one round trip)."""
        pipe = self.r.pipeline(transaction=False)
        for sha in shas:
            pipe.smembers(self.key(job_id, f"alias:{sha}"))
        return {sha: sorted(m.decode() for m in found) for sha, found in zip(shas, pipe.execute()) if found}

    def purge_queued(self, queues: Sequence[str], job_id: str) -> int:
        """Remove a job's messages from the queues (every priority level); returns how many."""
        removed = 0
        for queue in queues:
            for key in level_keys(queue):
                for raw in self.r.lrange(key, 0, -1):
                    try:
                        task_id = json.loads(raw)["headers"]["id"]
                    except (ValueError, KeyError, TypeError):
                        continue
                    if task_id.startswith(job_id):
                        removed += self.r.lrem(key, 1, raw)
        return removed

    def is_cancelled(self, job_id: str) -> bool:
        return self.r.hget(self.key(job_id), "status") == b"cancelled"

    # --- worker statistics -----------------------------------------------------------------
    def add_worker_stats(self, worker: str, stage: str, delta: Mapping[str, float]) -> None:
        """Per-stage engine counters per worker (e.g. prefix-cache queries and hits)."""
        pipe = self.r.pipeline(transaction=False)
        key = f"{P}worker:{worker}"
        pipe.hincrbyfloat(key, f"{stage}.batches", 1)
        for name, value in delta.items():
            pipe.hincrbyfloat(key, f"{stage}.{name}", value)
        pipe.hset(key, "last_seen", time.time())
        pipe.execute()

    def forget_worker(self, worker: str) -> None:
        """Drop the counters of a worker that will not come back (a one-off local worker)."""
        self.r.delete(f"{P}worker:{worker}", f"{ALIVE_PREFIX}{worker}")

    def worker_stats(self, worker: str) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.r.hgetall(f"{P}worker:{worker}").items()}

    # --- dead letters ----------------------------------------------------------------------
    def dead_letter(self, letter: DeadLetter) -> None:
        self.r.hset(f"{P}dead", letter.id, letter.model_dump_json())

    def dead_letters(self, job_id: str | None = None) -> list[DeadLetter]:
        letters = [DeadLetter.model_validate_json(v) for v in self.r.hvals(f"{P}dead")]
        return sorted((d for d in letters if job_id is None or d.job_id == job_id), key=lambda d: d.at)

    def take_dead_letter(self, letter_id: str) -> DeadLetter | None:
        """Remove a dead letter and return it; None if there is none with this id (or it was taken)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hget(f"{P}dead", letter_id)
        pipe.hdel(f"{P}dead", letter_id)
        raw, removed = pipe.execute()
        return DeadLetter.model_validate_json(raw) if raw and removed else None

    # --- progress --------------------------------------------------------------------------
    def progress(self, job_id: str) -> JobProgress:
        pipe = self.r.pipeline(transaction=False)  # reads: a full Redis refuses every MULTI
        pipe.hgetall(self.key(job_id))
        pipe.hgetall(self.key(job_id, "counts"))
        pipe.exists(self.key(job_id, "lease"))
        self.batch_counts(job_id, pipe)
        meta, counts, leased, *marks = pipe.execute()
        sent, done = self.batch_totals(marks)
        meta = {k.decode(): v.decode() for k, v in meta.items() if k != b"spec"}
        outcomes, workers = Counter(), Counter()
        for field, n in counts.items():
            outcome, _, worker = field.decode().partition("|")
            if not worker:
                outcomes[outcome] += int(n)
            elif worker != "-":
                workers[worker] += int(n)
        outcomes = Counter({k: v for k, v in outcomes.items() if v})
        total = int(meta["total"]) if "total" in meta else None
        accounted = sum(outcomes.values())
        created = float(meta.get("created_at", time.time()))
        finished_at = float(meta["finished_at"]) if "finished_at" in meta else None
        elapsed = max(1e-6, (finished_at or time.time()) - created)
        rate = accounted / elapsed
        eta = (total - accounted) / rate if total is not None and rate > 0 else None
        status = meta.get("status", "unknown")
        if status == "submitting" and not leased:  # its producer stopped renewing: killed or lost
            status = "interrupted"
        if status in ("submitted", "submitting") and total is not None and accounted >= total:
            status = "done"
        return JobProgress(
            job_id=job_id,
            status=status,
            total=total,
            scanned=int(meta.get("scanned", total or 0)),
            accounted=accounted,
            outcomes=dict(outcomes),
            workers=dict(workers),
            batches_sent=sent,
            batches_done=done,
            created_at=created,
            finished_at=finished_at,
            images_per_s=round(rate, 2),
            eta_s=eta,
        )
