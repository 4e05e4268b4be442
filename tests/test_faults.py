"""Fault suite: real worker processes (solo pool, own session) and a real redis-server with AOF,
started by the test on its own port. Each scenario ends with every image accounted for exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import pytest

from app.factory import create_app
from app.store import JobStore
from config.settings import Settings
from producers.api import Job, submit
from producers.local import RedisServer, WorkerProcess
from tests.images import make_bad_files, make_good_images, png_declaring

pytestmark = pytest.mark.faults
VISIBILITY_S = 5  # short, so a killed worker's batch comes back within seconds


class Fleet:
    """Worker processes on one queue, restarted when they die (what `producer workers` does)."""

    def __init__(self, settings: Settings, tmp_path, n: int, **env: str) -> None:
        self.settings = settings
        self.app = create_app(settings)
        base = {
            "VLMQ_REDIS__URL": settings.redis.url,
            "VLMQ_ENGINE__BACKEND": "test",
            "VLMQ_REDIS__VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
            **env,
        }
        self.workers = [
            WorkerProcess(
                settings.queues[0],
                base,
                name=f"f{i}-{uuid.uuid4().hex[:4]}@faults",
                log_file=tmp_path / f"worker-{i}.log",
            )
            for i in range(n)
        ]
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, daemon=True)

    def start(self) -> Fleet:
        for w in self.workers:
            w.start()
        for w in self.workers:
            w.wait_ready(self.app, 60)
        self._thread.start()
        return self

    def _supervise(self) -> None:
        while not self._stop.is_set():
            for w in self.workers:
                if not w.alive():
                    w.kill()
                    w.start()
                    self.restarts += 1
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for w in self.workers:
            w.stop(timeout=15)


@pytest.fixture
def aof_redis(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture
def fault_settings(aof_redis, tmp_path) -> Settings:
    return Settings(
        queues=[f"faults-{uuid.uuid4().hex[:6]}"],
        batch_size=10,
        max_inflight_batches=20,
        results_dir=str(tmp_path / "results"),
        redis={"url": aof_redis.url, "visibility_timeout_s": VISIBILITY_S},
        engine={"backend": "test"},
    )


@pytest.fixture
def fleet(fault_settings, tmp_path):
    fleets = []

    def start(n: int = 2, **env: str) -> Fleet:
        fleets.append(Fleet(fault_settings, tmp_path, n, **env).start())
        return fleets[-1]

    yield start
    for f in fleets:
        f.stop()


def account(job: Job, expected: list[str], label: str) -> Counter:
    """Every submitted image has exactly one record; prints the counts."""
    records = list(job.records())  # every row of the results dataset: a doubled image shows twice
    names = sorted(r.image for r in records)
    outcomes = Counter(r.outcome for r in records)
    print(
        f"\n[{label}] submitted {len(expected)}, records {len(names)}, unique {len(set(names))}, "
        f"missing {len(set(expected) - set(names))}, extra {len(set(names) - set(expected))}, "
        f"outcomes {dict(outcomes)}"
    )
    assert names == sorted(expected), "every image exactly once"
    return outcomes


def test_a_worker_killed_between_writing_its_batch_file_and_acknowledging_leaves_one_row_per_image(
    fault_settings, fleet, tmp_path
):
    names = make_good_images(tmp_path / "images", 40, size=(48, 32))
    trigger = tmp_path / "kill-once"
    trigger.write_text("the first worker to write a part deletes this and SIGKILLs itself")
    workers = fleet(1, VLMQ_FAULT_KILL_AFTER_PART_WRITE=str(trigger))
    job = submit(tmp_path / "images", fault_settings)
    job.wait(timeout=120)
    assert not trigger.exists() and workers.restarts >= 1, "the worker was not killed after its write"
    outcomes = account(job, names, f"SIGKILL after a part write, {workers.restarts} restarts")
    assert outcomes["done"] + outcomes.get("cached", 0) == 40 and job.record_count() == 40
    assert job.progress().outcomes == dict(outcomes)  # the redone batch was counted once


def test_ten_random_worker_kills_during_a_500_image_job_lose_nothing_and_duplicate_nothing(
    fault_settings, fleet, tmp_path
):
    names = make_good_images(tmp_path / "images", 500, size=(48, 32))
    # 50 batches × 3 stages × 0.2 s over 2 workers: about 15 s of work, plenty for 10 kills ~0.8 s apart
    workers = fleet(2, VLMQ_ENGINE__TEST_DELAY_S="0.2", VLMQ_MAX_ATTEMPTS="8")
    rng = random.Random(7)
    job = submit(tmp_path / "images", fault_settings)
    kills = 0
    while kills < 10 and not job.progress().finished:
        time.sleep(rng.uniform(0.4, 1.2))
        victim = rng.choice(workers.workers)
        if victim.alive():
            victim.kill()
            kills += 1
    job.wait(timeout=240)
    assert kills == 10, "the job ended before ten kills: make it longer"
    outcomes = account(job, names, f"{kills} worker SIGKILLs, {workers.restarts} restarts")
    # a batch redone after a kill finds what its first attempt computed in the stage cache: its
    # images read "cached" (nothing was computed twice); none may be missing or failed
    assert set(outcomes) <= {"done", "cached"} and outcomes["done"] + outcomes["cached"] == 500


def job_under_way(settings: Settings, fleet, tmp_path) -> tuple[Job, list[str]]:
    """200 images on two workers, returned once 40 of them have their record."""
    names = make_good_images(tmp_path / "images", 200, size=(48, 32))
    fleet(2, VLMQ_ENGINE__TEST_DELAY_S="0.1")
    job = submit(tmp_path / "images", settings)
    while job.progress().accounted < 40:
        time.sleep(0.1)
    return job, names


def test_redis_killed_and_restarted_mid_job_loses_nothing(fault_settings, fleet, aof_redis, tmp_path):
    job, names = job_under_way(fault_settings, fleet, tmp_path)
    aof_redis.stop(signal.SIGKILL)  # kill -9: only the append-only file survives
    time.sleep(2)
    aof_redis.start()  # same port, same data directory
    job.wait(timeout=240)
    assert account(job, names, "after Redis kill -9 and restart") == {"done": 200}


def test_a_hung_redis_mid_job_loses_nothing(fault_settings, fleet, aof_redis, tmp_path):
    job, names = job_under_way(fault_settings, fleet, tmp_path)
    os.kill(aof_redis.proc.pid, signal.SIGSTOP)
    time.sleep(4)
    os.kill(aof_redis.proc.pid, signal.SIGCONT)
    job.wait(timeout=240)
    assert account(job, names, "after Redis SIGSTOP 4 s / SIGCONT") == {"done": 200}


def test_an_engine_failing_on_chosen_images_fails_only_those(fault_settings, fleet, tmp_path, aof_redis):
    names = make_good_images(tmp_path / "images", 120, size=(48, 32))
    doomed = {n: hashlib.sha256((tmp_path / "images" / n).read_bytes()).hexdigest() for n in names[5:120:40]}
    fleet(1, VLMQ_ENGINE__TEST_FAIL_ON=json.dumps([sha[:16] for sha in doomed.values()]))
    job = submit(tmp_path / "images", fault_settings)
    job.wait(timeout=120)
    outcomes = account(job, names, "engine failing on 3 chosen images")
    assert outcomes == {"done": 117, "failed": 3}
    failed = {r.image: r for r in job.records() if r.error}
    assert set(failed) == set(doomed)
    assert all("test engine told to fail" in r.error and r.error_stage == "classify" for r in failed.values())


def test_one_poison_image_in_a_batch_of_32_is_dead_lettered_alone_and_can_be_requeued(fault_settings, fleet, tmp_path):
    names = make_good_images(tmp_path / "images", 32, size=(48, 32))
    poison_name = names[13]
    poison = hashlib.sha256((tmp_path / "images" / poison_name).read_bytes()).hexdigest()
    settings = fault_settings.with_overrides(batch_size=32)
    workers = fleet(1, VLMQ_ENGINE__TEST_EXIT_ON=f'["{poison[:16]}"]', VLMQ_MAX_ATTEMPTS="3")
    job = submit(tmp_path / "images", settings)
    job.wait(timeout=240)
    outcomes = account(job, names, f"one poison image in a batch of 32, {workers.restarts} worker restarts")
    assert outcomes == {"done": 31, "failed": 1}
    failed = [r for r in job.records() if r.error]
    assert failed[0].image == poison_name and "dead-lettered" in failed[0].error
    env = {**os.environ, "VLMQ_REDIS__URL": settings.redis.url, "COLUMNS": "500"}
    listed = subprocess.run(
        [sys.executable, "-m", "producers.cli", "dead", "--job", job.id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    store = JobStore.from_settings(settings)
    [letter] = store.dead_letters(job.id)
    print(f"\n[dead letters]\n{listed.stdout}")
    assert listed.returncode == 0 and letter.id in listed.stdout and poison_name in listed.stdout
    assert letter.ref.sha256 == poison and store.r.exists(letter.ref.blob), "its prepared bytes are kept"
    requeued = subprocess.run(
        [sys.executable, "-m", "producers.cli", "dead", "--requeue", letter.id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert requeued.returncode == 0, requeued.stderr
    batch_id = requeued.stdout.split("as batch ")[1].strip()
    assert store.dead_letters(job.id) == [] or store.dead_letters(job.id)[0].batch_id == batch_id
    # it still kills its worker: delivered, isolated again, and dead-lettered again from its new batch
    deadline = time.monotonic() + 120
    while not any(d.batch_id == batch_id for d in store.dead_letters(job.id)):
        assert time.monotonic() < deadline, "the requeued image was never delivered"
        time.sleep(0.5)
    print(f"[requeue] {letter.id} went out as {batch_id} and came back: {store.dead_letters(job.id)[0].reason}")
    # the dead letter is written during the stage, the record when the requeued batch finishes
    while not any(r.batch_id == batch_id for r in job.records()):
        assert time.monotonic() < deadline, "the requeued batch never finished"
        time.sleep(0.5)
    assert account(job, names, "after the requeue") == {"done": 31, "failed": 1}


def test_a_corpus_of_hundreds_of_bad_files_among_good_ones_ends_with_one_record_each(fault_settings, fleet, tmp_path):
    root = tmp_path / "corpus"
    good = make_good_images(root / "good", 100, size=(64, 48))
    bad: list[str] = []
    rng = random.Random(3)
    seed = (root / "good" / good[0]).read_bytes()
    for i in range(60):
        for name in make_bad_files(root / f"bad{i:02d}"):
            bad.append(f"bad{i:02d}/{name}")
        (root / f"bad{i:02d}" / "cut.jpg").write_bytes(seed[: rng.randrange(10, len(seed) - 10)])
        (root / f"bad{i:02d}" / "flipped.png").write_bytes(bytes(b ^ rng.randrange(256) for b in seed[:512]))
        (root / f"bad{i:02d}" / "bomb_odd.png").write_bytes(png_declaring(20_000 + i, 9_000))
        bad += [f"bad{i:02d}/cut.jpg", f"bad{i:02d}/flipped.png", f"bad{i:02d}/bomb_odd.png"]
    fleet(1)
    started = time.monotonic()
    job = submit(root, fault_settings.with_overrides(images={"max_file_bytes": 1 << 20}))
    job.wait(timeout=120)
    elapsed = time.monotonic() - started
    expected = [f"good/{n}" for n in good] + bad
    outcomes = account(job, expected, f"{len(bad)} bad files among {len(good)} good, {elapsed:.1f} s")
    records = {r.image: r for r in job.records()}
    assert all(records[f"good/{n}"].error is None for n in good)
    assert all(records[b].error for b in bad)
    assert outcomes == {"done": len(good), "failed": len(bad)} and elapsed < 120


def test_sigterm_hands_the_running_batch_back_at_once_not_after_the_visibility_timeout(tmp_path, aof_redis):
    settings = Settings(
        queues=["soft"],
        batch_size=10,
        redis={"url": aof_redis.url, "visibility_timeout_s": 600},
        engine={"backend": "test"},
    )  # far longer than the test: only a hand-back can save it
    names = make_good_images(tmp_path / "images", 30, size=(48, 32))
    env = {
        "VLMQ_REDIS__URL": settings.redis.url,
        "VLMQ_ENGINE__BACKEND": "test",
        "VLMQ_REDIS__VISIBILITY_TIMEOUT_S": "600",
        "VLMQ_SOFT_SHUTDOWN_S": "1",
    }
    app = create_app(settings)
    slow = WorkerProcess(
        "soft", {**env, "VLMQ_ENGINE__TEST_DELAY_S": "30"}, name="slow@faults", log_file=tmp_path / "slow.log"
    ).start()
    slow.wait_ready(app)
    job = submit(tmp_path / "images", settings)
    store = JobStore.from_settings(settings)
    while b"stage start" not in (tmp_path / "slow.log").read_bytes():
        time.sleep(0.1)
    stopped = time.monotonic()
    slow.stop(timeout=30)  # SIGTERM in the middle of a 30 s engine call
    took = time.monotonic() - stopped
    fast = WorkerProcess("soft", env, name="fast@faults", log_file=tmp_path / "fast.log").start()
    try:
        fast.wait_ready(app)
        job.wait(timeout=60)
    finally:
        fast.stop()
    print(f"\n[SIGTERM mid-batch] worker exited in {took:.1f} s; store has {job.record_count()} records")
    assert took < 15
    assert account(job, names, "SIGTERM mid-batch, then another worker") == {"done": 30}
    assert store.dead_letters() == []
