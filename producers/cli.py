"""`producer`: submit images, watch jobs, read and export results, run the fleet and the HTTP service."""

from __future__ import annotations

import sys

import click
from rich.markup import escape

from config.errors import PipelineError
from producers.cli_common import console
from producers.cli_fleet import dead, fleet, workers
from producers.cli_jobs import cancel, collect, export, jobs, prompts, results, status
from producers.cli_rerun import rerun, retry
from producers.cli_submit import resume, run, submit
from producers.serve.command import serve


@click.group()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="YAML settings file.")
@click.option("--broker-url", help="Redis URL (default from VLMQ_REDIS__URL or the config file).")
@click.pass_context
def main(ctx: click.Context, config: str | None, broker_url: str | None) -> None:
    """Push folders of images through a VLM: classify → score → summarize, on Celery + Redis."""
    ctx.obj = {"config": config, "broker_url": broker_url}


for command in (
    submit,
    resume,
    run,
    rerun,
    retry,
    status,
    results,
    jobs,
    prompts,
    export,
    collect,
    cancel,
    workers,
    fleet,
    dead,
    serve,
):
    main.add_command(command)


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
            "batches already sent are safe in Redis. Check VLMQ_REDIS__URL and retry: "
            "images already done are served from the cache."
        )
        sys.exit(3)


if __name__ == "__main__":
    run_cli()
