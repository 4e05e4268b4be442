"""A job's progress, read in one round trip: status, outcomes, per-worker counts, batches, rate, ETA."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from pydantic import BaseModel


class JobProgress(BaseModel):
    job_id: str
    status: str
    total: int | None  # None while the producer is still scanning
    scanned: int = 0  # files found so far (a running count while total is None)
    accounted: int
    outcomes: dict[str, int]
    workers: dict[str, int]
    batches_sent: int
    batches_done: int
    created_at: float
    finished_at: float | None
    images_per_s: float
    eta_s: float | None

    @property
    def finished(self) -> bool:
        return self.total is not None and self.accounted >= self.total


class ProgressReads:
    """Mixed into app.store.JobStore: `self.r`, `self.key` and the batch-mark reads come from there."""

    r: Any

    def progress(self, job_id: str) -> JobProgress:
        pipe = self.r.pipeline(transaction=False)  # reads: a full Redis refuses every MULTI
        pipe.hgetall(self.key(job_id))
        pipe.hgetall(self.key(job_id, "counts"))
        pipe.exists(self.key(job_id, "lease"))
        self.batch_counts(job_id, pipe)
        meta, counts, leased, *marks = pipe.execute()
        sent, done = self.batch_totals(marks)
        meta = {k.decode(): v.decode() for k, v in meta.items() if k != b"spec"}
        outcomes, workers = Counter(), Counter()
        for field, n in counts.items():
            outcome, _, worker = field.decode().partition("|")
            if not worker:
                outcomes[outcome] += int(n)
            elif worker != "-":
                workers[worker] += int(n)
        outcomes = Counter({k: v for k, v in outcomes.items() if v})
        total = int(meta["total"]) if "total" in meta else None
        accounted = sum(outcomes.values())
        created = float(meta.get("created_at", time.time()))
        finished_at = float(meta["finished_at"]) if "finished_at" in meta else None
        elapsed = max(1e-6, (finished_at or time.time()) - created)
        rate = accounted / elapsed
        eta = (total - accounted) / rate if total is not None and rate > 0 else None
        status = meta.get("status", "unknown")
        if status == "submitting" and not leased:  # its producer stopped renewing: killed or lost
            status = "interrupted"
        if status in ("submitted", "submitting") and total is not None and accounted >= total:
            status = "done"
        return JobProgress(
            job_id=job_id,
            status=status,
            total=total,
            scanned=int(meta.get("scanned", total or 0)),
            accounted=accounted,
            outcomes=dict(outcomes),
            workers=dict(workers),
            batches_sent=sent,
            batches_done=done,
            created_at=created,
            finished_at=finished_at,
            images_per_s=round(rate, 2),
            eta_s=eta,
        )
