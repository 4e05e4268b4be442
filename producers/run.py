"""`producer run`: the whole job on one machine, with one command.

Uses the Redis at the configured URL if one answers, else starts an embedded one with its data
in the output folder (so a re-run resumes from the cache); starts one local worker; submits;
shows progress; writes the output folder and exports; stops everything it started, on Ctrl-C
and SIGTERM too.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Sequence
from pathlib import Path

import yaml
from rich.console import Console

from app.store import JobProgress
from config.settings import Settings
from producers.api import Job
from producers.export import export
from producers.local import RedisServer, WorkerProcess, redis_answers
from producers.submit import Submitter

CPU_DEFAULT_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"
GPU_DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"


def default_model() -> str:
    try:
        import torch

        return GPU_DEFAULT_MODEL if torch.cuda.is_available() else CPU_DEFAULT_MODEL
    except ImportError:
        return CPU_DEFAULT_MODEL


def _raise_interrupt(signum, frame):  # SIGTERM takes the same clean path as Ctrl-C
    raise KeyboardInterrupt


def run_local(settings: Settings, roots: Sequence[str | Path], output_dir: str | Path, recursive: bool = True,
              console: Console | None = None, watch=None, worker_timeout: float = 120) -> JobProgress:
    console = console or Console(stderr=True)
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if settings.engine == "vllm":
        from workers.vllm_engine import resolve_model_path

        resolve_model_path(settings.model)  # fail here, clearly, before starting anything
    server = worker = None
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if not redis_answers(settings.broker_url):
            server = RedisServer(out / "redis", appendonly=True).start()
            console.print(f"no Redis at {settings.broker_url}: started an embedded one on {server.url}")
            settings = settings.with_overrides(broker_url=server.url, result_backend=server.url)
        queue = f"local-{uuid.uuid4().hex[:8]}"
        settings = settings.with_overrides(queues=[queue])
        config = out / "vlmq-run.yaml"
        config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
        env = {"VLMQ_CONFIG": str(config), "VLMQ_BROKER_URL": settings.broker_url,
               "VLMQ_RESULT_BACKEND": settings.result_backend or settings.broker_url}
        worker = WorkerProcess(queue, env, name=f"{queue}@{os.uname().nodename}", log_file=out / "worker.log")
        submitter = Submitter(settings)
        worker.start().wait_ready(submitter.celery, worker_timeout)
        console.print(f"worker {worker.name} ready (engine: {settings.engine}, model: {settings.model}); "
                      f"log: {out / 'worker.log'}")
        job_id = submitter.submit(roots, recursive=recursive, queues=[queue])
        job = Job(job_id, settings, submitter.celery, submitter.store)
        progress = watch(job) if watch else job.wait()
        written = export(job.records(), out, ["all"])
        console.print(f"job {job_id}: wrote {', '.join(p.name for p in written)} in {out}")
        return progress
    finally:
        signal.signal(signal.SIGTERM, previous)
        if worker is not None:
            worker.stop()
        if server is not None:
            server.stop()
