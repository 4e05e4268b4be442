"""`producer rerun` and `producer retry`: a new job over a parent job's images, linked to it.

A rerun runs the stages it selects with today's prompts and settings, and takes the other stages'
outputs from the parent's records (matched by sha256): `--stages score,summarize` re-scores an old
job without classifying again. A retry runs the parent's own spec again over only the images whose
record has an error. Both submit the parent's roots as its spec recorded them (the images are read
again from there) through the usual path: one record per image in the new job, exactly once.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from app.job_spec import JobSpec
from app.schemas import Classification, ImageRecord, Scoring, Stage, Summary
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


class Carried(BaseModel):
    """What an item takes from its parent's record (the ItemState fields a rerun preloads)."""

    classification: Classification | None = None
    scores: list[Scoring] = []
    summaries: list[Summary] = []
    skipped: dict[str, str] = {}


class CarriedOutputs(Mapping[str, dict[str, Any]]):
    """sha256 → the parent's outputs to preload, in a SQLite file of the producer's own: its memory
    stays flat whatever the parent's size (the file goes when this object does)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="vlmq-carried-")
        self.db = sqlite3.connect(os.path.join(self._dir.name, "carried.sqlite"), check_same_thread=False)
        self.db.executescript("""
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
            CREATE TABLE carried (sha TEXT PRIMARY KEY, outputs TEXT NOT NULL) WITHOUT ROWID;
        """)

    def add(self, rows: Sequence[tuple[str, Carried]]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO carried VALUES (?, ?)",
            [(sha, c.model_dump_json(exclude_unset=True)) for sha, c in rows],
        )

    def __getitem__(self, sha: str) -> dict[str, Any]:
        row = self.db.execute("SELECT outputs FROM carried WHERE sha = ?", (sha,)).fetchone()
        if row is None:
            raise KeyError(sha)
        carried = Carried.model_validate_json(row[0])
        return {name: getattr(carried, name) for name in carried.model_fields_set}

    def __iter__(self) -> Iterator[str]:
        return (sha for (sha,) in self.db.execute("SELECT sha FROM carried"))

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM carried").fetchone()[0]


def finished_spec(submitter: Submitter, job_id: str) -> JobSpec:
    """The parent's spec; refused unless the parent is over (its records are all there)."""
    spec = submitter.store.load_spec(job_id)
    if spec is None:
        raise JobNotFoundError(f"no job {job_id} in Redis (never created, or expired)")
    progress = submitter.store.progress(job_id)
    if not progress.finished:
        raise JobStateError(f"job {job_id} is {progress.status}: wait until it is done, then run this again")
    return spec


def carried(record: ImageRecord, stages: Sequence[Stage]) -> Carried | None:
    """The record's outputs of the stages not selected (None: nothing to carry)."""
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
    return Carried(**out) if out else None


def relink(submitter: Submitter, parent_id: str, stages: Sequence[Stage], failed_only: bool) -> None:
    """Point the submitter at the parent's images (all, or the failed ones) and their outputs of the
    stages not selected; the parent's records are read once, here, from the results dataset."""
    from producers.api import Job

    parent = Job(parent_id, submitter.settings, submitter.celery, submitter.store)
    only: set[str] | None = set() if failed_only else None
    preload, rows = CarriedOutputs(), []
    for record in parent.records():
        if only is not None:
            if not record.error:
                continue
            only.add(record.image)
        if record.sha256 and (outputs := carried(record, stages)) is not None:
            rows.append((record.sha256, outputs))
        if len(rows) >= 1000:
            preload.add(rows)
            rows = []
    preload.add(rows)
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
