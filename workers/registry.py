"""Per-model-family facts as data: prompt quirks, stop tokens, limits, engine options.

Adding a model family is adding a row here, never a branch in the engine code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    family: str
    model_types: tuple[str, ...]  # `model_type` values in a checkpoint's config.json
    name_hints: tuple[str, ...]  # lower-case substrings of hub ids
    max_image_edge: int  # the longest edge the processor makes use of; the producer never sends more
    stop: tuple[str, ...] = ()
    system_role: bool = True  # whether the chat template accepts a system message
    limit_mm_per_prompt: dict[str, int] = field(default_factory=lambda: {"image": 1})
    mm_processor_kwargs: dict[str, Any] = field(default_factory=dict)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)


REGISTRY: tuple[ModelSpec, ...] = (
    ModelSpec(
        family="idefics3",  # SmolVLM-256M/500M/2B-Instruct, Idefics3
        model_types=("idefics3", "smolvlm"),
        name_hints=("smolvlm", "idefics3"),
        max_image_edge=512,
        stop=("<end_of_utterance>",),
        # One 512-px tile per image: image splitting multiplies the image tokens by up to 17.
        mm_processor_kwargs={"do_image_splitting": False},
    ),
    ModelSpec(
        family="qwen2_5_vl",
        model_types=("qwen2_5_vl",),
        name_hints=("qwen2.5-vl", "qwen2_5_vl", "qwen2.5vl"),
        max_image_edge=1024,
        stop=("<|im_end|>",),
        mm_processor_kwargs={"min_pixels": 28 * 28 * 4, "max_pixels": 1280 * 28 * 28},
    ),
    ModelSpec(
        family="qwen2_vl",
        model_types=("qwen2_vl",),
        name_hints=("qwen2-vl", "qwen2_vl"),
        max_image_edge=1024,
        stop=("<|im_end|>",),
        mm_processor_kwargs={"min_pixels": 28 * 28 * 4, "max_pixels": 1280 * 28 * 28},
    ),
    ModelSpec(
        family="paligemma",
        model_types=("paligemma",),
        name_hints=("paligemma",),
        max_image_edge=448,
        system_role=False,
    ),
    ModelSpec(
        family="phi3_v",
        model_types=("phi3_v",),
        name_hints=("phi-3-vision", "phi-3.5-vision"),
        max_image_edge=1344,
        stop=("<|end|>",),
        engine_kwargs={"trust_remote_code": True},
        mm_processor_kwargs={"num_crops": 4},
    ),
)


def get_spec(family: str) -> ModelSpec:
    for spec in REGISTRY:
        if spec.family == family:
            return spec
    raise ConfigError(f"unknown model family {family!r}; known: {[s.family for s in REGISTRY]}")


def resolve_spec(model: str, family: str | None = None) -> ModelSpec:
    """The spec for a model: an explicit family, else a local config.json, else the name."""
    if family:
        return get_spec(family)
    config = Path(model).expanduser() / "config.json"
    if config.is_file():
        model_type = json.loads(config.read_text()).get("model_type", "")
        for spec in REGISTRY:
            if model_type in spec.model_types:
                return spec
    lowered = model.lower()
    for spec in REGISTRY:
        if any(hint in lowered for hint in spec.name_hints):
            return spec
    raise ConfigError(
        f"cannot tell the model family of {model!r}; set model_family to one of "
        f"{[s.family for s in REGISTRY]} (VLMQ_MODEL_FAMILY or --model-family)"
    )
