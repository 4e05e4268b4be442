"""The collector: moves a job's staged records out of Redis into the results dataset.

Records wait in Redis only when their writer could not reach the results location (a remote worker,
the producer's failures and cache hits). A collector (`producer collect`, `Job.wait()`, `submit
--wait`, `run`) takes the whole staging hash at once by renaming it (new records go to a fresh one),
writes it as parts named before writing, then deletes it. A collector killed midway leaves the
renamed hash listed: the next one writes the same part names again, so no record is lost or doubled.
It also frees the Celery results of the batches whose records are in the dataset.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from app.record_window import RecordWindow
from app.results import ResultsDataset
from app.schemas import ImageRecord
from app.store import JobStore

PART_ROWS = 20_000  # records per part a collector writes

# KEYS: staging, its new name, the set of parts being collected. ARGV: part, ttl.
_TAKE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return 1
"""


def collect(store: JobStore, dataset: ResultsDataset, job_id: str, fingerprint: str = "") -> int:
    """Drain the job's staged records into the dataset; returns how many were written."""
    taking = store.key(job_id, "collecting")
    unfinished = sorted(p.decode() for p in store.r.smembers(taking))
    part = f"c-{uuid.uuid4().hex[:12]}"
    take = store._script(_TAKE)
    if take(
        keys=[store.key(job_id, "records"), store.key(job_id, f"collecting:{part}"), taking], args=[part, store.ttl]
    ):
        unfinished.append(part)
    return sum(_write(store, dataset, job_id, p, fingerprint) for p in unfinished)


def _write(store: JobStore, dataset: ResultsDataset, job_id: str, part: str, fingerprint: str) -> int:
    key = store.key(job_id, f"collecting:{part}")
    written, chunk, n = 0, [], 0
    # HSCAN of a hash nobody writes to any more: the same order, so a redo makes the same parts
    for _, raw in store.r.hscan_iter(key, count=1000):
        chunk.append(ImageRecord.model_validate_json(raw))
        if len(chunk) >= PART_ROWS:
            written += _write_chunk(store, dataset, job_id, f"{part}-{n}", chunk, fingerprint)
            chunk, n = [], n + 1
    if chunk:
        written += _write_chunk(store, dataset, job_id, f"{part}-{n}", chunk, fingerprint)
    pipe = store.r.pipeline(transaction=True)
    pipe.delete(key)
    pipe.srem(store.key(job_id, "collecting"), part)
    pipe.execute()
    return written


def _write_chunk(
    store: RecordWindow, dataset: ResultsDataset, job_id: str, part: str, records: list[ImageRecord], fingerprint: str
) -> int:
    dataset.write_part(job_id, part, records)
    store.index_records(fingerprint, f"{job_id}/{part}", records)
    return len(records)


def free_results(store: JobStore, backend_key: Callable[[str], bytes], job_id: str) -> int:
    """Delete the stored results of finished chains (their records are in the dataset or staged)."""
    key = store.key(job_id, "results")
    ids = [i.decode() for i in store.r.smembers(key)]
    if not ids:
        return 0
    pipe = store.r.pipeline(transaction=False)
    for task_id in ids:
        pipe.exists(backend_key(task_id))
    stored = [task_id for task_id, there in zip(ids, pipe.execute()) if there]
    if stored:  # a result not stored yet (its task is returning right now) is freed next time
        pipe = store.r.pipeline(transaction=True)
        pipe.delete(*[backend_key(t) for t in stored])
        pipe.srem(key, *stored)
        pipe.execute()
    return len(stored)


def drop_in_flight_if_collected(store: JobStore, job_id: str) -> None:
    """A finished job with nothing left waiting in Redis keeps only its counters (JobStore.drop_in_flight)."""
    pipe = store.r.pipeline(transaction=False)
    pipe.exists(store.key(job_id, "records"))
    pipe.scard(store.key(job_id, "collecting"))
    staged, taking = pipe.execute()
    if not staged and not taking:
        store.drop_in_flight(job_id)
