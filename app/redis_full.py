"""A full Redis (maxmemory reached, policy noeviction) pauses work; it never kills it.

Redis answers a write it has no room for with an `OOM command not allowed` error, which
redis-py raises as `OutOfMemoryError`. Left alone, that error killed workers outright: kombu's
consumer pops a message (BRPOP) and then records it as unacknowledged (ZADD + HSET); when that
second write is refused, the exception leaves the worker's event loop ("Unrecoverable error:
OutOfMemoryError") and the popped message exists nowhere any more. The result backend, the
chain's next-link publish and this project's own writes fail the same way.

None of kombu, Celery's Redis backend or redis-py has a setting that retries this error, and
each builds its own clients, so the retry is installed once, process-wide, around the two
places every redis-py command goes through: `Redis.execute_command` and `Pipeline.execute`.
A refused write is retried, with a warning, until Redis has room again (an operator raises
`maxmemory` or frees memory); a refused command changed nothing, so retrying it is safe. A
refused MULTI/EXEC transaction is discarded as a whole by Redis, so it is retried whole too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from redis.client import Pipeline, Redis
from redis.exceptions import OutOfMemoryError

log = logging.getLogger(__name__)
FULL_MESSAGE = "Redis is full (maxmemory reached): waiting for room; raise maxmemory or free memory"
_listeners: list[Callable[[bool], None]] = []  # called with True when a wait starts, False when it ends
_installed = False
_lock = threading.Lock()


def on_full(listener: Callable[[bool], None]) -> None:
    """Be told when this process starts and stops waiting for a full Redis (e.g. to show it)."""
    _listeners.append(listener)


def _notify(full: bool) -> None:
    for listener in list(_listeners):
        try:
            listener(full)
        except Exception:  # a display callback must never break a Redis call
            log.debug("redis-full listener failed", exc_info=True)


_flagged = False


def check(client) -> bool:
    """Is Redis full now? Tells the listeners when that changes (for callers that only read)."""
    global _flagged
    try:
        info = client.info("memory")
    except Exception:  # unreachable or restricted INFO: not this module's to report
        return False
    limit = int(info.get("maxmemory", 0) or 0)
    full = limit > 0 and int(info.get("used_memory", 0)) >= limit
    if full != _flagged:
        _flagged = full
        if full:
            log.warning(FULL_MESSAGE)
        _notify(full)
    return full


def wait_while_full(call: Callable[[], object], max_wait_s: float | None = None) -> object:
    """Run `call`; while Redis refuses it for lack of memory, wait and run it again."""
    try:
        return call()
    except OutOfMemoryError:
        if max_wait_s == 0:
            raise
    started, delay, next_log = time.monotonic(), 0.2, 0.0
    log.warning(FULL_MESSAGE)
    _notify(True)
    try:
        while True:
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            try:
                return call()
            except OutOfMemoryError:
                waited = time.monotonic() - started
                if max_wait_s is not None and waited > max_wait_s:
                    raise
                if waited >= next_log:
                    log.warning(FULL_MESSAGE, extra={"waited_s": round(waited, 1)})
                    next_log = waited + 30
    finally:
        _notify(False)


def install() -> None:
    """Make every redis-py client in this process wait out a full Redis (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    execute_command, execute = Redis.execute_command, Pipeline.execute

    def patient_execute_command(self, *args, **options):
        return wait_while_full(lambda: execute_command(self, *args, **options))

    def patient_execute(self, raise_on_error: bool = True):
        stack, scripts = list(self.command_stack), set(self.scripts)
        explicit = self.explicit_transaction

        def attempt():
            # execute() empties the pipeline even when it fails: put the commands back first
            self.command_stack, self.scripts = list(stack), set(scripts)
            self.explicit_transaction = explicit
            return execute(self, raise_on_error)

        return wait_while_full(attempt)

    Redis.execute_command = patient_execute_command
    Pipeline.execute = patient_execute
