"""`producer workers`: one Celery worker per tensor-parallel group on this host, supervised.

    producer workers --gpus 0,1,2,3 --tp 2    → gpu0 on GPUs 0,1 and gpu1 on GPUs 2,3

Each worker gets its own queue, CUDA_VISIBLE_DEVICES and concurrency 1; a worker that dies is
restarted (its session, vLLM engine processes included, is killed first); queued work of a
queue left without a worker is moved to live ones. Ctrl-C or SIGTERM stops them all.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from app.factory import create_app
from app.redis_client import redis_client
from app.routing import Rebalancer
from config.errors import ConfigError
from config.settings import Settings
from producers.local import WorkerProcess


def tp_groups(gpus: Sequence[str], tp: int) -> list[list[str]]:
    if tp < 1 or len(gpus) % tp:
        raise ConfigError(f"{len(gpus)} GPUs cannot be split into tensor-parallel groups of {tp}")
    return [list(gpus[i : i + tp]) for i in range(0, len(gpus), tp)]


def plan_workers(
    settings: Settings, gpus: Sequence[str], tp: int, log_dir: Path, queue_prefix: str = "gpu", first_index: int = 0
) -> list[WorkerProcess]:
    host = socket.gethostname()
    workers = []
    for i, group in enumerate(tp_groups(gpus, tp), start=first_index):
        queue = f"{queue_prefix}{i}"
        env = {
            **settings.with_overrides(engine={"tensor_parallel_size": tp}).worker_environment(),
            "CUDA_VISIBLE_DEVICES": ",".join(group),
        }
        workers.append(WorkerProcess(queue, env, name=f"{queue}@{host}", log_file=log_dir / f"{queue}.log"))
    return workers


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def supervise(
    settings: Settings, workers: list[WorkerProcess], on_event=print, poll_s: float = 1.0, ready_timeout: float = 120
) -> None:
    """Start the workers, restart any that exits, rebalance orphaned queues; stop all on a signal."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    celery_app = create_app(settings)
    rebalancer = Rebalancer(redis_client(settings))
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.wait_ready(celery_app, ready_timeout)
            on_event(
                f"worker {w.name} ready on queue {w.queue} (GPUs {w.env['CUDA_VISIBLE_DEVICES']}), log {w.log_file}"
            )
        while True:
            time.sleep(poll_s)
            for w in workers:
                if not w.alive():
                    on_event(f"worker {w.name} exited ({w.proc.returncode if w.proc else '?'}); restarting")
                    w.kill()  # whatever the dead leader left in its session (engine processes)
                    w.start()
            rebalancer.run([w.queue for w in workers])
    except KeyboardInterrupt:
        on_event("stopping workers …")
    finally:
        signal.signal(signal.SIGTERM, previous)
        for w in workers:
            w.stop()
        on_event("all workers stopped")
