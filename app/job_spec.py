"""The job spec: what every worker applies to a job's images, stored once per job in Redis."""

from __future__ import annotations

import hashlib
import socket
import time
from typing import Literal

from pydantic import BaseModel, Field

from app.schemas import Stage
from config.batching import AUTO, FALLBACK
from config.prompts import PromptSet
from config.sampling import Sampling
from config.settings import Settings, resolve_location
from config.stages import STAGES
from workers.engine import engine_model_id


class JobSpec(BaseModel):
    """What every worker applies to a job's images; stored once per job in Redis."""

    job_id: str
    created_at: float = Field(default_factory=time.time)
    roots: list[str] = []
    recursive: bool = True
    prompts: PromptSet
    system_prompt: str
    sampling: Sampling
    model: str
    score_threshold: float | None = None
    categories_to_score: list[str] | None = None
    categories_to_summarize: list[str] | None = None
    use_cache: bool = True
    # The stages this job runs; the others are skipped, or (a rerun) taken from the parent's records.
    stages: list[Stage] = list(STAGES)
    parent: str | None = None  # the job this one re-runs or retries (`producer rerun`, `retry`)
    parent_images: Literal["all", "failed"] = "all"  # which of the parent's images ("failed": a retry)
    batch_size: int = 32
    queues: list[str] = []
    # The results dataset (app.results): where records go, and whether workers may write there.
    results: str = ""
    results_host: str = ""  # the producer's host: a worker there reaches a local results folder too
    results_shared: bool = False  # every worker reaches `results` (a shared folder or an object store)

    @classmethod
    def from_settings(cls, settings: Settings, job_id: str, prompts: PromptSet, roots: list[str]) -> JobSpec:
        return cls(
            job_id=job_id,
            roots=roots,
            prompts=prompts,
            system_prompt=settings.system_prompt,
            sampling=settings.sampling,
            model=engine_model_id(settings),
            score_threshold=settings.conditions.score_threshold,
            categories_to_score=settings.conditions.categories_to_score,
            categories_to_summarize=settings.conditions.categories_to_summarize,
            use_cache=settings.use_cache,
            stages=list(settings.stages),
            # the producer resolves "auto" first (app.batch_size); a spec made without Redis (stage
            # tests, in-process loops) takes the fallback
            batch_size=FALLBACK if settings.batch_size == AUTO else settings.batch_size,
            queues=settings.queues,
            results=resolve_location(settings.results_dir),
            results_host=socket.gethostname(),
            results_shared=settings.results_shared,
        )

    def worker_writes_results(self) -> bool:
        """Whether a worker on this host may write the job's records into the dataset itself."""
        if not self.results:
            return False
        return self.results_shared or "://" in self.results or socket.gethostname() == self.results_host

    @property
    def cache_fingerprint(self) -> str:
        """The fingerprint, or "" when the job does not use the cache (nothing is looked up or indexed)."""
        return self.fingerprint if self.use_cache else ""

    @property
    def fingerprint(self) -> str:
        """Everything that changes a finished record; keys the whole-record cache."""
        include = {
            "prompts",
            "system_prompt",
            "sampling",
            "model",
            "score_threshold",
            "categories_to_score",
            "categories_to_summarize",
        }
        if tuple(self.stages) != STAGES:  # a record with a stage skipped, or taken from the parent's
            include |= {"stages", "parent"}
        relevant = self.model_dump_json(include=include)
        return hashlib.sha256(relevant.encode()).hexdigest()[:16]
