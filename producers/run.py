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

from app.progress import JobProgress
from config.settings import Settings, redact_url
from producers.api import Job
from producers.export import export
from producers.local import RedisServer, WorkerProcess, redis_answers
from producers.submit import Submitter, new_job_id

CPU_DEFAULT_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"
GPU_DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"


def default_model() -> str:
    try:
        import torch

        return GPU_DEFAULT_MODEL if torch.cuda.is_available() else CPU_DEFAULT_MODEL
    except ImportError:
        return CPU_DEFAULT_MODEL


def write_run_config(settings: Settings, path: Path) -> Path:
    """The worker's settings file, without secrets: URLs are written redacted and the real ones
    reach the worker by environment (which wins over the file); owner-only all the same."""
    values = settings.model_dump(mode="json")
    for key in ("url", "result_backend"):
        values["redis"][key] = redact_url(values["redis"][key])
    path.unlink(missing_ok=True)  # a file left by an older version may be world-readable
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
        fh.write("# Redis URLs redacted: the worker gets them by environment (VLMQ_REDIS__URL).\n")
        fh.write(yaml.safe_dump(values))
    return path


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during `producer run`; the message says what was stopped and cleaned up."""


def _raise_interrupt(signum, frame):  # SIGTERM takes the same clean path as Ctrl-C
    raise KeyboardInterrupt


def _forget_queue(store, queue: str, worker: str) -> None:
    """The one-off queue and worker of this run: waiting messages, kombu's bindings, the worker's counters."""
    from app.routing import level_keys

    store.r.delete(*level_keys(queue), f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    store.forget_worker(worker)


def run_local(
    settings: Settings,
    roots: Sequence[str | Path],
    output_dir: str | Path,
    recursive: bool = True,
    console: Console | None = None,
    watch=None,
    worker_timeout: float = 120,
) -> JobProgress:
    console = console or Console(stderr=True)
    out = Path(output_dir).resolve()
    if settings.engine.backend == "vllm":
        from workers.vllm_engine import resolve_model_path

        resolve_model_path(settings.engine.model)  # fail here, clearly, before creating or starting anything
    out.mkdir(parents=True, exist_ok=True)
    server = worker = submitter = job_id = queue = None
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if not redis_answers(settings.redis.url):
            server = RedisServer(out / "redis", appendonly=True).start()
            console.print(f"no Redis at {redact_url(settings.redis.url)}: started an embedded one on {server.url}")
            settings = settings.with_overrides(redis={"url": server.url, "result_backend": server.url})
        queue = f"local-{uuid.uuid4().hex[:8]}"
        settings = settings.with_overrides(queues=[queue])
        config = write_run_config(settings, out / "vlmq-run.yaml")
        env = {"VLMQ_CONFIG": str(config), "VLMQ_REDIS__URL": settings.redis.url}
        if settings.redis.result_backend:
            env["VLMQ_REDIS__RESULT_BACKEND"] = settings.redis.result_backend
        worker = WorkerProcess(queue, env, name=f"{queue}@{os.uname().nodename}", log_file=out / "worker.log")
        submitter = Submitter(settings)
        worker.start().wait_ready(submitter.celery, worker_timeout)
        console.print(
            f"worker {worker.name} ready (engine: {settings.engine.backend}, model: {settings.engine.model}); "
            f"log: {out / 'worker.log'}"
        )
        job_id = new_job_id()
        console.print(f"job {job_id}")
        submitter.submit(roots, recursive=recursive, queues=[queue], job_id=job_id)
        job = Job(job_id, settings, submitter.celery, submitter.store)
        progress = watch(job) if watch else job.wait()
        written = export(job.records, out, ["all"])
        console.print(f"job {job_id}: wrote {', '.join(p.name for p in written)} in {out}")
        return progress
    except KeyboardInterrupt:
        stopped = [what for what, started in (("the worker", worker), ("the embedded Redis", server)) if started]
        message = f"stopped {' and '.join(stopped)}" if stopped else "nothing had been started"
        if job_id is not None and server is None:  # the job lives on in the user's Redis: end it there
            Job(job_id, settings, submitter.celery, submitter.store).cancel()
            message += f"; job {job_id} cancelled and its queued batches removed"
        raise Interrupted(message) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        if worker is not None:
            worker.stop()
        if submitter is not None and server is None and worker is not None:
            _forget_queue(submitter.store, queue, worker.name)
        if server is not None:
            server.stop()
