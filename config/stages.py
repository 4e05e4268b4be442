"""The pipeline's stages, by the names of the Celery tasks that run them, and which runs a job may ask for."""

from __future__ import annotations

STAGES = ("classify", "score", "summarize")  # the pipeline's order (app.schemas.Stage)


def new_job_stages_refusal(stages: list[str] | None) -> str | None:
    """Why a new job cannot run only these stages (it has no earlier outputs to go on from), or None."""
    if stages and "classify" not in stages:
        return (
            "a new job starts with classify; to run later stages over an earlier job's classification, "
            "use `producer rerun JOB --stages ...`"
        )
    return None
