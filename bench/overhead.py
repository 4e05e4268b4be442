"""Orchestration overhead: the full path vs a bare Celery chain, and vs a plain in-process loop.

Full path: producer (scan, decode, hash, dedupe, cache check, blobs) → Redis → a real Celery
worker running chain(classify | score | summarize) per batch → records.
Bare chain (the baseline): three no-op tasks per batch on the same Redis with the same Celery
configuration and worker options (bench.bare_app), carrying the same number of image references.
Plain loop: the same preparation and the same three stage functions, called in one process.
The full path uses the deterministic test engine (zero model cost), so what it adds is the queue's cost.
Also counted: Redis round trips per batch of the producer and of the worker (bench.round_trips).

    python -m bench.overhead [--images 5000] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import uuid
from pathlib import Path

import redis
from celery.result import AsyncResult

from app.decode import prepare_file
from app.job_spec import JobSpec
from app.limits import limits_from
from app.schemas import BatchState, ImageRef, ItemState
from app.stages import StageContext, run_stage
from bench import round_trips
from bench.common import Timer, TreeCpu, image_folder, redis_server, report, workers
from config.prompts import load_prompt_set
from config.settings import Settings
from producers.api import submit
from producers.local import WorkerProcess
from producers.scan import scan
from workers.deterministic_engine import DeterministicTestEngine
from workers.engine import Engine


def plain_loop(
    settings: Settings, folder: Path, engine: Engine | None = None, stage_seconds: dict[str, float] | None = None
) -> int:
    """What a user would write by hand: prepare, then three engine calls per batch, in one process."""
    stage_seconds = {} if stage_seconds is None else stage_seconds
    spec = JobSpec.from_settings(settings, "loop", load_prompt_set(settings.prompt_dir), [str(folder)])
    engine = engine or DeterministicTestEngine()
    limits = limits_from(settings)
    images: dict[str, bytes] = {}
    ctx = StageContext(engine=lambda: engine, spec=spec, images=lambda items: images)
    batch, done = [], 0
    entries = list(scan([folder], True, settings.images.extensions))
    for i, entry in enumerate(entries):
        p = prepare_file(entry.path, entry.name, limits)
        images[p.sha256] = p.data
        batch.append(
            ItemState(ref=ImageRef(sha256=p.sha256, names=[p.name], width=p.width, height=p.height, blob=p.sha256))
        )
        if len(batch) == settings.batch_size or i == len(entries) - 1:
            state = BatchState(job_id="loop", batch_id=hashlib.md5(str(i).encode()).hexdigest(), items=batch)
            for stage in ("classify", "score", "summarize"):
                started = time.perf_counter()
                state = run_stage(stage, state, ctx)
                stage_seconds[stage] = stage_seconds.get(stage, 0.0) + time.perf_counter() - started
            done += len(state.items)
            batch, images = [], {}
    return done


def bare_chain_seconds(settings: Settings, images: int) -> tuple[float, float]:
    """Publish one bare chain per batch to a bare worker and wait for every last link's result:
    (seconds, CPU seconds of every process)."""
    os.environ["VLMQ_REDIS__URL"] = settings.redis.url  # bench.bare_app reads its settings at import
    from bench.bare_app import app as bare
    from bench.bare_app import bare_chain

    bare.backend.on_task_call = lambda producer, task_id: None  # as the product's producer: no subscriptions
    queue = f"bare-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(
        queue,
        {"VLMQ_REDIS__URL": settings.redis.url},
        name=f"bare-{queue}@bench",
        app="bench.bare_app",
        extra_args=["--loglevel", "WARNING"],
        cwd=Path(__file__).resolve().parent.parent,
    ).start()
    try:
        worker.wait_ready(bare, 120)
        refs = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(images)]
        with TreeCpu() as cpu, Timer() as t:
            last = [
                bare_chain({"batch_id": f"bare-{i}", "refs": refs[i : i + settings.batch_size]}, queue).apply_async().id
                for i in range(0, images, settings.batch_size)
            ]
            keys = [bare.backend.get_key_for_task(task_id) for task_id in last]
            client = redis.Redis.from_url(settings.redis.url)
            while not all(client.mget(keys)):
                time.sleep(0.01)
        assert all(AsyncResult(task_id, app=bare).successful() for task_id in last)
    finally:
        worker.stop()
    return t.seconds, cpu.seconds


def round_trips_per_batch(settings: Settings, folder: Path, images: int) -> tuple[float, float]:
    """Producer and worker Redis round trips per batch, each counted in its own process (bench.round_trips)."""
    batches = -(-images // settings.batch_size)
    settings = settings.with_overrides(max_inflight_batches=batches + 1, queues=["trips"])
    sent = round_trips.install()
    before = sent()
    job = submit(folder, settings)  # no worker yet: only the producer talks to Redis
    producer = sent() - before
    idle = settings.with_overrides(queues=["trips-idle"])
    with tempfile.TemporaryDirectory() as tmp:
        count_file = Path(tmp) / "worker-round-trips"
        with workers(idle, 1, **round_trips.worker_environment(count_file)) as (proc,):
            time.sleep(1)  # started on an empty queue: its start-up is not counted
            started = round_trips.read_count(count_file)
            job.celery.control.add_consumer("trips", destination=[proc.name], reply=True)
            job.wait(timeout=600, poll_s=0.5)
            worker = round_trips.read_count(count_file) - started
    return producer / batches, worker / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, redis_server() as url:
        folder = image_folder(Path(tmp), args.images)
        settings = Settings(
            batch_size=args.batch_size,
            queues=["bench0"],
            max_inflight_batches=16,
            use_cache=False,
            redis={"url": url},
            engine={"backend": "test"},
        )
        with TreeCpu() as loop_cpu, Timer() as loop_t:
            loop_done = plain_loop(settings, folder)
        bare_s, bare_cpu = bare_chain_seconds(settings, args.images)
        with workers(settings, 1):
            with TreeCpu() as full_cpu, Timer() as full_t:
                job = submit(folder, settings)
                progress = job.wait(timeout=600, poll_s=0.05)
        assert progress.outcomes.get("done") == args.images == loop_done, progress.outcomes
        small = image_folder(Path(tmp) / "trips", min(args.images, 1024))
        producer_trips, worker_trips = round_trips_per_batch(settings, small, min(args.images, 1024))
    loop_rate, full_rate, bare_rate = args.images / loop_t.seconds, args.images / full_t.seconds, args.images / bare_s
    overhead_ms = 1000 * (1 / full_rate - 1 / loop_rate)
    report(
        "overhead",
        f"Orchestration overhead, {args.images} images, batch {args.batch_size}, test engine",
        ["path", "seconds", "images/s"],
        [
            ["plain in-process loop", loop_t.seconds, loop_rate],
            ["bare Celery chain, 3 no-op tasks per batch (baseline)", bare_s, bare_rate],
            ["full Celery + Redis path", full_t.seconds, full_rate],
        ],
        {
            "ratio full/bare chain": round(full_rate / bare_rate, 3),
            "ratio full/loop": round(full_rate / loop_rate, 3),
            "overhead ms per image vs loop": round(overhead_ms, 3),
            # where the ratio goes on a small machine: every process's CPU (producer, its decoding
            # pool, worker, Redis) per image; the bare chain decodes nothing
            "CPU ms per image, all processes": {
                "plain loop": round(1000 * loop_cpu.seconds / args.images, 3),
                "bare chain": round(1000 * bare_cpu / args.images, 3),
                "full path": round(1000 * full_cpu.seconds / args.images, 3),
            },
            "Redis round trips per batch": {"producer": round(producer_trips, 1), "worker": round(worker_trips, 1)},
        },
    )


if __name__ == "__main__":
    main()
