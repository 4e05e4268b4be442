"""Per-worker-process resources (engine, store, caches), created lazily on first use and kept for
the process's life, held the way Celery's docs hold a database connection: a lazy property on the
task base class (`RuntimeTask.runtime`).

The engine is built inside the first task that needs it, not in `worker_process_init` (whose 4 s
alive timeout is far shorter than an engine start), and it is rebuilt if it dies.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from celery import Celery, Task

from app import refs
from app.job_spec import JobSpec
from app.results import ResultsDataset
from app.schemas import ItemState
from app.store import JobStore
from config.errors import JobNotFoundError
from config.settings import Settings
from workers.capacity import measure_capacity
from workers.engine import Engine, create_engine, engine_model_id

log = logging.getLogger(__name__)


class WorkerRuntime:
    def __init__(self, settings: Settings, image_cache_size: int = 256) -> None:
        self.settings = settings
        self.store = JobStore.from_settings(settings)
        self._engine: Engine | None = None
        self.engine_state = "not loaded"  # → loading → ready (or failed); shown in heartbeats and /health
        self.capacity: int | None = None  # images its engine holds at once (workers.capacity); heartbeats say it
        self.on_engine_state: Callable[[], None] = lambda: None  # the heartbeat's nudge, set by app.lifecycle
        self._lock = threading.Lock()
        self._specs: OrderedDict[str, JobSpec] = OrderedDict()
        self._datasets: dict[str, ResultsDataset] = {}
        # The chain's later stages run right after the first on this worker: keep the bytes.
        self._images: OrderedDict[str, bytes] = OrderedDict()
        self._image_cache_size = image_cache_size

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                log.info(
                    "loading engine",
                    extra={"engine": self.settings.engine.backend, "model": engine_model_id(self.settings)},
                )
                self._set_engine_state("loading")
                try:
                    self._engine = create_engine(self.settings)
                    found = measure_capacity(self._engine, self.settings)  # before "ready": the nudged beat says it
                    self.capacity = found.images if found else None
                except Exception:
                    self._set_engine_state("failed")
                    raise
                self._set_engine_state("ready")
            return self._engine

    def _set_engine_state(self, state: str) -> None:
        self.engine_state = state
        self.on_engine_state()

    def has_engine(self) -> bool:
        return self._engine is not None

    def engine_stats(self) -> dict[str, float]:
        """The loaded engine's counters; empty before the engine exists (never loads it)."""
        return self._engine.stats() if self._engine is not None else {}

    def reset_engine(self) -> None:
        """Drop a dead engine; the next batch builds a new one."""
        with self._lock:
            engine, self._engine, self.capacity = self._engine, None, None
            self._set_engine_state("not loaded")
        if engine is not None:
            try:
                engine.close()
            except Exception:  # already dead; nothing left to release
                log.warning("engine close failed", exc_info=True)

    def dataset(self, location: str) -> ResultsDataset:
        if location not in self._datasets:
            self._datasets[location] = ResultsDataset(location)
        return self._datasets[location]

    def spec(self, job_id: str) -> JobSpec:
        if job_id not in self._specs:
            spec = self.store.load_spec(job_id)
            if spec is None:
                raise JobNotFoundError(f"job {job_id} has no spec in Redis (expired or never created)")
            self._specs[job_id] = spec
            while len(self._specs) > 32:
                self._specs.popitem(last=False)
        return self._specs[job_id]

    def images(self, items: Sequence[ItemState], job_id: str) -> dict[str, bytes]:
        """Prepared bytes by sha256, from the local LRU, this job's Redis blobs or its shared files.

        A reference the job's producer did not issue is never read (see app.refs); `run` has
        already given such items their error.
        """
        found: dict[str, bytes] = {}
        missing = []
        for item in items:
            key, sha = item.ref.blob, item.ref.sha256
            if refs.refusal(key, sha, job_id, self.settings.shared_dir):
                continue
            if key in self._images:
                self._images.move_to_end(key)
                found[sha] = self._images[key]
            elif JobStore.is_blob_key(key):
                missing.append(item)
            else:
                try:
                    found[sha] = refs.read_shared(
                        key, sha, job_id, self.settings.shared_dir, self.settings.images.max_file_bytes
                    )
                except refs.RefusedReference as exc:
                    log.warning("shared image refused", extra={"path": key, "error": str(exc)})
        for item, data in zip(missing, self.store.get_blobs([i.ref.blob for i in missing])):
            if data is not None:
                found[item.ref.sha256] = data
                self._remember(item.ref.blob, data)
        return found

    def blobs_to_fetch(self, items: Sequence[ItemState], job_id: str) -> list[str]:
        """This job's Redis blob keys of `items` not held here yet (a link reads them with its first
        look at Redis, app.store.begin_delivery); a reference the job did not issue is never read."""
        shared = self.settings.shared_dir
        return [
            i.ref.blob
            for i in items
            if JobStore.is_blob_key(i.ref.blob)
            and i.ref.blob not in self._images
            and not refs.refusal(i.ref.blob, i.ref.sha256, job_id, shared)
        ]

    def keep_blobs(self, blob_keys: Sequence[str], blobs: Sequence[bytes | None]) -> None:
        for key, data in zip(blob_keys, blobs):
            if data is not None:
                self._remember(key, data)

    def _remember(self, key: str, data: bytes) -> None:
        self._images[key] = data
        while len(self._images) > self._image_cache_size:
            self._images.popitem(last=False)

    def forget_images(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._images.pop(key, None)


class RuntimeTask(Task):
    """Base class of vlmq's tasks: `self.runtime` is the process's one WorkerRuntime, shared by
    every task class (one engine per worker process, not one per task)."""

    # Celery logs each success with a repr of the return value (a whole batch) cut to this many
    # characters; building it was a few per cent of a worker's time and nobody reads past an id
    resultrepr_maxsize = 120

    typing = False
    _shared: WorkerRuntime | None = None

    @property
    def settings(self) -> Settings:
        return self.app.conf.vlmq_settings

    @property
    def runtime(self) -> WorkerRuntime:
        return process_runtime(self.app)


def process_runtime(celery_app: Celery) -> WorkerRuntime:
    """The worker process's runtime, for tasks and for the worker's signal handlers (app.lifecycle)."""
    if RuntimeTask._shared is None:
        RuntimeTask._shared = WorkerRuntime(celery_app.conf.vlmq_settings)
    return RuntimeTask._shared
