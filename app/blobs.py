"""Prepared images in Redis (the claim-check pattern): a batch message carries keys, not bytes,
and the blobs expire on their own if a job is abandoned."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app import keys


class Blobs:
    """Mixed into app.store.JobStore: `self.r` comes from there."""

    r: Any

    @staticmethod
    def blob_key(job_id: str, sha256: str) -> str:
        return keys.blob(job_id, sha256)

    @staticmethod
    def is_blob_key(ref: str) -> bool:
        """A Redis blob key, as opposed to a file path on a shared folder."""
        return ref.startswith(keys.BLOB_PREFIX)

    def put_blobs(self, job_id: str, blobs: Mapping[str, bytes], ttl_s: int) -> dict[str, str]:
        pipe = self.r.pipeline(transaction=False)
        found = {}
        for sha, data in blobs.items():
            found[sha] = self.blob_key(job_id, sha)
            pipe.set(found[sha], data, ex=ttl_s)
        pipe.execute()
        return found

    def get_blobs(self, keys: Sequence[str]) -> list[bytes | None]:
        return self.r.mget(keys) if keys else []

    def blob_bytes(self) -> int:
        """Bytes held by image blobs right now (for tests and the status page)."""
        total = 0
        for key in self.r.scan_iter(f"{keys.BLOB_PREFIX}*", count=1000):
            total += self.r.strlen(key)
        return total
