"""Prepared images → dedupe → cache → blobs → one GPU chain per batch; shared by both preparers.

The producer's own pool (producers.submit) and a prepare task on a CPU queue (app.prepare_task)
ship batches through this one code path, so duplicates, the record cache, claim-check blobs,
queue choice and the in-flight bound behave the same wherever the images were prepared.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery

from app.claims import Claims, RedisClaims
from app.decode import Prepared
from app.job_spec import JobSpec
from app.pipeline import batch_chain, chain_task_ids
from app.results import ResultsDataset
from app.room import Room
from app.routing import least_loaded, model_queues, route_for_model
from app.schemas import BatchState, ImageRecord, ImageRef, ItemState
from app.store import JobStore
from config.settings import Settings

# Ride out a Redis restart (about a minute) before a publish is given up as failed.
PUBLISH_RETRY = {"max_retries": 30, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 3.0}


@dataclass
class SubmitStats:
    scanned: int = 0
    failed: int = 0
    cached: int = 0
    duplicates: int = 0  # extra copies of an image already in the job (processed once, recorded each)
    shipped: int = 0  # unique images sent to workers
    resumed: int = 0  # handled before an interruption: not shipped again
    batches: int = 0
    started: float = field(default_factory=time.time)


class Shipper:
    """Resolves prepared images against the job and the cache, and ships batches of the rest."""

    def __init__(
        self,
        settings: Settings,
        celery_app: Celery,
        store: JobStore,
        spec: JobSpec,
        queues: Sequence[str] | None = None,
        resuming: bool = False,
        claims: Claims | None = None,
    ) -> None:
        self.settings, self.celery, self.store, self.spec = settings, celery_app, store, spec
        self.claims = claims or RedisClaims(store, spec.job_id)
        self.resuming = resuming  # finishing an interrupted submission: skip what it already handled
        self.explicit_queues = list(queues) if queues else None  # else those live workers serve now
        self.queues = model_queues(self.store.r, self.spec.model, among=self.explicit_queues)
        self._queues_checked = time.monotonic()
        self._fallback: str | None = None  # where batches go while no live worker serves the model
        self._next_queue = 0
        self.room = Room(store, spec.job_id, settings.max_inflight_batches)
        self._data: dict[str, bytes] = {}  # prepared bytes of items resolved but not yet shipped
        self.dataset = ResultsDataset(spec.results) if spec.results else None
        self._hits: OrderedDict[str, ImageRecord] = OrderedDict()  # recent cache hits, for their duplicates

    def resolve(self, prepared: list[Prepared], stats: SubmitStats) -> list[ItemState]:
        """Drop what is already known: duplicates of this job and images in the record cache.

        A sha claimed under the very name claiming it again is this preparer's own earlier attempt
        (a redelivered prepare task): it stays fresh, so the redo ships the same batches.
        """
        if not prepared:
            return []
        job_id = self.spec.job_id
        by_sha: dict[str, list[Prepared]] = {}
        for p in prepared:
            by_sha.setdefault(p.sha256, []).append(p)
        owners = self.claims.claim({sha: ps[0].name for sha, ps in by_sha.items()})
        if self.resuming:  # claimed by the interrupted run itself: ship it again unless it was shipped
            mine = {sha: ps[0].name for sha, ps in by_sha.items() if owners[sha] == ps[0].name}
            handled = self.claims.handled(mine)
            stats.resumed += sum(len(by_sha[sha]) for sha in handled)
            by_sha = {sha: ps for sha, ps in by_sha.items() if sha not in handled}
        fresh = {sha: ps for sha, ps in by_sha.items() if owners[sha] in (None, ps[0].name)}
        stats.duplicates += sum(len(ps) - 1 for ps in fresh.values())  # copies merged into one item
        for sha, ps in by_sha.items():
            if sha not in fresh:  # shipped earlier in this job: process once, record each
                for p in ps:
                    stats.duplicates += 1
                    self.add_alias(sha, owners[sha], p)
        shas = list(fresh)
        cached = self.cached_records(shas) if self.spec.use_cache else [None] * len(shas)
        items = []
        for sha, hit in zip(shas, cached):
            if hit is not None:
                stats.cached += len(fresh[sha])
                self._hits[sha] = hit
                while len(self._hits) > 10_000:
                    self._hits.popitem(last=False)
                self.store.write_records(
                    [
                        hit.model_copy(
                            update={
                                "image": p.name,
                                "source": p.source,
                                "job_id": job_id,
                                "cached": True,
                                "worker": None,
                            }
                        )
                        for p in fresh[sha]
                    ]
                )
                continue
            first = fresh[sha][0]
            ref = ImageRef(
                sha256=sha,
                names=[p.name for p in fresh[sha]],
                width=first.width,
                height=first.height,
                blob="",
                sources={p.name: p.source for p in fresh[sha] if p.source is not None},
            )
            items.append(ItemState(ref=ref))
            self._data[sha] = first.data
        return items

    def cached_records(self, shas: list[str]) -> list[ImageRecord | None]:
        """Records of earlier jobs with the same settings, read from the parts the cache index names."""
        parts = self.store.indexed_parts(self.spec.fingerprint, shas)
        if self.dataset is None or not any(parts):
            return [None] * len(shas)
        found: dict[str, ImageRecord] = {}
        by_part: dict[str, list[str]] = {}
        for sha, part in zip(shas, parts):
            if part is not None:
                by_part.setdefault(part, []).append(sha)
        for part, wanted in by_part.items():
            job_id, _, name = part.partition("/")
            found.update(self.dataset.find(self.dataset.part_path(job_id, name), wanted))
        return [found.get(sha) for sha in shas]

    def add_alias(self, sha: str, canonical: str, copy: Prepared) -> None:
        """Record a copy of an image this job already has, once, from the original's record."""
        job_id = self.spec.job_id
        if copy.source is not None:  # before the alias: whoever writes its record finds its source
            self.store.add_alias_source(job_id, copy.name, copy.source)
        self.store.add_alias(job_id, sha, copy.name)
        batch_id = self.claims.batch_of(sha)
        if batch_id is not None and not self.store.is_batch_done(job_id, batch_id):
            return  # the worker writes it when the original's batch is done (app.tasks)
        original = self._hits.get(sha) or self.store.record(job_id, canonical)
        if original is None and batch_id is not None and self.dataset is not None:
            original = self.dataset.find(self.dataset.part_path(job_id, batch_id), [sha]).get(sha) or self.find_in_job(
                sha
            )
        if original is not None:  # else not shipped yet: the worker of its batch writes the copy's record
            self.store.write_records([original.model_copy(update={"image": copy.name, "source": copy.source})])

    def find_in_job(self, sha: str) -> ImageRecord | None:
        """The record of an image anywhere in this job's dataset (a collector moved it: rare)."""
        assert self.dataset is not None
        for path in self.dataset.parts(self.spec.job_id):
            found = self.dataset.find(path, [sha])
            if found:
                return found[sha]
        return None

    def ship(
        self, items: list[ItemState], batch_id: str, stats: SubmitStats, reserve: Callable[[str], bool] | None = None
    ) -> bool:
        """Blobs, then the batch's chain; False if nothing was sent (cancelled, or already sent).

        `reserve(batch_id)` waits for room and claims the batch atomically (prepare tasks, many
        at once); without it, this one producer waits until fewer than the limit are in flight.
        """
        job_id = self.spec.job_id
        if not items:
            return False
        if not (reserve(batch_id) if reserve else self.room.wait()):
            for item in items:
                self._data.pop(item.ref.sha256, None)
            return False
        blobs = {i.ref.sha256: self._data.pop(i.ref.sha256) for i in items}
        refs = (
            self._write_shared(blobs)
            if self.settings.shared_dir
            else self.store.put_blobs(job_id, blobs, self.settings.blob_ttl_s)
        )
        for item in items:
            item.ref.blob = refs[item.ref.sha256]
        batch = BatchState(job_id=job_id, batch_id=batch_id, items=items)
        # published first: a batch counted as sent is one Redis has (a failed publish raises here)
        batch_chain(self.celery, batch, self.pick_queue()).apply_async(retry=True, retry_policy=PUBLISH_RETRY)
        self.store.add_chain(job_id, batch_id, chain_task_ids(batch_id))
        self.claims.shipped([i.ref.sha256 for i in items], batch_id)
        stats.batches += 1
        stats.shipped += len(items)  # unique images; their duplicate copies are counted apart
        return True

    def pick_queue(self) -> str:
        """The least-loaded queue serving the job's model; the live set is refreshed every few seconds."""
        r, model, named = (
            self.store.r,
            self.spec.model,
            self.explicit_queues or self.spec.queues or self.settings.queues,
        )
        if time.monotonic() - self._queues_checked > 5:
            self.queues, self._queues_checked = model_queues(r, model, among=self.explicit_queues), time.monotonic()
            self._fallback = None
        n, self._next_queue = self._next_queue % max(1, len(self.queues)), self._next_queue + 1
        if self.queues:
            queue = least_loaded(r, self.queues[n:] + self.queues[:n])
        else:  # none served the job's model a moment ago: a queue to wait on, until the next look
            queue = self._fallback = self._fallback or route_for_model(r, model, named, among=self.explicit_queues)
        if queue not in self.spec.queues:  # remembered, so Job.wait can rebalance it later
            self.spec.queues.append(queue)
            self.store.set_fields(self.spec.job_id, spec=self.spec.model_dump_json())
        return queue

    def _write_shared(self, blobs: dict[str, bytes]) -> dict[str, str]:
        folder = Path(self.settings.shared_dir) / self.spec.job_id
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for sha, data in blobs.items():
            path = folder / f"{sha}.jpg"
            path.write_bytes(data)
            paths[sha] = str(path)
        return paths


def write_failure(
    store: JobStore, job_id: str, name: str, reason: str, sha256: str | None = None, source: str | None = None
) -> None:
    store.write_records([ImageRecord.failure(name, job_id, reason, sha256=sha256, source=source)])
