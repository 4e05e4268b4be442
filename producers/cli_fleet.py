"""`producer workers`, `fleet`, `dead`: starting GPU workers, seeing them, and handling dead letters."""

from __future__ import annotations

import time

import click
from rich.console import Console
from rich.table import Table

from producers.cli_common import JOB_ID, console, settings_from


@click.command()
@click.option("--gpus", required=True, help="Comma-separated GPU ids, e.g. 0,1,2,3.")
@click.option("--tp", default=1, show_default=True, help="Tensor-parallel size: GPUs per worker.")
@click.option("--engine", type=click.Choice(["vllm", "test"]))
@click.option("--model")
@click.option("--queue-prefix", default="gpu", show_default=True)
@click.option("--first-index", default=0, show_default=True, help="Number of the first queue (gpuN) on this host.")
@click.option("--log-dir", default="logs", show_default=True, type=click.Path(file_okay=False))
@click.pass_context
def workers(ctx, gpus, tp, engine, model, queue_prefix, first_index, log_dir) -> None:
    """Start one worker per tensor-parallel group (queue gpuN each) and keep them running."""
    from pathlib import Path

    from producers.fleet import plan_workers, supervise

    settings = settings_from(ctx, engine={"backend": engine, "model": model})
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    supervise(
        settings,
        plan_workers(settings, ids, tp, Path(log_dir), queue_prefix, first_index),
        on_event=lambda m: console.print(m),
    )


@click.command()
@click.pass_context
def fleet(ctx) -> None:
    """Live workers: queue, GPUs, engine capacity (batch size auto), the batch and stage each one is on now."""
    from app.heartbeat import live_workers
    from app.redis_client import redis_client
    from app.routing import pending

    r = redis_client(settings_from(ctx))
    workers = live_workers(r)
    if not workers:
        console.print(
            "no live workers (none has sent a heartbeat in the last 12 s); start one with "
            "`celery -A app worker -Q gpu0 -c 1` or `producer workers --gpus 0`"
        )
        return
    table = Table("worker", "queues", "model", "GPUs", "capacity", "now", "batches done", "waiting")
    for w in sorted(workers, key=lambda w: w["hostname"]):
        cur = w.get("current") or {}
        now = (
            f"{cur['task']} {cur['batch_id']} ({cur['images']} images, {time.time() - cur['since']:.0f} s)"
            if cur
            else "idle"
        )
        waiting = pending(r, w["queues"])
        table.add_row(
            w["hostname"],
            ",".join(w["queues"]),
            _serves(w),
            w.get("gpus") or "-",
            str(w.get("capacity") or "-"),  # images its engine holds at once, once loaded
            now,
            str(w["batches_done"]),
            str(sum(waiting.values())),
        )
    Console().print(table)


@click.command()
@click.option("--job", "job_id", type=JOB_ID, help="Only this job's dead letters.")
@click.option("--requeue", "requeue_ids", multiple=True, help="Send this dead letter back to a queue (repeatable).")
@click.option("--queue", help="Queue for --requeue (default: the least-loaded live one of the job's model).")
@click.pass_context
def dead(ctx, job_id, requeue_ids, queue) -> None:
    """Images set aside because their worker was lost each time they ran; --requeue ID retries one."""
    from app.factory import create_app
    from app.store import JobStore
    from producers.dead import describe, requeue

    settings = settings_from(ctx)
    store = JobStore.from_settings(settings)
    if requeue_ids:
        celery_app = create_app(settings)
        for letter_id in requeue_ids:
            click.echo(f"dead letter {letter_id} requeued as batch {requeue(store, celery_app, letter_id, queue)}")
        return
    table = Table("id", "job", "batch", "stage", "image", "reason")
    for letter in store.dead_letters(job_id):
        table.add_row(*describe(letter))
    Console().print(table)


def _serves(worker: dict) -> str:
    """The model, then its family and TP size where the worker says them (older workers do not)."""
    tp = worker.get("tensor_parallel_size")
    extra = [e for e in (worker.get("family"), f"TP {tp}" if tp else "") if e]
    return f"{worker.get('model') or '-'} ({', '.join(extra)})" if extra else worker.get("model") or "-"
