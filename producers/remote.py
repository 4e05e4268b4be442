"""Submission with preparation on a CPU queue: the producer only lists sources and enqueues orders.

Each prepare order (app.prepare_task) carries references, never image bytes: up to
`prepare_chunk` files or URLs, one whole shard, or a range of table rows. URLs (bare or in a
list file) and shards by URL work from any host; local paths (folders, list lines naming files,
local shards and tables) are opened by the CPU worker at the same path, so they need storage
that the CPU workers share with the producer.

The producer counts what it listed (files, URLs, table rows); a shard is counted by the task
that reads it, and the job's total is set when the last count is in (app.prepare_state).
At most `2 × max_inflight_batches` orders wait in Redis at once, so Redis holds O(window) here too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from app.entries import Entry
from app.limits import limits_from
from app.orders import TASK_NAME, order_settings
from app.prepare_state import PrepareState
from app.shipping import PUBLISH_RETRY, SubmitStats, write_failure
from producers import sources


def submit_remote(submitter, roots: Sequence[str | Path], recursive: bool, progress=None, already: int = 0) -> str:
    """`already`: error records the submitter wrote itself (inputs that never became files)."""
    s, store, job_id = submitter.settings, submitter.store, submitter.spec.job_id
    state = PrepareState(store, job_id)
    common = {
        "job_id": job_id,
        "limits": asdict(limits_from(s)),
        "queues": submitter.shipper.explicit_queues,
        **order_settings(s),
    }
    stats, listed, shards, sent = SubmitStats(), already, 0, 0
    chunk: list[dict[str, Any]] = []

    def send(units: list[dict[str, Any]]) -> None:
        nonlocal sent
        while sent - state.orders_done() >= 2 * s.max_inflight_batches:  # orders are Redis memory too
            if store.is_cancelled(job_id):
                return
            time.sleep(0.05)
        submitter.celery.send_task(
            TASK_NAME,
            args=({**common, "index": sent, "units": units},),
            queue=s.prepare_queue,
            task_id=f"{job_id}-p{sent:06d}",
            retry=True,
            retry_policy=PUBLISH_RETRY,
            argsrepr=f"({len(units)} units)",
        )
        sent += 1

    for unit in sources.units(roots, recursive, s, s.images.image_column, rows_per_unit=8 * s.prepare_chunk):
        if store.is_cancelled(job_id):
            break
        if isinstance(unit, Entry):
            listed += 1
            if unit.problem:  # refused while listing: its record is written here, no task needed
                stats.failed += 1
                write_failure(store, job_id, unit.name, unit.problem, source=unit.source)
            else:
                chunk.append(unit.to_message())
                if len(chunk) >= s.prepare_chunk:
                    send(chunk)
                    chunk = []
        elif isinstance(unit, sources.ShardUnit):
            shards += 1
            send([{"kind": "shard", "location": unit.location, "label": unit.label, "source": unit.source}])
        else:
            listed += unit.stop - unit.start
            t = unit.table
            send(
                [
                    {
                        "kind": "table",
                        "path": t.path,
                        "format": t.format,
                        "label": t.label,
                        "rows": t.rows,
                        "first_row": t.first_row,
                        "start": unit.start,
                        "stop": unit.stop,
                    }
                ]
            )
        stats.scanned = listed
        if progress and listed % 256 == 0:
            progress(stats)
    if chunk:
        send(chunk)
    store.set_fields(job_id, scanned=listed, prepare_orders=sent)
    state.set_listed(listed, shards)
    if not store.is_cancelled(job_id):  # every order is out: the total waits only for the tasks' counts
        store.set_fields(job_id, status="submitted")
    state.finalize_total()
    if progress:
        progress(stats)
    return job_id
