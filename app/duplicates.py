"""Duplicates inside one job: which image (by content hash) a job claimed first, which batch carried
it, and the other names with the same bytes (aliases), which get a copy of its record."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class Duplicates:
    """Mixed into app.store.JobStore: `self.r`, `self.ttl` and `self.key` come from there."""

    r: Any
    ttl: int

    def note_shipped(self, job_id: str, shas: Sequence[str], batch_id: str) -> None:
        """Which batch carries each image (app.claims.RedisClaims): never shipped again by a resume,
        and a duplicate found later asks whether that batch is done."""
        if shas:
            self.r.hset(self.key(job_id, "shipped"), mapping={sha: batch_id for sha in shas})
            self.r.expire(self.key(job_id, "shipped"), self.ttl)

    def shipped_in(self, job_id: str, sha256: str) -> str | None:
        raw = self.r.hget(self.key(job_id, "shipped"), sha256)
        return raw.decode() if raw is not None else None

    def already_handled(self, job_id: str, first_names: Mapping[str, str]) -> set[str]:
        """The shas (claimed by this job before) that a batch carried or whose image has a record."""
        shas = list(first_names)
        if not shas:
            return set()
        pipe = self.r.pipeline(transaction=False)
        pipe.hmget(self.key(job_id, "shipped"), shas)
        pipe.hmget(self.key(job_id, "named"), [first_names[s] for s in shas])
        shipped, named = pipe.execute()
        return {sha for sha, sent, rec in zip(shas, shipped, named) if sent or rec}

    def claim_shas(self, job_id: str, first_names: Mapping[str, str]) -> dict[str, str | None]:
        """Claim each sha256 for this job; None where the claim is new, else the owning name."""
        key = self.key(job_id, "shas")
        pipe = self.r.pipeline()
        for sha, name in first_names.items():
            pipe.hsetnx(key, sha, name)
        for sha in first_names:
            pipe.hget(key, sha)
        pipe.expire(key, self.ttl)
        res = pipe.execute()
        n = len(first_names)
        return {sha: None if new else owner.decode() for sha, new, owner in zip(first_names, res[:n], res[n : 2 * n])}

    def add_alias(self, job_id: str, sha256: str, name: str) -> None:
        """`name` has the same bytes as an image already claimed by this job.

        The worker marks its batch done, then reads the aliases; the producer adds the alias, then
        looks whether the original's batch is done (app.shipping.Shipper.add_alias). Whichever runs
        second sees the other's write, so the alias always gets its record: from the worker if the
        batch was not done yet, else from the producer (staged records are written once per name,
        so both writing it is harmless).
        """
        key = self.key(job_id, f"alias:{sha256}")
        self.r.sadd(key, name)
        self.r.expire(key, self.ttl)

    def add_alias_source(self, job_id: str, name: str, source: str) -> None:
        """name → source of a duplicate copy (its record is written from the original's)."""
        self.r.hset(self.key(job_id, "alias-sources"), name, source)
        self.r.expire(self.key(job_id, "alias-sources"), self.ttl)

    def alias_sources(self, job_id: str, names: Sequence[str]) -> dict[str, str]:
        if not names:
            return {}
        found = self.r.hmget(self.key(job_id, "alias-sources"), list(names))
        return {n: v.decode() for n, v in zip(names, found) if v is not None}
