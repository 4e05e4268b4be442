"""`producer submit`, `resume` and `run`: put images in, and (with --wait, or `run`) see them through."""

from __future__ import annotations

import sys

import click

from producers.cli_common import (
    JOB_ID,
    check_first_stage,
    check_not_empty,
    check_roots,
    console,
    job_options,
    job_overrides,
    settings_from,
)
from producers.watch import finish_watch, progress_line, submit_line, warn_if_unserved, watch


@click.command()
@click.argument("roots", nargs=-1, required=True, type=click.Path())
@job_options
@click.option("--queue", "queues", multiple=True, help="GPU queue(s) to spread batches over (repeatable).")
@click.option(
    "--model", help="The model the job's images go through: only its workers take them (default: engine.model)."
)
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
    ctx, roots, recursive, queues, model, max_inflight, shared_dir, image_column, prepare_on, wait, job_id, **job
) -> None:
    """Prepare the images of ROOTS and enqueue one chain per batch. Prints the job id.

    ROOTS: folders, list files (.txt/.lst: a path or http(s) URL per line), http(s) URLs, webdataset
    shards (.tar, globs like 'shards/*.tar', URLs), Parquet/Arrow files or `datasets` folders."""
    from producers.api import Job
    from producers.submit import Submitter, new_job_id
    from workers.engine import engine_model_id

    check_first_stage(job["stages"])
    settings = settings_from(
        ctx,
        max_inflight_batches=max_inflight,
        shared_dir=shared_dir,
        queues=list(queues) or None,
        prepare_queue=prepare_on,
        **job_overrides(**job),
        images={"image_column": image_column},
        engine={"model": model},
    )
    check_roots(roots, settings)
    check_not_empty(roots, recursive, settings)
    submitter = Submitter(settings)
    submitter.preflight()  # bad prompts or an unsupported model: refused before a job id is shown
    job_id = job_id or new_job_id()
    click.echo(job_id)  # at once: the job can be watched from another terminal while it is submitted
    warn_if_unserved(submitter.store.r, list(queues) or None, engine_model_id(settings))
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
    if submitter.chosen:  # a new job, not a resumed one: which batch size it got, and why
        console.print(str(submitter.chosen))
    if wait:
        finish_watch(Job(job_id, settings, submitter.celery, submitter.store))


@click.command()
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


@click.command()
@click.argument("roots", nargs=-1, required=True, type=click.Path())
@job_options
@click.option("--model", help="Local model folder or hub id (default: SmolVLM on CPU, Qwen2.5-VL on GPU).")
@click.option("--engine", type=click.Choice(["vllm", "test"]), help="'test': the deterministic test engine.")
@click.option("--output-dir", default="run", show_default=True, type=click.Path(file_okay=False))
@click.pass_context
def run(ctx, roots, recursive, model, engine, output_dir, **job) -> None:
    """The whole job on this machine: Redis (embedded if none answers), a worker, results in OUTPUT_DIR."""
    from producers.run import Interrupted, default_model, run_local

    check_first_stage(job["stages"])
    if model is None and "model" not in settings_from(ctx).engine.model_fields_set:
        model = default_model()  # the GPU default on a GPU machine, unless env or YAML name a model
    settings = settings_from(ctx, **job_overrides(**job), engine={"model": model, "backend": engine})
    check_roots(roots, settings)
    check_not_empty(roots, recursive, settings)
    try:
        progress = run_local(settings, roots, output_dir, recursive, console, watch=watch)
    except Interrupted as exc:
        console.print(f"interrupted: {exc}")
        sys.exit(130)
    console.print(progress_line(progress))
