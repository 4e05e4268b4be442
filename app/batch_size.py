"""A job's batch size, a number fixed when the job is created (its spec records it).

"auto" becomes, in this order:
1. the smallest capacity among the live workers serving the job's model (each measures its engine
   once it is loaded, workers.capacity, and says it in its heartbeat): a batch no worker of the
   job's model must cut again;
2. none says one (no live worker, or none has loaded its engine yet): the engine settings'
   `max_num_seqs`, when set;
3. else 32 (config.batching.FALLBACK). The deterministic test engine reports no capacity: 32.

A fixed number is taken as it is. Resumes, retries and every producer of the job read the number
from the spec, never resolve again.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from app.heartbeat import live_capacities
from config.batching import AUTO, FALLBACK, clamp, parse_batch_size
from config.settings import Settings
from workers.engine import engine_model_id


@dataclass(frozen=True)
class ChosenBatchSize:
    size: int
    why: str  # for the producer's line and log: "fixed", "auto: …"

    def __str__(self) -> str:
        return f"batch size {self.size} ({self.why})"


def resolve_batch_size(settings: Settings, client: redis.Redis) -> ChosenBatchSize:
    """The number of images per task a new job with these settings uses."""
    value = parse_batch_size(settings.batch_size)  # a model_construct()ed settings object is not validated
    if value != AUTO:
        return ChosenBatchSize(value, "fixed")
    model = engine_model_id(settings)
    capacities = live_capacities(client, model)
    if capacities:
        workers = f"{len(capacities)} live worker{'s' if len(capacities) > 1 else ''}"
        return ChosenBatchSize(clamp(min(capacities)), f"auto: the least capacity of {workers} of {model}")
    if settings.engine.max_num_seqs:
        return ChosenBatchSize(clamp(settings.engine.max_num_seqs), "auto: engine.max_num_seqs, no worker says more")
    return ChosenBatchSize(FALLBACK, "auto: no live worker reports its engine's capacity")


def with_batch_size(settings: Settings, client: redis.Redis) -> tuple[Settings, ChosenBatchSize]:
    """The settings with "auto" replaced by the number chosen now, and that choice."""
    chosen = resolve_batch_size(settings, client)
    if chosen.size == settings.batch_size:
        return settings, chosen
    return settings.with_overrides(batch_size=chosen.size), chosen
