"""Submit folders as a job: prepared images → dedupe → cache → blobs → one chain per batch.

Memory stays bounded whatever the folder size: files are streamed, at most two batches of
prepared bytes are held here, duplicates are found through Redis (not a local set), and at
most `max_inflight_batches` batches wait in Redis at once (backpressure).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery
from celery.result import AsyncResult, GroupResult

from app.factory import create_app
from app.heartbeat import live_queues
from app.pipeline import batch_chain, chain_task_ids
from app.routing import least_loaded
from app.schemas import BatchState, ImageRecord, ImageRef, ItemState, JobSpec
from app.store import JobStore
from config.errors import ConfigError
from config.prompts import load_prompt_set
from config.settings import Settings
from producers.pool import PreparePool
from producers.prepare import Failed, Prepared, PrepareLimits
from producers.scan import scan
from workers.registry import resolve_spec


@dataclass
class SubmitStats:
    scanned: int = 0
    failed: int = 0
    cached: int = 0
    duplicates: int = 0
    shipped: int = 0
    batches: int = 0
    started: float = field(default_factory=time.time)


ProgressFn = Callable[[SubmitStats], None]
# Ride out a Redis restart (about a minute) before a publish is given up as failed.
PUBLISH_RETRY = {"max_retries": 30, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 3.0}


def new_job_id() -> str:
    return uuid.uuid4().hex


def useful_edge(settings: Settings) -> int:
    """The downscale target: the settings' edge, capped at what the model's processor uses."""
    if settings.engine != "vllm":
        return settings.max_image_edge
    try:
        return min(settings.max_image_edge, resolve_spec(settings.model, settings.model_family).max_image_edge)
    except ConfigError:  # unknown family: the worker will say so; the settings' edge is safe
        return settings.max_image_edge


def limits_from(settings: Settings) -> PrepareLimits:
    return PrepareLimits(settings.max_file_bytes, settings.max_pixels, useful_edge(settings),
                         settings.jpeg_quality)


class Submitter:
    def __init__(self, settings: Settings, celery_app: Celery | None = None,
                 store: JobStore | None = None) -> None:
        self.settings = settings
        self.celery = celery_app or create_app(settings)
        # The Redis result backend subscribes to each sent task's result channel so that a later
        # .get() is fast; a producer sending thousands of chains never reads those channels and
        # the unread pubsub traffic piles up. .get()/.join() still subscribe when called.
        self.celery.backend.on_task_call = lambda producer, task_id: None
        self.store = store or JobStore.from_settings(settings)
        self._next_queue = 0
        self._data: dict[str, bytes] = {}  # prepared bytes of items resolved but not yet shipped

    def submit(self, roots: Sequence[str | Path], recursive: bool = True, queues: Sequence[str] | None = None,
               job_id: str | None = None, progress: ProgressFn | None = None) -> str:
        s = self.settings
        job_id = job_id or new_job_id()
        # explicit queues, else those live workers serve now, else the settings' list
        self.explicit_queues = list(queues) if queues else None
        self.queues = self.explicit_queues or live_queues(self.store.r) or list(s.queues)
        self._queues_checked = time.monotonic()
        prompts = load_prompt_set(s.prompt_dir, s.classification_prompt)
        spec = JobSpec.from_settings(s, job_id, prompts, [str(Path(r).resolve()) for r in roots])
        spec.queues = list(self.queues)
        self.spec = spec
        self.store.create_job(spec)
        stats = SubmitStats()
        pending: list[Prepared] = []
        to_ship: list[ItemState] = []
        pool = PreparePool(limits_from(s), s.prepare_workers, s.decode_timeout_s, s.decode_memory_mb)
        entries = scan(roots, recursive, s.extensions, s.follow_symlinks, s.report_other_files)
        try:
            for result in pool.map(entries):
                stats.scanned += 1
                if isinstance(result, Failed):
                    stats.failed += 1
                    self.store.write_records([ImageRecord.failure(result.name, job_id, result.reason,
                                                                  sha256=result.sha256)])
                else:
                    pending.append(result)
                    if len(pending) >= s.batch_size:
                        to_ship += self._resolve(pending, stats)
                        pending = []
                while len(to_ship) >= s.batch_size:
                    self._ship(to_ship[: s.batch_size], stats)
                    to_ship = to_ship[s.batch_size :]
                if progress and stats.scanned % 64 == 0:
                    progress(stats)
            to_ship += self._resolve(pending, stats)
            for start in range(0, len(to_ship), s.batch_size):
                self._ship(to_ship[start : start + s.batch_size], stats)
        finally:
            pool.close()
        if not self.store.is_cancelled(job_id):
            self.store.set_fields(job_id, total=stats.scanned, status="submitted", batches=stats.batches)
        self.save_group(job_id)
        self.store.mark_finished_if_complete(job_id)
        if progress:
            progress(stats)
        return job_id

    def _resolve(self, prepared: list[Prepared], stats: SubmitStats) -> list[ItemState]:
        """Drop what is already known: duplicates of this job and images in the record cache."""
        if not prepared:
            return []
        job_id = self.spec.job_id
        by_sha: dict[str, list[Prepared]] = {}
        for p in prepared:
            by_sha.setdefault(p.sha256, []).append(p)
        owners = self.store.claim_shas(job_id, {sha: ps[0].name for sha, ps in by_sha.items()})
        fresh = {sha: ps for sha, ps in by_sha.items() if owners[sha] is None}
        for sha, ps in by_sha.items():
            if owners[sha] is not None:  # shipped earlier in this job: process once, record each
                for p in ps:
                    stats.duplicates += 1
                    self.store.add_alias(job_id, sha, owners[sha], p.name)
        shas = list(fresh)
        cached = self.store.cached_records(self.spec.fingerprint, shas) if self.spec.use_cache else [None] * len(shas)
        items = []
        for sha, hit in zip(shas, cached):
            names = [p.name for p in fresh[sha]]
            if hit is not None:
                stats.cached += len(names)
                self.store.write_records([hit.model_copy(update={"image": n, "job_id": job_id, "cached": True,
                                                                 "worker": None}) for n in names])
                continue
            first = fresh[sha][0]
            ref = ImageRef(sha256=sha, names=names, width=first.width, height=first.height, blob="")
            items.append(ItemState(ref=ref))
            self._data[sha] = first.data
        return items

    def _ship(self, items: list[ItemState], stats: SubmitStats) -> None:
        s, job_id = self.settings, self.spec.job_id
        if not items or not self._wait_for_room(job_id):
            return
        blobs = {i.ref.sha256: self._data.pop(i.ref.sha256) for i in items}
        if s.shared_dir:
            keys = self._write_shared(job_id, blobs)
        else:
            keys = self.store.put_blobs(job_id, blobs, s.blob_ttl_s)
        for item in items:
            item.ref.blob = keys[item.ref.sha256]
        batch_id = f"{job_id}-b{stats.batches:06d}"
        batch = BatchState(job_id=job_id, batch_id=batch_id, items=items)
        queue = self._pick_queue()
        # published first: a batch counted as sent is one Redis has (a failed publish raises here)
        batch_chain(self.celery, batch, queue).apply_async(retry=True, retry_policy=PUBLISH_RETRY)
        self.store.add_chain(job_id, batch_id, chain_task_ids(batch_id))
        stats.batches += 1
        stats.shipped += sum(len(i.ref.names) for i in items)

    def _pick_queue(self) -> str:
        """The least-loaded queue; the live set is refreshed every few seconds unless queues were given."""
        if self.explicit_queues is None and time.monotonic() - self._queues_checked > 5:
            self.queues = live_queues(self.store.r) or self.queues
            self._queues_checked = time.monotonic()
        rotated = self.queues[self._next_queue % len(self.queues):] + self.queues[: self._next_queue % len(self.queues)]
        self._next_queue += 1
        queue = least_loaded(self.store.r, rotated)
        if queue not in self.spec.queues:  # remembered, so Job.wait can rebalance it later
            self.spec.queues.append(queue)
            self.store.set_fields(self.spec.job_id, spec=self.spec.model_dump_json())
        return queue

    def _write_shared(self, job_id: str, blobs: dict[str, bytes]) -> dict[str, str]:
        folder = Path(self.settings.shared_dir) / job_id
        folder.mkdir(parents=True, exist_ok=True)
        keys = {}
        for sha, data in blobs.items():
            path = folder / f"{sha}.jpg"
            path.write_bytes(data)
            keys[sha] = str(path)
        return keys

    def _wait_for_room(self, job_id: str) -> bool:
        """Block while too many batches are in flight; False once the job is cancelled."""
        while self.store.batches_in_flight(job_id) >= self.settings.max_inflight_batches:
            if self.store.is_cancelled(job_id):
                return False
            time.sleep(0.02)
        return not self.store.is_cancelled(job_id)

    def save_group(self, job_id: str) -> GroupResult:
        """Save the job as a GroupResult of the chains' last tasks: `GroupResult.restore(job_id)`."""
        results = [AsyncResult(ids[-1], app=self.celery) for _, ids in sorted(self.store.chains(job_id).items())]
        group = GroupResult(job_id, results, app=self.celery)
        group.save()
        return group
