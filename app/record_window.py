"""What Redis holds of a job's records: a staging window, outcome counters and a compact cache index.

Records do not live in Redis. A worker that can reach the results location writes its batch there
(app.results); records it cannot write (and those the producer writes: failures, cache hits,
duplicate copies) wait in the job's staging hash until a collector (app.collect) moves them into
the dataset and deletes them. What stays per image after a job is one record-cache index entry
(16-byte sha256 prefix → the part that holds the record), and nothing with --no-cache.

Counters are bumped exactly once per image: a staged record only when its hash field is new, a
batch written to the dataset only when it is first marked done (app.batch_marks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from app import keys
from app.schemas import ImageRecord

CACHE_TTL_S = 90 * 24 * 3600

# KEYS: records, counts, named. ARGV: ttl, then (name, json, outcome, worker) per record. `named`
# remembers every name staged in this job, so a record is staged (and counted) once even after a
# collector has moved the first copy into the dataset.
_STAGE = """
for i = 2, #ARGV, 4 do
  if redis.call('HSETNX', KEYS[3], ARGV[i], 1) == 1 then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1])
    redis.call('HINCRBY', KEYS[2], ARGV[i+2], 1)
    redis.call('HINCRBY', KEYS[2], ARGV[i+2] .. '|' .. ARGV[i+3], 1)
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1]); redis.call('EXPIRE', KEYS[2], ARGV[1]); redis.call('EXPIRE', KEYS[3], ARGV[1])
"""


# KEYS: index, its part table. ARGV: ttl, part, then 16-byte sha fields. A part gets a small number
# once (the table maps both ways), and each image's entry holds that number: a few bytes, not a path.
_INDEX = """
local id = redis.call('HGET', KEYS[2], ARGV[2])
if not id then
  id = redis.call('HINCRBY', KEYS[2], '#', 1)
  redis.call('HSET', KEYS[2], ARGV[2], id, 'p' .. id, ARGV[2])
end
for i = 3, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], id) end
redis.call('EXPIRE', KEYS[1], ARGV[1]); redis.call('EXPIRE', KEYS[2], ARGV[1])
"""


def count_fields(records: Iterable[ImageRecord]) -> Counter:
    """Counter fields of records: `<outcome>` and `<outcome>|<worker>`."""
    counts: Counter = Counter()
    for r in records:
        counts[r.outcome] += 1
        counts[f"{r.outcome}|{r.worker or '-'}"] += 1
    return counts


def sha_field(sha256: str) -> bytes:
    """The cache index's field: 16 bytes of the sha256 (128 bits: no collision in any real archive)."""
    return bytes.fromhex(sha256)[:16]


class RecordWindow:
    """Mixed into app.store.JobStore: `self.r`, `self.ttl` and `self.key` come from there."""

    r: Any
    ttl: int

    @staticmethod
    def key(job_id: str, part: str = "") -> str:
        return keys.job(job_id, part)

    def _script(self, body: str) -> Any:
        """A Lua script as a callable. Run with EVAL, not as a registered script: in a pipeline,
        redis-py asks SCRIPT EXISTS before each execute, a round trip per batch; Redis caches the
        compiled script by its digest either way, and a restarted Redis needs no reload."""

        def run(keys: Sequence[str] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
            return (client or self.r).eval(body, len(keys), *keys, *args)

        return run

    # --- staging ---------------------------------------------------------------------------
    def write_records(self, records: Iterable[ImageRecord], pipe: Any = None) -> None:
        """Stage records (keyed by image name: a rewrite replaces, and counts nothing twice)."""
        by_job: dict[str, list[str]] = {}
        for rec in records:
            by_job.setdefault(rec.job_id, []).extend([rec.image, rec.model_dump_json(), rec.outcome, rec.worker or "-"])
        for job_id, args in by_job.items():
            self._script(_STAGE)(
                keys=[self.key(job_id, "records"), self.key(job_id, "counts"), self.key(job_id, "named")],
                args=[self.ttl, *args],
                client=pipe or self.r,
            )

    def supersede(self, job_id: str, names: Sequence[str], batch_id: str, outcome: str) -> None:
        """These names get a new record from `batch_id` (a requeued dead letter): readers skip their
        older rows, and the old outcome is uncounted."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(self.key(job_id, "named"), *names)
        pipe.hset(self.key(job_id, "superseded"), mapping={n: batch_id for n in names})
        pipe.expire(self.key(job_id, "superseded"), self.ttl)
        pipe.hincrby(self.key(job_id, "counts"), outcome, -len(names))
        pipe.execute()

    def superseded(self, job_id: str) -> dict[str, str]:
        """Image name → the batch whose record replaces its older ones (few: requeued dead letters)."""
        return {k.decode(): v.decode() for k, v in self.r.hgetall(self.key(job_id, "superseded")).items()}

    def record(self, job_id: str, name: str) -> ImageRecord | None:
        """A staged record (not yet collected into the dataset), or None."""
        raw = self.r.hget(self.key(job_id, "records"), name)
        return ImageRecord.model_validate_json(raw) if raw else None

    def staged_count(self, job_id: str) -> int:
        return int(self.r.hlen(self.key(job_id, "records")))

    def counts(self, job_id: str) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.r.hgetall(self.key(job_id, "counts")).items()}

    # --- record cache index ----------------------------------------------------------------
    @staticmethod
    def record_index_key(fingerprint: str) -> str:
        return keys.record_index(fingerprint)

    def index_records(self, fingerprint: str, part: str, records: Iterable[ImageRecord], pipe: Any = None) -> None:
        """`part` ("<job>/<part name>") holds these records: index the good ones computed for it (a
        record served from the cache stays indexed where it was computed). No fingerprint: no cache."""
        shas = sorted({r.sha256 for r in records if r.error is None and r.sha256 and not r.cached})
        if fingerprint and shas:
            key = self.record_index_key(fingerprint)
            self._script(_INDEX)(
                keys=[key, key + ":parts"], args=[CACHE_TTL_S, part, *map(sha_field, shas)], client=pipe or self.r
            )

    def indexed_parts(self, fingerprint: str, shas: Sequence[str]) -> list[str | None]:
        if not shas:
            return []
        key = self.record_index_key(fingerprint)
        ids = [v.decode() if v is not None else None for v in self.r.hmget(key, [sha_field(s) for s in shas])]
        wanted = sorted({i for i in ids if i is not None})
        if not wanted:
            return [None] * len(shas)
        parts = dict(
            zip(wanted, (v.decode() if v else None for v in self.r.hmget(key + ":parts", [f"p{i}" for i in wanted])))
        )
        return [parts.get(i) if i is not None else None for i in ids]

    # --- stage caches ------------------------------------------------------------------------
    def get_many(self, wanted: Sequence[tuple[str, str]]) -> list[str | None]:
        """Stage outputs by (stage config, sha256); one hash per stage config, 16-byte fields."""
        if not wanted:
            return []
        pipe = self.r.pipeline(transaction=False)
        for bucket, sha in wanted:
            pipe.hget(keys.stage_cache(bucket), sha_field(sha))
        return [v.decode() if v is not None else None for v in pipe.execute()]

    def set_many(self, values: Mapping[tuple[str, str], str]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for (bucket, sha), value in values.items():
            pipe.hset(keys.stage_cache(bucket), sha_field(sha), value)
        for bucket in {b for b, _ in values}:
            pipe.expire(keys.stage_cache(bucket), CACHE_TTL_S)
        pipe.execute()
