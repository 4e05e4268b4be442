"""The full Celery pipeline with the real vLLM engine vs a plain in-process vLLM loop.

(a) pipeline: producer → Redis → a real Celery worker running vLLM → records;
(b) plain loop: the same preparation and one `LLM.chat` per stage per batch, in this process;
(c) whole-job loop: one `LLM.chat` per stage over all the images at once (the engine's best case).
Same images, same batch size, same model, one run; engine start-up excluded from both (each
engine is warmed on other images first). Default model: the tiny random-weight SmolVLM
(real architecture) built on the spot; pass --model for a real one.

    python -m bench.vllm_pipeline [--images 256] [--batch-size 32] [--model PATH]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench.common import Timer, image_folder, redis_server, report, workers
from bench.overhead import plain_loop
from config.settings import Settings
from producers.api import submit

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")


def vllm_loop(settings: Settings, warm: Path, folder: Path, stage_seconds: dict[str, float]) -> tuple[float, int]:
    from workers.engine import create_engine

    engine = create_engine(settings)
    plain_loop(settings, warm, engine)  # warm-up: compile paths, allocate the KV cache
    with Timer() as t:
        done = plain_loop(settings, folder, engine, stage_seconds)
    engine.close()
    return t.seconds, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", help="local model folder (default: the tiny test model)")
    parser.add_argument("--image-size", type=int, nargs=2, default=[320, 240])
    parser.add_argument("--tp", type=int, default=1, help="tensor_parallel_size")
    args = parser.parse_args()
    run(args.images, args.batch_size, args.model, tuple(args.image_size), args.tp)


def run(images: int, batch_size: int, model: str | None, image_size: tuple[int, int], tp: int = 1) -> None:
    args = argparse.Namespace(images=images, batch_size=batch_size)
    with tempfile.TemporaryDirectory() as tmp, redis_server() as url:
        root = Path(tmp)
        if model is None:
            from workers.tiny_model import build_tiny_model

            model = str(build_tiny_model(root / "tiny-smolvlm"))
        warm = image_folder(root / "warm", args.batch_size, size=image_size)
        folder = image_folder(root, args.images, size=image_size)
        settings = Settings(
            batch_size=args.batch_size,
            queues=["vllm0"],
            use_cache=False,
            max_inflight_batches=4,
            redis={"url": url},
            engine={"backend": "vllm", "model": model, "tensor_parallel_size": tp},
        )
        with workers(
            settings, 1, log_dir=root, timeout=120, VLMQ_USE_CACHE="false", VLMQ_ENGINE__TENSOR_PARALLEL_SIZE=str(tp)
        ):
            submit(warm, settings).wait(timeout=600)  # the worker builds its engine on this job
            with Timer() as pipe_t:
                progress = submit(folder, settings).wait(timeout=1200, poll_s=0.05)
        stage_seconds: dict[str, float] = {}
        loop_s, loop_done = vllm_loop(settings, root / "warm", folder, stage_seconds)
        whole_s, whole_done = vllm_loop(settings.with_overrides(batch_size=args.images), root / "warm", folder, {})
    assert progress.accounted == args.images == loop_done == whole_done
    pipe_rate, loop_rate, whole_rate = args.images / pipe_t.seconds, args.images / loop_s, args.images / whole_s
    report(
        "vllm_pipeline",
        f"vLLM: Celery pipeline vs plain loops, {args.images} images, batch {args.batch_size}",
        ["path", "seconds", "images/s"],
        [
            ["plain in-process vLLM loop, one call per stage per batch", loop_s, loop_rate],
            ["plain in-process vLLM loop, one call per stage for the whole job", whole_s, whole_rate],
            ["Celery pipeline, vLLM worker", pipe_t.seconds, pipe_rate],
        ],
        {
            "ratio pipeline/whole-job loop": round(pipe_rate / whole_rate, 3),
            "ratio pipeline/batch loop": round(pipe_rate / loop_rate, 3),
            "model": model,
            "per-stage images/s (loop)": {k: round(args.images / v, 2) for k, v in stage_seconds.items()},
            "pipeline outcomes": progress.outcomes,
        },
    )


if __name__ == "__main__":
    main()
