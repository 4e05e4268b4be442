"""`producer status`, `results`, `jobs`, `prompts`, `export`, `collect`, `cancel`: reading and steering jobs."""

from __future__ import annotations

import json
import time

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.schemas import ImageRecord
from config.errors import PipelineError
from config.prompts import load_prompt_set, shown
from producers.cli_common import JOB_ID, settings_from
from producers.export import FORMATS
from producers.watch import INTERRUPTED, progress_table, watch


@click.command()
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
    spec = job.store.load_spec(job_id)
    link = {"selected_stages": spec.stages, "parent": spec.parent} if spec else {}  # rerun / retry
    if as_json:
        click.echo(json.dumps({**progress.model_dump(mode="json"), "stages": stages, **link}, indent=2))
        return
    table = progress_table(progress)
    if spec is not None and spec.parent:
        kind = "a retry of its failed images" if spec.parent_images == "failed" else "a rerun"
        table.add_row("parent job", f"{spec.parent} ({kind})")
    if spec is not None and len(spec.stages) < 3:
        table.add_row("stages selected", ",".join(spec.stages))
    for stage in ("classify", "score", "summarize"):
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


@click.command()
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


@click.command()
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


@click.command()
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
            ", ".join(p.ref for p in ps.for_stage("summarize", cat)),
        )
    out.print(table)


@click.command()
@click.argument("job_id", type=JOB_ID)
@click.option(
    "--format",
    "formats",
    multiple=True,
    default=["all"],
    show_default=True,
    type=click.Choice([*FORMATS, "all"]),
)
@click.option("--output", "output", required=True, type=click.Path(file_okay=False))
@click.pass_context
def export(ctx, job_id, formats, output) -> None:
    """Write a job's records as jsonl, csv, parquet, captions (txt: image, tab, first summary; images
    without a summary left out), a Hugging Face `datasets` folder (datasets.load_from_disk reads it)
    and/or the classification/scoring/summaries folder."""
    from producers.api import Job
    from producers.export import export as write

    for path in write(Job(job_id, settings_from(ctx)).records, output, formats):
        click.echo(path)


@click.command()
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


@click.command()
@click.argument("job_id", type=JOB_ID)
@click.pass_context
def cancel(ctx, job_id) -> None:
    """Revoke what has not run, drop the job's queued tasks and mark it cancelled."""
    from producers.api import Job

    job = Job(job_id, settings_from(ctx))
    job.refuse_if_over()
    removed = job.cancel()
    click.echo(f"job {job_id} cancelled; {removed} queued tasks removed")
