"""The `prepare` task: fetch, validate, hash, decode and downscale a chunk of entries on a CPU worker,
then ship its batches' GPU chains itself (the same dedupe, cache, blobs and bound as the producer).

    celery -A app worker -Q cpu -P prefork -c 4      # on any host with cores and the Redis URL

Exactly once: the order's entries are cut into groups of `batch_size` in a fixed order, group k
becomes batch `<job>-p<order>-b<k>`, and a batch is claimed in Redis before it is published
(app.prepare_state). A redelivered order skips the groups it finished and never ships a batch twice.
Bad input is one error record each; a hung decoder is cut off by an alarm; an order that kills its
worker `max_attempts` times gets error records for what it had not recorded.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Any

from app.celery import app, settings
from app.decode import Failed, Prepared, PrepareLimits, open_under
from app.entries import Entry, prepare_entry, time_limit_s
from app.fetch import is_url
from app.heap import keep_heap
from app.orders import TASK_NAME, PrepareOrder
from app.prepare_state import PrepareState
from app.runtime import WorkerRuntime
from app.shards import shard_entries, shard_error_name
from app.shipping import Shipper, SubmitStats, write_failure
from app.tables import TableError, TableFile, row_name, table_entries
from app.tasks import StageTask

log = logging.getLogger(__name__)


class Counted:
    """Counts the entries a shard yields, to report the shard's size for the job's total."""

    def __init__(self, entries: Iterator[Entry]) -> None:
        self.entries, self.n = entries, 0

    def __iter__(self) -> Iterator[Entry]:
        for entry in self.entries:
            self.n += 1
            yield entry


def allowed_root(path: str) -> Path | None:
    """The configured prepare root `path` lies under (by its text: no '..', nothing resolved), or None."""
    norm = os.path.normpath(os.path.abspath(path))
    for root in settings.prepare_roots:
        top = os.path.normpath(os.path.abspath(root))
        if norm.startswith(top.rstrip("/") + "/"):
            return Path(top)
    return None


def refused_path(path: str) -> str:
    return (
        f"refused: {path[:200]} is not under this CPU worker's prepare_roots (local paths need storage "
        "shared with the producer, configured as VLMQ_PREPARE_ROOTS on the worker)"
    )


@contextmanager
def opened_under_root(path: str) -> Iterator[str]:
    """A /proc/self/fd path to `path`, opened from its prepare root without following symlinks."""
    root = allowed_root(path)
    if root is None:
        raise PermissionError(refused_path(path))
    fd = open_under(path, root)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def entries_of(order: PrepareOrder, limits: PrepareLimits, counters: dict[str, Counted]) -> Iterator[Entry]:
    for unit in order.units:
        kind = unit.get("kind")
        if kind == "shard":
            yield from counters.setdefault(unit["location"], Counted(_shard(order, unit, limits)))
        elif kind == "table":
            yield from _table(order, unit)
        else:
            entry = Entry.from_message(unit)
            if entry.kind == "file" and not entry.problem:
                root = allowed_root(entry.path or "")
                entry = (
                    replace(entry, root=str(root)) if root else replace(entry, problem=refused_path(entry.path or ""))
                )
            yield entry


def _shard(order: PrepareOrder, unit: dict[str, Any], limits: PrepareLimits) -> Iterator[Entry]:
    location, args = unit["location"], (unit["label"], order.extensions, limits, unit.get("source"))
    if is_url(location):
        yield from shard_entries(location, *args)
        return
    try:
        with opened_under_root(location) as safe:
            yield from shard_entries(location, *args, open_as=safe)
    except OSError as exc:
        yield Entry(
            shard_error_name(location),
            unit.get("source"),
            "data",
            problem=str(exc)
            if isinstance(exc, PermissionError) and "prepare_roots" in str(exc)
            else f"shard unreadable: {exc.strerror or exc}",
        )


def _table(order: PrepareOrder, unit: dict[str, Any]) -> Iterator[Entry]:
    """Rows of a table file opened from its prepare root; rows it cannot give are one error each."""
    table = TableFile(unit["path"], unit["format"], unit["label"], unit["rows"], unit["first_row"])
    done = 0
    try:
        with opened_under_root(table.path) as safe:
            for entry in table_entries(replace(table, path=safe), order.image_column, unit["start"], unit["stop"]):
                done += 1
                yield entry
        return
    except (OSError, TableError) as exc:
        reason = str(exc) if "prepare_roots" in str(exc) else f"table unreadable: {exc}"
    for row in range(unit["start"] + done, unit["stop"]):  # the producer counted them: each gets its record
        number = table.first_row + row
        yield Entry(row_name(table, number, None), f"{table.label}#row={number}", "data", problem=reason)


class DecodeTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    """SIGALRM after `seconds` (prefork and solo pools run tasks in the main thread; else no limit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise DecodeTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def prepare_one(entry: Entry, limits: PrepareLimits, timeout_s: float) -> Prepared | Failed:
    limit = time_limit_s(entry, limits, timeout_s)
    try:
        with time_limit(limit):
            return prepare_entry(entry, limits)
    except DecodeTimeout:
        return Failed(entry.name, f"decoding took longer than {limit:g} s (refused)", source=entry.source)
    except MemoryError:
        return Failed(entry.name, "decoding failed: out of memory", source=entry.source)


def run_order(rt: WorkerRuntime, order: PrepareOrder, attempt: int) -> dict[str, int]:
    store, state = rt.store, PrepareState(rt.store, order.job_id)
    limits = PrepareLimits(**order.limits)
    keep_heap()  # this process decodes image after image, as the producer's pool does
    counters: dict[str, Counted] = {}
    stats = SubmitStats()
    if store.is_cancelled(order.job_id):
        state.mark_order(order.index)
        return {"cancelled": 1}
    if attempt > rt.settings.max_attempts:  # killed its worker each time: record what is left, prepare nothing
        reason = f"prepare task dead-lettered: delivered {attempt} times, worker lost each time"
        log.error(reason, extra={"job_id": order.job_id, "order": order.index})
        for entry in entries_of(order, limits, counters):
            if store.record(order.job_id, entry.name) is None:
                write_failure(store, order.job_id, entry.name, reason, source=entry.source)
    else:
        spec = rt.spec(order.job_id)
        ship_settings = rt.settings.with_overrides(
            batch_size=order.batch_size,
            blob_ttl_s=order.blob_ttl_s,
            max_inflight_batches=order.max_inflight_batches,
            shared_dir=order.shared_dir,
        )
        shipper = Shipper(ship_settings, app, store, spec, order.queues)
        entries = entries_of(order, limits, counters)
        for k, group in enumerate(iter(lambda: list(islice(entries, order.batch_size)), [])):
            batch_id = f"{order.task_id}-b{k:05d}"
            if state.group_done(batch_id):  # finished by an earlier delivery of this order
                continue
            prepared = []
            for result in (prepare_one(e, limits, order.decode_timeout_s) for e in group):
                stats.scanned += 1
                if isinstance(result, Failed):
                    stats.failed += 1
                    write_failure(store, order.job_id, result.name, result.reason, result.sha256, result.source)
                else:
                    prepared.append(result)
            items = shipper.resolve(prepared, stats)
            shipper.ship(items, batch_id, stats, reserve=lambda b: state.reserve(b, order.max_inflight_batches))
            state.mark_group(batch_id)
    for location, counted in counters.items():
        state.report_count(location, counted.n)
    state.mark_order(order.index)
    state.finalize_total()
    store.mark_finished_if_complete(order.job_id)
    return {"prepared": stats.scanned - stats.failed, "failed": stats.failed, "batches": stats.batches}


@app.task(bind=True, base=StageTask, name=TASK_NAME)
def prepare(self: StageTask, order: dict[str, Any]) -> dict[str, int]:
    return run_order(self.runtime, PrepareOrder.model_validate(order), self.deliveries())
