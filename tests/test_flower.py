"""Flower against the real Redis and workers: its API shows workers and a job's tasks; unsafe binds refused."""

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from producers.api import submit
from producers.local import free_port
from tests.images import make_good_images

AUTH = "admin:s3cret"


def get(url: str) -> object:
    request = urllib.request.Request(
        url, headers={"Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def flower(settings, tmp_path):
    port = free_port()
    log = open(tmp_path / "flower.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "app",
            "flower",
            "--port",
            str(port),  # the README's form
            f"--basic-auth={AUTH}",
        ],
        env={**os.environ, "VLMQ_REDIS__URL": settings.redis.url},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            get(f"{base}/api/workers")
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "flower.log").read_text()
            time.sleep(0.3)
    yield base
    proc.terminate()
    proc.wait(10)


def test_flower_shows_both_workers_online_and_the_jobs_tasks_with_readable_arguments(
    settings, start_worker, image_dir, flower
):
    a, b = start_worker(queue="fa"), start_worker(queue="fb")
    # Task events are off by default (Celery's default): Flower turns them on in each worker it
    # finds, every 5 s. Probe jobs run until both workers' tasks show up in Flower.
    probes = image_dir / "probe"
    make_good_images(probes, 2)
    deadline = time.monotonic() + 60
    while True:
        probe = submit(probes, settings.with_overrides(batch_size=1, use_cache=False), queues=["fa", "fb"])
        probe.wait(timeout=60)
        seen = get(f"{flower}/api/tasks?limit=1000")
        if sum(tid.startswith(probe.id) for tid in seen) == 6:
            break
        assert time.monotonic() < deadline, "Flower never saw a probe job's tasks: task events not enabled"
        time.sleep(1)
    make_good_images(image_dir / "job", 16)
    job = submit(image_dir / "job", settings.with_overrides(batch_size=4), queues=["fa", "fb"])
    job.wait(timeout=60)
    deadline = time.monotonic() + 20
    while True:
        workers = get(f"{flower}/api/workers?refresh=1")
        tasks = get(f"{flower}/api/tasks?limit=100")
        ours = {tid: t for tid, t in tasks.items() if tid.startswith(job.id)}
        if {a.name, b.name} <= set(workers) and len(ours) == 12:
            break
        assert time.monotonic() < deadline, (list(workers), len(ours))
        time.sleep(0.5)
    assert {t["name"] for t in ours.values()} == {"app.tasks.classify", "app.tasks.score", "app.tasks.summarize"}
    assert all(t["state"] == "SUCCESS" for t in ours.values())
    classify = next(t for t in ours.values() if t["name"] == "app.tasks.classify")
    assert classify["args"] == f"(batch {classify['uuid'].rsplit('-', 1)[0]}: 4 images)"  # not the payload


def test_flower_refuses_to_serve_all_interfaces_without_auth(settings):
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "app", "flower", "--address=0.0.0.0", f"--port={free_port()}"],
        env={**os.environ, "VLMQ_REDIS__URL": settings.redis.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "refusing to start Flower on '0.0.0.0' without authentication" in out.stderr
