"""The baseline of `bench.overhead`: a bare Celery chain of three no-op tasks per batch.

Same Celery configuration as the product (app.factory.create_app: JSON, acks late, priorities,
result backend, events), same Redis, same worker options; the tasks do nothing but hand the
batch's image references on. `celery -A bench.bare_app worker -Q QUEUE -c 1`.
"""

from __future__ import annotations

from typing import Any

from celery import chain

from app.factory import create_app
from config.settings import load_settings

app = create_app(load_settings())
app.conf.include = []  # the product's tasks are not this baseline's


@app.task(name="bare.classify")
def classify(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


@app.task(name="bare.score")
def score(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


@app.task(name="bare.summarize")
def summarize(batch: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"image": ref} for ref in batch["refs"]]


def bare_chain(batch: dict[str, Any], queue: str) -> chain:
    return chain(
        classify.s(batch).set(queue=queue, priority=9),
        score.s().set(queue=queue, priority=3),
        summarize.s().set(queue=queue, priority=0),
    )
