"""Redis round trips of a process, counted where redis-py sends a request (a pipeline is one).

Server counters cannot tell round trips apart: Redis answers a large pipeline (a batch's image
blobs) in several socket writes, and a publish is delivered to every subscriber. So each process
counts its own requests: `install()` wraps redis-py's one sending method (kombu's BRPOP and every
pipeline go through it too). The bench's worker processes load it at start-up through
bench/trips/sitecustomize.py when COUNT_FILE_ENV names a file; they rewrite the count there
every 0.2 s. A measurement hook for benchmarks only: the product never loads it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

COUNT_FILE_ENV = "VLMQ_BENCH_ROUND_TRIPS_FILE"
SITE_DIR = Path(__file__).resolve().parent / "trips"


def install(count_file: str | None = None) -> Callable[[], int]:
    """Count this process's Redis requests from now on; returns a reader of the count."""
    import redis.connection

    sent = [0]
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self, command, check_health=True):
        sent[0] += 1
        return send(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counted
    if count_file:

        def publish() -> None:
            temp = Path(f"{count_file}.tmp")
            while True:  # replaced whole, so a reader never sees a half-written number
                temp.write_text(str(sent[0]))
                os.replace(temp, count_file)
                time.sleep(0.2)

        threading.Thread(target=publish, daemon=True, name="round-trips").start()
    return lambda: sent[0]


def worker_environment(count_file: Path) -> dict[str, str]:
    """What a worker process needs in its environment to count its round trips into `count_file`."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (str(SITE_DIR), root, os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, COUNT_FILE_ENV: str(count_file)}


def read_count(count_file: Path, timeout_s: float = 60) -> int:
    """The count a worker last wrote (every 0.2 s), waiting for its first one (a slow start)."""
    time.sleep(0.5)
    deadline = time.monotonic() + timeout_s
    while not count_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return int(count_file.read_text())
