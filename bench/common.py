"""Shared harness: a private redis-server, real worker processes, generated images, reporting."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import tempfile
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
