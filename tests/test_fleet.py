"""Operating a fleet: one worker per tensor-parallel group, routing over live queues."""

import os
import signal
import subprocess
import sys
import time

from app.heartbeat import live_workers
from producers.api import submit
from tests.images import make_good_images
from tests.procs import processes_matching


def test_the_launcher_starts_one_worker_per_tp_group_and_both_queues_are_consumed(settings, image_dir, store, tmp_path):
    make_good_images(image_dir, 64)
    env = {**os.environ, "VLMQ_REDIS__URL": settings.redis.url}
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "producers.cli",
            "workers",
            "--gpus",
            "0,1,2,3",
            "--tp",
            "2",
            "--engine",
            "test",
            "--queue-prefix",
            "fleet",
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(live_workers(store.r)) < 2:
            assert time.monotonic() < deadline and launcher.poll() is None
            time.sleep(0.2)
        workers = {w["queues"][0]: w for w in live_workers(store.r)}
        assert {q: w["gpus"] for q, w in workers.items()} == {"fleet0": "0,1", "fleet1": "2,3"}
        # each says what it serves: model, family, tensor-parallel size
        assert {(w["model"], w["family"], w["tensor_parallel_size"]) for w in workers.values()} == {
            ("deterministic-test-engine", "test", 2)
        }
        job = submit(image_dir, settings.with_overrides(batch_size=4, queues=["unused"]))  # queues discovered
        assert job.wait(timeout=60).outcomes == {"done": 64}
        by_worker = {}
        for r in job.records():
            by_worker[r.worker] = by_worker.get(r.worker, 0) + 1
        assert set(by_worker) == {workers["fleet0"]["hostname"], workers["fleet1"]["hostname"]}, by_worker
    finally:
        launcher.send_signal(signal.SIGTERM)
        output, _ = launcher.communicate(timeout=60)
    assert "all workers stopped" in output
    assert processes_matching("-Q fleet0", "-Q fleet1") == []


def test_each_chain_stays_on_the_worker_that_ran_its_first_link(settings, start_worker, image_dir, store):
    make_good_images(image_dir, 48)
    a = start_worker(queue="qa")
    b = start_worker(queue="qb")
    job = submit(image_dir, settings.with_overrides(batch_size=4), queues=["qa", "qb"])
    assert job.wait(timeout=60).outcomes == {"done": 48}
    for name in (a.name, b.name):
        stats = store.worker_stats(name)
        # every batch this worker classified, it also scored and summarized
        assert stats["classify.batches"] == stats["score.batches"] == stats["summarize.batches"] > 0


def test_work_waiting_on_a_queue_whose_worker_vanished_is_moved_to_a_live_one(settings, start_worker, image_dir, store):
    make_good_images(image_dir, 64)
    settings = settings.with_overrides(batch_size=4, max_inflight_batches=16, redis={"visibility_timeout_s": 6})
    start_worker(queue="alive", VLMQ_REDIS__VISIBILITY_TIMEOUT_S="6")
    doomed = start_worker(queue="doomed", VLMQ_ENGINE__TEST_DELAY_S="0.5", VLMQ_REDIS__VISIBILITY_TIMEOUT_S="6")
    job = submit(image_dir, settings, queues=["alive", "doomed"])
    time.sleep(1.0)
    doomed.kill()  # SIGKILL mid-job: its queued batches and the one it was running are stranded
    progress = job.wait(timeout=120)  # wait() rebalances orphaned queues every few seconds
    assert progress.outcomes == {"done": 64}
    assert sorted(r.image for r in job.records()) == sorted(p.name for p in image_dir.iterdir())
