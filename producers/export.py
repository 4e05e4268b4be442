"""Exports of a job's records: jsonl, csv, parquet, captions (txt), a Hugging Face `datasets` folder,
and the three-stage pipeline's output folder.

Output folder layout (what users of the three-stage pipeline know):

    run/classification/<image>.json   category per image
    run/scoring/<image>.json          score and reasoning (images that were scored)
    run/summaries/<image>.json        summaries (images that were summarized)
    run/errors/<image>.json           images that failed, with the reason
    run/<stage>/<stage>_results.json  each stage's per-image objects, one list (not for errors)
    run/pipeline_results.json         every record, one list
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO

from app.schemas import ImageRecord
from producers.export_hf import write_datasets, write_txt

FORMATS = ("jsonl", "csv", "parquet", "txt", "datasets", "folder")
# A spreadsheet runs a cell starting with these as a formula (OWASP "CSV injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
MAX_NAME_BYTES = 255  # one path component, on every common filesystem
CSV_COLUMNS = [  # also the parquet and datasets exports' columns
    "image",
    "source",
    "sha256",
    "width",
    "height",
    "category",
    "category_reasoning",
    "score",
    "score_reasoning",
    "summary",
    "fields",
    "summaries",
    "skipped",
    "error",
    "error_stage",
    "model",
    "prompts",
    "worker",
    "cached",
    "job_id",
]


def flat_row(r: ImageRecord) -> dict[str, object]:
    """One flat row per record, for csv and parquet; lists and maps as JSON text."""
    return {
        "image": r.image,
        "source": r.source,
        "sha256": r.sha256,
        "width": r.width,
        "height": r.height,
        "category": r.classification.category if r.classification else None,
        "category_reasoning": r.classification.reasoning if r.classification else None,
        "score": r.scoring.score if r.scoring else None,
        "score_reasoning": r.scoring.reasoning if r.scoring else None,
        "summary": r.summary.summary if r.summary else None,
        "fields": json.dumps(r.fields, ensure_ascii=False),  # what prompts' SCHEMA sections asked for
        "summaries": json.dumps([s.model_dump() for s in r.summaries], ensure_ascii=False),
        "skipped": json.dumps(r.skipped, ensure_ascii=False),
        "error": r.error,
        "error_stage": r.error_stage,
        "model": r.model,
        "prompts": json.dumps(r.prompts, ensure_ascii=False),
        "worker": r.worker,
        "cached": r.cached,
        "job_id": r.job_id,
    }


def write_jsonl(records: Iterable[ImageRecord], path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(r.model_dump_json() + "\n")
    return path


def inert(value: object) -> object:
    """A text cell a spreadsheet will not evaluate: a leading formula character gets a quote."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_START) else value


def write_csv(records: Iterable[ImageRecord], path: Path) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: inert(v) for k, v in flat_row(r).items()} for r in records)
    return path


def flat_schema():
    """The Arrow schema of `flat_row`: parquet's and the datasets folder's columns."""
    import pyarrow as pa

    not_text = {"width": pa.int64(), "height": pa.int64(), "score": pa.float64(), "cached": pa.bool_()}
    return pa.schema([(name, not_text.get(name, pa.string())) for name in CSV_COLUMNS])


def write_parquet(records: Iterable[ImageRecord], path: Path, rows_per_group: int = 10_000) -> Path:
    """Written a row group at a time: memory stays flat whatever the job's size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = flat_schema()
    with pq.ParquetWriter(path, schema) as writer:
        rows: list[dict[str, object]] = []
        for r in records:
            rows.append(flat_row(r))
            if len(rows) >= rows_per_group:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows = []
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    return path


def _component(part: str, suffix: str = "") -> str:
    """One path component of at most 255 bytes: an over-long one keeps its start and gets a hash
    of the whole, so it stays readable, deterministic and distinct (the record has the full name)."""
    whole = part + suffix
    if len(whole.encode()) <= MAX_NAME_BYTES:
        return whole
    digest = hashlib.sha256(part.encode()).hexdigest()[:16]
    room = MAX_NAME_BYTES - len(suffix.encode()) - len(digest) - 1
    return f"{part.encode()[:room].decode('utf-8', 'ignore')}~{digest}{suffix}"


def _safe_name(image: str) -> str:
    # keep the folder structure readable but never escape the output folder
    parts = [p if p != ".." else "__" for p in image.replace("\\", "/").split("/") if p not in ("", ".")] or ["_"]
    return "/".join([_component(p) for p in parts[:-1]] + [_component(parts[-1], ".json")])


class JsonList:
    """A JSON list written item by item as it comes, never held in memory."""

    def __init__(self, fh: IO[str]):
        self.fh, self.count = fh, 0
        fh.write("[")

    def add(self, item: object) -> None:
        self.fh.write(("," if self.count else "") + "\n" + json.dumps(item, ensure_ascii=False))
        self.count += 1

    def finish(self) -> None:
        self.fh.write("\n]\n")


STAGE_LISTS = {  # the three-stage pipeline's per-stage aggregate files
    "classification": "classification_results.json",
    "scoring": "scoring_results.json",
    "summaries": "summary_results.json",
}


def write_folder(records: Iterable[ImageRecord], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for folder in STAGE_LISTS:
        (out / folder).mkdir(exist_ok=True)
    with ExitStack() as stack:
        paths = {"all": out / "pipeline_results.json", **{f: out / f / n for f, n in STAGE_LISTS.items()}}
        listings = {name: JsonList(stack.enter_context(open(p, "w", encoding="utf-8"))) for name, p in paths.items()}
        for r in records:
            listings["all"].add(r.model_dump(mode="json"))
            parts = {
                "classification": r.classification and {"image": r.image, **r.classification.model_dump()},
                "scoring": r.scoring
                and {"image": r.image, **r.scoring.model_dump(), "all": [s.model_dump() for s in r.scores]},
                "summaries": r.summaries and {"image": r.image, "summaries": [s.model_dump() for s in r.summaries]},
                "errors": r.error and {"image": r.image, "error": r.error, "stage": r.error_stage},
            }
            for folder, content in parts.items():
                if content:
                    target = out / folder / _safe_name(r.image)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(json.dumps(content, indent=2, ensure_ascii=False), encoding="utf-8")
                    if folder in listings:
                        listings[folder].add(content)
        # finished only after the last record: an export that failed midway leaves lists that do not parse
        for listing in listings.values():
            listing.finish()
    return out


def export(
    records: Callable[[], Iterable[ImageRecord]] | Sequence[ImageRecord], out_dir: str | Path, formats: Sequence[str]
) -> list[Path]:
    """Write the chosen formats ('all' for every one) into `out_dir`; return what was written.

    `records` is read once per format: pass a callable that streams them (Job.records) to export
    any number of records in flat memory."""
    if not callable(records):
        records = (lambda rows: lambda: rows)(records)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = FORMATS if "all" in formats else formats
    writers = {
        "jsonl": lambda: write_jsonl(records(), out / "results.jsonl"),
        "csv": lambda: write_csv(records(), out / "results.csv"),
        "parquet": lambda: write_parquet(records(), out / "results.parquet"),
        "txt": lambda: write_txt(records(), out / "captions.txt"),
        "datasets": lambda: write_datasets((flat_row(r) for r in records()), flat_schema(), out / "results_dataset"),
        "folder": lambda: write_folder(records(), out),
    }
    return [writers[f]() for f in chosen]
