"""Parquet files and Arrow datasets (Hugging Face `datasets` saved to disk) with an image column.

Read in record batches with pyarrow, one column only, so memory stays flat whatever the table's
size (Arrow files are memory-mapped). The image cell is Hugging Face's `{"bytes", "path"}` struct or
plain binary. A null cell, or a struct without bytes, is one error record; a `path` inside the data
is never opened (the table is untrusted input and could name any file on the worker).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from app.entries import Entry
from app.names import display_name
from config.errors import ConfigError

READ_ROWS = 64  # rows per record batch read from Parquet


class TableError(ConfigError):
    """A table that cannot be read as asked (no such column, not Parquet or Arrow)."""


@dataclass(frozen=True)
class TableFile:
    path: str
    format: str  # "parquet" or "arrow" (an Arrow IPC stream file, as `datasets` writes)
    label: str  # record names start with it
    rows: int
    first_row: int = 0  # row number of this file's first row within its dataset (several files)


def is_dataset_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def is_table_file(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".arrow")


def _arrow_batches(path: str) -> Iterator[pa.RecordBatch]:
    with pa.memory_map(path) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:  # the random-access file format, not a stream
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
            return
        yield from reader


def _batches(table: TableFile, column: str) -> Iterator[pa.RecordBatch]:
    try:
        if table.format == "parquet":
            pf = pq.ParquetFile(table.path)
            if column not in pf.schema_arrow.names:
                raise TableError(f"{table.path}: no column {column!r} (columns: {', '.join(pf.schema_arrow.names)})")
            yield from pf.iter_batches(batch_size=READ_ROWS, columns=[column])
        else:
            for batch in _arrow_batches(table.path):
                if column not in batch.schema.names:
                    raise TableError(f"{table.path}: no column {column!r} (columns: {', '.join(batch.schema.names)})")
                yield batch.select([column])
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"{table.path}: not a readable {table.format} file: {exc}") from exc


def count_rows(path: Path, fmt: str, column: str) -> int:
    """Rows of one file, from metadata (Parquet) or batch headers (Arrow, memory-mapped); checks the column."""
    if fmt == "parquet":
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise TableError(f"{path}: not a readable parquet file: {exc}") from exc
        if column not in pf.schema_arrow.names:
            raise TableError(f"{path}: no column {column!r} (columns: {', '.join(pf.schema_arrow.names)})")
        return pf.metadata.num_rows
    return sum(b.num_rows for b in _batches(TableFile(str(path), fmt, "", 0), column))


def dataset_files(path: Path, column: str) -> list[TableFile]:
    """The data files of a Parquet/Arrow file or a `save_to_disk` folder (splits included), in order."""
    path = path.resolve()
    if is_table_file(path):
        fmt = "parquet" if path.suffix.lower() == ".parquet" else "arrow"
        return [TableFile(str(path), fmt, display_name(path.stem), count_rows(path, fmt, column))]
    if (path / "dataset_dict.json").is_file():  # a DatasetDict: one folder per split
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        files = []
        for split in splits:
            for f in dataset_files(path / split, column):
                files.append(TableFile(f.path, f.format, f"{display_name(path.name)}/{split}", f.rows, f.first_row))
        return files
    state = json.loads((path / "state.json").read_text())
    files, first = [], 0
    for data_file in state.get("_data_files", []):
        file_path = path / Path(data_file["filename"]).name  # a name inside the folder, nothing else
        rows = count_rows(file_path, "arrow", column)
        files.append(TableFile(str(file_path), "arrow", display_name(path.name), rows, first))
        first += rows
    return files


def _cell(value: object) -> tuple[bytes | None, str | None]:
    """(bytes, path) of an image cell: HF's struct, or plain binary."""
    if isinstance(value, dict):
        return value.get("bytes"), value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    return None, None


def row_name(table: TableFile, row: int, path: str | None) -> str:
    tail = f"-{display_name(Path(path).name)}" if path else ""
    return f"{table.label}/{row:06d}{tail}"


def table_entries(table: TableFile, column: str, start: int = 0, stop: int | None = None) -> Iterator[Entry]:
    """Rows [start, stop) of one file (file-local numbers) as entries carrying their image bytes."""
    stop = table.rows if stop is None else stop
    row = 0
    for batch in _batches(table, column):
        for offset in range(0, batch.num_rows, READ_ROWS):  # a slice at a time: `datasets` writes 1,000-row batches
            part = batch.slice(offset, READ_ROWS)
            if row + part.num_rows <= start:
                row += part.num_rows
                continue
            for value in part.column(0).to_pylist():
                if start <= row < stop:
                    yield _entry(table, column, table.first_row + row, value)
                row += 1
                if row >= stop:
                    return


def _entry(table: TableFile, column: str, number: int, value: object) -> Entry:
    data, path = _cell(value)
    name, source = row_name(table, number, path), f"{table.label}#row={number}"
    if value is None:
        return Entry(name, source, "data", problem=f"no image: the {column!r} cell is null")
    if not data:
        return Entry(
            name,
            source,
            "data",
            problem=f"no image bytes in the {column!r} cell"
            + (f" (only a path, {display_name(path)[:200]}, which is not opened)" if path else ""),
        )
    return Entry(name, source, "data", data=data)
