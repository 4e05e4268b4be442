"""Scaling with work (1k/10k/100k images) and with workers (1/2/4), test engine.

    python -m bench.scaling work [--sizes 1000 10000 100000]
    python -m bench.scaling workers [--counts 1 2 4] [--images 1536] [--delay 0.2]

`work`: the full path, zero-cost engine; throughput should stay flat and the producer's peak RSS
bounded as the job grows. `workers`: the engine sleeps a fixed time per batch (a stand-in for a
GPU's time); throughput should grow near-linearly with workers.
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path

from bench.common import Timer, image_folder, peak_rss_mb, redis_server, report, workers
from config.settings import Settings
from producers.api import submit


def work(sizes: list[int], batch_size: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, redis_server() as url:
        settings = Settings(
            batch_size=batch_size, queues=["bench0"], use_cache=False, redis={"url": url}, engine={"backend": "test"}
        )
        with workers(settings, 1):
            for n in sizes:
                folder = image_folder(Path(tmp), n, size=(32, 24))
                with Timer() as t:
                    progress = submit(folder, settings).wait(timeout=1800, poll_s=0.1)
                assert progress.outcomes.get("done") == n, progress.outcomes
                rows.append([n, t.seconds, n / t.seconds, peak_rss_mb()])
    report(
        "scaling_work",
        f"Scaling with work, batch {batch_size}, 1 worker, test engine",
        ["images", "seconds", "images/s", "producer peak RSS MB"],
        rows,
        {"throughput largest/smallest": round(rows[-1][2] / rows[0][2], 3)},
    )


def by_workers(counts: list[int], images: int, delay: float, batch_size: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, redis_server() as url:
        folder = image_folder(Path(tmp), images, size=(32, 24))
        for n in counts:
            queues = [f"gpu{i}-{uuid.uuid4().hex[:4]}" for i in range(n)]
            settings = Settings(
                batch_size=batch_size,
                queues=queues,
                use_cache=False,
                max_inflight_batches=4 * n,
                redis={"url": url},
                engine={"backend": "test"},
            )
            with workers(settings, n, VLMQ_ENGINE__TEST_DELAY_S=str(delay)):
                with Timer() as t:
                    progress = submit(folder, settings).wait(timeout=1800, poll_s=0.05)
            assert progress.outcomes.get("done") == images, progress.outcomes
            rows.append([n, t.seconds, images / t.seconds])
    base = rows[0][2]
    for row in rows:
        row.append(row[2] / base / row[0])  # parallel efficiency
    report(
        "scaling_workers",
        f"Scaling with workers, {images} images, batch {batch_size}, {delay:g} s per engine call",
        ["workers", "seconds", "images/s", "efficiency"],
        rows,
        {"speed-up at most workers": round(rows[-1][2] / base, 2)},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    w = sub.add_parser("work")
    w.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    w.add_argument("--batch-size", type=int, default=32)
    k = sub.add_parser("workers")
    k.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4])
    k.add_argument("--images", type=int, default=1536)
    k.add_argument("--delay", type=float, default=0.2)
    k.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.what == "work":
        work(args.sizes, args.batch_size)
    else:
        by_workers(args.counts, args.images, args.delay, args.batch_size)


if __name__ == "__main__":
    main()
