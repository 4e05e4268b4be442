"""The results dataset: one Parquet file per finished part of a job, read back with pyarrow.dataset.

Layout under the results location (a folder, or any URL pyarrow.fs understands: file://, s3://, gs://,
hdfs://, abfs://):

    <location>/<job_id>/<part>.parquet      part = a batch id (written by the worker that ran the batch)
                                            or c-<hash> (records a collector moved out of Redis)

A part's name is fixed before it is written and the write replaces the whole file, so a batch that
is redone after a worker was killed overwrites its own file: each image has exactly one row.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from app.schemas import ImageRecord
from config.settings import resolve_location

SCHEMA = pa.schema(
    [
        ("image", pa.string()),
        ("sha256", pa.string()),
        ("outcome", pa.string()),
        ("category", pa.string()),
        ("score", pa.float64()),
        ("error", pa.string()),
        ("worker", pa.string()),
        ("batch_id", pa.string()),
        ("record", pa.string()),  # the whole ImageRecord as JSON: what every reader rebuilds records from
    ]
)
READ_BATCH_ROWS = 2048  # rows decoded at a time: with PARTS_AT_ONCE, what bounds a reader's memory
PARTS_AT_ONCE = 256
# Fault injection for the fault suite: names a file; a worker that finds it deletes it and SIGKILLs
# itself right after writing a part, before Redis hears of it (the window in which a kill must
# neither lose nor double a record).
KILL_AFTER_WRITE_ENV = "VLMQ_FAULT_KILL_AFTER_PART_WRITE"


class ResultsDataset:
    def __init__(self, location: str) -> None:
        self.location = resolve_location(location)
        self.fs, self.root = pafs.FileSystem.from_uri(self.location)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def folder(self, job_id: str) -> str:
        return f"{self.root.rstrip('/')}/{job_id}"

    def part_path(self, job_id: str, part: str) -> str:
        return f"{self.folder(job_id)}/{part}.parquet"

    def write_part(self, job_id: str, part: str, records: Sequence[ImageRecord]) -> str:
        """Write (or overwrite) one part; readers never see a half-written file."""
        path = self.part_path(job_id, part)
        self.fs.create_dir(self.folder(job_id), recursive=True)
        table = pa.Table.from_pylist([row(r) for r in records], schema=SCHEMA)
        if self.local:  # write beside, then rename: atomic on a POSIX filesystem
            tmp = f"{self.folder(job_id)}/.{part}.{uuid.uuid4().hex[:8]}.tmp"
            pq.write_table(table, tmp, filesystem=self.fs, compression="zstd")
            self.fs.move(tmp, path)
        else:  # object stores make a whole object visible at once
            pq.write_table(table, path, filesystem=self.fs, compression="zstd")
        trigger = os.environ.get(KILL_AFTER_WRITE_ENV)
        if trigger and os.path.exists(trigger):
            os.unlink(trigger)
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    def parts(self, job_id: str) -> list[str]:
        selector = pafs.FileSelector(self.folder(job_id), allow_not_found=True)
        return sorted(
            i.path
            for i in self.fs.get_file_info(selector)
            if i.type == pafs.FileType.File and i.path.endswith(".parquet") and not i.base_name.startswith(".")
        )

    def _dataset(self, job_id: str, paths: Sequence[str] | None = None) -> ds.Dataset | None:
        paths = list(paths) if paths is not None else self.parts(job_id)
        return ds.dataset(paths, schema=SCHEMA, format="parquet", filesystem=self.fs) if paths else None

    def count(self, job_id: str, superseded: Mapping[str, str] | None = None) -> int:
        """Rows of the job, less the older rows of images whose record was replaced."""
        paths, rows, stale = self.parts(job_id), 0, 0
        for start in range(0, len(paths), PARTS_AT_ONCE):  # from the files' footers, a group at a time
            dataset = self._dataset(job_id, paths[start : start + PARTS_AT_ONCE])
            assert dataset is not None
            rows += dataset.count_rows()
            if superseded:
                found = dataset.to_table(columns=["image", "batch_id"], filter=ds.field("image").isin(list(superseded)))
                pairs = zip(found.column("image").to_pylist(), found.column("batch_id").to_pylist())
                stale += sum(superseded[n] != b for n, b in pairs)
        return rows - stale

    def _batches(self, job_id: str, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
        """Record batches of every part, a group of parts at a time: a dataset object keeps each
        file's metadata once read, so one over all of a big job's parts would grow with it."""
        paths = self.parts(job_id)
        for start in range(0, len(paths), PARTS_AT_ONCE):
            dataset = self._dataset(job_id, paths[start : start + PARTS_AT_ONCE])
            assert dataset is not None
            yield from dataset.to_batches(columns=list(columns), batch_size=READ_BATCH_ROWS)

    def rows(self, job_id: str, columns: Sequence[str]) -> Iterator[tuple]:
        """Chosen columns of every row, streamed."""
        for batch in self._batches(job_id, columns):
            yield from zip(*(batch.column(c).to_pylist() for c in columns))

    def iter_records(self, job_id: str, superseded: Mapping[str, str] | None = None) -> Iterator[ImageRecord]:
        """Every record of the job, a few thousand rows in memory at a time. An image in `superseded`
        (requeued: name → the batch of its new record) shows only its row from that batch."""
        superseded = superseded or {}
        for batch in self._batches(job_id, ["image", "batch_id", "record"]):
            images, batches = batch.column("image").to_pylist(), batch.column("batch_id").to_pylist()
            for image, batch_id, raw in zip(images, batches, batch.column("record").to_pylist()):
                if superseded.get(image, batch_id) == batch_id:
                    yield ImageRecord.model_validate_json(raw)

    def read_part(self, path: str) -> list[ImageRecord]:
        table = pq.read_table(path, filesystem=self.fs, columns=["record"])
        return [ImageRecord.model_validate_json(raw) for raw in table.column("record").to_pylist()]

    def find(self, path: str, shas: Iterable[str]) -> dict[str, ImageRecord]:
        """Records by sha256 from one part (the record cache's lookups); {} if the part is gone."""
        wanted = sorted(set(shas))
        try:
            table = pq.read_table(
                path, filesystem=self.fs, columns=["sha256", "record"], filters=[("sha256", "in", wanted)]
            )
        except (FileNotFoundError, OSError):
            return {}
        return {
            sha: ImageRecord.model_validate_json(raw)
            for sha, raw in zip(table.column("sha256").to_pylist(), table.column("record").to_pylist())
        }

    def writable(self) -> bool:
        """Whether this process can write under the location (a probe file, removed again)."""
        probe = f"{self.root.rstrip('/')}/.probe-{uuid.uuid4().hex[:8]}"
        try:
            self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(probe) as fh:
                fh.write(b"ok")
            self.fs.delete_file(probe)
            return True
        except OSError:
            return False


def row(r: ImageRecord) -> dict[str, object]:
    return {
        "image": r.image,
        "sha256": r.sha256,
        "outcome": r.outcome,
        "category": r.classification.category if r.classification else None,
        "score": r.scoring.score if r.scoring else None,
        "error": r.error,
        "worker": r.worker,
        "batch_id": r.batch_id,
        "record": r.model_dump_json(),
    }
