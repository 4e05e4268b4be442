"""Orchestration overhead: the full path vs the same engine in a plain in-process loop.

Full path: producer (scan, decode, hash, dedupe, cache check, blobs) → Redis → a real Celery
worker running chain(classify | score | summarize) per batch → records in Redis.
Plain loop: the same preparation and the same three stage functions, called in one process.
Both use the deterministic test engine (zero model cost), so the difference is the queue's cost.

    python -m bench.overhead [--images 5000] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from app.schemas import BatchState, ImageRef, ItemState, JobSpec
from app.stages import StageContext, run_stage
from bench.common import Timer, image_folder, redis_server, report, workers
from config.prompts import load_prompt_set
from config.settings import Settings
from producers.api import submit
from producers.prepare import prepare_file
from producers.scan import scan
from producers.submit import limits_from
from workers.engine import Engine
from workers.test_engine import DeterministicTestEngine


def plain_loop(settings: Settings, folder: Path, engine: Engine | None = None,
               stage_seconds: dict[str, float] | None = None) -> int:
    """What a user would write by hand: prepare, then three engine calls per batch, in one process."""
    stage_seconds = {} if stage_seconds is None else stage_seconds
    spec = JobSpec.from_settings(settings, "loop", load_prompt_set(settings.prompt_dir), [str(folder)])
    engine = engine or DeterministicTestEngine()
    limits = limits_from(settings)
    images: dict[str, bytes] = {}
    ctx = StageContext(engine=lambda: engine, spec=spec, images=lambda items: images)
    batch, done = [], 0
    entries = list(scan([folder], True, settings.extensions))
    for i, entry in enumerate(entries):
        p = prepare_file(entry.path, entry.name, limits)
        images[p.sha256] = p.data
        batch.append(ItemState(ref=ImageRef(sha256=p.sha256, names=[p.name], width=p.width, height=p.height,
                                            blob=p.sha256)))
        if len(batch) == settings.batch_size or i == len(entries) - 1:
            state = BatchState(job_id="loop", batch_id=hashlib.md5(str(i).encode()).hexdigest(), items=batch)
            for stage in ("classify", "score", "summary"):
                started = time.perf_counter()
                state = run_stage(stage, state, ctx)
                stage_seconds[stage] = stage_seconds.get(stage, 0.0) + time.perf_counter() - started
            done += len(state.items)
            batch, images = [], {}
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, redis_server() as url:
        folder = image_folder(Path(tmp), args.images)
        settings = Settings(broker_url=url, engine="test", batch_size=args.batch_size, queues=["bench0"],
                            max_inflight_batches=16, use_cache=False)
        with Timer() as loop_t:
            loop_done = plain_loop(settings, folder)
        with workers(settings, 1):
            with Timer() as full_t:
                job = submit(folder, settings)
                progress = job.wait(timeout=600, poll_s=0.05)
        assert progress.outcomes.get("done") == args.images == loop_done, progress.outcomes
    loop_rate, full_rate = args.images / loop_t.seconds, args.images / full_t.seconds
    overhead_ms = 1000 * (1 / full_rate - 1 / loop_rate)
    report("overhead", f"Orchestration overhead, {args.images} images, batch {args.batch_size}, test engine",
           ["path", "seconds", "images/s"],
           [["plain in-process loop", loop_t.seconds, loop_rate], ["full Celery + Redis path", full_t.seconds, full_rate]],
           {"ratio full/loop": round(full_rate / loop_rate, 3), "overhead ms per image": round(overhead_ms, 3)})


if __name__ == "__main__":
    main()
