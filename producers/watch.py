"""Progress on the terminal: the live table, one-line summaries, and why nothing moves when no worker serves."""

from __future__ import annotations

import sys
import time

from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from app.progress import JobProgress
from config.errors import PipelineError
from producers.cli_common import console


def submit_line(s) -> str:
    resumed = f", {s.resumed} handled before the interruption" if s.resumed else ""
    return (
        f"scanned {s.scanned}: {s.shipped} unique images shipped in {s.batches} batches, "
        f"{s.cached} cached, {s.failed} failed, {s.duplicates} duplicate copies merged{resumed}"
    )


def finish_watch(job) -> None:
    """Watch to the end; exit 0 when done, else say why and exit non-zero."""
    progress = watch(job)
    console.print(progress_line(progress))
    if progress.status == "interrupted":
        raise PipelineError(INTERRUPTED.format(job=job.id))
    sys.exit(1 if progress.status == "cancelled" else 0)


INTERRUPTED = (
    "job {job} is interrupted: its producer stopped before submitting every image. "
    "Run `producer resume {job}` to finish it (nothing already sent is sent twice)."
)


def progress_line(p: JobProgress) -> str:
    total = "?" if p.total is None else p.total
    counts = ", ".join(f"{k} {v}" for k, v in sorted(p.outcomes.items())) or "nothing yet"
    eta = f", ETA {p.eta_s:.0f} s" if p.eta_s and not p.finished else ""
    return f"job {p.job_id} {p.status}: {p.accounted}/{total} ({counts}), {p.images_per_s:g} img/s{eta}"


def unserved_message(r, queues: list[str] | None, model: str | None = None) -> str | None:
    """Why nothing can progress, when no live worker serves the job's model or queues; else None."""
    from app import keys
    from app.heartbeat import live_models, live_queues
    from app.routing import model_queues

    live = live_queues(r)
    if model and live and not model_queues(r, model):
        others = "; ".join(
            f"{m} on {', '.join(sorted({q for w in ws for q in w['queues']}))}"
            for m, ws in sorted(live_models(r).items())
        )
        return (
            f"no live worker serves model {model}: batches wait in Redis until one starts on a queue of its own "
            f"(`VLMQ_ENGINE__MODEL={model} celery -A app worker -Q QUEUE -c 1`); live workers serve {others or '?'}"
        )
    queues = None if queues is None else [q for q in queues if not q.startswith(keys.PARKING_PREFIX)] or None
    if queues is None:
        return (
            None
            if live
            else "no live worker: batches wait in Redis until one starts (e.g. `celery -A app worker -Q gpu0 -c 1`)"
        )
    served = [q for q in queues if q in live]
    if served:
        return None
    return (
        f"no live worker serves {', '.join(queues)}: batches wait in Redis until one starts "
        f"(e.g. `celery -A app worker -Q {queues[0]} -c 1`)"
    )


def warn_if_unserved(r, queues: list[str] | None, model: str | None = None) -> None:
    message = unserved_message(r, queues, model)
    if message:
        console.print(f"[yellow]warning:[/yellow] {message}")


def progress_table(p: JobProgress) -> Table:
    table = Table(title=f"job {p.job_id}", show_header=False)
    table.add_row("progress", ProgressBar(total=p.total or max(p.accounted, 1), completed=p.accounted, width=40))
    table.add_row("status", p.status)
    of = f"{p.total}" if p.total is not None else f"? ({p.scanned} found so far, still scanning)"
    table.add_row("images", f"{p.accounted} of {of} accounted for")
    for outcome in ("done", "cached", "failed"):
        table.add_row(outcome, str(p.outcomes.get(outcome, 0)))
    table.add_row(
        "batches",
        f"{p.batches_done} done of {p.batches_sent} sent ({p.batches_sent - p.batches_done} queued or running)",
    )
    table.add_row("throughput", f"{p.images_per_s:g} images/s")
    table.add_row("ETA", "-" if p.finished or p.eta_s is None else f"{p.eta_s:.0f} s")
    for worker, n in sorted(p.workers.items()):
        share = 100 * n / max(1, sum(p.workers.values()))
        table.add_row(f"worker {worker}", f"{n} images ({share:.0f}%)")
    return table


def watch(job) -> JobProgress:
    """Show the progress table until the job ends; say so plainly while no worker can take its work."""
    said = {"last": None, "checked": 0.0}

    def show(p: JobProgress) -> None:
        live.update(progress_table(p))
        if not p.finished and time.monotonic() - said["checked"] > 3:
            said["checked"] = time.monotonic()
            spec = job.store.load_spec(job.id)
            message = unserved_message(job.store.r, spec.queues if spec else None, spec.model if spec else None)
            if message and message != said["last"]:
                live.console.print(f"[yellow]waiting:[/yellow] {message}")
            elif not message and said["last"]:
                live.console.print("a worker is serving the job now")
            said["last"] = message

    with Live(console=console, refresh_per_second=4) as live:
        progress = job.wait(on_progress=show)
    if not console.is_terminal:
        console.print()  # the final table, then the summary line on a line of its own
    return progress
