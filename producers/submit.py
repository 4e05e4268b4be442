"""Submit what the user points at as a job: prepared images → dedupe → cache → blobs → one chain per batch.

Memory stays bounded whatever the input size: entries are streamed, at most two batches of
prepared bytes are held here, duplicates are found through Redis (not a local set), and at
most `max_inflight_batches` batches wait in Redis at once (backpressure). With a prepare queue
set (settings.prepare_queue), preparation runs on CPU workers instead: producers.remote.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from celery import Celery

from app import keys
from app.batch_size import ChosenBatchSize, with_batch_size
from app.claims import LocalClaims
from app.collect import collect, free_results
from app.decode import Failed, Prepared, PrepareLimits
from app.factory import create_app
from app.job_spec import JobSpec
from app.limits import limits_from
from app.names import display_name
from app.results import ResultsDataset
from app.schemas import ItemState
from app.shipping import Shipper, SubmitStats, write_failure
from app.store import JobStore
from config.errors import JobNotFoundError, JobStateError
from config.prompts import PromptSet, load_prompt_set
from config.settings import Settings
from producers import sources
from producers.group import save_group
from producers.lease import LEASE_TTL_S, LeaseKeeper
from producers.pool import PreparePool
from producers.rerun import resume_link

log = logging.getLogger(__name__)
ProgressFn = Callable[[SubmitStats], None]


def new_job_id() -> str:
    return uuid.uuid4().hex


def root_names(roots: Sequence[str | Path]) -> list[str]:
    """How the job spec lists its inputs: local paths resolved, URLs as given."""
    return [display_name(str(r) if sources.has_scheme(str(r)) else str(Path(r).resolve())) for r in roots]


class Submitter:
    def __init__(self, settings: Settings, celery_app: Celery | None = None, store: JobStore | None = None) -> None:
        self.settings = settings
        self.celery = celery_app or create_app(settings)
        # The Redis result backend subscribes to each sent task's result channel so that a later
        # .get() is fast; a producer sending thousands of chains never reads those channels and
        # the unread pubsub traffic piles up. .get()/.join() still subscribe when called.
        self.celery.backend.on_task_call = lambda producer, task_id: None
        self.store = store or JobStore.from_settings(settings)
        self._owner = f"{socket.gethostname()}:{os.getpid()}"  # who holds the job's submission lease
        # a rerun or retry (producers.rerun): spec fields, names to take (None: all), outputs by sha256
        self.linked: dict[str, Any] = {}
        self.only: set[str] | None = None
        self.preload: Mapping[str, dict[str, Any]] = {}
        self.chosen: ChosenBatchSize | None = None  # a new job's batch size and why (create_job)

    def preflight(self) -> tuple[PromptSet, PrepareLimits]:
        """What a job needs that the settings alone decide; raises (bad prompt files, a model this
        vLLM cannot run) before any job exists."""
        s = self.settings
        return load_prompt_set(s.prompt_dir, s.classification_prompt, s.max_prompt_bytes), limits_from(s)

    def submit(
        self,
        roots: Sequence[str | Path],
        recursive: bool = True,
        queues: Sequence[str] | None = None,
        job_id: str | None = None,
        progress: ProgressFn | None = None,
        failures: Sequence[Failed] = (),
    ) -> str:
        """Submit ROOTS as a new job; with the id of an interrupted job, finish that job instead.

        `failures`: inputs that never became files (e.g. URLs that could not be fetched); each
        gets its error record and counts in the job's total like a file that failed to decode."""
        if job_id and self.store.load_spec(job_id) is not None:  # a job, not fields set ahead of it
            return self.resume(job_id, queues, progress)
        s = self.settings
        sources.check_sources(roots, s)  # a missing path or a table without the column: nothing created
        self.spec = self.create_job(roots, queues, job_id, recursive)
        job_id = self.spec.job_id
        if not self.store.take_lease(job_id, self._owner, LEASE_TTL_S):
            raise JobStateError(f"job {job_id} is being submitted by another producer")
        for failed in failures:
            write_failure(self.store, job_id, failed.name, failed.reason, failed.sha256, failed.source)
        if s.prepare_queue:
            from producers.remote import submit_remote

            with LeaseKeeper(self.store, job_id):
                return submit_remote(self, roots, recursive, progress, already=len(failures))
        return self._submit(roots, recursive, progress, already=len(failures))

    def resume(self, job_id: str, queues: Sequence[str] | None = None, progress: ProgressFn | None = None) -> str:
        """Finish an interrupted submission: every image once, nothing already shipped shipped again."""
        spec = self.store.load_spec(job_id)
        if spec is None:
            raise JobNotFoundError(f"no job {job_id} in Redis (never created, or expired)")
        status = self.store.progress(job_id).status
        if status != "interrupted":
            raise JobStateError(f"job {job_id} is {status}: only an interrupted submission can be resumed")
        if spec.parent and not self.linked:
            resume_link(self, spec)  # a rerun or retry: the same images, the same parent outputs
        if not self.store.take_lease(job_id, self._owner, LEASE_TTL_S):
            raise JobStateError(f"job {job_id} is being resumed by another producer")
        # the job's own settings, not today's: the same batches, prompts and conditions
        self.settings = self.settings.with_overrides(batch_size=spec.batch_size, use_cache=spec.use_cache)
        self.spec = spec
        self.shipper = Shipper(
            self.settings, self.celery, self.store, spec, queues, resuming=True, claims=self.claims_left_by(spec)
        )
        return self._submit(spec.roots, spec.recursive, progress)  # the roots as the job recorded them

    def claims_left_by(self, spec: JobSpec) -> LocalClaims:
        """The interrupted submission's claims, from the results dataset: its batches still in flight
        finish first (their images are known only there), and what waits in Redis is collected."""
        job_id, said = spec.job_id, time.monotonic()
        while (in_flight := self.store.batches_in_flight(job_id)) > 0:
            self.store.renew_lease(job_id, LEASE_TTL_S)
            if time.monotonic() - said > 10:
                log.warning(
                    "resume waits for the interrupted submission's batches to finish",
                    extra={"job_id": job_id, "batches": in_flight},
                )
                said = time.monotonic()
            time.sleep(0.2)
        dataset = ResultsDataset(spec.results or self.settings.results_dir)
        collect(self.store, dataset, job_id, spec.cache_fingerprint)
        claims = LocalClaims()
        claims.load(dataset.rows(job_id, ("image", "sha256", "batch_id")))
        return claims

    def _submit(
        self, roots: Sequence[str | Path], recursive: bool, progress: ProgressFn | None, already: int = 0
    ) -> str:
        s, job_id = self.settings, self.spec.job_id
        stats = SubmitStats(scanned=already, failed=already)
        self._first_batch = self.store.chain_count(job_id)  # a resume numbers its batches after the others
        self._dataset, self._tidied = ResultsDataset(self.spec.results or s.results_dir), time.monotonic()
        pending: list[Prepared] = []
        to_ship: list[ItemState] = []
        limits = limits_from(s)
        pool = PreparePool(limits, s.images.prepare_workers, s.images.decode_timeout_s, s.images.decode_memory_mb)
        entries = sources.entries(roots, recursive, s, limits, s.images.image_column)
        if self.only is not None:  # a retry: only the parent's failed images
            entries = (e for e in entries if e.name in self.only)
        try:
            with LeaseKeeper(self.store, job_id):
                for result in pool.map(entries):
                    stats.scanned += 1
                    if isinstance(result, Failed):
                        stats.failed += 1
                        write_failure(self.store, job_id, result.name, result.reason, result.sha256, result.source)
                    else:
                        pending.append(result)
                        if len(pending) >= s.batch_size:
                            to_ship += self._resolve(pending, stats)
                            pending = []
                    while len(to_ship) >= s.batch_size:
                        self._ship(to_ship[: s.batch_size], stats)
                        to_ship = to_ship[s.batch_size :]
                    if stats.scanned % 256 == 0:  # a running count for `producer status` while the total is unknown
                        self.store.set_fields(job_id, scanned=stats.scanned)
                    if progress and stats.scanned % 64 == 0:
                        progress(stats)
                to_ship += self._resolve(pending, stats)
                for start in range(0, len(to_ship), s.batch_size):
                    self._ship(to_ship[start : start + s.batch_size], stats)
                # saved before the total: a job can finish (and its in-flight state go) only after
                save_group(self.celery, self.store, job_id)
                if not self.store.is_cancelled(job_id):
                    self.store.set_fields(
                        job_id, total=stats.scanned, status="submitted", batches=self._first_batch + stats.batches
                    )
        finally:
            pool.close()
            if isinstance(self.shipper.claims, LocalClaims):
                self.shipper.claims.close()
        self.store.mark_finished_if_complete(job_id)
        if progress:
            progress(stats)
        return job_id

    def _resolve(self, pending: list[Prepared], stats: SubmitStats) -> list[ItemState]:  # + a rerun's preload
        for item in (items := self.shipper.resolve(pending, stats)):
            for name, value in self.preload.get(item.ref.sha256, {}).items():
                setattr(item, name, value)
        return items

    def create_job(
        self, roots: Sequence[str | Path], queues: Sequence[str] | None, job_id: str | None, recursive: bool = True
    ) -> JobSpec:
        job_id = job_id or new_job_id()
        prompts, _ = self.preflight()
        # "auto" becomes a number now; the spec records it for resumes, retries and prepare orders
        self.settings, self.chosen = with_batch_size(self.settings, self.store.r)
        s, chosen = self.settings, self.chosen
        log.info("batch size chosen", extra={"job_id": job_id, "batch_size": chosen.size, "why": chosen.why})
        spec = JobSpec.from_settings(s, job_id, prompts, root_names(roots)).model_copy(update=self.linked)
        spec.recursive = recursive
        if s.prepare_queue:
            self.store.r.sadd(keys.PREPARE_QUEUES, s.prepare_queue)  # GPU chains are never sent there
        # the job's one producer keeps its claims on disk; prepare tasks on CPU workers share Redis's
        self.shipper = Shipper(
            s, self.celery, self.store, spec, queues, claims=None if s.prepare_queue else LocalClaims()
        )
        spec.queues = list(self.shipper.queues)
        self.store.create_job(spec)
        return spec

    def tidy(self, every_s: float = 1.0) -> None:
        """Collect what waits in Redis and free finished chains' results while the job runs (at most
        once a second): a long submission must not leave its finished part behind in Redis."""
        now = time.monotonic()
        if now - self._tidied < every_s:
            return
        self._tidied = now
        spec = self.spec
        collect(self.store, self._dataset, spec.job_id, spec.cache_fingerprint)
        free_results(self.store, self.celery.backend.get_key_for_task, spec.job_id)

    def _ship(self, items: list[ItemState], stats: SubmitStats) -> None:
        self.tidy()
        self.shipper.ship(items, f"{self.spec.job_id}-b{self._first_batch + stats.batches:06d}", stats)
