"""Exports for captioning tools: a captions text file and a Hugging Face `datasets` folder.

The `datasets` folder is written with pyarrow alone, in the layout `Dataset.save_to_disk` produces,
so `datasets.load_from_disk(path)` reads it back while the product itself does not need `datasets`:

    data-00000-of-00001.arrow   an Arrow IPC stream, one record batch at a time
    dataset_info.json           the columns as `datasets` features
    state.json                  which files hold the rows, and the (empty) format
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from app.schemas import ImageRecord

DATA_FILE = "data-00000-of-00001.arrow"
# pyarrow's type → the dtype name `datasets`' Value feature uses for it
FEATURE_DTYPES = {"string": "string", "int64": "int64", "double": "float64", "bool": "bool"}


def one_line(text: str) -> str:
    """Any line break (the ones str.splitlines knows) becomes a space: one record stays one line."""
    return " ".join(text.splitlines())


def write_txt(records: Iterable[ImageRecord], path: Path) -> Path:
    """Captions only: `<image>\\t<first summary>` per line. Images without a summary are left out;
    tabs and line breaks in a name, and line breaks in a summary, become spaces."""
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            if r.summary:
                name = one_line(r.image).replace("\t", " ")  # the first tab ends the name
                fh.write(f"{name}\t{one_line(r.summary.summary)}\n")
    return path


def features(schema) -> dict[str, dict[str, str]]:
    return {field.name: {"dtype": FEATURE_DTYPES[str(field.type)], "_type": "Value"} for field in schema}


def write_datasets(rows: Iterable[dict[str, object]], schema, out: Path, rows_per_batch: int = 10_000) -> Path:
    """Flat rows as a `datasets` folder, a record batch at a time: memory stays flat whatever the job's size."""
    import pyarrow as pa

    out.mkdir(parents=True, exist_ok=True)
    info = {"features": features(schema)}
    # `datasets` takes its features from this metadata first; without it, it infers them from the types
    schema = schema.with_metadata({"huggingface": json.dumps({"info": info})})
    fingerprint = hashlib.sha256()  # of the rows: the same records give the same fingerprint
    with pa.OSFile(str(out / DATA_FILE), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        batch: list[dict[str, object]] = []
        for row in rows:
            batch.append(row)
            fingerprint.update(json.dumps(row, sort_keys=True, default=str).encode())
            if len(batch) >= rows_per_batch:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
    state = {
        "_data_files": [{"filename": DATA_FILE}],
        "_fingerprint": fingerprint.hexdigest()[:16],
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    (out / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    dataset_info = {"citation": "", "description": "", "homepage": "", "license": "", **info}
    (out / "dataset_info.json").write_text(json.dumps(dataset_info, indent=2), encoding="utf-8")
    return out
