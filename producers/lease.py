"""The submitting producer's lease: how a job abandoned mid-submission is told from one under way.

While a producer submits, a thread renews a short-lived key; a producer killed (SIGKILL, a lost
host) stops renewing it, and within LEASE_TTL_S the job reads `interrupted` instead of
`submitting` (`producer status`, `producer jobs`, `--watch` ends). `producer resume JOB` takes
the lease and finishes the job.
"""

from __future__ import annotations

import threading

from app.store import JobStore

LEASE_TTL_S = 10


class LeaseKeeper:
    """Renews the job's lease while this producer submits; a killed producer stops renewing it."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vlmq-lease", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(LEASE_TTL_S / 4):
            try:
                self.store.renew_lease(self.job_id, LEASE_TTL_S)
            except Exception:  # Redis restarting: the next renewal will do (the TTL leaves room)
                pass

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.store.drop_lease(self.job_id)
        except Exception:  # an interrupted job's lease expires by itself
            pass
