"""The body of POST /v1/jobs: what to process, and the job options the CLI's `submit` takes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from config.batching import BatchSize
from config.stages import new_job_stages_refusal


class JobRequest(BaseModel):
    folder: str | None = None
    urls: list[str] | None = Field(None, min_length=1)
    recursive: bool = True
    model: str | None = None  # default: the service's configured model
    batch_size: BatchSize | None = None  # "auto" or 1..1024; default: the service's setting
    use_cache: bool | None = None
    score_threshold: float | None = None
    categories_to_score: list[str] | None = None
    categories_to_summarize: list[str] | None = None
    stages: list[Literal["classify", "score", "summarize"]] | None = Field(None, min_length=1)  # default: all

    @field_validator("stages")
    @classmethod
    def _starts_with_classify(cls, value: list[str] | None) -> list[str] | None:
        if why := new_job_stages_refusal(value):
            raise ValueError(why)
        return value
