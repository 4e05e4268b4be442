"""Structured JSON logs for workers, with the job and batch id on every line of a batch's work."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_batch: ContextVar[dict[str, str] | None] = ContextVar("vlmq_batch", default=None)


class BatchContext(logging.Filter):
    """Adds the current batch's ids to every record logged while a task runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_batch.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def set_batch(task_name: str, payload: dict[str, Any]) -> dict[str, str]:
    """Remember the batch a task works on; returns the fields added to each log line."""
    fields = {
        "job_id": str(payload.get("job_id", "")),
        "batch_id": str(payload.get("batch_id", "")),
        "stage": task_name.rsplit(".", 1)[-1],
    }
    if payload.get("request_ids"):  # chat batches: the HTTP requests' ids, on every line of the batch
        fields["request_ids"] = ",".join(map(str, payload["request_ids"]))
    _batch.set(fields)
    return fields


def clear_batch() -> None:
    _batch.set({})


def use_json(logger: logging.Logger) -> None:
    formatter = JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(processName)s %(message)s",
        rename_fields={"levelname": "level", "asctime": "time"},
    )
    for handler in logger.handlers:
        handler.setFormatter(formatter)
        handler.addFilter(BatchContext())
