"""One image to prepare, whatever it came from: a file, a URL, or bytes read from a shard or a table.

An Entry travels to a decoding process (pickled) or, as `to_message()`, inside a prepare task
(JSON: files and URLs only; shard members and table cells are re-read where the task runs).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from app.decode import Failed, Prepared, PrepareLimits, prepare_bytes, prepare_file
from app.fetch import FetchError, fetch

Kind = Literal["file", "url", "data"]


@dataclass(frozen=True)
class Entry:
    name: str  # the record's image name, unique within the job
    source: str | None = None  # what the record says it came from (URL, shard, dataset#row=N)
    kind: Kind = "file"
    path: str | None = None  # kind file: opened relative to `root` without following symlinks
    root: str | None = None
    url: str | None = None  # kind url: fetched where the entry is prepared
    data: bytes | None = None  # kind data: bytes already read (shard member, table cell)
    problem: str | None = None  # refused before preparing: becomes the error record as is

    def to_message(self) -> dict[str, Any]:
        if self.kind == "data":
            raise ValueError("entries with bytes are not sent in messages; send their shard or table")
        return {
            k: v
            for k, v in (
                ("name", self.name),
                ("source", self.source),
                ("kind", self.kind),
                ("path", self.path),
                ("root", self.root),
                ("url", self.url),
                ("problem", self.problem),
            )
            if v is not None
        }

    @classmethod
    def from_message(cls, raw: dict[str, Any]) -> Entry:
        return cls(**{k: raw[k] for k in ("name", "source", "kind", "path", "root", "url", "problem") if k in raw})


def downloads(entry: Any) -> bool:
    """A URL entry (a scanned file, producers.scan.ScanEntry, has no kind): its download takes time of its own."""
    return getattr(entry, "kind", "file") == "url"


def time_limit_s(entry: Any, limits: PrepareLimits, decode_s: float) -> float:
    """How long preparing `entry` may take: a URL gets its download's limit on top of the decoding one."""
    return decode_s + (limits.fetch_timeout_s if downloads(entry) else 0)


def fetch_bytes(url: str, limits: PrepareLimits) -> bytes:
    return fetch(url, limits.max_file_bytes, limits.fetch_timeout_s, limits.max_redirects)


def prepare_entry(entry: Entry, limits: PrepareLimits) -> Prepared | Failed:
    """Fetch (URL), open (file) or take (bytes), then validate, hash, decode and downscale."""
    if entry.problem:
        return Failed(entry.name, entry.problem, source=entry.source)
    if entry.kind == "file":
        result = prepare_file(entry.path or "", entry.name, limits, entry.root)
    elif entry.kind == "url":
        try:
            raw = fetch_bytes(entry.url or "", limits)
        except FetchError as exc:
            return Failed(entry.name, str(exc), source=entry.source)
        result = prepare_bytes(entry.name, raw, limits)
    else:
        raw = entry.data or b""
        if not raw:
            result = Failed(entry.name, "empty image (0 bytes)")
        elif len(raw) > limits.max_file_bytes:
            result = Failed(
                entry.name,
                f"image is {len(raw) / 2**20:.1f} MiB, over the limit of {limits.max_file_bytes / 2**20:.0f} MiB",
            )
        else:
            result = prepare_bytes(entry.name, raw, limits)
    return replace(result, source=entry.source)
