"""What preparation may do with one image: the settings' image limits, the edge capped by the model."""

from __future__ import annotations

from config.errors import ConfigError, UnsupportedModelError
from config.groups import PrepareLimits
from config.settings import Settings
from workers.registry import resolve_spec


def useful_edge(settings: Settings) -> int:
    """The downscale target: the settings' edge, capped at what the model's processor uses."""
    if settings.engine.backend != "vllm":
        return settings.images.max_image_edge
    try:
        return min(
            settings.images.max_image_edge,
            resolve_spec(settings.engine.model, settings.engine.model_family).max_image_edge,
        )
    except UnsupportedModelError:  # known, and not runnable: refused before a job exists
        raise
    except ConfigError:  # unknown family: the worker will say so; the settings' edge is safe
        return settings.images.max_image_edge


def limits_from(settings: Settings) -> PrepareLimits:
    return settings.images.limits(useful_edge(settings))
