"""Recovery from the faults a fleet meets: moved queues, killed producers, SIGTERM, a full Redis,
unknown jobs. Real redis-servers, real worker and producer processes; each scenario ends with
every image accounted for exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

import app.routing as routing
from app.routing import level_keys, move_queue, recover_staged
from app.store import JobStore
from config.settings import Settings
from producers.api import Job
from producers.local import RedisServer, WorkerProcess
from tests.images import make_good_images
from tests.test_faults import account

pytestmark = pytest.mark.faults


def cli(settings: Settings, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **os.environ,
            "VLMQ_REDIS__URL": settings.redis.url,
            "VLMQ_ENGINE__BACKEND": "test",
            "COLUMNS": "500",
            **env,
        },
    )


def same_session(sid: int) -> list[int]:
    """PIDs still running in the session `sid` (a process started with start_new_session)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(entry))
    return found


def kombu_message(i: int, queue: str) -> bytes:
    return json.dumps(
        {
            "body": f"b{i}",
            "headers": {"id": f"task-{i}"},
            "properties": {"delivery_info": {"routing_key": queue, "exchange": queue}},
        }
    ).encode()


def test_a_crash_in_the_middle_of_a_queue_move_loses_nothing(settings, monkeypatch):
    r = redis.Redis.from_url(settings.redis.url)
    for i in range(6):  # three priority levels, two messages each
        r.lpush(level_keys("src")[i % 3], kombu_message(i, "src"))
    calls, retarget = {"n": 0}, routing._retarget

    def crash_on_the_fourth(raw, queue):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("process killed mid-move")
        return retarget(raw, queue)

    monkeypatch.setattr(routing, "_retarget", crash_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        move_queue(r, "src", "dst")
    monkeypatch.setattr(routing, "_retarget", retarget)
    everywhere = [m for key in r.keys("*") for m in r.lrange(key, 0, -1)]
    print(
        f"\n[queue move crash] after the crash: {len(everywhere)} of 6 messages still in Redis, "
        f"{sum(1 for k in r.keys('vlmq:moving:*') for _ in r.lrange(k, 0, -1))} staged"
    )
    assert len(everywhere) == 6
    assert recover_staged(r) == 1  # the next rebalancing pass finishes the interrupted move
    move_queue(r, "src", "dst")
    moved = [json.loads(m) for key in level_keys("dst") for m in r.lrange(key, 0, -1)]
    assert sorted(m["headers"]["id"] for m in moved) == [f"task-{i}" for i in range(6)]
    assert all(m["properties"]["delivery_info"] == {"routing_key": "dst", "exchange": "dst"} for m in moved)
    assert [k for k in r.keys("*") if not k.startswith(b"dst")] == []


@pytest.fixture
def fresh_redis(tmp_path):
    server = RedisServer(tmp_path / "redis-own", appendonly=True).start()
    yield server
    server.stop()


def test_a_producer_killed_mid_submission_shows_interrupted_and_resume_finishes_every_image_once(fresh_redis, tmp_path):
    settings = Settings(queues=["lease"], batch_size=8, redis={"url": fresh_redis.url}, engine={"backend": "test"})
    names = make_good_images(tmp_path / "images", 160, size=(48, 32))
    worker = WorkerProcess(
        "lease",
        {"VLMQ_REDIS__URL": settings.redis.url, "VLMQ_ENGINE__BACKEND": "test", "VLMQ_ENGINE__TEST_DELAY_S": "0.3"},
        name="lease@recovery",
        log_file=tmp_path / "worker.log",
    ).start()
    store = JobStore.from_settings(settings)
    env = {
        **os.environ,
        "VLMQ_REDIS__URL": settings.redis.url,
        "VLMQ_ENGINE__BACKEND": "test",
        "VLMQ_QUEUES": '["lease"]',
        "COLUMNS": "500",
        "VLMQ_BATCH_SIZE": "8",
        "VLMQ_MAX_INFLIGHT_BATCHES": "2",
        "VLMQ_IMAGES__PREPARE_WORKERS": "2",
    }
    producer = subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "submit", str(tmp_path / "images")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        worker.wait_ready(Job("x", settings).celery)
        deadline = time.monotonic() + 60
        while not store.job_ids() or store.chain_count(store.job_ids()[0]) < 4:
            assert time.monotonic() < deadline and producer.poll() is None
            time.sleep(0.05)
        job_id = store.job_ids()[0]
        os.kill(producer.pid, signal.SIGKILL)  # the producer only: not its session
        producer.wait()
        killed = time.monotonic()
        shipped_before = store.chain_count(job_id)
        while store.progress(job_id).status != "interrupted":
            assert time.monotonic() - killed < 30, store.progress(job_id).status
            time.sleep(0.2)
        noticed = time.monotonic() - killed
        time.sleep(1)
        left = same_session(producer.pid)  # its decoding processes and fork server share its session
        status = cli(settings, "status", job_id)
        resumed = cli(settings, "resume", job_id, "--wait", timeout=180)
        again = cli(settings, "resume", job_id)
    finally:
        worker.stop()
    job = Job(job_id, settings)
    print(
        f"\n[producer SIGKILL] {shipped_before} batches shipped before the kill, interrupted noticed after "
        f"{noticed:.1f} s, processes left behind {left}, resume exit {resumed.returncode}"
    )
    assert left == []
    assert status.returncode != 0 and "interrupted" in status.stderr and f"producer resume {job_id}" in status.stderr
    assert resumed.returncode == 0, resumed.stderr
    assert again.returncode != 0 and "only an interrupted submission can be resumed" in again.stderr
    assert account(job, names, "producer SIGKILL, then resume") == {"done": 160}
    per_batch = [r.image for r in job.records() if r.batch_id]  # one row per image, each from one batch
    assert sorted(per_batch) == sorted(names), "each image was shipped in exactly one batch"


def test_three_sigterms_on_one_batch_hand_it_back_each_time_without_using_a_retry(aof_redis, tmp_path):
    settings = Settings(
        queues=["term"],
        batch_size=16,
        redis={"url": aof_redis.url, "visibility_timeout_s": 600},
        engine={"backend": "test"},
    )  # only a hand-back can bring the batch back in time
    names = make_good_images(tmp_path / "images", 16, size=(48, 32))
    env = {
        "VLMQ_REDIS__URL": settings.redis.url,
        "VLMQ_ENGINE__BACKEND": "test",
        "VLMQ_REDIS__VISIBILITY_TIMEOUT_S": "600",
    }
    store = JobStore.from_settings(settings)
    app = Job("x", settings).celery
    job = None
    exits = []
    for i in range(3):
        log = tmp_path / f"slow{i}.log"
        slow = WorkerProcess(
            "term", {**env, "VLMQ_ENGINE__TEST_DELAY_S": "30"}, name=f"slow{i}@recovery", log_file=log
        ).start()
        slow.wait_ready(app)
        if job is None:
            from producers.api import submit

            job = submit(tmp_path / "images", settings)
        while b"stage start" not in log.read_bytes():
            time.sleep(0.1)
        assert app.control.ping(destination=[slow.name], timeout=2), "a busy worker answers ping"
        stopped = time.monotonic()
        slow.stop(timeout=30)
        exits.append(round(time.monotonic() - stopped, 1))
        assert b"handed back" in log.read_bytes()
    fast = WorkerProcess("term", env, name="fast@recovery", log_file=tmp_path / "fast.log").start()
    try:
        fast.wait_ready(app)
        job.wait(timeout=60)
    finally:
        fast.stop()
    # the delivery number the fast worker gave the batch's classify link (its counter is gone with the batch)
    [deliveries] = [
        line["attempt"]
        for line in map(
            json.loads, filter(lambda t: t.startswith("{"), (tmp_path / "fast.log").read_text().splitlines())
        )
        if line.get("message") == "stage start" and line.get("stage") == "classify"
    ]
    print(f"\n[3 x SIGTERM] busy workers exited after {exits} s; deliveries counted for the batch: {deliveries}")
    assert max(exits) < 10
    assert account(job, names, "three SIGTERMs on one batch") == {"done": 16}
    assert deliveries == 1 and store.dead_letters() == []
    assert all(r.error is None for r in job.records())


@pytest.fixture
def aof_redis(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield server
    server.stop()


def test_a_full_redis_pauses_workers_and_producer_and_every_image_ends_with_one_record(tmp_path):
    server = RedisServer(tmp_path / "redis-full", appendonly=False).start()
    settings = Settings(queues=["full"], batch_size=8, redis={"url": server.url}, engine={"backend": "test"})
    names = make_good_images(tmp_path / "images", 400, size=(64, 48))
    env = {"VLMQ_REDIS__URL": settings.redis.url, "VLMQ_ENGINE__BACKEND": "test", "VLMQ_ENGINE__TEST_DELAY_S": "0.05"}
    workers = [
        WorkerProcess("full", env, name=f"full{i}@recovery", log_file=tmp_path / f"w{i}.log").start() for i in range(2)
    ]
    store = JobStore.from_settings(settings)
    r = redis.Redis.from_url(settings.redis.url)
    producer = subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "submit", str(tmp_path / "images"), "--wait"],
        env={
            **os.environ,
            **env,
            "VLMQ_QUEUES": '["full"]',
            "VLMQ_BATCH_SIZE": "8",
            "COLUMNS": "500",
            "VLMQ_MAX_INFLIGHT_BATCHES": "4",
            "VLMQ_IMAGES__PREPARE_WORKERS": "2",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        for w in workers:
            w.wait_ready(Job("x", settings).celery)
        deadline = time.monotonic() + 60
        while not store.job_ids() or store.progress(store.job_ids()[0]).accounted < 40:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        job = Job(store.job_ids()[0], settings)
        r.config_set("maxmemory", 1)  # full now: every write that needs memory is refused
        full_at = job.progress().accounted
        time.sleep(10)
        during = job.progress().accounted
        alive = [w.alive() for w in workers]
        producer_alive = producer.poll() is None
        r.config_set("maxmemory", 0)  # the operator raises the limit
        out, err = producer.communicate(timeout=180)
        outcomes = account(job, names, "Redis full for 10 s mid-job, then maxmemory raised")
    finally:
        r.config_set("maxmemory", 0)
        for w in workers:
            w.stop()
        if producer.poll() is None:
            producer.kill()
        server.stop()
    print(
        f"\n[Redis full] {full_at} records when Redis filled up, {during} after 10 s full, workers alive {alive}, "
        f"producer alive {producer_alive}, producer exit {producer.returncode}"
    )
    assert all(alive) and producer_alive
    assert during - full_at <= 8, "at most one batch's records, written as Redis filled up"
    assert "Redis is full" in err, err[-2000:]
    assert producer.returncode == 0, err[-2000:]
    assert outcomes == {"done": 400}
    logs = "".join((tmp_path / f"w{i}.log").read_text() for i in range(2))
    assert "Unrecoverable error" not in logs and "Redis is full" in logs


def test_unknown_job_ids_are_refused_and_create_nothing(settings):
    r = redis.Redis.from_url(settings.redis.url)
    before = sorted(r.keys("*"))
    unknown = uuid.uuid4().hex
    for args in (
        ["status", unknown],
        ["results", unknown],
        ["export", unknown, "--output", "/tmp/never"],
        ["cancel", unknown],
        ["resume", unknown],
        ["dead", "--job", unknown],
    ):
        result = cli(settings, *args)
        assert result.returncode != 0, args
        assert "no job" in result.stderr and unknown in result.stderr, (args, result.stderr)
    assert sorted(r.keys("*")) == before
    assert not Path("/tmp/never").exists()


def test_cancel_of_a_finished_job_is_refused_and_it_stays_done(settings, start_worker, image_dir):
    make_good_images(image_dir, 8)
    start_worker()
    from producers.api import submit

    job = submit(image_dir, settings)
    job.wait(timeout=60)
    result = cli(settings, "cancel", job.id)
    assert result.returncode != 0 and "nothing left to cancel" in result.stderr
    assert job.progress().status == "done"


def test_an_explicit_queue_is_honoured_while_live_workers_serve_others(settings, start_worker, image_dir):
    make_good_images(image_dir, 48)
    other = start_worker(queue="gpu0x")
    pinned = start_worker(queue="gpu1x")
    result = cli(
        settings, "submit", str(image_dir), "--queue", "gpu1x", "--batch-size", "4", "--wait", VLMQ_QUEUES='["gpu0x"]'
    )
    assert result.returncode == 0, result.stderr
    job = Job(result.stdout.strip(), settings)
    workers = {r.worker for r in job.records()}
    print(f"\n[--queue gpu1x] {job.record_count()} records by {workers}")
    assert workers == {pinned.name} and other.name not in workers


README_EXAMPLE = """
from celery.result import GroupResult
from app.factory import create_app
from config.settings import load_settings
from producers.api import Job, submit

settings = load_settings()                   # env VLMQ_* and the optional YAML file
job = submit("{folder}", settings)           # or Job(job_id, settings) for an existing job
group = GroupResult.restore(job.id, app=create_app(settings))   # one AsyncResult per batch chain
batches = group.join(timeout=600)            # each: the batch's records, as dicts
records = [job.batch_records(b) for b in batches]   # each: list[ImageRecord]
job.wait()                                   # or poll job.progress(); survives a Redis restart
for record in job.records(): ...             # every image's record, streamed from the dataset
print("JOB", job.id, sum(map(len, records)))
"""


def test_the_readme_example_run_as_a_plain_script_without_a_guard_submits_one_job(
    settings, start_worker, image_dir, tmp_path, store
):
    make_good_images(image_dir, 24)
    start_worker()
    script = tmp_path / "poll.py"
    script.write_text(README_EXAMPLE.format(folder=image_dir))
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={
            **os.environ,
            "VLMQ_REDIS__URL": settings.redis.url,
            "VLMQ_ENGINE__BACKEND": "test",
            "VLMQ_QUEUES": json.dumps(settings.queues),
            "VLMQ_IMAGES__PREPARE_WORKERS": "3",
            "VLMQ_BATCH_SIZE": "8",
        },
    )
    print(
        f"\n[unguarded script] exit {result.returncode}, jobs in Redis {store.job_ids()}, "
        f"output {result.stdout.strip()!r}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("JOB ") == 1 and len(store.job_ids()) == 1
    job = Job(store.job_ids()[0], settings)
    assert job.progress().outcomes == {"done": 24}


def test_an_orphan_clean_up_the_kernel_refuses_does_not_keep_the_worker_from_heartbeating(
    settings, start_worker, store
):
    from app.heartbeat import live_workers

    # an engine-titled process of another user, adopted by init: what the clean-up looks for
    subprocess.run(
        [
            "setpriv",
            "--reuid=65533",
            "--regid=65533",
            "--clear-groups",
            "bash",
            "-c",
            "(exec -a VLLM::EngineCore sleep 60 &)",
        ],
        check=True,
    )
    # a worker without CAP_KILL: the kernel refuses its kill (PermissionError)
    worker = start_worker(prefix=["setpriv", "--bounding-set=-kill", "--"])
    deadline = time.monotonic() + 10
    while worker.name not in {w["hostname"] for w in live_workers(store.r)}:
        assert time.monotonic() < deadline, "no heartbeat: the clean-up aborted it"
        time.sleep(0.2)
