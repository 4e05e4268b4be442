"""Fixtures: a real redis-server per test session, real Celery worker processes per test."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import redis

from app.factory import create_app
from app.store import JobStore
from config.settings import Settings
from producers.local import RedisServer, WorkerProcess

# Tests see only the settings they make: no VLMQ_* variable of the user's shell, and no config file
# (./vlmq.yaml, ~/.vlmq/config.yaml …) — an empty one is named instead, and the workers inherit that.
for _name in [n for n in os.environ if n.startswith("VLMQ_") and n != "VLMQ_TEST_REDIS_URL"]:
    del os.environ[_name]
_EMPTY_CONFIG = Path(__file__).parent / "empty-config.yaml"
os.environ["VLMQ_CONFIG"] = str(_EMPTY_CONFIG)
# The results dataset of CLI runs in subprocesses: never a folder in the checkout.
os.environ["VLMQ_RESULTS_DIR"] = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"vlmq-test-results-{os.getpid()}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A redis-server of the tests' own on a free port (VLMQ_TEST_REDIS_URL to use another)."""
    given = os.environ.get("VLMQ_TEST_REDIS_URL")
    if given:
        yield given
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture
def settings(redis_url, tmp_path) -> Settings:
    redis.Redis.from_url(redis_url).flushdb()
    return Settings(
        queues=[f"gpu-{uuid.uuid4().hex[:8]}"],
        batch_size=8,
        max_inflight_batches=4,
        results_dir=str(tmp_path / "results"),
        redis={"url": redis_url, "visibility_timeout_s": 60},
        engine={"backend": "test"},
    )


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {**settings.worker_environment(), "VLMQ_QUEUES": f'["{settings.queues[0]}"]', **extra}


@pytest.fixture
def celery_app(settings):
    return create_app(settings)


@pytest.fixture
def store(settings) -> JobStore:
    return JobStore.from_settings(settings)


@pytest.fixture
def start_worker(settings, celery_app, tmp_path):
    """Start real `celery -A app worker` processes; all are stopped after the test."""
    started: list[WorkerProcess] = []

    def start(
        queue: str | None = None,
        timeout: float = 60,
        prefix: list[str] | None = None,
        cwd=None,
        app=None,
        extra_args: list[str] | None = None,
        **env: str,
    ) -> WorkerProcess:
        queue = queue or settings.queues[0]
        name = f"w{len(started)}-{uuid.uuid4().hex[:6]}@test"
        log = tmp_path / f"worker-{len(started)}.log"
        proc = WorkerProcess(
            queue, worker_env(settings, **env), name=name, log_file=log, prefix=prefix, cwd=cwd, extra_args=extra_args
        ).start()
        started.append(proc)
        proc.wait_ready(app or celery_app, timeout)
        return proc

    yield start
    for proc in started:
        proc.stop()


# Root reads any file whatever its mode; without these capabilities it obeys file permissions.
WITHOUT_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


@pytest.fixture
def image_dir(tmp_path) -> Path:
    return tmp_path / "images"
