"""The message of a prepare task, importable without starting the Celery app (the producer builds it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

TASK_NAME = "app.prepare_task.prepare"


class PrepareOrder(BaseModel):
    """One prepare task's message: entry references and the producer's preparation settings."""

    job_id: str
    index: int
    units: list[dict[str, Any]]  # Entry.to_message(), {"kind": "shard", …} or {"kind": "table", …}
    limits: dict[str, Any]  # PrepareLimits: the producer's limits apply wherever preparation runs
    extensions: list[str]
    image_column: str = "image"
    batch_size: int
    max_inflight_batches: int
    blob_ttl_s: int
    decode_timeout_s: float
    shared_dir: str | None = None
    queues: list[str] | None = None  # GPU queues the user named; None: the live ones

    @property
    def task_id(self) -> str:
        return f"{self.job_id}-p{self.index:06d}"


def order_settings(settings_) -> dict[str, Any]:
    """The preparation settings a producer puts in every order (Path → str for JSON)."""
    return {
        "batch_size": settings_.batch_size,
        "max_inflight_batches": settings_.max_inflight_batches,
        "blob_ttl_s": settings_.blob_ttl_s,
        "decode_timeout_s": settings_.images.decode_timeout_s,
        "shared_dir": str(Path(settings_.shared_dir)) if settings_.shared_dir else None,
        "extensions": list(settings_.images.extensions),
        "image_column": settings_.images.image_column,
    }
