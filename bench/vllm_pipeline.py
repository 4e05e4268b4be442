"""The full Celery pipeline with the real vLLM engine vs a plain in-process vLLM loop.

(a) pipeline: producer → Redis → a real Celery worker running vLLM → records, with the default
    settings: batch size auto (what the worker's engine holds at once, app.batch_size);
(b) batch loop: the same preparation and one `LLM.chat` per stage per batch of --batch-size, in
    this process;
(c) whole-job loop: one `LLM.chat` per stage over all the images at once (the engine's best case).
Same model; engine start-up excluded (each engine is warmed on other images first). --rounds N
alternates (a) and (c) N times, each round on images of its own (no prefix-cache help from an
earlier round), and reports the median ratio; (b) runs once. Default model: the tiny random-weight
SmolVLM (real architecture) built on the spot; pass --model for a real one.

    python -m bench.vllm_pipeline [--images 256] [--batch-size 32] [--rounds 3] [--model PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from bench.common import Timer, image_folder, redis_server, report, workers
from bench.overhead import plain_loop
from config.settings import Settings
from producers.api import submit
from tests.images import make_good_images

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")


def timed_loop(settings: Settings, engine, folder: Path, stage_seconds: dict[str, float]) -> tuple[float, int]:
    with Timer() as t:
        done = plain_loop(settings, folder, engine, stage_seconds)
    return t.seconds, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32, help="the batch loop's batch (the pipeline: auto)")
    parser.add_argument("--rounds", type=int, default=3, help="pipeline / whole-job loop pairs (median reported)")
    parser.add_argument("--model", help="local model folder (default: the tiny test model)")
    parser.add_argument("--image-size", type=int, nargs=2, default=[320, 240])
    parser.add_argument("--tp", type=int, default=1, help="tensor_parallel_size")
    args = parser.parse_args()
    run(args.images, args.batch_size, args.model, tuple(args.image_size), args.tp, args.rounds)


def run(
    images: int,
    batch_size: int,
    model: str | None,
    image_size: tuple[int, int],
    tp: int = 1,
    rounds: int = 3,
    name: str = "vllm_pipeline",
) -> dict:
    from workers.engine import create_engine

    with tempfile.TemporaryDirectory() as tmp, redis_server() as url:
        root = Path(tmp)
        if model is None:
            from workers.tiny_model import build_tiny_model

            model = str(build_tiny_model(root / "tiny-smolvlm"))
        warm = image_folder(root / "warm", 32, size=image_size)
        folders = [root / f"round-{i}" for i in range(rounds + 1)]  # the last one: the batch loop's
        for i, folder in enumerate(folders):  # images of its own per round: no prefix-cache help
            make_good_images(folder, images, size=image_size, start=1000 + i * images)
        settings = Settings(  # default batch size: auto
            queues=["vllm0"],
            use_cache=False,
            max_inflight_batches=4,
            redis={"url": url},
            engine={"backend": "vllm", "model": model, "tensor_parallel_size": tp},
        )
        pipe_s, whole_s, chosen = [], [], set()
        stage_seconds: dict[str, float] = {}  # the batch loop's
        whole_stages: dict[str, float] = {}  # the whole-job loop's, all rounds
        with workers(
            settings, 1, log_dir=root, timeout=120, VLMQ_USE_CACHE="false", VLMQ_ENGINE__TENSOR_PARALLEL_SIZE=str(tp)
        ):
            submit(warm, settings).wait(timeout=600)  # the worker builds its engine (and measures it) on this job
            submit(warm, settings).wait(timeout=600)  # … and runs once more at the size auto now picks
            engine, whole = create_engine(settings), settings.with_overrides(batch_size=images)
            plain_loop(whole, warm, engine)  # warm-up: compile paths, allocate the KV cache
            for i, folder in enumerate(folders[:rounds]):
                order = ("pipe", "whole") if i % 2 == 0 else ("whole", "pipe")  # neither always goes first
                for which in order:
                    if which == "pipe":
                        with Timer() as t:
                            job = submit(folder, settings)
                            progress = job.wait(timeout=1200, poll_s=0.05)
                        assert progress.accounted == images, progress
                        pipe_s.append(t.seconds)
                        chosen.add(job.store.load_spec(job.id).batch_size)
                    else:
                        seconds, done = timed_loop(whole, engine, folder, whole_stages)
                        assert done == images
                        whole_s.append(seconds)
            loop_s, loop_done = timed_loop(
                settings.with_overrides(batch_size=batch_size), engine, folders[-1], stage_seconds
            )
            assert loop_done == images
            engine.close()
    ratios = [w / p for p, w in zip(pipe_s, whole_s)]  # pipeline rate / whole-job rate, per round
    pipe_rate, whole_rate = images / statistics.median(pipe_s), images / statistics.median(whole_s)
    loop_rate = images / loop_s
    results = {
        "ratio pipeline/whole-job loop (median)": round(statistics.median(ratios), 3),
        "ratios per round": [round(r, 3) for r in ratios],
        "ratio pipeline/batch loop": round(pipe_rate / loop_rate, 3),
        "auto batch size chosen": sorted(chosen)[0] if len(chosen) == 1 else sorted(chosen),
        "pipeline images/s (median)": round(pipe_rate, 2),
        "model": model,
        "per-stage images/s (whole-job loop)": {k: round(rounds * images / v, 2) for k, v in whole_stages.items()},
        "per-stage images/s (batch loop)": {k: round(images / v, 2) for k, v in stage_seconds.items()},
        "pipeline outcomes (last round)": progress.outcomes,
    }
    report(
        name,
        f"vLLM: Celery pipeline (batch size auto) vs plain loops, {images} images, {rounds} rounds",
        ["path", "seconds (median)", "images/s"],
        [
            [f"plain in-process vLLM loop, one call per stage per batch of {batch_size}", loop_s, loop_rate],
            [
                "plain in-process vLLM loop, one call per stage for the whole job",
                statistics.median(whole_s),
                whole_rate,
            ],
            ["Celery pipeline, vLLM worker, default settings", statistics.median(pipe_s), pipe_rate],
        ],
        results,
    )
    return results


if __name__ == "__main__":
    main()
