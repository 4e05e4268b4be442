"""The full Celery pipeline with the real vLLM engine vs a plain in-process vLLM loop.

(a) pipeline: producer → Redis → a real Celery worker running vLLM → records;
(b) plain loop: the same preparation and one `LLM.chat` per stage per batch, in this process.
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


def vllm_loop(settings: Settings, warm: Path, folder: Path) -> tuple[float, int]:
    from workers.engine import create_engine

    engine = create_engine(settings)
    plain_loop(settings, warm, engine)  # warm-up: compile paths, allocate the KV cache
    with Timer() as t:
        done = plain_loop(settings, folder, engine)
    engine.close()
    return t.seconds, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", help="local model folder (default: the tiny test model)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, redis_server() as url:
        root = Path(tmp)
        model = args.model
        if model is None:
            from workers.tiny_model import build_tiny_model

            model = str(build_tiny_model(root / "tiny-smolvlm"))
        warm = image_folder(root / "warm", args.batch_size, size=(320, 240))
        folder = image_folder(root, args.images, size=(320, 240))
        settings = Settings(broker_url=url, engine="vllm", model=model, batch_size=args.batch_size,
                            queues=["vllm0"], use_cache=False, max_inflight_batches=4)
        with workers(settings, 1, log_dir=root, timeout=120, VLMQ_USE_CACHE="false"):
            submit(warm, settings).wait(timeout=600)  # the worker builds its engine on this job
            with Timer() as pipe_t:
                progress = submit(folder, settings).wait(timeout=1200, poll_s=0.05)
        loop_s, loop_done = vllm_loop(settings, root / "warm", folder)
    assert progress.accounted == args.images == loop_done
    pipe_rate, loop_rate = args.images / pipe_t.seconds, args.images / loop_s
    report("vllm_pipeline", f"vLLM: Celery pipeline vs plain loop, {args.images} images, batch {args.batch_size}",
           ["path", "seconds", "images/s"],
           [["plain in-process vLLM loop", loop_s, loop_rate], ["Celery pipeline, vLLM worker", pipe_t.seconds, pipe_rate]],
           {"ratio pipeline/loop": round(pipe_rate / loop_rate, 3), "model": model,
            "pipeline outcomes": progress.outcomes})


if __name__ == "__main__":
    main()
