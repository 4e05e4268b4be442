"""End to end on real parts: a redis-server and `celery -A app worker` processes (test engine)."""

import json
import subprocess
import sys

from celery.result import GroupResult

from producers.api import Job, submit
from tests.images import make_bad_files, make_good_images


def test_a_folder_goes_through_all_three_stages_on_a_real_worker(settings, start_worker, image_dir):
    names = make_good_images(image_dir, 20) + make_good_images(image_dir / "nested", 5, start=100)
    start_worker()
    job = submit(image_dir, settings)
    progress = job.wait(timeout=60)
    records = list(job.records())
    assert sorted(r.image for r in records) == sorted(names[:20] + [f"nested/{n}" for n in names[20:]])
    assert progress.outcomes == {"done": 25}
    for r in records:
        assert r.classification.category in "ABCDE"
        assert 0 <= r.scoring.score <= 10 and r.summary.summary
        assert r.model == "deterministic-test-engine" and r.worker.endswith("@test")
        assert set(r.prompts) == {"classification", "scoring", "summary"}


def test_the_job_polled_through_celery_async_results_gives_the_same_records(settings, start_worker, image_dir):
    make_good_images(image_dir, 20)
    start_worker()
    job = submit(image_dir, settings)
    group = GroupResult.restore(job.id, app=job.celery)
    batches = group.join(timeout=60)
    assert group.successful() and all(r.state == "SUCCESS" for r in group.results)
    assert all(isinstance(b, dict) and b["part"] for b in batches)  # a worker on this host wrote its parts
    from_celery = sorted(
        (r.model_dump(mode="json") for b in batches for r in job.batch_records(b)), key=lambda r: r["image"]
    )
    stored = sorted((r.model_dump(mode="json") for r in job.records()), key=lambda r: r["image"])
    assert len(from_celery) == 20 and from_celery == stored


def test_bad_files_get_error_records_and_the_good_ones_are_processed(settings, start_worker, image_dir):
    good = make_good_images(image_dir, 10)
    bad = make_bad_files(image_dir)
    start_worker()
    job = submit(image_dir, settings)
    job.wait(timeout=60)
    records = {r.image: r for r in job.records()}
    assert set(records) == set(good) | set(bad)
    for name, word in bad.items():
        assert records[name].error and word in records[name].error, (name, records[name].error)
    for name in good:
        assert records[name].error is None and records[name].summary


def test_resubmitting_a_folder_is_served_from_the_cache_without_any_task(settings, start_worker, image_dir):
    make_good_images(image_dir, 12)
    start_worker()
    first = submit(image_dir, settings)
    first.wait(timeout=60)
    second = submit(image_dir, settings)
    progress = second.wait(timeout=30)
    assert progress.batches_sent == 0  # nothing reached a queue, so no engine was called
    assert progress.outcomes == {"cached": 12}
    strip = lambda r: (r.image, r.classification, r.scoring, r.summary)  # noqa: E731
    assert sorted(map(strip, second.records()), key=str) == sorted(map(strip, first.records()), key=str)


def test_duplicate_files_in_one_submission_are_processed_once_and_each_gets_a_record(settings, start_worker, image_dir):
    make_good_images(image_dir, 10)
    for i in range(3):  # copies in a later batch and within the same batch
        (image_dir / f"zz_copy_{i}.jpg").write_bytes((image_dir / "img_00001.jpg").read_bytes())
    start_worker()
    job = submit(image_dir, settings.with_overrides(batch_size=4))
    job.wait(timeout=60)
    records = {r.image: r for r in job.records()}
    assert len(records) == 13
    original = records["img_00001.jpg"]
    for i in range(3):
        assert records[f"zz_copy_{i}.jpg"].summary == original.summary
    assert job.record_count() == 13  # each name once in the dataset
    # wait() collected the job: the chains' stored results were freed in Redis
    assert all(r.state == "PENDING" for r in Job(job.id, settings).group().results)


def test_the_cli_submits_waits_and_prints_one_record_per_image(settings, start_worker, image_dir):
    make_good_images(image_dir, 9)
    start_worker()
    env_args = ["--broker-url", settings.redis.url]
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "producers.cli", *env_args, *a],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "VLMQ_ENGINE__BACKEND": "test",
            "PATH": "/usr/bin:/bin",
            "VLMQ_RESULTS_DIR": settings.results_dir,
            "VLMQ_QUEUES": json.dumps(settings.queues),
        },
    )
    out = run("submit", str(image_dir), "--wait")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip().splitlines()[-1]
    results = run("results", job_id, "--format", "jsonl")
    rows = [json.loads(line) for line in results.stdout.splitlines()]
    assert len(rows) == 9 and all(r["classification"] and r["scoring"] and r["summary"] for r in rows)
    status = json.loads(run("status", job_id, "--json").stdout)
    assert status["status"] == "done" and status["outcomes"] == {"done": 9}
    assert status["stages"]["summarize"] == {"done": 9, "skipped": 0, "failed": 0}


def test_an_engine_that_cannot_start_ends_the_job_with_readable_error_records(settings, start_worker, image_dir):
    make_good_images(image_dir, 6)
    start_worker(
        VLMQ_ENGINE__BACKEND="vllm",
        VLMQ_ENGINE__MODEL="/nonexistent/model-dir",
        VLMQ_ENGINE__MODEL_FAMILY="idefics3",
        VLMQ_ENGINE__STAGE_RETRIES="1",
    )
    job = submit(image_dir, settings.with_overrides(engine={"backend": "vllm", "model": "/nonexistent/model-dir"}))
    progress = job.wait(timeout=90)
    assert progress.outcomes == {"failed": 6}
    for r in job.records():
        assert r.error_stage == "classify" and "neither a local folder nor downloadable" in r.error
