"""Typed models at every boundary: a batch between chain steps, dead letters, stored records
(the job spec is app.job_spec's)."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

Stage = Literal["classify", "score", "summarize"]  # the Celery tasks' names; outputs are nouns
# Lower runs first with the Redis transport's priority strategy: a batch's later stages overtake
# new batches, so chains run depth-first and the engine's prefix cache still holds their images.
PRIORITY: dict[Stage, int] = {"classify": 9, "score": 3, "summarize": 0}


class ImageRef(BaseModel):
    """A prepared image as a message carries it: a reference, never the bytes (claim check)."""

    sha256: str
    names: list[str]  # every submitted name with these bytes (duplicates are processed once)
    width: int  # original size, before downscaling
    height: int
    blob: str  # Redis key of the prepared bytes, or a file path when workers share the disk
    sources: dict[str, str] = Field(
        default_factory=dict
    )  # name → where it came from (URL, shard, dataset#row=N); folders: none


# `fields`: what a prompt's SCHEMA section asked for beyond the stage's own keys (tags, has_text …)
class Classification(BaseModel):
    category: str
    reasoning: str = ""
    fields: dict[str, Any] = Field(default_factory=dict)
    prompt: str


class Scoring(BaseModel):
    score: float | None = None  # None only when the prompt's schema asks for no score
    reasoning: str = ""
    fields: dict[str, Any] = Field(default_factory=dict)
    prompt: str


class Summary(BaseModel):
    summary: str
    fields: dict[str, Any] = Field(default_factory=dict)
    prompt: str


class ItemState(BaseModel):
    """One image's progress through the chain."""

    ref: ImageRef
    # Field(default_factory=…), not `= []`: pydantic deep-copies a literal default for every
    # instance, which was 4 % of a worker's time (five per image, each link)
    classification: Classification | None = None
    scores: list[Scoring] = Field(default_factory=list)
    summaries: list[Summary] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)  # stage → why it did not run for this image
    error: str | None = None
    error_stage: str | None = None
    cached_stages: list[str] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    dead_letter: str | None = None  # id of this image's dead letter; its blob is kept for a requeue

    def fail(self, stage: str, reason: str) -> None:
        self.error, self.error_stage = reason, stage


class LinkStats(BaseModel):
    """One chain link's engine counters, carried to the batch's end and written there with the rest."""

    worker: str
    stage: Stage
    counters: dict[str, float] = Field(default_factory=dict)


class BatchState(BaseModel):
    """The value passed from one chain step to the next."""

    job_id: str
    batch_id: str
    items: list[ItemState]
    link_stats: list[LinkStats] = Field(default_factory=list)

    def fail_remaining(self, stage: str, reason: str) -> None:
        """Give every item not already failed this error (the batch as a whole cannot go on)."""
        for item in self.items:
            if not item.error:
                item.fail(stage, reason)


class DeadLetter(BaseModel):
    """An image set aside because its worker was lost each time it ran (`producer dead`)."""

    id: str
    job_id: str
    batch_id: str
    stage: Stage
    ref: ImageRef
    reason: str
    at: float = Field(default_factory=time.time)


class ImageRecord(BaseModel):
    """The stored result for one submitted image: exactly one per image per job."""

    image: str
    job_id: str
    source: str | None = None  # what the image came from, to join results back (URL, shard, dataset#row=N)
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    classification: Classification | None = None
    scoring: Scoring | None = None
    summary: Summary | None = None
    scores: list[Scoring] = Field(default_factory=list)
    summaries: list[Summary] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)
    error: str | None = None
    error_stage: str | None = None
    model: str | None = None
    prompts: dict[str, str] = Field(default_factory=dict)
    worker: str | None = None
    cached: bool = False
    batch_id: str | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)

    @property
    def fields(self) -> dict[str, Any]:
        """Every stage's schema fields in one map (a later stage's field wins a name clash)."""
        parts = (self.classification, self.scoring, self.summary)
        return {k: v for part in parts if part is not None for k, v in part.fields.items()}

    @property
    def outcome(self) -> str:
        return "failed" if self.error else ("cached" if self.cached else "done")

    @classmethod
    def from_item(
        cls, item: ItemState, name: str, job_id: str, batch_id: str, model: str, worker: str | None
    ) -> ImageRecord:
        prompts = {}
        if item.classification:
            prompts["classification"] = item.classification.prompt
        for i, s in enumerate(item.scores):
            prompts["scoring" if i == 0 else f"scoring.{i}"] = s.prompt
        for i, s in enumerate(item.summaries):
            prompts["summary" if i == 0 else f"summary.{i}"] = s.prompt
        return cls(
            image=name,
            job_id=job_id,
            source=item.ref.sources.get(name),
            sha256=item.ref.sha256,
            width=item.ref.width,
            height=item.ref.height,
            classification=item.classification,
            scoring=item.scores[0] if item.scores else None,
            summary=item.summaries[0] if item.summaries else None,
            scores=item.scores,
            summaries=item.summaries,
            skipped=item.skipped,
            error=item.error,
            error_stage=item.error_stage,
            model=model,
            prompts=prompts,
            worker=worker,
            cached=bool(item.cached_stages) and len(item.cached_stages) >= _stages_run(item),
            batch_id=batch_id,
            timings_ms=item.timings_ms,
        )

    @classmethod
    def failure(
        cls,
        name: str,
        job_id: str,
        reason: str,
        stage: str = "ingest",
        sha256: str | None = None,
        source: str | None = None,
    ) -> ImageRecord:
        return cls(image=name, job_id=job_id, sha256=sha256, error=reason, error_stage=stage, source=source)


def _stages_run(item: ItemState) -> int:
    return int(item.classification is not None) + bool(item.scores) + bool(item.summaries)
