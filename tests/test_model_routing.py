"""One fleet, several models: every job's batches go only to workers of the job's model."""

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from app.heartbeat import live_models
from app.routing import parking_queue, pending
from producers.api import Job, submit
from tests.images import make_good_images
from tests.test_tiny_families import ENGINE_ENV
from workers.tiny_model import build_tiny_model


def wait_until(check, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def queue_name(label: str) -> str:
    return f"gpu-{label}-{uuid.uuid4().hex[:6]}"


def for_model(settings, model: str, queues: list[str]):
    return settings.with_overrides(engine={"test_model_id": model}, queues=queues)


def test_two_jobs_for_two_models_submitted_at_once_get_records_of_their_own_model_only(
    settings, start_worker, store, image_dir
):
    make_good_images(image_dir, 48)  # the same images for both jobs: no cache hit crosses models either
    qa, qb = queue_name("a"), queue_name("b")
    worker_a = start_worker(queue=qa, VLMQ_ENGINE__TEST_MODEL_ID="model-a")
    worker_b = start_worker(queue=qb, VLMQ_ENGINE__TEST_MODEL_ID="model-b")
    wait_until(lambda: {"model-a", "model-b"} <= set(live_models(store.r)), what="both models live")
    jobs: dict[str, Job] = {}

    def submit_for(model: str) -> None:  # both jobs may use either queue: only the model routes them
        jobs[model] = submit(image_dir, for_model(settings, model, [qa, qb]))

    threads = [threading.Thread(target=submit_for, args=(m,)) for m in ("model-a", "model-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for model, job in jobs.items():
        assert job.wait(timeout=120).outcomes == {"done": 48}
        records = list(job.records())
        assert len(records) == 48
        assert {r.model for r in records} == {model}
        assert {r.worker for r in records} == {(worker_a if model == "model-a" else worker_b).name}
    assert "handed back" not in worker_a.log_file.read_text() + worker_b.log_file.read_text()


def test_a_job_for_a_model_no_live_worker_serves_says_so_while_it_waits_and_finishes_once_one_starts(
    settings, start_worker, store, image_dir, tmp_path
):
    make_good_images(image_dir, 16)
    qa, qb = queue_name("a"), queue_name("b")
    start_worker(queue=qa, VLMQ_ENGINE__TEST_MODEL_ID="model-a")
    wait_until(lambda: "model-a" in live_models(store.r), what="model-a live")
    env = {
        **os.environ,
        "VLMQ_ENGINE__BACKEND": "test",
        "VLMQ_ENGINE__TEST_MODEL_ID": "model-b",
        "VLMQ_QUEUES": json.dumps([qa]),  # the only queue it names is served, but by another model
    }
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "w") as err_out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "producers.cli", "--broker-url", settings.redis.url, "submit", str(image_dir)]
            + ["--wait"],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=err_out,
        )
    wait_until(lambda: "no live worker serves model model-b" in err_file.read_text(), what="the reason said")
    parked = parking_queue("model-b")
    wait_until(lambda: pending(store.r, [parked])[parked] > 0, what="batches waiting on the model's parking queue")
    assert pending(store.r, [qa]) == {qa: 0}  # nothing went to the other model's queue
    worker_b = start_worker(queue=qb, VLMQ_ENGINE__TEST_MODEL_ID="model-b")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, err_file.read_text()
    job_id = out.split()[0]
    records = list(Job(job_id, settings).records())
    assert len(records) == 16 and {r.model for r in records} == {"model-b"}
    assert {r.worker for r in records} == {worker_b.name} and all(r.error is None for r in records)


def test_a_worker_hands_back_a_batch_of_another_model_and_it_finishes_on_a_worker_of_its_own(
    settings, start_worker, store, image_dir
):
    make_good_images(image_dir, 16)
    qa, qb = queue_name("a"), queue_name("b")
    job = submit(image_dir, for_model(settings, "model-b", [qa]))  # no worker live yet: its batches wait on qa
    assert pending(store.r, [qa])[qa] > 0
    worker_a = start_worker(queue=qa, VLMQ_ENGINE__TEST_MODEL_ID="model-a")  # takes them, and must refuse them
    wait_until(lambda: pending(store.r, [parking_queue("model-b")])[parking_queue("model-b")] == 2, what="handed back")
    assert "batch of another model handed back" in worker_a.log_file.read_text()
    assert job.progress().outcomes == {}
    worker_b = start_worker(queue=qb, VLMQ_ENGINE__TEST_MODEL_ID="model-b")
    assert job.wait(timeout=120).outcomes == {"done": 16}
    records = list(job.records())
    assert {r.model for r in records} == {"model-b"} and {r.worker for r in records} == {worker_b.name}


@pytest.mark.engine
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed: bash install.sh")
def test_two_tiny_vllm_models_in_one_fleet_each_answer_only_the_job_that_names_them(
    settings, start_worker, store, image_dir, tmp_path
):
    models = {label: build_tiny_model(tmp_path / f"tiny-{label}", seed=i) for i, label in enumerate("ab")}
    queues = {label: queue_name(label) for label in models}
    make_good_images(image_dir, 8, size=(320, 240))
    workers = {
        label: start_worker(queue=queues[label], timeout=180, VLMQ_ENGINE__MODEL=str(path), **ENGINE_ENV)
        for label, path in models.items()
    }
    wait_until(lambda: {str(p) for p in models.values()} <= set(live_models(store.r)), what="both models live")
    jobs = {
        label: submit(
            image_dir,
            settings.with_overrides(engine={"backend": "vllm", "model": str(path)}, queues=list(queues.values())),
        )
        for label, path in models.items()
    }
    for label, job in jobs.items():
        assert job.wait(timeout=400).finished
        records = list(job.records())
        assert len(records) == 8 and {r.model for r in records} == {str(models[label])}
        assert {r.worker for r in records} == {workers[label].name}


def test_batches_parked_for_a_model_go_to_the_first_worker_of_that_model_without_a_rebalancer(
    settings, start_worker, store, image_dir
):
    make_good_images(image_dir, 16)
    qa = queue_name("a")
    start_worker(queue=qa, VLMQ_ENGINE__TEST_MODEL_ID="model-a")  # the only live worker: another model
    wait_until(lambda: "model-a" in live_models(store.r), what="model-a live")
    job = submit(image_dir, for_model(settings, "model-p", [qa]).with_overrides(batch_size=4))
    assert sum(pending(store.r, [parking_queue("model-p")]).values()) == 4  # no worker of model-p yet
    start_worker(queue=queue_name("p"), VLMQ_ENGINE__TEST_MODEL_ID="model-p")
    # progress() only reads: nobody runs a rebalancer, the starting worker takes the parked batches
    assert wait_until(lambda: job.progress().finished, timeout=60, what="job finished")
    assert {r.model for r in job.records()} == {"model-p"}


def test_cancelling_a_job_removes_its_parked_batches_too(settings, start_worker, store, image_dir):
    make_good_images(image_dir, 8)
    qa = queue_name("a")
    start_worker(queue=qa, VLMQ_ENGINE__TEST_MODEL_ID="model-a")
    wait_until(lambda: "model-a" in live_models(store.r), what="model-a live")
    job = submit(image_dir, for_model(settings, "model-q", [qa]).with_overrides(batch_size=4))
    assert sum(pending(store.r, [parking_queue("model-q")]).values()) == 2
    assert job.cancel() == 2
    assert sum(pending(store.r, [parking_queue("model-q")]).values()) == 0
