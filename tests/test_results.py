"""What a user gets back: complete records, exports that read back, conditions, cancellation."""

import csv
import json
import time

import pyarrow.parquet as pq

from producers.api import Job, submit
from producers.export import export
from tests.images import make_bad_files, make_good_images


def comparable(rows):
    return sorted((r["image"], r["category"], r["score"], r["summary"], r["error"]) for r in rows)


def test_records_cover_every_image_once_and_every_export_reads_back_the_same(
    settings, start_worker, image_dir, tmp_path
):
    good = make_good_images(image_dir, 18)
    bad = make_bad_files(image_dir / "bad")
    start_worker()
    job = submit(image_dir, settings.with_overrides(conditions={"score_threshold": 5}))
    job.wait(timeout=60)
    records = list(job.records())
    assert sorted(r.image for r in records) == sorted(good + [f"bad/{b}" for b in bad])  # none missing, none twice
    out = tmp_path / "export"
    export(records, out, ["all"])
    expected = comparable(
        [
            {
                "image": r.image,
                "category": r.classification and r.classification.category,
                "score": r.scoring and r.scoring.score,
                "summary": r.summary and r.summary.summary,
                "error": r.error,
            }
            for r in records
        ]
    )
    jsonl = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    flat = lambda r: {  # noqa: E731
        "image": r["image"],
        "category": r["classification"] and r["classification"]["category"],
        "score": r["scoring"] and r["scoring"]["score"],
        "summary": r["summary"] and r["summary"]["summary"],
        "error": r["error"],
    }
    assert comparable([flat(r) for r in jsonl]) == expected
    assert comparable(pq.read_table(out / "results.parquet").to_pylist()) == expected
    with open(out / "results.csv", newline="") as fh:
        rows = [
            {
                **r,
                "score": float(r["score"]) if r["score"] else None,
                **{k: r[k] or None for k in ("category", "summary", "error")},
            }
            for r in csv.DictReader(fh)
        ]
    assert comparable(rows) == expected
    assert comparable([flat(r) for r in json.loads((out / "pipeline_results.json").read_text())]) == expected
    # the three-stage pipeline's folder layout
    for r in records:
        assert (out / "classification" / f"{r.image}.json").is_file() == (r.classification is not None)
        assert (out / "scoring" / f"{r.image}.json").is_file() == (r.scoring is not None)
        assert (out / "summaries" / f"{r.image}.json").is_file() == bool(r.summaries)
        assert (out / "errors" / f"{r.image}.json").is_file() == (r.error is not None)


def test_conditions_given_at_submission_are_applied_by_the_workers(settings, start_worker, image_dir):
    make_good_images(image_dir, 40)
    start_worker()
    job = submit(
        image_dir,
        settings.with_overrides(
            conditions={
                "score_threshold": 5,
                "categories_to_score": ["A", "B", "C"],
                "categories_to_summarize": ["A", "B"],
            }
        ),
    )
    job.wait(timeout=60)
    seen = set()
    for r in job.records():
        cat = r.classification.category
        if cat not in ("A", "B", "C"):
            assert r.scoring is None and "categories_to_score" in r.skipped["score"]
            seen.add("not scored")
        elif cat == "C":
            assert r.scoring and not r.summaries and "categories_to_summarize" in r.skipped["summarize"]
            seen.add("not summarized")
        elif r.scoring.score < 5:
            assert not r.summaries and "below threshold 5" in r.skipped["summarize"]
            seen.add("below threshold")
        else:
            assert r.summaries and not r.skipped
            seen.add("summarized")
    assert seen == {"not scored", "not summarized", "below threshold", "summarized"}


def test_cancel_leaves_no_queued_tasks_and_the_job_reads_cancelled(settings, start_worker, image_dir, store):
    make_good_images(image_dir, 48)
    start_worker(VLMQ_ENGINE__TEST_DELAY_S="0.3")
    job = submit(image_dir, settings.with_overrides(batch_size=4, max_inflight_batches=12))
    time.sleep(1.0)
    job.cancel()
    deadline = time.monotonic() + 20
    queue_keys = lambda: [k for k in store.r.keys(f"{settings.queues[0]}*") if store.r.llen(k)]  # noqa: E731
    while queue_keys() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert queue_keys() == []
    progress = Job(job.id, settings).progress()
    assert progress.status == "cancelled"
    assert progress.accounted < 48  # most images never ran
    time.sleep(1.0)
    assert Job(job.id, settings).progress().accounted == progress.accounted  # and nothing runs later


def test_a_job_leaves_no_result_channel_subscribed_in_redis_however_many_batches_it_sends(
    settings, start_worker, image_dir, store
):
    make_good_images(image_dir, 40)
    start_worker()
    job = submit(image_dir, settings.with_overrides(batch_size=2))  # 20 batches, 20 chains sent
    assert job.wait(timeout=60).outcomes == {"done": 40}
    channels = [c.decode() for c in store.r.pubsub_channels()]
    assert [c for c in channels if c.startswith(f"celery-task-meta-{job.id}")] == []  # (other tests poll theirs)
