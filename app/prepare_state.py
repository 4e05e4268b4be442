"""Redis state of preparation on a CPU queue: batch claims, finished groups and orders, the job's total.

Keys live under the job's own (JobStore.key), so they expire with it:
  job:<id>:sent / :chains     the batches (shared with the producer's path: a claim is `sent` membership)
  job:<id>:claims             when each batch was claimed (a claim whose publisher died lapses)
  job:<id>:prep-groups        groups of entries a prepare task has dealt with (skipped on redelivery)
  job:<id>:prep-done          prepare orders finished (the producer bounds how many wait in Redis)
  job:<id>:unit-counts        images found in each shard (only a task reading the shard can count them)
"""

from __future__ import annotations

import time

from app.store import JobStore

# Claim `batch` for publishing, atomically with the in-flight bound:
#    1 claimed now, or the claim of an earlier delivery that died before publishing has lapsed;
#    0 already published (a redelivered task skips it);
#   -1 no room yet, -2 another delivery is publishing it right now (wait, then look again).
_RESERVE = """
local now, lease = tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 0 end
  local since = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
  if now - since < lease then return -2 end
  redis.call('HSET', KEYS[4], ARGV[1], now)
  return 1
end
if redis.call('SCARD', KEYS[1]) - redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[2]) then return -1 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], now)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[3]))
return 1
"""
CLAIM_LEASE_S = 30.0  # putting a batch's blobs and publishing its chain takes milliseconds


class PrepareState:
    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.r, self.job_id = store, store.r, job_id
        self._reserve = self.r.register_script(_RESERVE)

    def key(self, part: str) -> str:
        return JobStore.key(self.job_id, part)

    def reserve(self, batch_id: str, max_inflight: int, poll_s: float = 0.05, lease_s: float = CLAIM_LEASE_S) -> bool:
        """Wait for room, then claim; False if already published or the job was cancelled."""
        keys = [self.key("sent"), self.key("done"), self.key("chains"), self.key("claims")]
        while True:
            got = int(self._reserve(keys=keys, args=[batch_id, max_inflight, self.store.ttl, time.time(), lease_s]))
            if got >= 0:
                return bool(got) and not self.store.is_cancelled(self.job_id)
            if self.store.is_cancelled(self.job_id):
                return False
            time.sleep(poll_s)

    def group_done(self, batch_id: str) -> bool:
        pipe = self.r.pipeline(transaction=False)
        pipe.sismember(self.key("prep-groups"), batch_id)
        pipe.hexists(self.key("chains"), batch_id)
        return any(pipe.execute())

    def mark_group(self, batch_id: str) -> None:
        self._add("prep-groups", batch_id)

    def mark_order(self, index: int) -> None:
        self._add("prep-done", str(index))

    def orders_done(self) -> int:
        return int(self.r.scard(self.key("prep-done")))

    def _add(self, part: str, member: str) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.sadd(self.key(part), member)
        pipe.expire(self.key(part), self.store.ttl)
        pipe.execute()

    def report_count(self, unit: str, n: int) -> None:
        """Images found in one shard; the first report stands (a redelivery finds the same)."""
        self.r.hsetnx(self.key("unit-counts"), unit, n)
        self.r.expire(self.key("unit-counts"), self.store.ttl)

    def set_listed(self, listed: int, counted_by_tasks: int) -> None:
        """The producer's part: entries it counted itself, and how many shards tasks will count."""
        self.store.set_fields(self.job_id, listed=listed, units_to_count=counted_by_tasks)

    def finalize_total(self) -> int | None:
        """Set the job's total once every count is in (idempotent: whoever comes last sets it)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hmget(JobStore.key(self.job_id), ["listed", "units_to_count"])
        pipe.hvals(self.key("unit-counts"))
        (listed, expected), counts = pipe.execute()
        if listed is None or expected is None or len(counts) < int(expected):
            return None
        total = int(listed) + sum(int(c) for c in counts)
        if not self.store.is_cancelled(self.job_id):
            self.store.set_fields(self.job_id, total=total, status="submitted")
        self.store.mark_finished_if_complete(self.job_id)
        return total
