"""Several small entries per message to a decoding process, sized by how long entries take.

A round trip to a decoding process (pickling the call and its result, waking two threads) costs
about 0.3 ms of CPU: nothing beside a 12 MP photo (30 ms), more than decoding a thumbnail
(0.4 ms). Entries therefore travel in chunks of about CHUNK_S of decoding each.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from app.entries import downloads


def prepare_many(calls: list[tuple]) -> tuple[list[Any], float]:
    """In a decoding process: each (function, *args) of one message, and how long they took."""
    started = time.perf_counter()
    return [fn(*args) for fn, *args in calls], time.perf_counter() - started


class ChunkSize:
    """Entries per message: about CHUNK_S of decoding, at most MOST. It starts at one, so a slow
    first file risks nothing, and follows the last chunk's time per entry."""

    CHUNK_S, MOST = 0.02, 32

    def __init__(self) -> None:
        self.now = 1

    def observe(self, seconds: float, entries: int) -> None:
        per_entry = max(seconds / entries, 1e-6)
        self.now = max(1, min(self.MOST, int(self.CHUNK_S / per_entry)))


class Chunker:
    """Cuts entries into chunks of at most n, in order; an entry refused before decoding or a URL
    (its download's time is its own) travels alone."""

    def __init__(self, entries: Iterable[Any]) -> None:
        self.it: Iterator[Any] = iter(entries)
        self.held: Any = None

    def next(self, n: int) -> list[Any]:
        chunk: list[Any] = []
        while len(chunk) < n:
            entry, self.held = self.held or next(self.it, None), None
            if entry is None:
                break
            if entry.problem or downloads(entry):
                if chunk:
                    self.held = entry
                    break
                return [entry]
            chunk.append(entry)
        return chunk
