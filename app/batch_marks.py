"""Which of a job's batches were sent and which are done: one bit each.

The producer numbers its batches `<job>-b000000`, `<job>-b000001`, …; such a batch is a bit in
the job's `sent-bits` and `done-bits` bitmaps, so a job of 10^8 images in batches of 32 costs
Redis 400 KB here, not hundreds of MB of set members. Other batches (prepare tasks' on CPU
workers, requeued dead letters) are members of the `sent` and `done` sets, and their task ids sit
in the `chains` hash; a numbered batch's task ids follow from its id (app.pipeline.chain_task_ids).
"""

from __future__ import annotations

import re
from typing import Any

from app.pipeline import chain_task_ids

_NUMBERED = re.compile(r"-b(\d{6})$")

# KEYS: done set, done bitmap, counts. ARGV: ttl, batch id, slot ('' if none), then (field, n) pairs.
# Counts move only when the batch is first marked done: a redone batch counts nothing twice.
MARK_DONE = """
local new
if ARGV[3] ~= '' then
  new = 1 - redis.call('SETBIT', KEYS[2], tonumber(ARGV[3]), 1)
  redis.call('EXPIRE', KEYS[2], ARGV[1])
else
  new = redis.call('SADD', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
if new == 1 then
  for i = 4, #ARGV, 2 do redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i+1]) end
  redis.call('EXPIRE', KEYS[3], ARGV[1])
end
return new
"""


def slot(batch_id: str) -> int | None:
    found = _NUMBERED.search(batch_id)
    return int(found.group(1)) if found else None


def set_bits(raw: bytes | None) -> list[int]:
    """Positions of the set bits of a Redis bitmap (bit 0 is the first byte's high bit)."""
    return [i * 8 + b for i, byte in enumerate(raw or b"") for b in range(8) if byte & (0x80 >> b)]


class BatchMarks:
    """Mixed into app.store.JobStore: `self.r`, `self.ttl`, `self.key` come from there."""

    r: Any
    ttl: int

    def mark_sent(self, job_id: str, batch_id: str, task_ids: list[str], pipe: Any) -> None:
        n = slot(batch_id)
        if n is not None:
            pipe.setbit(self.key(job_id, "sent-bits"), n, 1)
            pipe.expire(self.key(job_id, "sent-bits"), self.ttl)
            return
        pipe.sadd(self.key(job_id, "sent"), batch_id)
        pipe.hset(self.key(job_id, "chains"), batch_id, ",".join(task_ids))
        for part in ("sent", "chains"):
            pipe.expire(self.key(job_id, part), self.ttl)

    def mark_done(self, job_id: str, batch_id: str, counts: dict[str, int], pipe: Any = None) -> None:
        n = slot(batch_id)
        args: list[Any] = [self.ttl, batch_id, "" if n is None else n]
        for name, value in counts.items():
            args += [name, value]
        keys = [self.key(job_id, "done"), self.key(job_id, "done-bits"), self.key(job_id, "counts")]
        (pipe or self.r).eval(MARK_DONE, len(keys), *keys, *args)  # EVAL: see RecordWindow._script

    def is_batch_done(self, job_id: str, batch_id: str, pipe: Any = None) -> Any:
        """Whether the batch is marked done (queued on `pipe` when one is given)."""
        client, n = pipe or self.r, slot(batch_id)
        if n is not None:
            return client.getbit(self.key(job_id, "done-bits"), n)
        return client.sismember(self.key(job_id, "done"), batch_id)

    def batch_counts(self, job_id: str, pipe: Any) -> None:
        """Queues sent and done (two numbers each) on a read pipeline: see batch_totals."""
        pipe.bitcount(self.key(job_id, "sent-bits"))
        pipe.scard(self.key(job_id, "sent"))
        pipe.bitcount(self.key(job_id, "done-bits"))
        pipe.scard(self.key(job_id, "done"))

    @staticmethod
    def batch_totals(replies: list[int]) -> tuple[int, int]:
        sent_bits, sent_set, done_bits, done_set = replies
        return sent_bits + sent_set, done_bits + done_set

    def room_standing(self, job_id: str) -> tuple[int, bool]:
        """Batches in flight and whether the job is cancelled, in one round trip (a producer asks
        before every batch it ships)."""
        pipe = self.r.pipeline(transaction=False)
        self.batch_counts(job_id, pipe)
        pipe.hget(self.key(job_id), "status")
        *counts, status = pipe.execute()
        sent, done = self.batch_totals(counts)
        return sent - done, status == b"cancelled"

    def batches_in_flight(self, job_id: str) -> int:
        pipe = self.r.pipeline(transaction=False)  # reads: a full Redis refuses every MULTI
        self.batch_counts(job_id, pipe)
        sent, done = self.batch_totals(pipe.execute())
        return sent - done

    def chain_count(self, job_id: str) -> int:
        pipe = self.r.pipeline(transaction=False)
        pipe.bitcount(self.key(job_id, "sent-bits"))
        pipe.hlen(self.key(job_id, "chains"))
        return sum(pipe.execute())

    def chains(self, job_id: str) -> dict[str, list[str]]:
        """Every sent batch's task ids, by batch id."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self.key(job_id, "sent-bits"))
        pipe.hgetall(self.key(job_id, "chains"))
        bits, listed = pipe.execute()
        found = {k.decode(): v.decode().split(",") for k, v in listed.items()}
        for n in set_bits(bits):
            batch_id = f"{job_id}-b{n:06d}"
            found[batch_id] = chain_task_ids(batch_id)
        return found
