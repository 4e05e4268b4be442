"""A job's own entry in Redis: its spec and status fields, its place in the job list, the submitting
producer's lease, cancellation, and removing its messages from the queues."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from app import keys
from app.job_spec import JobSpec
from app.routing import level_keys
from config.errors import JobNotFoundError


class JobMeta:
    """Mixed into app.store.JobStore: `self.r`, `self.ttl` and `self.key` come from there."""

    r: Any
    ttl: int

    def create_job(self, spec: JobSpec) -> None:
        pipe = self.r.pipeline()
        pipe.hset(
            self.key(spec.job_id),
            mapping={"spec": spec.model_dump_json(), "status": "submitting", "created_at": spec.created_at},
        )
        pipe.expire(self.key(spec.job_id), self.ttl)
        pipe.zadd(keys.JOBS, {spec.job_id: spec.created_at})
        pipe.execute()

    def job_exists(self, job_id: str) -> bool:
        """Read-only: never creates a key (unlike a write to an unknown job would)."""
        return bool(self.r.exists(self.key(job_id)))

    def require_job(self, job_id: str) -> None:
        if not self.job_exists(job_id):
            raise JobNotFoundError(f"no job {job_id} in Redis (never created, or expired); see `producer jobs`")

    def take_lease(self, job_id: str, owner: str, ttl_s: int) -> bool:
        """Become the job's one submitting producer; False while another one's lease is alive."""
        return bool(self.r.set(self.key(job_id, "lease"), owner, nx=True, ex=ttl_s))

    def renew_lease(self, job_id: str, ttl_s: int) -> bool:
        # EXPIRE, not SET: Redis accepts it even when full, so a waiting producer keeps its lease
        return bool(self.r.expire(self.key(job_id, "lease"), ttl_s))

    def drop_lease(self, job_id: str) -> None:
        self.r.delete(self.key(job_id, "lease"))

    def load_spec(self, job_id: str) -> JobSpec | None:
        raw = self.r.hget(self.key(job_id), "spec")
        return JobSpec.model_validate_json(raw) if raw else None

    def set_fields(self, job_id: str, **fields: Any) -> None:
        self.r.hset(self.key(job_id), mapping={k: str(v) for k, v in fields.items()})

    def get_field(self, job_id: str, name: str) -> str | None:
        raw = self.r.hget(self.key(job_id), name)
        return raw.decode() if raw is not None else None

    def job_ids(self, limit: int = 50) -> list[str]:
        return [j.decode() for j in self.r.zrevrange(keys.JOBS, 0, limit - 1)]

    def add_chain(self, job_id: str, batch_id: str, task_ids: Sequence[str]) -> None:
        """A batch was published."""
        pipe = self.r.pipeline()
        self.mark_sent(job_id, batch_id, list(task_ids), pipe)
        pipe.execute()

    def purge_queued(self, queues: Sequence[str], job_id: str) -> int:
        """Remove a job's messages from the queues (every priority level); returns how many."""
        removed = 0
        for queue in queues:
            for key in level_keys(queue):
                for raw in self.r.lrange(key, 0, -1):
                    try:
                        task_id = json.loads(raw)["headers"]["id"]
                    except (ValueError, KeyError, TypeError):
                        continue
                    if task_id.startswith(job_id):
                        removed += self.r.lrem(key, 1, raw)
        return removed

    def is_cancelled(self, job_id: str) -> bool:
        return self.r.hget(self.key(job_id), "status") == b"cancelled"
