"""`producer rerun` and `retry`: a new job over an earlier job's images, linked to it (producers.rerun)."""

from __future__ import annotations

import click

from producers.cli_common import JOB_ID, console, job_flags, job_overrides, settings_from
from producers.watch import finish_watch, submit_line

QUEUE = click.option("--queue", "queues", multiple=True, help="GPU queue(s) to spread batches over (repeatable).")
WAIT = click.option("--wait", is_flag=True, help="Show progress until the job is done.")


def _submit_linked(ctx, parent: str, queues, wait: bool, failed_only: bool, **overrides) -> None:
    from producers.api import Job
    from producers.rerun import resubmit
    from producers.submit import Submitter

    submitter = Submitter(settings_from(ctx, queues=list(queues) or None, **overrides))
    submitter.preflight()  # bad prompt files: refused before any job exists
    with console.status(f"reading job {parent}'s records and submitting …") as status:
        job_id = resubmit(
            submitter, parent, failed_only, list(queues) or None, progress=lambda s: status.update(submit_line(s))
        )
    click.echo(job_id)
    if wait:
        finish_watch(Job(job_id, submitter.settings, submitter.celery, submitter.store))


@click.command()
@click.argument("job_id", type=JOB_ID)
@job_flags
@QUEUE
@WAIT
@click.pass_context
def rerun(ctx, job_id, queues, wait, **job) -> None:
    """A new job over JOB's images that runs only --stages, with today's prompts and settings, and
    takes the other stages' outputs from JOB's records: `rerun JOB --stages score,summarize
    --prompt-dir new-prompts` re-scores without classifying again. Prints the new job's id."""
    if not job["stages"]:
        raise click.UsageError("say which stages to run again, e.g. --stages score,summarize")
    _submit_linked(ctx, job_id, queues, wait, False, **job_overrides(**job))


@click.command()
@click.argument("job_id", type=JOB_ID)
@QUEUE
@WAIT
@click.pass_context
def retry(ctx, job_id, queues, wait) -> None:
    """A new job over only JOB's images whose record has an error, with JOB's own prompts and
    settings; the others are not computed again. Prints the new job's id."""
    _submit_linked(ctx, job_id, queues, wait, True)
