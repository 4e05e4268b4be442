"""The worker pool: Celery's threads pool with one thread, whose cold shutdown hands the batch back.

Threads, not solo: vLLM 0.32 runs its `LLM` in a non-main thread, and the main thread stays free
to answer `celery inspect ping`, Flower and signals while a batch runs. One thread (`-c 1`): one
engine and one batch at a time, as before.

On a cold shutdown (SIGQUIT, or SIGTERM with REMAP_SIGTERM=SIGQUIT) Celery cancels the running
task through `terminate_job`, which neither the solo nor the threads pool implements; under solo
the NotImplementedError was raised inside the batch and cost it a retry. A thread cannot be
killed, and nothing needs to be: here the batch's message is rejected with requeue (kombu puts
it back at the head of its queue at once), the delivery is uncounted (hooks), the pool does not
wait for the thread, and the worker process exits as soon as Celery is done.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from celery.concurrency.base import BasePool
from celery.concurrency.thread import TaskPool

log = logging.getLogger(__name__)
_hooks: list[Callable[[], None]] = []
_exit_hooks: list[Callable[[], None]] = []


def on_hand_back(hook: Callable[[], None]) -> Callable[[], None]:
    """Run `hook` when a cold shutdown hands the running batch back (usable as a decorator)."""
    _hooks.append(hook)
    return hook


def on_exit(hook: Callable[[], None]) -> Callable[[], None]:
    """Run `hook` when the pool is torn down at the end of a cold shutdown (e.g. release the engine)."""
    _exit_hooks.append(hook)
    return hook


def exit_now(code: int = 0) -> None:
    """Leave without joining a handed-back batch's thread (interpreter exit would wait for it)."""
    logging.shutdown()
    os._exit(code)


class HandBackPool(TaskPool):
    handed_back = False

    def __init__(self, limit=None, *args, **kwargs) -> None:
        super().__init__(1, *args, **kwargs)  # one engine, one batch at a time, whatever -c says

    def terminate_job(self, pid, signal=None) -> None:
        from celery.worker import state

        self.handed_back = True
        for request in list(state.active_requests):
            if not request.acknowledged:
                # Directly, not through Request.reject: the worker defers that to its event loop's
                # next turn, which a shutting-down worker never takes.
                request.message.reject(requeue=True)  # back at the head of its queue now
                request.acknowledged = True
        for hook in _hooks:
            try:
                hook()
            except Exception:  # a shutdown must go on whatever a hook does
                log.warning("hand-back hook failed", exc_info=True)

    def on_stop(self) -> None:
        if not self.handed_back:
            return super().on_stop()
        self.executor.shutdown(wait=False, cancel_futures=True)  # the batch is back in Redis already
        BasePool.on_stop(self)

    def on_terminate(self) -> None:
        """The last step of a cold shutdown: the consumer has closed and the batch is back in Redis."""
        for hook in _exit_hooks:
            try:
                hook()
            except Exception:
                log.warning("exit hook failed", exc_info=True)
        if self.handed_back or self.busy:
            exit_now(0)

    @property
    def busy(self) -> bool:
        return any(t.is_alive() for t in getattr(self.executor, "_threads", ()))
