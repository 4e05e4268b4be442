"""`producer rerun` and `producer retry`: a new job over a parent job's images, linked to it.

A rerun runs the stages it selects with today's prompts and settings, and takes the other stages'
outputs from the parent's records (matched by sha256): `--stages score,summarize` re-scores an old
job without classifying again. A retry runs the parent's own spec again over only the images whose
record has an error. Both submit the parent's roots as its spec recorded them (the images are read
again from there) through the usual path: one record per image in the new job, exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.job_spec import JobSpec
from app.schemas import ImageRecord, Stage
from config.errors import JobNotFoundError, JobStateError

if TYPE_CHECKING:
    from producers.submit import ProgressFn, Submitter

# What a retry takes from its parent's spec: everything its outputs depend on.
PARENT_FIELDS = (
    "prompts",
    "system_prompt",
    "sampling",
    "score_threshold",
    "categories_to_score",
    "categories_to_summarize",
    "stages",
)


def finished_spec(submitter: Submitter, job_id: str) -> JobSpec:
    """The parent's spec; refused unless the parent is over (its records are all there)."""
    spec = submitter.store.load_spec(job_id)
    if spec is None:
        raise JobNotFoundError(f"no job {job_id} in Redis (never created, or expired)")
    progress = submitter.store.progress(job_id)
    if not progress.finished:
        raise JobStateError(f"job {job_id} is {progress.status}: wait until it is done, then run this again")
    return spec


def carried(record: ImageRecord, stages: Sequence[Stage]) -> dict[str, Any]:
    """The record's outputs of the stages not selected, as ItemState fields."""
    out: dict[str, Any] = {}
    if "classify" not in stages and record.classification is not None:
        out["classification"] = record.classification
    if "score" not in stages and record.scores:
        out["scores"] = list(record.scores)
    if "summarize" not in stages and record.summaries:
        out["summaries"] = list(record.summaries)
    skipped = {stage: why for stage, why in record.skipped.items() if stage not in stages}
    if skipped:  # e.g. "score 3 is below threshold 5": why the parent has no summary
        out["skipped"] = skipped
    return out


def relink(submitter: Submitter, parent_id: str, stages: Sequence[Stage], failed_only: bool) -> None:
    """Point the submitter at the parent's images (all, or the failed ones) and their outputs of the
    stages not selected; the parent's records are read once, here, from the results dataset."""
    from producers.api import Job

    parent = Job(parent_id, submitter.settings, submitter.celery, submitter.store)
    only: set[str] | None = set() if failed_only else None
    preload: dict[str, dict[str, Any]] = {}
    for record in parent.records():
        if only is not None:
            if not record.error:
                continue
            only.add(record.image)
        if record.sha256 and (outputs := carried(record, stages)):
            preload[record.sha256] = outputs
    submitter.only, submitter.preload = only, preload
    submitter.linked = {"parent": parent_id, "parent_images": "failed" if failed_only else "all"}


def resubmit(
    submitter: Submitter,
    parent_id: str,
    failed_only: bool = False,
    queues: Sequence[str] | None = None,
    job_id: str | None = None,
    progress: ProgressFn | None = None,
) -> str:
    """Submit the new job (a rerun with the submitter's settings, or a retry with the parent's)."""
    parent = finished_spec(submitter, parent_id)
    # the parent's outputs are preloaded here, so the images are prepared here too
    settings = submitter.settings.model_copy(update={"prepare_queue": None})
    if failed_only:
        settings = settings.with_overrides(batch_size=parent.batch_size, use_cache=parent.use_cache)
    submitter.settings = settings
    stages = parent.stages if failed_only else settings.stages
    relink(submitter, parent_id, stages, failed_only)
    if failed_only:
        if not submitter.only:
            raise JobStateError(f"job {parent_id} has no failed image: nothing to retry")
        submitter.linked |= {name: getattr(parent, name) for name in PARENT_FIELDS}
    return submitter.submit(parent.roots, parent.recursive, queues, job_id, progress)


def resume_link(submitter: Submitter, spec: JobSpec) -> None:
    """An interrupted rerun or retry, resumed: the same images and the same parent outputs."""
    assert spec.parent is not None
    relink(submitter, spec.parent, spec.stages, spec.parent_images == "failed")
