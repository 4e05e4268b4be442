"""Prepare images in worker processes: ordered, bounded in memory, time and concurrency.

A file that hangs the decoder times out; one that crashes it (segfault, memory limit) is
retried alone to find the culprit. Either way it becomes an error record and the scan goes on.
URLs are downloaded here too, in the decoding processes (in parallel, never in the producer).
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from multiprocessing import context as mp_context
from multiprocessing import popen_forkserver, spawn

from app.decode import Failed, Prepared, PrepareLimits, prepare_file
from app.entries import Entry, prepare_entry, time_limit_s
from app.heap import keep_heap
from producers.chunks import Chunker, ChunkSize, prepare_many
from producers.scan import ScanEntry

AnyEntry = ScanEntry | Entry  # a scanned file, or an entry of any source (file, URL, bytes)


def _failed(entry: AnyEntry, exc: BaseException) -> Failed:
    # Order matters where this is caught: futures' TimeoutError is an OSError and BrokenProcessPool
    # a RuntimeError, so their own handlers must come first.
    return Failed(entry.name, f"decoding failed: {type(exc).__name__}: {exc or 'out of memory'}")


def _sourced(entry: AnyEntry, result: Prepared | Failed) -> Prepared | Failed:
    source = getattr(entry, "source", None)
    return replace(result, source=source) if source is not None and result.source is None else result


def _init_decoder(memory_mb: int) -> None:
    """In each decoding process: bounded memory, freed buffers kept for the next image (app.heap),
    and death with its parent."""
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    keep_heap()
    die_with_parent()


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent exits, however the parent ends.

    The producer is the fork server's parent (producers.decoder_guard), the fork server every
    decoding process's; without this a SIGKILLed producer left them running for minutes.
    """
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown still stops them
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


PR_SET_PDEATHSIG = 1
_LAUNCH_LOCK = threading.Lock()


class _NoMainPopen(popen_forkserver.Popen):
    """Starts a decoding process without re-running the user's `__main__` in it.

    multiprocessing tells every child where the parent's main script is, and the child runs it
    (as `__mp_main__`) before anything else: a script calling `submit()` without an
    `if __name__ == "__main__":` guard submitted again from each decoding process. These
    processes run only `app.decode`, importable by name, so the script is left out of
    the preparation data. multiprocessing has no option for it: the lookup is swapped for the
    duration of one launch, under a lock.
    """

    def _launch(self, process_obj) -> None:
        with _LAUNCH_LOCK:
            original = spawn.get_preparation_data

            def without_main(name):
                data = original(name)
                data.pop("init_main_from_path", None)
                data.pop("init_main_from_name", None)
                return data

            spawn.get_preparation_data = without_main
            try:
                super()._launch(process_obj)
            finally:
                spawn.get_preparation_data = original


class _DecoderProcess(mp_context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj):
        return _NoMainPopen(process_obj)


class DecoderContext(mp_context.ForkServerContext):
    """The fork server's context, preloading only the decoder (never `__main__`)."""

    Process = _DecoderProcess


def decoder_context() -> DecoderContext:
    ctx = DecoderContext()
    # the default preloads `__main__`, the user's script; the guard ties the server to the producer
    ctx.set_forkserver_preload(["producers.decoder_guard", "app.decode"])
    return ctx


class PreparePool:
    def __init__(
        self,
        limits: PrepareLimits,
        workers: int | None = None,
        timeout_s: float = 30.0,
        memory_mb: int = 2048,
        prepare=prepare_file,
    ) -> None:
        self.limits = limits
        self.prepare = prepare  # a module-level function (it is sent to the worker processes)
        self.workers = workers or os.cpu_count() or 1
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.workers,
                mp_context=decoder_context(),
                initializer=_init_decoder,
                initargs=(self.memory_mb,),
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

    def _call(self, entry: AnyEntry) -> tuple:
        if isinstance(entry, ScanEntry):
            return (self.prepare, str(entry.path), entry.name, self.limits, entry.root)
        if entry.kind == "file":
            return (self.prepare, entry.path, entry.name, self.limits, entry.root)
        return (prepare_entry, entry, self.limits)

    def _submit(self, entry: AnyEntry) -> Future:
        fn, *args = self._call(entry)
        return self._pool().submit(fn, *args)

    def _submit_chunk(self, chunk: list[AnyEntry]) -> Future:
        return self._pool().submit(prepare_many, [self._call(e) for e in chunk])

    def _wait_s(self, entry: AnyEntry) -> float:
        return time_limit_s(entry, self.limits, self.timeout_s)

    def _alone(self, entry: AnyEntry) -> Prepared | Failed:
        """Run one suspect entry by itself, so a crash can be pinned on it."""
        return _sourced(entry, self._alone_result(entry))

    def _alone_result(self, entry: AnyEntry) -> Prepared | Failed:
        try:
            return self._submit(entry).result(timeout=self._wait_s(entry))
        except FutureTimeout:
            self._reset()
            return Failed(entry.name, f"decoding took longer than {self.timeout_s:g} s (refused)")
        except BrokenProcessPool:
            self._reset()
            return Failed(entry.name, "decoder crashed or ran out of memory on this file")
        except (MemoryError, OSError, ValueError, RuntimeError) as exc:
            return _failed(entry, exc)

    def _each_alone(self, chunk: list[AnyEntry]) -> Iterator[tuple[AnyEntry, Prepared | Failed]]:
        return ((e, self._alone_result(e)) for e in chunk)

    def map(self, entries: Iterable[AnyEntry]) -> Iterator[Prepared | Failed]:
        """Results in the entries' order, each carrying its entry's source."""
        for entry, result in self._map(entries):
            yield _sourced(entry, result)

    def _map(self, entries: Iterable[AnyEntry]) -> Iterator[tuple[AnyEntry, Prepared | Failed]]:
        window: deque[tuple[list[AnyEntry], Future | None]] = deque()
        depth, size, chunker = self.workers * 4, ChunkSize(), Chunker(entries)
        while True:
            while len(window) < depth and (chunk := chunker.next(size.now)):
                window.append((chunk, None if chunk[0].problem else self._submit_chunk(chunk)))
            if not window:
                return
            chunk, future = window.popleft()
            if future is None:
                yield chunk[0], Failed(chunk[0].name, chunk[0].problem or "refused")
                continue
            try:
                results, seconds = future.result(timeout=max(self._wait_s(e) for e in chunk))
                size.observe(seconds, len(chunk))
                yield from zip(chunk, results)
            except FutureTimeout:
                self._reset()
                if len(chunk) == 1:
                    yield (
                        chunk[0],
                        Failed(chunk[0].name, f"decoding took longer than {self._wait_s(chunk[0]):g} s (refused)"),
                    )
                else:  # which one hung is not known: each again by itself
                    yield from self._each_alone(chunk)
                window = deque((c, self._submit_chunk(c) if f is not None else None) for c, f in window)
            except BrokenProcessPool:
                self._reset()
                suspects = [(e, True) for e in chunk] + [(e, f is not None) for c, f in window for e in c]
                window.clear()
                for suspect, decodable in suspects:
                    yield (
                        suspect,
                        (
                            self._alone_result(suspect)
                            if decodable
                            else Failed(suspect.name, suspect.problem or "refused")
                        ),
                    )
            except (MemoryError, OSError, ValueError, RuntimeError) as exc:  # raised inside the worker
                if len(chunk) == 1:
                    yield chunk[0], _failed(chunk[0], exc)
                else:  # which one raised is not known
                    yield from self._each_alone(chunk)
