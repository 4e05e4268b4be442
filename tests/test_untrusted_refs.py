"""Untrusted messages and swapped files: a worker and the producer read only what they should."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from app import refs
from app.job_spec import JobSpec
from app.pipeline import batch_chain
from app.schemas import BatchState, ImageRef, ItemState
from config.prompts import load_prompt_set
from producers.api import Job, submit
from producers.submit import new_job_id
from tests.images import jpeg_bytes, make_good_images

DAY = 24 * 3600


def fake_sha(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def aged(path: Path) -> float:
    """Set the file's atime two days back, so that any read of it moves atime (relatime)."""
    st = path.stat()
    os.utime(path, (st.st_mtime - 2 * DAY, st.st_mtime))
    return path.stat().st_atime


def atime_is_recorded(folder: Path) -> bool:
    probe = folder / "atime-probe"
    probe.write_bytes(b"probe")
    before = aged(probe)
    probe.read_bytes()
    return probe.stat().st_atime != before


def wait_for_records(settings, store, job_id: str, n: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    job = Job(job_id, settings, store=store)
    while len(records := {r.image: r for r in job.records()}) < n:
        assert time.monotonic() < deadline, records
        time.sleep(0.1)
    return records


def test_a_worker_reads_and_deletes_only_what_its_own_job_issued(
    settings, start_worker, store, celery_app, tmp_path, image_dir
):
    shared, outside = tmp_path / "shared", tmp_path / "outside"
    outside.mkdir()
    canary = outside / "canary.jpg"
    canary.write_bytes(jpeg_bytes(40, 30, (200, 0, 0)))
    canary_bytes, canary_atime = canary.read_bytes(), aged(canary)
    job_id, other_job = new_job_id(), new_job_id()
    store.create_job(JobSpec.from_settings(settings, job_id, load_prompt_set(settings.prompt_dir), []))
    (shared / job_id).mkdir(parents=True)
    (shared / other_job).mkdir()

    good_blob, good_file = fake_sha("good blob"), fake_sha("good file")
    [blob_key] = store.put_blobs(job_id, {good_blob: jpeg_bytes(40, 30, (1, 2, 3))}, 600).values()
    (shared / job_id / f"{good_file}.jpg").write_bytes(jpeg_bytes(40, 30, (4, 5, 6)))
    link_sha, theirs_sha, their_file_sha = fake_sha("link"), fake_sha("theirs"), fake_sha("their file")
    link = shared / job_id / f"{link_sha}.jpg"
    link.symlink_to(canary)  # in the right place with the right name, but a symlink out
    [their_key] = store.put_blobs(other_job, {theirs_sha: b"their bytes"}, 600).values()
    their_file = shared / other_job / f"{their_file_sha}.jpg"
    their_file.write_bytes(b"their file")
    hostile = {
        "outside-path": (fake_sha("outside"), str(canary)),
        "symlink": (link_sha, str(link)),
        "dotdot": (fake_sha("dotdot"), f"{shared}/{job_id}/../../outside/canary.jpg"),
        "other-job-blob": (theirs_sha, their_key),
        "other-job-file": (their_file_sha, str(their_file)),
        "this-job-key-other-sha": (fake_sha("mismatch"), blob_key),
    }
    items = [
        ItemState(ref=ImageRef(sha256=good_blob, names=["good-blob"], width=40, height=30, blob=blob_key)),
        ItemState(
            ref=ImageRef(
                sha256=good_file,
                names=["good-file"],
                width=40,
                height=30,
                blob=str(shared / job_id / f"{good_file}.jpg"),
            )
        ),
    ]
    items += [
        ItemState(ref=ImageRef(sha256=sha, names=[name], width=40, height=30, blob=blob))
        for name, (sha, blob) in hostile.items()
    ]

    worker = start_worker(VLMQ_SHARED_DIR=str(shared))
    batch = BatchState(job_id=job_id, batch_id=f"{job_id}-b000000", items=items)
    batch_chain(celery_app, batch, settings.queues[0]).apply_async()
    records = wait_for_records(settings, store, job_id, len(items))

    for name in ("good-blob", "good-file"):
        assert records[name].error is None and records[name].summary is not None, records[name]
    for name in hostile:
        assert records[name].error.startswith("reference refused: "), (name, records[name].error)
        print(f"{name}: {records[name].error}")
    assert "symlink" in records["symlink"].error and "'..'" in records["dotdot"].error
    # nothing of theirs was read or deleted; what this job created is gone
    if atime_is_recorded(outside):  # checked before this test reads the canary itself
        assert canary.stat().st_atime == canary_atime
    assert canary.read_bytes() == canary_bytes and link.is_symlink()
    assert store.r.get(their_key) == b"their bytes" and their_file.read_bytes() == b"their file"
    assert store.r.exists(blob_key) == 0 and not (shared / job_id / f"{good_file}.jpg").exists()
    # the worker goes on with ordinary work
    assert worker.alive()
    make_good_images(image_dir, 6)
    assert submit(image_dir, settings.with_overrides(shared_dir=shared)).wait(timeout=60).outcomes == {"done": 6}


def test_a_path_reference_is_refused_by_a_worker_without_a_shared_folder(tmp_path):
    sha = fake_sha("x")
    path = tmp_path / "job" / f"{sha}.jpg"
    assert "no shared folder" in refs.refusal(str(path), sha, "job", None)
    assert refs.refusal(f"vlmq:blob:job:{sha}", sha, "job", None) is None
    assert "job id" in refs.refusal(f"vlmq:blob:../x:{sha}", sha, "../x", None)
    assert "sha256" in refs.refusal("vlmq:blob:job:*", "*", "job", None)


def test_a_hard_link_on_the_shared_folder_is_not_read(tmp_path):
    sha, secret = fake_sha("hard"), tmp_path / "secret"
    secret.write_bytes(b"secret")
    (tmp_path / "shared" / "job").mkdir(parents=True)
    os.link(secret, tmp_path / "shared" / "job" / f"{sha}.jpg")
    with pytest.raises(refs.RefusedReference, match="hard link"):
        refs.read_shared(str(tmp_path / "shared" / "job" / f"{sha}.jpg"), sha, "job", tmp_path / "shared", 2**20)


def swapping_scan(victim: str, swap):
    """producers.scan.scan, but `swap()` runs after the victim was listed and before it is opened."""
    from producers import scan as scanning

    def scan(*args, **kwargs):
        for entry in scanning.scan(*args, **kwargs):
            if entry.name == victim:
                assert entry.problem is None  # listed as a plain file inside the root
                swap()
            yield entry

    return scan


def test_a_file_swapped_for_a_symlink_after_the_scan_is_never_read(
    settings, start_worker, image_dir, tmp_path, monkeypatch
):
    make_good_images(image_dir, 10)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.jpg"
    secret.write_bytes(jpeg_bytes(64, 48, (250, 250, 0), seed=99))
    secret_sha, secret_atime = hashlib.sha256(secret.read_bytes()).hexdigest(), aged(secret)

    def swap():
        (image_dir / "img_00004.jpg").unlink()
        (image_dir / "img_00004.jpg").symlink_to(secret)

    monkeypatch.setattr("producers.sources.scan", swapping_scan("img_00004.jpg", swap))
    start_worker()
    job = submit(image_dir, settings)
    assert job.wait(timeout=60).outcomes == {"done": 9, "failed": 1}
    records = {r.image: r for r in job.records()}
    print("img_00004.jpg:", records["img_00004.jpg"].error)
    assert "symlink" in records["img_00004.jpg"].error and records["img_00004.jpg"].sha256 is None
    assert secret_sha not in {r.sha256 for r in records.values()}
    if atime_is_recorded(outside):
        assert secret.stat().st_atime == secret_atime


def test_a_folder_swapped_for_a_symlink_after_the_scan_is_never_entered(tmp_path):
    from app.decode import Failed, PrepareLimits, prepare_file
    from producers.scan import scan

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.jpg").write_bytes(jpeg_bytes(20, 20, (1, 1, 1)))
    (outside / "a.jpg").write_bytes(jpeg_bytes(20, 20, (2, 2, 2)))
    [entry] = list(scan([root], True, [".jpg"]))
    (root / "sub").rename(tmp_path / "moved")
    (root / "sub").symlink_to(outside, target_is_directory=True)
    result = prepare_file(entry.path, entry.name, PrepareLimits(2**20, 10**7, 64, 90), entry.root)
    assert isinstance(result, Failed) and "symlink" in result.reason, result
