"""Redis is a window, not a warehouse: what a job leaves in Redis, Redis's peak, flat reads.

One real worker (the deterministic test engine: zero model cost) and the real producer CLI in a
subprocess (`producer submit --wait`, which collects). Measured per job: Redis `used_memory` before
and after (bytes left per image), Redis's peak while it runs (sampled every 50 ms), the producer's
peak RSS, the dataset's rows. Then `producer export` of the small and the large job in a
subprocess (peak RSS, flat ≈ 1) and each export read back and counted.

    python -m bench.window [--small 20000] [--large 200000]

The baseline is the small job: the large one's Redis peak is printed as a ratio to it (flat ≈ 1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import redis

from app.results import ResultsDataset
from bench.common import image_folder, redis_server, report, workers
from config.settings import Settings


def used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


class PeakSampler:
    def __init__(self, r: redis.Redis) -> None:
        self.r, self.peak, self._stop = r, used_memory(r), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, used_memory(self.r))

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cli(settings: Settings, *args: str) -> tuple[str, float]:
    """Run the producer CLI; returns its stdout and its own peak RSS in MB (wait4's rusage)."""
    env = {
        **os.environ,
        "VLMQ_REDIS__URL": settings.redis.url,
        "VLMQ_ENGINE__BACKEND": "test",
        "VLMQ_QUEUES": json.dumps(settings.queues),
        "VLMQ_RESULTS_DIR": settings.results_dir,
        "VLMQ_BATCH_SIZE": str(settings.batch_size),
    }
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "-m", "producers.cli", *args], env=env, stdout=out)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"producer {' '.join(args)} exited {proc.returncode}")
        out.seek(0)
        return out.read(), usage.ru_maxrss / 1024


def run_job(settings: Settings, r: redis.Redis, folder: Path, no_cache: bool) -> dict[str, object]:
    time.sleep(1)  # settle: the previous job's last writes are in
    before = used_memory(r)
    with PeakSampler(r) as peak:
        started = time.perf_counter()
        out, rss = cli(settings, "submit", str(folder), "--wait", *(["--no-cache"] if no_cache else []))
        seconds = time.perf_counter() - started
    job_id = out.strip().splitlines()[-1].split()[-1]
    time.sleep(1)
    after = used_memory(r)
    n = len(os.listdir(folder))
    rows = ResultsDataset(settings.results_dir).count(job_id)
    return {
        "job_id": job_id,
        "images": n,
        "cache": not no_cache,
        "seconds": seconds,
        "rows": rows,
        "left_per_image": (after - before) / n,
        "peak_mb": (peak.peak - before) / 2**20,
        "producer_rss_mb": rss,
    }


def export_job(settings: Settings, job: dict[str, object], out: str) -> dict[str, object]:
    """`producer export` (parquet and jsonl) in a subprocess: its peak RSS, and the files read back."""
    _, rss = cli(settings, "export", str(job["job_id"]), "--format", "parquet", "--format", "jsonl", "--output", out)
    with open(f"{out}/results.jsonl", encoding="utf-8") as fh:
        names = [json.loads(line)["image"] for line in fh]
    return {
        "images": job["images"],
        "rss_mb": rss,
        "jsonl_rows": len(names),
        "distinct": len(set(names)),
        "parquet_rows": pq.ParquetFile(f"{out}/results.parquet").metadata.num_rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--large", type=int, default=200_000)
    args = parser.parse_args()
    root = Path(tempfile.gettempdir()) / "vlmq-bench-window"
    small, large = image_folder(root, args.small), image_folder(root, args.large)
    with redis_server() as url, tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            queues=["window0"], results_dir=f"{tmp}/results", redis={"url": url}, engine={"backend": "test"}
        )
        r = redis.Redis.from_url(url)
        with workers(settings, 1):
            jobs = [
                run_job(settings, r, small, no_cache=False),
                run_job(settings, r, small, no_cache=True),
                run_job(settings, r, large, no_cache=True),
            ]
            exports = [export_job(settings, job, f"{tmp}/export-{job['images']}") for job in jobs[1:]]
    rows = [
        [
            j["images"],
            "on" if j["cache"] else "off",
            j["seconds"],
            j["rows"],
            j["left_per_image"],
            j["peak_mb"],
            j["producer_rss_mb"],
        ]
        for j in jobs
    ]
    peak_ratio = jobs[2]["peak_mb"] / max(jobs[1]["peak_mb"], 1e-9)
    report(
        "window",
        "Redis window per job (test engine, 1 worker)",
        ["images", "cache", "seconds", "dataset rows", "bytes left/image", "Redis peak MB", "producer RSS MB"],
        rows,
        {
            "large vs small Redis peak (no cache)": f"{peak_ratio:.2f}x",
            **{
                f"export of the {e['images']}-image job": f"peak RSS {e['rss_mb']:.0f} MB; parquet {e['parquet_rows']} "
                f"rows, jsonl {e['jsonl_rows']} rows, {e['distinct']} distinct images"
                for e in exports
            },
            "export peak RSS, large vs small": f"{exports[1]['rss_mb'] / exports[0]['rss_mb']:.2f}x",
        },
    )


if __name__ == "__main__":
    main()
