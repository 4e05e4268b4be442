"""`producer serve`: run the HTTP service with uvicorn; refuses to listen beyond loopback without keys."""

from __future__ import annotations

import ipaddress
import logging

import click

from config.serve import ServeSettings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(serve: ServeSettings) -> None:
    if not serve.api_keys and not is_loopback(serve.host):
        raise click.UsageError(
            f"refusing to listen on {serve.host} without API keys: anyone who can reach it could use the "
            "fleet. Set keys (--api-key KEY, or VLMQ_SERVE__API_KEYS='[\"KEY\"]') or bind 127.0.0.1."
        )


@click.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1; others need API keys).")
@click.option("--port", type=int, help="Port (default 8000; 0 picks a free one).")
@click.option("--api-key", "api_keys", multiple=True, help="Accepted bearer key (repeatable).")
@click.option("--batch-window-ms", type=float, help="Requests this close together share one task.")
@click.option("--max-batch-size", type=int, help="Most requests in one chat task.")
@click.option(
    "--job-root",
    "job_roots",
    multiple=True,
    type=click.Path(file_okay=False),
    help="A folder jobs may name (repeatable).",
)
@click.pass_context
def serve(ctx, host, port, api_keys, batch_window_ms, max_batch_size, job_roots) -> None:
    """HTTP API: OpenAI-compatible chat completions, jobs, /health and /metrics."""
    import uvicorn

    from producers.cli_common import settings_from
    from producers.serve.app import create_app

    settings = settings_from(ctx)
    given = {
        "host": host,
        "port": port,
        "api_keys": list(api_keys) or None,
        "batch_window_ms": batch_window_ms,
        "max_batch_size": max_batch_size,
        "job_roots": list(job_roots) or None,
    }
    serve_settings = settings.serve.model_validate(
        {**settings.serve.model_dump(), **{k: v for k, v in given.items() if v is not None}}
    )
    check_bind(serve_settings)
    settings = settings.model_copy(update={"serve": serve_settings})
    logging.basicConfig(level=settings.log_level)
    click.echo(
        f"serving on http://{serve_settings.host}:{serve_settings.port} "
        f"({'API keys required' if serve_settings.api_keys else 'no API keys: loopback only'})",
        err=True,
    )
    uvicorn.run(
        create_app(settings),
        host=serve_settings.host,
        port=serve_settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
