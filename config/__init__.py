"""Settings, prompt files and the error hierarchy: the base every other package builds on."""

from config.errors import PipelineError
from config.settings import Settings, load_settings

__all__ = ["PipelineError", "Settings", "load_settings"]
