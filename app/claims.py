"""A job's claims on image contents: which name first brought each sha256, and which batch carries it.

They make duplicates inside a job processed once (app.shipping) and let a resumed submission skip
what was already handled. Two homes, one interface:

- LocalClaims: the job's one submitting producer keeps them in a SQLite file of its own, so that
  neither Redis nor the producer's memory grows with the job (a few dozen bytes an image on disk,
  deleted when the producer is done). A resume rebuilds them from the results dataset.
- RedisClaims: prepare tasks on CPU workers (many preparers, one job) share them in Redis: about
  250 bytes an image while the job runs, deleted once it is finished and collected.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from app.store import JobStore


class Claims(Protocol):
    def claim(self, first_names: Mapping[str, str]) -> dict[str, str | None]:
        """Claim each sha256; None where the claim is new, else the name that holds it."""

    def handled(self, first_names: Mapping[str, str]) -> set[str]:
        """The shas (claimed under these names before an interruption) that were shipped or recorded."""

    def shipped(self, shas: Sequence[str], batch_id: str) -> None: ...

    def batch_of(self, sha256: str) -> str | None: ...


class RedisClaims:
    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id

    def claim(self, first_names: Mapping[str, str]) -> dict[str, str | None]:
        return self.store.claim_shas(self.job_id, first_names)

    def handled(self, first_names: Mapping[str, str]) -> set[str]:
        return self.store.already_handled(self.job_id, first_names)

    def shipped(self, shas: Sequence[str], batch_id: str) -> None:
        self.store.note_shipped(self.job_id, shas, batch_id)

    def batch_of(self, sha256: str) -> str | None:
        return self.store.shipped_in(self.job_id, sha256)


class LocalClaims:
    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="vlmq-claims-")
        self.db = sqlite3.connect(
            os.path.join(self._dir, "claims.sqlite"), isolation_level=None, check_same_thread=False
        )
        self.db.executescript("""
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -16384;
            CREATE TABLE claims (sha BLOB PRIMARY KEY, name TEXT NOT NULL, batch TEXT) WITHOUT ROWID;
            CREATE TABLE recorded (name TEXT PRIMARY KEY) WITHOUT ROWID;
        """)

    @staticmethod
    def _key(sha256: str) -> bytes:
        return bytes.fromhex(sha256)[:16]

    def claim(self, first_names: Mapping[str, str]) -> dict[str, str | None]:
        rows = [(self._key(sha), name) for sha, name in first_names.items()]
        before = self._names([k for k, _ in rows])
        self.db.executemany("INSERT OR IGNORE INTO claims (sha, name) VALUES (?, ?)", rows)
        return {sha: before.get(self._key(sha)) for sha in first_names}

    def _names(self, keys: Sequence[bytes]) -> dict[bytes, str]:
        found: dict[bytes, str] = {}
        for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(self.db.execute(f"SELECT sha, name FROM claims WHERE sha IN ({marks})", chunk))
        return found

    def handled(self, first_names: Mapping[str, str]) -> set[str]:
        names = list(first_names.values())
        done: set[str] = set()
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            marks = ",".join("?" * len(chunk))
            done.update(n for (n,) in self.db.execute(f"SELECT name FROM recorded WHERE name IN ({marks})", chunk))
        return {sha for sha, name in first_names.items() if name in done}

    def shipped(self, shas: Sequence[str], batch_id: str) -> None:
        self.db.executemany("UPDATE claims SET batch = ? WHERE sha = ?", [(batch_id, self._key(s)) for s in shas])

    def batch_of(self, sha256: str) -> str | None:
        row = self.db.execute("SELECT batch FROM claims WHERE sha = ?", (self._key(sha256),)).fetchone()
        return row[0] if row else None

    def load(self, rows: Iterable[tuple[str, str | None, str | None]]) -> None:
        """What an interrupted submission left in the dataset: (image, sha256, batch_id) rows."""
        self.db.execute("BEGIN")
        for image, sha, batch in rows:
            self.db.execute("INSERT OR IGNORE INTO recorded (name) VALUES (?)", (image,))
            if sha:
                self.db.execute(
                    "INSERT OR IGNORE INTO claims (sha, name, batch) VALUES (?, ?, ?)", (self._key(sha), image, batch)
                )
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()
        shutil.rmtree(self._dir, ignore_errors=True)
