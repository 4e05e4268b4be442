"""The producer's bound on batches in flight (backpressure), at about one Redis look per window."""

from __future__ import annotations

import time

from app import redis_full
from app.store import JobStore


class Room:
    """Room for one more batch of a job in Redis: fewer than `limit` batches in flight.

    In flight can only fall between two looks (workers finish batches, only this producer adds
    them), so Redis is asked only when the batches shipped since the last look could have filled
    the window, or a second has passed: a cancellation is noticed within a second, and a batch
    shipped meanwhile is failed as cancelled by its worker."""

    def __init__(self, store: JobStore, job_id: str, limit: int) -> None:
        self.store, self.job_id, self.limit = store, job_id, limit
        self.in_flight, self.looked, self.taken = 0, -1.0, 0  # the last look, and batches taken since

    def wait(self) -> bool:
        """Block until there is room, then take it; False once the job is cancelled."""
        checked = time.monotonic()
        if self.in_flight + self.taken < self.limit and checked - self.looked < 1:
            self.taken += 1
            return True
        while True:
            in_flight, cancelled = self.store.room_standing(self.job_id)
            self.in_flight, self.looked, self.taken = in_flight, time.monotonic(), 0
            if cancelled:
                return False
            if in_flight < self.limit:
                self.taken = 1
                return True
            if time.monotonic() - checked > 1:  # workers may be waiting for a full Redis: say so
                redis_full.check(self.store.r)
                checked = time.monotonic()
            time.sleep(0.02)
