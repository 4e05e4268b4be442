"""A batch's end: one record per submitted name into the results dataset (or Redis's staging
window), then counters, the cache index, blob deletion and alias copies, in that order."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NoReturn

from celery.exceptions import Ignore

from app import keys, refs
from app.collect import drop_in_flight_if_collected
from app.job_spec import JobSpec
from app.pipeline import chain_task_ids
from app.runtime import WorkerRuntime
from app.schemas import BatchState, ImageRecord, ItemState
from app.store import JobStore
from workers.engine import engine_model_id

log = logging.getLogger(__name__)
BROKER_RETRIES = 10  # retries of a stage that Redis failed; the engine is kept meanwhile


def _own_refs(batch: BatchState, shared_dir: Path | None) -> list[ItemState]:
    """The items whose blob or shared file this job created: the only ones finish may delete.

    A dead-lettered image keeps its prepared bytes (until their TTL) so that it can be requeued."""
    return [
        i
        for i in batch.items
        if not i.dead_letter and refs.refusal(i.ref.blob, i.ref.sha256, batch.job_id, shared_dir) is None
    ]


def ignore_duplicate(batch: BatchState) -> NoReturn:
    """A delivery of a batch that has finished already (its ack lost to a kill or a Redis restart):
    no work, no state stored, the chain goes no further; the first finish's records stand."""
    log.info("batch already finished: duplicate delivery ignored", extra={"batch_id": batch.batch_id})
    raise Ignore()


def finish(
    rt: WorkerRuntime, batch: BatchState, worker: str | None, result_id: str | None = None
) -> list[dict[str, Any]] | dict[str, Any]:
    """One record per submitted name, into the results dataset (or Redis's staging window when this
    worker cannot reach it); then counters, the cache index and blob deletion.

    Returns what AsyncResult polling sees: the records while they wait in Redis, else where they are."""
    settings = rt.settings
    if rt.store.is_batch_done(batch.job_id, batch.batch_id):  # a duplicate finished first meanwhile
        ignore_duplicate(batch)
    spec = rt.spec(batch.job_id)
    model = engine_model_id(settings)  # the worker's own model, which may differ from the job's wish
    records = []
    for item in batch.items:
        base = ImageRecord.from_item(item, item.ref.names[0], batch.job_id, batch.batch_id, model, worker)
        records += [base.model_copy(update={"image": n, "source": item.ref.sources.get(n)}) for n in item.ref.names]
    written = _write_part(rt, spec, batch, records)
    own = _own_refs(batch, settings.shared_dir)
    blob_keys = [i.ref.blob for i in own if JobStore.is_blob_key(i.ref.blob)]
    accounted, aliases = rt.store.finish_batch(
        batch.job_id,
        batch.batch_id,
        records,
        blob_keys,
        spec.cache_fingerprint,
        written,
        result_id,
        [
            keys.attempts(t, n)
            for t in chain_task_ids(batch.batch_id)
            for n in range(max(settings.engine.stage_retries, BROKER_RETRIES) + 1)
        ],
        batch.link_stats,
        [i.ref.sha256 for i in batch.items],
    )
    rt.forget_images([i.ref.blob for i in batch.items])
    for item in own:  # prepared files on a shared folder: done with them too
        if not JobStore.is_blob_key(item.ref.blob):
            refs.remove_shared(item.ref.blob, item.ref.sha256, batch.job_id, settings.shared_dir)
    aliased = _alias_records(batch, records, aliases, rt.store)
    if aliased:
        rt.store.write_records(aliased)
        accounted = rt.store.accounted(batch.job_id)  # with the copies' records
    if rt.store.mark_finished_if_complete(batch.job_id, accounted):
        drop_in_flight_if_collected(rt.store, batch.job_id)
    failed = sum(r.error is not None for r in records)
    log.info(
        "batch done",
        extra={
            "job_id": batch.job_id,
            "batch_id": batch.batch_id,
            "images": len(records),
            "failed": failed,
            "written": bool(written),
        },
    )
    if written is None:
        return [r.model_dump(mode="json") for r in records + aliased]
    return {
        "job_id": batch.job_id,
        "batch_id": batch.batch_id,
        "part": rt.dataset(spec.results).part_path(batch.job_id, written),
        "images": len(records),
        "failed": failed,
        "aliases": len(aliased),
    }


def _write_part(rt: WorkerRuntime, spec: JobSpec, batch: BatchState, records: list[ImageRecord]) -> str | None:
    """The part written (named by the batch id: a redone batch overwrites it), or None."""
    if not spec.worker_writes_results():
        return None
    try:
        rt.dataset(spec.results).write_part(batch.job_id, batch.batch_id, records)
    except OSError as exc:  # unreachable from here: a collector will write them
        log.warning(
            "results location not writable here: the batch's records wait in Redis for a collector",
            extra={"job_id": batch.job_id, "batch_id": batch.batch_id, "error": str(exc)},
        )
        return None
    return batch.batch_id


def _alias_records(
    batch: BatchState, records: list[ImageRecord], aliases: dict[str, list[str]], store: JobStore
) -> list[ImageRecord]:
    """One record per extra copy of the batch's images (`aliases`: names by sha256)."""
    by_sha = {r.sha256: r for r in records}
    sources = store.alias_sources(batch.job_id, [n for names in aliases.values() for n in names])
    return [
        by_sha[sha].model_copy(update={"image": name, "source": sources.get(name)})
        for sha, names in aliases.items()
        for name in names
    ]
