"""What every `producer` command shares: settings from the root options, job ids, input checks, job flags."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from config.errors import PipelineError
from config.settings import Settings, load_settings
from config.stages import STAGES, new_job_stages_refusal

console = Console(stderr=True)


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def settings_from(ctx: click.Context, **overrides: Any) -> Settings:
    obj = ctx.find_root().obj or {}
    return load_settings(obj.get("config"), **overrides, redis={"url": obj.get("broker_url")})


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


class BatchSizeType(click.ParamType):
    """`auto` (what the engine holds at once) or a whole number 1..1024."""

    name = "auto|N"

    def convert(self, value, param, ctx):
        from config.batching import parse_batch_size

        try:
            return parse_batch_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


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
            f"no files found in {', '.join(roots)} (extensions looked for: {' '.join(settings.images.extensions)})"
        )


def parse_stages(ctx, param, value: str | None) -> list[str] | None:
    """`--stages classify,score`: known names only, in pipeline order; a typo is a usage error."""
    if value is None:
        return None
    names = _csv(value) or []
    unknown = [n for n in names if n not in STAGES]
    if unknown or not names:
        what = f"unknown stage {', '.join(map(repr, unknown))}" if unknown else "no stage given"
        raise click.BadParameter(f"{what}; choose from {', '.join(STAGES)} (comma-separated)")
    return [s for s in STAGES if s in names]


def check_first_stage(stages: list[str] | None) -> None:
    if why := new_job_stages_refusal(stages):
        raise click.BadParameter(why, param_hint="--stages")


STAGES_HELP = f"Comma-separated stages to run, of {','.join(STAGES)} (default: all)."


def job_options(fn):
    return job_flags(click.option("--recursive/--no-recursive", default=True, show_default=True)(fn))


def job_flags(fn):
    options = [
        click.option("--stages", callback=parse_stages, help=STAGES_HELP),
        click.option(
            "--batch-size",
            type=BatchSizeType(),
            help="Images per Celery task: auto (default: what the workers' engines hold at once) or a number.",
        ),
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
    stages,
    batch_size,
    no_cache,
    score_threshold,
    categories_to_score,
    categories_to_summarize,
    classification_prompt,
    prompt_dir,
) -> dict[str, Any]:
    return dict(
        stages=stages,
        batch_size=batch_size,
        use_cache=False if no_cache else None,
        conditions={
            "score_threshold": score_threshold,
            "categories_to_score": _csv(categories_to_score),
            "categories_to_summarize": _csv(categories_to_summarize),
        },
        classification_prompt=classification_prompt,
        prompt_dir=prompt_dir,
    )
