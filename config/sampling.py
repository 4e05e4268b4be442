"""Sampling per stage: every vLLM sampling parameter a stage may set; partial overrides merge with
the stage's defaults."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StageSampling(BaseModel):
    """Sampling for one stage; part of the stage's cache key. Unknown names are an error, not ignored."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=-1)  # 0 or -1: all tokens
    min_p: float = Field(0.0, ge=0, le=1)
    max_tokens: int = Field(64, ge=1, le=8192)
    min_tokens: int = Field(0, ge=0)
    seed: int | None = 0
    stop: list[str] = []
    repetition_penalty: float = Field(1.0, gt=0)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)


# Each stage's own defaults; a partial override (one field, from env, YAML or a flag) merges into them.
STAGE_SAMPLING_DEFAULTS: dict[str, dict[str, Any]] = {
    "classify": {"max_tokens": 4},
    "score": {"max_tokens": 96},
    "summarize": {"max_tokens": 192, "min_tokens": 1},  # never an empty summary
}


class Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    classify: StageSampling = StageSampling(**STAGE_SAMPLING_DEFAULTS["classify"])
    score: StageSampling = StageSampling(**STAGE_SAMPLING_DEFAULTS["score"])
    summarize: StageSampling = StageSampling(**STAGE_SAMPLING_DEFAULTS["summarize"])

    @model_validator(mode="before")
    @classmethod
    def _merge_stage_defaults(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        merged = dict(value)
        for stage, defaults in STAGE_SAMPLING_DEFAULTS.items():
            given = value.get(stage)
            if isinstance(given, dict):
                merged[stage] = {**defaults, **given}
        return merged
