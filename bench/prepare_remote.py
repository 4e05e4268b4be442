"""Preparation on a CPU queue: the producer's own CPU per image, and ingest with 1 vs 2 prepare processes.

On the same 12 MP JPEGs, with a real Redis, a GPU worker running the deterministic test engine and
CPU workers (`celery -A app worker -Q cpuN -P prefork -c N`):
  1. producer CPU time per image (its process and its decoding processes, for the submit call):
     local preparation (its own pool, the default) vs preparation on the CPU queue (it only lists
     and enqueues). The baseline is local preparation.
  2. ingest rate (submit to last record) with preparation on a CPU worker of 1 process vs 2.
Runs alternate and the best of `--rounds` is kept: the machine is shared and a busy moment slows
whichever run it falls on.

    python -m bench.prepare_remote [--images 96] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import TreeCpu, redis_server, report
from bench.ingest import make_photos
from config.settings import Settings
from producers.local import WorkerProcess


def producer(args: argparse.Namespace) -> None:
    """One submission (run as a subprocess, so its CPU and its children are its own)."""
    from producers.api import Job
    from producers.submit import Submitter

    settings = Settings(
        queues=[args.gpu_queue],
        batch_size=8,
        prepare_chunk=8,
        use_cache=False,
        prepare_queue=args.prepare_queue,
        redis={"url": args.broker},
        engine={"backend": "test"},
        images={"prepare_workers": 2},
    )
    submitter = Submitter(settings)
    started = time.perf_counter()
    with TreeCpu() as cpu:
        job_id = submitter.submit([args.folder], queues=[args.gpu_queue])
    progress = Job(job_id, settings, submitter.celery, submitter.store).wait(timeout=600, poll_s=0.05)
    wall = (progress.finished_at or time.time()) - progress.created_at
    assert progress.outcomes.get("done") == progress.total, progress.outcomes
    print(
        json.dumps(
            {"cpu_s": cpu.seconds, "images": progress.total, "wall_s": wall, "submit_s": time.perf_counter() - started}
        )
    )


def run_producer(broker: str, folder: Path, gpu_queue: str, prepare_queue: str | None) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "bench.prepare_remote",
        "--producer",
        "--broker",
        broker,
        "--folder",
        str(folder),
        "--gpu-queue",
        gpu_queue,
    ] + (["--prepare-queue", prepare_queue] if prepare_queue else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--producer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--gpu-queue", help=argparse.SUPPRESS)
    parser.add_argument("--prepare-queue", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.producer:
        return producer(args)
    tag = uuid.uuid4().hex[:4]
    gpu, cpu1, cpu2 = f"gpu-{tag}", f"cpu1-{tag}", f"cpu2-{tag}"
    with tempfile.TemporaryDirectory() as tmp, redis_server() as broker:
        folder = Path(tmp) / "photos"
        make_photos(folder, args.images)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VLMQ_")},
            "VLMQ_REDIS__URL": broker,
            "VLMQ_ENGINE__BACKEND": "test",
            "VLMQ_LOG_LEVEL": "WARNING",
        }
        cpu_env = {**env, "VLMQ_PREPARE_ROOTS": json.dumps([str(folder)])}  # storage shared with the producer
        procs = [
            WorkerProcess(gpu, env, name=f"g-{tag}@bench", log_file=Path(tmp) / "gpu.log"),
            WorkerProcess(
                cpu1,
                cpu_env,
                name=f"c1-{tag}@bench",
                log_file=Path(tmp) / "cpu1.log",
                extra_args=["-P", "prefork", "-c", "1"],
            ),
            WorkerProcess(
                cpu2,
                cpu_env,
                name=f"c2-{tag}@bench",
                log_file=Path(tmp) / "cpu2.log",
                extra_args=["-P", "prefork", "-c", "2"],
            ),
        ]
        from app.factory import create_app

        celery_app = create_app(Settings(redis={"url": broker}))
        try:
            for p in procs:
                p.start().wait_ready(celery_app, 120)
            run_producer(broker, folder, gpu, cpu2)  # warm-up: imports, page cache, worker processes
            runs: dict[str, list[dict]] = {}
            for _ in range(args.rounds):
                for label, queue in (("local", None), ("cpu queue, 1 process", cpu1), ("cpu queue, 2 processes", cpu2)):
                    runs.setdefault(label, []).append(run_producer(broker, folder, gpu, queue))
        finally:
            for p in procs:
                p.stop()
    n = args.images
    best = {label: {k: min(r[k] for r in rs) for k in ("cpu_s", "wall_s")} for label, rs in runs.items()}
    rows = [[label, r["cpu_s"] * 1000 / n, n / r["wall_s"]] for label, r in best.items()]
    # each round's own ratio (its 1-process and 2-process runs, back to back), to show the spread
    per_round = sorted(
        a["wall_s"] / b["wall_s"] for a, b in zip(runs["cpu queue, 1 process"], runs["cpu queue, 2 processes"])
    )
    local_cpu = best["local"]["cpu_s"]
    remote_cpu = min(best["cpu queue, 1 process"]["cpu_s"], best["cpu queue, 2 processes"]["cpu_s"])
    speedup = best["cpu queue, 1 process"]["wall_s"] / best["cpu queue, 2 processes"]["wall_s"]
    report(
        "prepare_remote",
        f"Preparation of {n} 12 MP JPEGs: producer's pool vs a CPU queue (best of {args.rounds})",
        ["preparation", "producer CPU ms/image", "ingest images/s"],
        rows,
        {
            "producer CPU, CPU queue / local (required <= 0.2)": round(remote_cpu / local_cpu, 4),
            "ingest, 2 prepare processes / 1 (required >= 1.7)": round(speedup, 2),
            "ingest ratio of each round, sorted": [round(x, 2) for x in per_round],
            "ingest images/s of every run": {k: [round(n / r["wall_s"], 1) for r in rs] for k, rs in runs.items()},
        },
    )


if __name__ == "__main__":
    main()
