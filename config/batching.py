"""Batch size: a fixed number of images per Celery task, or "auto" (what the engine can hold at once).

"auto" is resolved to a number when a job is created (app.batch_size) and the job records the number,
so a resume, a retry and every producer of the job cut the same batches.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator

AUTO = "auto"
FALLBACK = 32  # when nothing better is known: no live worker reports its engine's capacity
MAX = 1024  # never more images per task, whatever an engine could hold


def parse_batch_size(value: object) -> int | Literal["auto"]:
    """`auto` or a whole number 1..1024, from a flag, an environment variable, YAML or JSON."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if not text.isdigit():
            raise ValueError(f"batch size must be 'auto' or a whole number 1..{MAX}, not {value!r}")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"batch size must be 'auto' or a whole number 1..{MAX}, not {value!r}")
    if not 1 <= value <= MAX:
        raise ValueError(f"batch size must be 'auto' or a whole number 1..{MAX}, not {value}")
    return value


def clamp(size: int) -> int:
    """An engine's capacity as a batch size: at least 1, at most MAX."""
    return max(1, min(MAX, int(size)))


# The settings' and requests' type: "auto" or 1..1024, parsed from a string too ("64", "auto").
BatchSize = Annotated[int | Literal["auto"], BeforeValidator(parse_batch_size)]
