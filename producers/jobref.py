"""Job ids as users type them: the whole id or a unique prefix of it, as git takes commit ids."""

from __future__ import annotations

from app import keys
from app.store import JobStore
from config.errors import PipelineError

MIN_PREFIX = 4


def resolve_job_id(store: JobStore, given: str) -> str:
    """The one job whose id starts with `given`; a clear error when none or several do. Reads only."""
    given = given.strip()
    if store.r.exists(store.key(given)):
        return given
    if len(given) < MIN_PREFIX:
        raise PipelineError(f"no job {given!r} (a prefix needs at least {MIN_PREFIX} characters)")
    matches = sorted({m.decode() for m, _ in store.r.zscan_iter(keys.JOBS, match=f"{given}*", count=1000)})
    matches = [m for m in matches if store.r.exists(store.key(m))]  # the index outlives expired jobs
    if not matches:
        raise PipelineError(f"no job {given!r} (see `producer jobs`)")
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (" …" if len(matches) > 5 else "")
        raise PipelineError(f"job id {given!r} is ambiguous: {len(matches)} jobs start with it ({shown})")
    return matches[0]
