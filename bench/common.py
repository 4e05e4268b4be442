"""Shared harness: a private redis-server, real worker processes, generated images, reporting."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from app.factory import create_app
from config.settings import Settings
from producers.local import RedisServer, WorkerProcess
from tests.images import make_good_images

RESULTS = Path(__file__).parent / "results"
console = Console()


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp, RedisServer(tmp) as server:
        yield server.url


@contextlib.contextmanager
def workers(
    settings: Settings, n: int = 1, log_dir: Path | None = None, timeout: float = 300, **env: str
) -> Iterator[list[WorkerProcess]]:
    """n real `celery -A app worker` processes, one queue each (settings.queues[i])."""
    celery_app = create_app(settings)
    procs = []
    try:
        for i in range(n):
            queue = settings.queues[i % len(settings.queues)]
            base = {**settings.worker_environment(), "VLMQ_LOG_LEVEL": "WARNING", **env}
            log = (log_dir or Path(tempfile.gettempdir())) / f"bench-worker-{i}.log"
            proc = WorkerProcess(
                queue,
                base,
                name=f"bench{i}-{uuid.uuid4().hex[:4]}@bench",
                log_file=log,
                extra_args=["--loglevel", "WARNING"],
            )
            procs.append(proc.start())
        for proc in procs:
            proc.wait_ready(celery_app, timeout)
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def image_folder(root: Path, n: int, size: tuple[int, int] = (64, 48)) -> Path:
    folder = root / f"images-{n}"
    if not folder.is_dir() or len(os.listdir(folder)) != n:
        make_good_images(folder, n, size=size)
    return folder


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def report(name: str, title: str, columns: list[str], rows: list[list[object]], extra: dict) -> None:
    table = Table(*columns, title=f"{title} — {machine()}")
    for row in rows:
        table.add_row(*(f"{v:,.2f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)
    for key, value in extra.items():
        console.print(f"{key}: {value}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": name,
                "machine": machine(),
                "when": time.strftime("%Y-%m-%d %H:%M"),
                "columns": columns,
                "rows": rows,
                **extra,
            },
            indent=2,
            default=str,
        )
    )
    console.print(f"written: {out}")


class TreeCpu:
    """CPU seconds of this process and all its descendants (the pool's forkserver children included),
    sampled every 50 ms so processes that exit before the end still count (psutil)."""

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process()
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _cpu(self, proc) -> float:
        t = proc.cpu_times()
        return t.user + t.system

    def _sample(self) -> None:
        while not self.stop.is_set():
            self.snapshot()
            time.sleep(0.05)

    def snapshot(self) -> None:
        for child in self.me.children(recursive=True):
            try:
                self.seen[child.pid] = max(self.seen.get(child.pid, 0.0), self._cpu(child))
            except Exception:  # exited between listing and reading
                pass

    def __enter__(self) -> TreeCpu:
        self.snapshot()
        self.before = self._cpu(self.me) + sum(self.seen.values())
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.snapshot()
        self.stop.set()
        self.thread.join()
        self.seconds = self._cpu(self.me) + sum(self.seen.values()) - self.before
