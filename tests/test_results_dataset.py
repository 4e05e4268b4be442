"""The results dataset: workers write parts, a collector drains what waited in Redis, Redis keeps little."""

from __future__ import annotations

import json
import subprocess
import sys

from celery.result import GroupResult

from app.results import ResultsDataset
from producers.api import submit
from tests.images import make_bad_files, make_good_images


def test_a_worker_on_the_producers_host_writes_one_parquet_part_per_batch_under_a_file_url(
    settings, start_worker, image_dir, tmp_path
):
    make_good_images(image_dir, 20)
    settings = settings.with_overrides(results_dir=f"file://{tmp_path}/by-url")
    start_worker()
    job = submit(image_dir, settings)
    job.wait(timeout=60)
    parts = sorted(p.stem for p in (tmp_path / "by-url" / job.id).glob("*.parquet"))
    assert len(parts) == 3 == job.progress().batches_sent  # 20 images in batches of 8
    assert parts == sorted({r.batch_id for r in job.records()})
    assert sorted(r.image for r in job.records()) == sorted(p.name for p in image_dir.iterdir())


def test_records_of_a_worker_that_cannot_reach_the_results_folder_wait_in_redis_until_collected(
    settings, start_worker, image_dir, store
):
    make_good_images(image_dir, 16)
    job = submit(image_dir, settings)  # nothing serves the queue yet: both batches wait
    spec = store.load_spec(job.id)
    store.set_fields(job.id, spec=spec.model_copy(update={"results_host": "another-host"}).model_dump_json())
    start_worker()
    batches = GroupResult.restore(job.id, app=job.celery).join(timeout=60)
    assert all(isinstance(b, list) and len(b) == 8 for b in batches)  # the records themselves, in Redis
    assert store.staged_count(job.id) == 16 and ResultsDataset(settings.results_dir).count(job.id) == 0
    assert sorted(r.image for b in batches for r in job.batch_records(b)) == sorted(p.name for p in image_dir.iterdir())

    out = subprocess.run(
        [sys.executable, "-m", "producers.cli", "--broker-url", settings.redis.url, "collect", job.id],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "16 records collected" in out.stdout
    assert store.staged_count(job.id) == 0 and ResultsDataset(settings.results_dir).count(job.id) == 16
    # collected and finished: the chains' results are freed and the per-image state is gone
    assert all(r.state == "PENDING" for r in GroupResult.restore(job.id, app=job.celery).results)
    assert not store.r.exists(store.key(job.id, "shas"), store.key(job.id, "shipped"))
    assert job.progress().outcomes == {"done": 16}


def test_refused_files_are_staged_by_the_producer_and_collected_once_however_often_collect_runs(
    settings, start_worker, image_dir
):
    make_good_images(image_dir, 5)
    bad = make_bad_files(image_dir)
    start_worker()
    job = submit(image_dir, settings)
    job.wait(timeout=60)
    for _ in range(3):
        job.collect()
    records = list(job.records())
    assert len(records) == 5 + len(bad) == job.record_count()
    assert sorted(r.image for r in records) == sorted(p.name for p in image_dir.iterdir())
    assert job.progress().outcomes == {"done": 5, "failed": len(bad)}


def test_export_streams_the_dataset_and_reads_back_one_row_per_image(settings, start_worker, image_dir, tmp_path):
    make_good_images(image_dir, 30)
    start_worker()
    job = submit(image_dir, settings)
    job.wait(timeout=60)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "producers.cli",
            "--broker-url",
            settings.redis.url,
            "export",
            job.id,
            "--format",
            "jsonl",
            "--format",
            "parquet",
            "--format",
            "folder",
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "out" / "results.parquet").metadata.num_rows == 30
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["image"] for line in lines) == sorted(p.name for p in image_dir.iterdir())
    everything = json.loads((tmp_path / "out" / "pipeline_results.json").read_text())
    assert len(everything) == 30 and len({r["image"] for r in everything}) == 30
