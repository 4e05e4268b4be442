"""GPU benchmark: the whole three-stage pipeline and each stage, with a real model, on a GPU.

    python -m bench.gpu --model /models/Qwen2.5-VL-3B-Instruct [--images 2048] [--batch-size 64] [--rounds 3] [--tp 1]

Runs bench.vllm_pipeline with GPU-sized defaults: a warmed Celery worker with the model, at the
default batch size (auto: what its engine holds at once), vs plain in-process vLLM loops over the
same 1024x768 images. Prints the whole pipeline's images/s, each stage's images/s, and the batch
size auto chose. Needs `bash install.sh gpu` and a local model folder.
"""

from __future__ import annotations

import argparse

from bench.vllm_pipeline import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local model folder")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64, help="the batch loop's batch (the pipeline: auto)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tp", type=int, default=1)
    args = parser.parse_args()
    found = run(args.images, args.batch_size, args.model, (1024, 768), args.tp, args.rounds, name="gpu")
    print(f"whole pipeline: {found['pipeline images/s (median)']} images/s")
    for stage, rate in found["per-stage images/s (whole-job loop)"].items():
        print(f"stage {stage}: {rate} images/s")
    print(f"auto batch size chosen: {found['auto batch size chosen']}")


if __name__ == "__main__":
    main()
