"""`/metrics`: Prometheus text, read from Redis at scrape time plus the service's own histograms.

From Redis (the same data `producer status` and `producer fleet` read), per scrape:
- vlmq_images_total{model, worker, outcome}: images done / failed / cached in the last
  `job_history` jobs (outcome hashes; the model is the job's). Cached images name no worker.
- vlmq_jobs{status}, vlmq_queue_depth{queue}, vlmq_workers_live{model, engine},
  vlmq_worker_batches_total{worker, stage}: batches each worker ran per stage (chat included).
From this process: chat requests by status, chat batch latency (send → answers) and size.
A finished job's counts never change, so they are computed once and kept.
"""

from __future__ import annotations

import logging
from collections import Counter

import redis
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from app import keys
from app.heartbeat import live_workers
from app.routing import pending
from app.store import JobStore
from producers.serve.batcher import BUCKETS

log = logging.getLogger(__name__)


class FleetCollector:
    def __init__(self, store: JobStore, queues: list[str], job_history: int) -> None:
        self.store = store
        self.queues = queues
        self.job_history = job_history
        self._finished: dict[str, tuple[str, Counter]] = {}  # job id → (status, outcome counts)

    def _job_counts(self, job_id: str) -> tuple[str, Counter] | None:
        if job_id in self._finished:
            return self._finished[job_id]
        spec = self.store.load_spec(job_id)
        if spec is None:
            return None
        counts: Counter = Counter()
        for field, n in self.store.counts(job_id).items():
            outcome, _, worker = field.partition("|")
            if worker:  # "<outcome>|<worker>" fields; the bare "<outcome>" ones are their sums
                counts[(spec.model, "" if worker == "-" else worker, outcome)] += n
        progress = self.store.progress(job_id)
        if progress.finished or progress.status == "cancelled":
            self._finished[job_id] = (progress.status, counts)
        return progress.status, counts

    def collect(self):
        try:
            yield from self._collect()
        except redis.RedisError as exc:  # a scrape during a Redis outage shows only the service's own metrics
            log.warning("metrics: Redis did not answer", extra={"error": str(exc)})

    def _collect(self):
        images = CounterMetricFamily(
            "vlmq_images", "Images accounted for in recent jobs, by outcome", labels=["model", "worker", "outcome"]
        )
        jobs = GaugeMetricFamily("vlmq_jobs", "Recent jobs by status", labels=["status"])
        totals: Counter = Counter()
        statuses: Counter = Counter()
        for job_id in self.store.job_ids(self.job_history):
            found = self._job_counts(job_id)
            if found:
                statuses[found[0]] += 1
                totals.update(found[1])
        for (model, worker, outcome), n in sorted(totals.items()):
            images.add_metric([model, worker, outcome], n)
        for status, n in sorted(statuses.items()):
            jobs.add_metric([status], n)
        yield images
        yield jobs
        workers = live_workers(self.store.r)
        live = GaugeMetricFamily(
            "vlmq_workers_live", "Live workers by model and engine state", labels=["model", "engine"]
        )
        for (model, engine), n in sorted(Counter((w.get("model", ""), w.get("engine", "")) for w in workers).items()):
            live.add_metric([model, engine], n)
        yield live
        queues = sorted({q for w in workers for q in w["queues"]} | set(self.queues))
        depth = GaugeMetricFamily("vlmq_queue_depth", "Messages waiting per queue", labels=["queue"])
        for queue, n in pending(self.store.r, queues).items():
            depth.add_metric([queue], n)
        yield depth
        batches = CounterMetricFamily(
            "vlmq_worker_batches", "Batches run per worker and stage", labels=["worker", "stage"]
        )
        for key in self.store.r.scan_iter(f"{keys.WORKER_STATS_PREFIX}*", count=1000):
            worker = key.decode().split(":", 2)[2]
            for name, value in self.store.worker_stats(worker).items():
                if name.endswith(".batches"):
                    batches.add_metric([worker, name.rsplit(".", 1)[0]], value)
        yield batches


class ServiceMetrics:
    """The service's own metrics, in a registry of its own (several apps may live in one process)."""

    def _per_model(self, name: str, doc: str, buckets: tuple[float, ...] = BUCKETS) -> Histogram:
        return Histogram(name, doc, ["model"], buckets=buckets, registry=self.registry)

    def __init__(self, store: JobStore, queues: list[str], job_history: int) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(FleetCollector(store, queues, job_history))
        self.requests = PromCounter(
            "vlmq_chat_requests",
            "Chat completion requests by model and HTTP status",
            ["model", "status"],
            registry=self.registry,
        )
        self.latency = self._per_model("vlmq_chat_batch_seconds", "Chat batch latency, task sent to answers received")
        self.sizes = self._per_model(
            "vlmq_chat_batch_size", "Requests per chat batch (micro-batching)", (1, 2, 4, 8, 16, 32, 64, 128)
        )
        self.engine = self._per_model("vlmq_chat_engine_seconds", "Engine time of a chat batch on its worker")
