"""GPU benchmark: the whole three-stage pipeline and each stage, with a real model, on a GPU.

    python -m bench.gpu --model /models/Qwen2.5-VL-3B-Instruct [--images 2048] [--batch-size 64] [--tp 1]

Runs bench.vllm_pipeline with GPU-sized defaults: a warmed Celery worker with the model vs a
plain in-process vLLM loop over the same 1024x768 images; prints images/s for both, their
ratio, and images/s per stage. Needs `bash install.sh gpu` and a local model folder.
"""

from __future__ import annotations

import argparse

from bench.vllm_pipeline import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local model folder")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tp", type=int, default=1)
    args = parser.parse_args()
    run(args.images, args.batch_size, args.model, (1024, 768), args.tp)


if __name__ == "__main__":
    main()
