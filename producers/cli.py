"""`producer`: submit folders, watch jobs, read and export results."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table

from app.progress import JobProgress
from app.schemas import ImageRecord
from config.errors import PipelineError
from config.prompts import load_prompt_set, shown
from config.settings import Settings, load_settings

console = Console(stderr=True)


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def settings_from(ctx: click.Context, **overrides: Any) -> Settings:
    obj = ctx.find_root().obj or {}
    return load_settings(obj.get("config"), broker_url=obj.get("broker_url"), **overrides)


class JobIdType(click.ParamType):
    """A job id or a unique prefix of one, resolved against Redis (read only) to the whole id."""

    name = "JOB"

    def convert(self, value, param, ctx):
        from app.store import JobStore
        from producers.jobref import resolve_job_id

        try:
            return resolve_job_id(JobStore.from_settings(settings_from(ctx)), value)
        except PipelineError as exc:
            self.fail(str(exc), param, ctx)


JOB_ID = JobIdType()


def check_roots(roots, settings: Settings | None = None) -> None:
    """Every root must be usable (a path that exists, a glob that matches, an http(s) URL, a table
    with the image column); a bad one is a usage error, reported before anything is created."""
    from producers.sources import check_sources

    try:
        check_sources(roots, settings or Settings())
    except PipelineError as exc:
        raise click.UsageError(str(exc)) from exc


def check_not_empty(roots, recursive: bool, settings: Settings) -> None:
    """Refuse input with nothing to process, before a job or a worker is started."""
    from producers.sources import first_entry

    try:
        found = first_entry(roots, recursive, settings)
    except PipelineError as exc:
        raise click.UsageError(str(exc)) from exc
    if not found:
        raise click.UsageError(
            f"no files found in {', '.join(roots)} (extensions looked for: {' '.join(settings.extensions)})"
        )


@click.group()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="YAML settings file.")
@click.option("--broker-url", help="Redis URL (default from VLMQ_BROKER_URL or the config file).")
@click.pass_context
def main(ctx: click.Context, config: str | None, broker_url: str | None) -> None:
    """Push folders of images through a VLM: classify → score → summarize, on Celery + Redis."""
    ctx.obj = {"config": config, "broker_url": broker_url}


def job_options(fn):
    options = [
        click.option("--recursive/--no-recursive", default=True, show_default=True),
        click.option("--batch-size", type=int, help="Images per Celery task."),
        click.option("--no-cache", is_flag=True, help="Recompute even what the cache knows."),
        click.option("--score-threshold", type=float, help="Summarize only images scoring at least this."),
        click.option("--categories-to-score", help="Comma-separated category letters to score."),
        click.option("--categories-to-summarize", help="Comma-separated category letters to summarize."),
        click.option("--classification-prompt", help="Use classification_NAME.txt."),
        click.option("--prompt-dir", type=click.Path(file_okay=False), help="Folder of prompt files."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def job_overrides(
    batch_size,
    no_cache,
    score_threshold,
    categories_to_score,
    categories_to_summarize,
    classification_prompt,
    prompt_dir,
) -> dict[str, Any]:
    return dict(
        batch_size=batch_size,
        use_cache=False if no_cache else None,
        score_threshold=score_threshold,
        categories_to_score=_csv(categories_to_score),
        categories_to_summarize=_csv(categories_to_summarize),
        classification_prompt=classification_prompt,
        prompt_dir=prompt_dir,
    )


@main.command()
@click.argument("roots", nargs=-1, required=True, type=click.Path())
@job_options
@click.option("--queue", "queues", multiple=True, help="GPU queue(s) to spread batches over (repeatable).")
@click.option("--max-inflight", type=int, help="Batches allowed to wait in Redis at once.")
@click.option("--shared-dir", type=click.Path(file_okay=False), help="Folder all workers can read.")
@click.option("--image-column", help="Parquet/Arrow datasets: the image column (default 'image').")
@click.option(
    "--prepare-on",
    "prepare_on",
    metavar="QUEUE",
    help="Prepare on CPU workers serving QUEUE (`celery -A app worker -Q cpu -P prefork -c N`) "
    "instead of this process's pool; local paths then need storage those workers share.",
)
@click.option("--wait", is_flag=True, help="Show progress until the job is done.")
@click.option("--job-id", help="Finish the interrupted job with this id (like `producer resume`).")
@click.pass_context
def submit(
    ctx, roots, recursive, queues, max_inflight, shared_dir, image_column, prepare_on, wait, job_id, **job
) -> None:
    """Prepare the images of ROOTS and enqueue one chain per batch. Prints the job id.

    ROOTS: folders, list files (.txt/.lst: a path or http(s) URL per line), http(s) URLs, webdataset
    shards (.tar, globs like 'shards/*.tar', URLs), Parquet/Arrow files or `datasets` folders."""
    from producers.api import Job
    from producers.submit import Submitter, new_job_id

    settings = settings_from(
        ctx,
        max_inflight_batches=max_inflight,
        shared_dir=shared_dir,
        queues=list(queues) or None,
        image_column=image_column,
        prepare_queue=prepare_on,
        **job_overrides(**job),
    )
    check_roots(roots, settings)
    check_not_empty(roots, recursive, settings)
    submitter = Submitter(settings)
    submitter.preflight()  # bad prompts or an unsupported model: refused before a job id is shown
    job_id = job_id or new_job_id()
    click.echo(job_id)  # at once: the job can be watched from another terminal while it is submitted
    warn_if_unserved(submitter.store.r, list(queues) or None)
    if settings.prepare_queue:
        warn_if_unserved(submitter.store.r, [settings.prepare_queue])
    with console.status("scanning and submitting …") as status:
        submitter.submit(
            roots,
            recursive=recursive,
            queues=list(queues) or None,
            job_id=job_id,
            progress=lambda s: status.update(submit_line(s)),
        )
    if wait:
        finish_watch(Job(job_id, settings, submitter.celery, submitter.store))


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--queue", "queues", multiple=True, help="GPU queue(s) to spread the remaining batches over.")
@click.option("--wait", is_flag=True, help="Show progress until the job is done.")
@click.pass_context
def resume(ctx, job_id, queues, wait) -> None:
    """Finish a job whose producer was killed mid-submission: every image once, nothing shipped twice."""
    from producers.api import Job
    from producers.submit import Submitter

    submitter = Submitter(settings_from(ctx))
    with console.status(f"resuming job {job_id} …") as status:
        submitter.resume(job_id, list(queues) or None, progress=lambda s: status.update(submit_line(s)))
    click.echo(job_id)
    if wait:
        finish_watch(Job(job_id, submitter.settings, submitter.celery, submitter.store))


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


def unserved_message(r, queues: list[str] | None) -> str | None:
    """Why nothing can progress, when no live worker serves the job's queues; else None."""
    from app.heartbeat import live_queues

    live = live_queues(r)
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


def warn_if_unserved(r, queues: list[str] | None) -> None:
    message = unserved_message(r, queues)
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
            message = unserved_message(job.store.r, spec.queues if spec else None)
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


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--watch", "follow", is_flag=True, help="Refresh until the job is done.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx, job_id, follow, as_json) -> None:
    """Counts per outcome, throughput, ETA and per-worker share of a job."""
    from producers.api import Job

    job = Job(job_id, settings_from(ctx))
    progress = watch(job) if follow else job.progress()
    stages = job.stage_counts()
    if as_json:
        click.echo(json.dumps({**progress.model_dump(mode="json"), "stages": stages}, indent=2))
        return
    table = progress_table(progress)
    for stage in ("classify", "score", "summary"):
        row = stages[stage]
        table.add_row(f"stage {stage}", f"{row['done']} done, {row['skipped']} skipped, {row['failed']} failed")
    table.add_row("running now", ", ".join(f"{w}: {t}" for w, t in stages["running"].items()) or "-")
    Console().print(table)
    if progress.status == "interrupted":
        raise PipelineError(INTERRUPTED.format(job=job_id))


def record_row(r: ImageRecord) -> list[str]:
    return [
        r.image,
        r.classification.category if r.classification else "-",
        f"{r.scoring.score:g}" if r.scoring and r.scoring.score is not None else "-",
        (r.summary.summary[:60] if r.summary else "-"),
        r.error or "",
    ]


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "json"]), default="table", show_default=True)
@click.pass_context
def results(ctx, job_id, fmt) -> None:
    """One record per image: category, score, summary or the error."""
    from producers.api import Job

    records = Job(job_id, settings_from(ctx)).records()
    if fmt == "jsonl":
        for r in records:
            click.echo(r.model_dump_json())
    elif fmt == "json":  # one list, written as the records stream in
        click.echo("[", nl=False)
        for i, r in enumerate(records):
            click.echo(("," if i else "") + "\n" + json.dumps(r.model_dump(mode="json")), nl=False)
        click.echo("\n]")
    else:
        table = Table("image", "category", "score", "summary", "error")
        for r in records:
            table.add_row(*record_row(r))
        Console().print(table)


@main.command()
@click.option("--limit", default=20, show_default=True)
@click.pass_context
def jobs(ctx, limit) -> None:
    """Recent jobs, newest first."""
    from app.store import JobStore

    store = JobStore.from_settings(settings_from(ctx))
    table = Table("status", "images", "done", "cached", "failed", "created", "job")
    for job_id in store.job_ids(limit):
        p = store.progress(job_id)
        table.add_row(
            p.status,
            "?" if p.total is None else str(p.total),
            *(str(p.outcomes.get(k, 0)) for k in ("done", "cached", "failed")),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.created_at)),
            job_id,
        )
    table.columns[-1].no_wrap = True  # ids are copied from here: never cut or folded
    table.columns[-1].overflow = "ignore"
    Console().print(table)


@main.command()
@click.option("--prompt-dir", type=click.Path(file_okay=False))
@click.option("--classification-prompt")
@click.pass_context
def prompts(ctx, prompt_dir, classification_prompt) -> None:
    """List prompt files, the categories they define and which prompts each category uses."""
    s = settings_from(ctx, prompt_dir=prompt_dir, classification_prompt=classification_prompt)
    ps = load_prompt_set(s.prompt_dir, s.classification_prompt, s.max_prompt_bytes)
    out = Console()
    out.print(f"prompt folder: {escape(shown(str(s.prompt_dir)))}")
    out.print(f"classification: {ps.classification.ref}")
    table = Table("category", "description", "scoring prompts", "summary prompts")
    for cat, desc in sorted(ps.categories.items()):
        table.add_row(
            escape(cat),
            escape(desc),
            ", ".join(p.ref for p in ps.for_stage("score", cat)),
            ", ".join(p.ref for p in ps.for_stage("summary", cat)),
        )
    out.print(table)


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.option(
    "--format",
    "formats",
    multiple=True,
    default=["all"],
    show_default=True,
    type=click.Choice(["jsonl", "csv", "parquet", "folder", "all"]),
)
@click.option("--output", "output", required=True, type=click.Path(file_okay=False))
@click.pass_context
def export(ctx, job_id, formats, output) -> None:
    """Write a job's records as jsonl, csv, parquet and/or the classification/scoring/summaries folder."""
    from producers.api import Job
    from producers.export import export as write

    for path in write(Job(job_id, settings_from(ctx)).records, output, formats):
        click.echo(path)


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.pass_context
def collect(ctx, job_id) -> None:
    """Move a job's records that wait in Redis (written by workers that cannot reach the results
    location) into the results dataset, and free them in Redis."""
    from producers.api import Job

    job = Job(job_id, settings_from(ctx))
    job.store.require_job(job_id)
    moved = job.collect()
    click.echo(f"job {job_id}: {moved} records collected into {job.dataset().folder(job_id)}")


@main.command()
@click.argument("job_id", type=JOB_ID)
@click.pass_context
def cancel(ctx, job_id) -> None:
    """Revoke what has not run, drop the job's queued tasks and mark it cancelled."""
    from producers.api import Job

    job = Job(job_id, settings_from(ctx))
    job.refuse_if_over()
    removed = job.cancel()
    click.echo(f"job {job_id} cancelled; {removed} queued tasks removed")


@main.command()
@click.argument("roots", nargs=-1, required=True, type=click.Path())
@job_options
@click.option("--model", help="Local model folder or hub id (default: SmolVLM on CPU, Qwen2.5-VL on GPU).")
@click.option("--engine", type=click.Choice(["vllm", "test"]), help="'test': the deterministic test engine.")
@click.option("--output-dir", default="run", show_default=True, type=click.Path(file_okay=False))
@click.pass_context
def run(ctx, roots, recursive, model, engine, output_dir, **job) -> None:
    """The whole job on this machine: Redis (embedded if none answers), a worker, results in OUTPUT_DIR."""
    from producers.run import Interrupted, default_model, run_local

    if model is None and "model" not in settings_from(ctx).model_fields_set:
        model = default_model()  # the GPU default on a GPU machine, unless env or YAML name a model
    settings = settings_from(ctx, model=model, engine=engine, **job_overrides(**job))
    check_roots(roots, settings)
    check_not_empty(roots, recursive, settings)
    try:
        progress = run_local(settings, roots, output_dir, recursive, console, watch=watch)
    except Interrupted as exc:
        console.print(f"interrupted: {exc}")
        sys.exit(130)
    console.print(progress_line(progress))


@main.command()
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

    settings = settings_from(ctx, engine=engine, model=model)
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    supervise(
        settings,
        plan_workers(settings, ids, tp, Path(log_dir), queue_prefix, first_index),
        on_event=lambda m: console.print(m),
    )


@main.command()
@click.pass_context
def fleet(ctx) -> None:
    """Live workers: queue, GPUs, the batch and stage each one is on now."""
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
    table = Table("worker", "queues", "GPUs", "now", "batches done", "waiting")
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
            w.get("gpus") or "-",
            now,
            str(w["batches_done"]),
            str(sum(waiting.values())),
        )
    Console().print(table)


@main.command()
@click.option("--job", "job_id", type=JOB_ID, help="Only this job's dead letters.")
@click.option("--requeue", "requeue_ids", multiple=True, help="Send this dead letter back to a queue (repeatable).")
@click.option("--queue", help="Queue for --requeue (default: the least-loaded live one).")
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


from producers.serve.command import serve  # noqa: E402 - its own module; registered beside the others

main.add_command(serve)


def run_cli() -> None:
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError

    from app import redis_full

    redis_full.on_full(
        lambda full: console.print(
            f"[yellow]{redis_full.FULL_MESSAGE}[/yellow]" if full else "Redis has room again: going on"
        )
    )
    try:
        main(standalone_mode=True)
    except PipelineError as exc:
        # a message is text, not markup; one line whatever the terminal's width
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
    except (OperationalError, RedisConnectionError) as exc:
        console.print(
            f"[red]error:[/red] Redis did not answer ({escape(str(exc))}). Nothing more was submitted; "
            "batches already sent are safe in Redis. Check VLMQ_BROKER_URL and retry: "
            "images already done are served from the cache."
        )
        sys.exit(3)


if __name__ == "__main__":
    run_cli()
