"""The three stages as plain functions over a batch: no Celery, no Redis.

Each stage plans its work units (image × prompt), serves what it can from the cache, sends the
rest to the engine in one call, and parses every output into the item or into a per-image error.
Conditions (category filters, score threshold) are applied here, and a skipped stage says why.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.job_spec import JobSpec
from app.schemas import BatchState, Classification, ItemState, Scoring, Stage, Summary
from config.errors import OutputParseError, PipelineError
from config.output_schema import parse_json_output
from config.prompts import Prompt
from workers.engine import Engine, EngineRequest, split_on_reject
from workers.formats import (
    JSON_MIN_TOKENS,
    OutputFormat,
    asks_for_reasoning,
    check_score,
    classification_schema,
    parse_choice,
    parse_score,
    parse_text,
)

# Stages whose outputs Redis caches per image: a category is a few bytes. Scores and summaries carry
# reasoning text; whole records come back from the record cache (its index in Redis, the records
# in the dataset), so Redis keeps a few dozen bytes an image, whatever the model writes.
STAGE_CACHED: tuple[Stage, ...] = ("classify",)


class ResultCache(Protocol):
    def get_many(self, keys: Sequence[tuple[str, str]]) -> list[str | None]: ...
    def set_many(self, values: Mapping[tuple[str, str], str]) -> None: ...


class MemoryCache:
    """An in-process ResultCache, for tests and single-process use."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], str] = {}

    def get_many(self, keys: Sequence[tuple[str, str]]) -> list[str | None]:
        return [self.data.get(k) for k in keys]

    def set_many(self, values: Mapping[tuple[str, str], str]) -> None:
        self.data.update(values)


@dataclass
class StageContext:
    engine: Callable[[], Engine]  # called only when some unit misses the cache
    spec: JobSpec
    images: Callable[[Sequence[ItemState]], dict[str, bytes]]  # sha256 → prepared bytes
    cache: ResultCache | None = None


@dataclass
class Unit:
    item: ItemState
    prompt: Prompt
    format: OutputFormat
    choices: list[str]
    schema: dict[str, Any] | None = None  # format "json": what structured decoding constrains to


def plan(stage: Stage, item: ItemState, spec: JobSpec) -> list[Unit]:
    """The work units of one item for a stage; records in `item.skipped` why there are none."""
    if item.error:
        return []
    if stage not in spec.stages:  # skipped, or its output taken from the parent job's record
        if not has_output(stage, item):
            item.skipped.setdefault(stage, "stage not selected")
        return []
    if stage == "classify":
        categories = sorted(spec.prompts.categories)
        prompt = spec.prompts.classification
        if prompt.output_schema or asks_for_reasoning(prompt.text):  # JSON costs tokens: only when asked
            return [Unit(item, prompt, "json", categories, classification_schema(categories, prompt.output_schema))]
        return [Unit(item, prompt, "choice", categories)]
    if item.classification is None:  # classify not selected, and the parent job has none
        item.skipped[stage] = "no classification to go on from (classify not selected)"
        return []
    category = item.classification.category
    allowed = spec.categories_to_score if stage == "score" else spec.categories_to_summarize
    if allowed is not None and category not in allowed:
        option = "categories_to_score" if stage == "score" else "categories_to_summarize"
        item.skipped[stage] = f"category {category} is not in {option} {allowed}"
        return []
    if stage == "summarize" and spec.score_threshold is not None:
        if not item.scores or item.scores[0].score is None:
            item.skipped[stage] = f"no score to compare with threshold {spec.score_threshold}"
            return []
        if item.scores[0].score < spec.score_threshold:
            item.skipped[stage] = f"score {item.scores[0].score:g} is below threshold {spec.score_threshold:g}"
            return []
    prompts = spec.prompts.for_stage(stage, category)
    if not prompts:  # a folder of per-category prompts without a default (as Chromatic's are)
        item.skipped[stage] = f"no {stage} prompt for category {category} (and no default)"
        return []
    fmt: OutputFormat = "score" if stage == "score" else "text"
    return [Unit(item, p, "json" if p.output_schema else fmt, [], p.output_schema) for p in prompts]


def has_output(stage: Stage, item: ItemState) -> bool:
    """Whether the item already carries this stage's output (a rerun preloads the parent's)."""
    if stage == "classify":
        return item.classification is not None
    return bool(item.scores if stage == "score" else item.summaries)


def cache_keys(stage: Stage, units: list[Unit], spec: JobSpec) -> list[tuple[str, str]]:
    """(what the stage was asked, which image) per unit: the cache keeps one small hash per stage
    config, computed once per prompt and choices, not once per image."""
    sampling = getattr(spec.sampling, stage).model_dump_json()
    asked: dict[tuple[str, tuple[str, ...]], str] = {}
    keys = []
    for unit in units:
        what = (unit.prompt.ref, tuple(unit.choices))
        if what not in asked:
            raw = "|".join([stage, unit.prompt.ref, spec.system_prompt, spec.model, sampling, ",".join(unit.choices)])
            asked[what] = hashlib.sha256(raw.encode()).hexdigest()[:24]
        keys.append((asked[what], unit.item.ref.sha256))
    return keys


def apply_json_output(stage: Stage, unit: Unit, text: str) -> None:
    """A schema-constrained output: the stage's own keys where the schema has them, the rest as fields."""
    assert unit.schema is not None
    fields = parse_json_output(text, unit.schema)
    item, ref = unit.item, unit.prompt.ref
    reasoning = str(fields.pop("reasoning", ""))
    if stage == "classify":
        category = parse_choice(str(fields.pop("category")), unit.choices)
        item.classification = Classification(category=category, reasoning=reasoning, fields=fields, prompt=ref)
    elif stage == "score":
        score = fields.pop("score", None)
        score = None if score is None else check_score(float(score), text)
        item.scores.append(Scoring(score=score, reasoning=reasoning, fields=fields, prompt=ref))
    else:
        if reasoning:
            fields["reasoning"] = reasoning
        summary = str(fields.pop("summary")) if "summary" in fields else text.strip()
        item.summaries.append(Summary(summary=summary, fields=fields, prompt=ref))


def apply_output(stage: Stage, unit: Unit, text: str) -> None:
    item, ref = unit.item, unit.prompt.ref
    if unit.format == "json":
        apply_json_output(stage, unit, text)
    elif stage == "classify":
        item.classification = Classification(category=parse_choice(text, unit.choices), prompt=ref)
    elif stage == "score":
        score, reasoning = parse_score(text)
        item.scores.append(Scoring(score=score, reasoning=reasoning, prompt=ref))
    else:
        item.summaries.append(Summary(summary=parse_text(text), prompt=ref))


def run_stage(stage: Stage, batch: BatchState, ctx: StageContext) -> BatchState:
    started = time.perf_counter()
    units = [u for item in batch.items for u in plan(stage, item, ctx.spec)]
    use_cache = ctx.cache is not None and ctx.spec.use_cache and stage in STAGE_CACHED
    keys = cache_keys(stage, units, ctx.spec) if use_cache else []
    cached = ctx.cache.get_many(keys) if use_cache and keys else [None] * len(units)
    todo = [i for i, hit in enumerate(cached) if hit is None]
    images = ctx.images([units[i].item for i in todo]) if todo else {}
    requests, sent = [], []
    for i in todo:
        unit = units[i]
        data = images.get(unit.item.ref.sha256)
        if data is None:
            unit.item.fail(stage, "prepared image is no longer in the blob store (expired or deleted)")
            continue
        sampling = getattr(ctx.spec.sampling, stage)
        if unit.format == "json" and sampling.max_tokens < JSON_MIN_TOKENS:
            sampling = sampling.model_copy(update={"max_tokens": JSON_MIN_TOKENS})
        requests.append(
            EngineRequest(
                image=data,
                image_key=unit.item.ref.sha256,
                system=ctx.spec.system_prompt,
                text=unit.prompt.text,
                sampling=sampling,
                format=unit.format,
                choices=unit.choices,
                schema=unit.schema,
            )
        )
        sent.append(i)
    outputs: dict[int, str | PipelineError] = dict(
        zip(sent, split_on_reject(ctx.engine().generate, requests) if requests else [])
    )
    fresh: dict[tuple[str, str], str] = {}
    hit_items: dict[int, bool] = {}
    for i, unit in enumerate(units):
        out = cached[i] if cached[i] is not None else outputs.get(i)
        if out is None or unit.item.error:
            continue
        if isinstance(out, PipelineError):
            unit.item.fail(stage, f"engine error: {out}")
            continue
        try:
            apply_output(stage, unit, out)
        except OutputParseError as exc:
            unit.item.fail(stage, f"unparseable {stage} output: {exc}")
            continue
        if use_cache and cached[i] is None:
            fresh[keys[i]] = out
        hit_items[id(unit.item)] = hit_items.get(id(unit.item), True) and cached[i] is not None
    if use_cache and fresh:
        ctx.cache.set_many(fresh)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
    for item in batch.items:
        if id(item) in hit_items:
            item.timings_ms[stage] = elapsed_ms
            if hit_items[id(item)]:
                item.cached_stages.append(stage)
    return batch
