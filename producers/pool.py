"""Prepare images in worker processes: ordered, bounded in memory, time and concurrency.

A file that hangs the decoder times out; one that crashes it (segfault, memory limit) is
retried alone to find the culprit. Either way it becomes an error record and the scan goes on.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

from producers.prepare import Failed, Prepared, PrepareLimits, prepare_file
from producers.scan import ScanEntry


def _failed(entry: ScanEntry, exc: BaseException) -> Failed:
    # Order matters where this is caught: futures' TimeoutError is an OSError and BrokenProcessPool
    # a RuntimeError, so their own handlers must come first.
    return Failed(entry.name, f"decoding failed: {type(exc).__name__}: {exc or 'out of memory'}")


def _limit_memory(memory_mb: int) -> None:
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class PreparePool:
    def __init__(self, limits: PrepareLimits, workers: int | None = None, timeout_s: float = 30.0,
                 memory_mb: int = 2048, prepare=prepare_file) -> None:
        self.limits = limits
        self.prepare = prepare  # a module-level function (it is sent to the worker processes)
        self.workers = workers or os.cpu_count() or 1
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=mp.get_context("forkserver"),
                initializer=_limit_memory, initargs=(self.memory_mb,),
            )
        return self._executor

    def _reset(self) -> None:
        """Tear down a hung or broken pool at once: its processes are killed, not waited for."""
        executor, self._executor = self._executor, None
        if executor is not None:
            for proc in list(getattr(executor, "_processes", {}).values()):
                proc.kill()
            executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _submit(self, entry: ScanEntry) -> Future:
        return self._pool().submit(self.prepare, str(entry.path), entry.name, self.limits)

    def _alone(self, entry: ScanEntry) -> Prepared | Failed:
        """Run one suspect entry by itself, so a crash can be pinned on it."""
        try:
            return self._submit(entry).result(timeout=self.timeout_s)
        except FutureTimeout:
            self._reset()
            return Failed(entry.name, f"decoding took longer than {self.timeout_s:g} s (refused)")
        except BrokenProcessPool:
            self._reset()
            return Failed(entry.name, "decoder crashed or ran out of memory on this file")
        except (MemoryError, OSError, ValueError, RuntimeError) as exc:
            return _failed(entry, exc)

    def map(self, entries: Iterable[ScanEntry]) -> Iterator[Prepared | Failed]:
        window: deque[tuple[ScanEntry, Future | None]] = deque()
        depth = self.workers * 4
        it = iter(entries)
        exhausted = False
        while True:
            while not exhausted and len(window) < depth:
                entry = next(it, None)
                if entry is None:
                    exhausted = True
                elif entry.problem:
                    window.append((entry, None))
                else:
                    window.append((entry, self._submit(entry)))
            if not window:
                return
            entry, future = window.popleft()
            if future is None:
                yield Failed(entry.name, entry.problem or "refused")
                continue
            try:
                yield future.result(timeout=self.timeout_s)
            except FutureTimeout:
                self._reset()
                yield Failed(entry.name, f"decoding took longer than {self.timeout_s:g} s (refused)")
                window = deque((e, self._submit(e) if f is not None else None) for e, f in window)
            except BrokenProcessPool:
                self._reset()
                suspects = [(entry, True)] + [(e, f is not None) for e, f in window]
                window.clear()
                for suspect, decodable in suspects:
                    yield self._alone(suspect) if decodable else Failed(suspect.name, suspect.problem or "refused")
            except (MemoryError, OSError, ValueError, RuntimeError) as exc:  # raised inside the worker
                yield _failed(entry, exc)
