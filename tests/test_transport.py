"""Claim-check transport: workers need no access to the producer's files; Redis memory stays bounded."""

import os
import shutil
import subprocess
import threading
import time

from producers.api import submit
from tests.conftest import WITHOUT_DAC
from tests.images import make_good_images


def test_a_worker_that_cannot_read_the_producers_folder_processes_its_images(settings, start_worker, tmp_path):
    images = tmp_path / "private"
    make_good_images(images, 12)
    shutil.chown(images, "nobody", "nogroup")
    images.chmod(0o700)  # only 'nobody' may look inside; the worker is neither nobody nor privileged
    probe = subprocess.run([*WITHOUT_DAC, "ls", str(images)], capture_output=True, text=True)
    assert probe.returncode != 0 and "Permission denied" in probe.stderr
    start_worker(prefix=WITHOUT_DAC, cwd="/")  # another working directory, no right to read the images
    job = submit(images, settings)  # the producer (privileged) reads them and ships the bytes via Redis
    assert job.wait(timeout=60).outcomes == {"done": 12}


def test_image_blobs_in_redis_never_exceed_the_in_flight_limit(settings, start_worker, image_dir, store):
    make_good_images(image_dir, 320, size=(256, 192))
    settings = settings.with_overrides(batch_size=8, max_inflight_batches=2)
    start_worker(VLMQ_ENGINE__TEST_DELAY_S="0.03")
    samples, biggest, stop = [], [0], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(store.blob_bytes())
            for key in store.r.scan_iter("vlmq:blob:*"):
                biggest[0] = max(biggest[0], store.r.strlen(key))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        job = submit(image_dir, settings)
        assert job.wait(timeout=120).outcomes == {"done": 320}
    finally:
        stop.set()
        sampler.join()
    bound = settings.max_inflight_batches * settings.batch_size * biggest[0]
    print(f"{len(samples)} samples, max blob bytes {max(samples)}, bound {bound}")
    assert len(samples) > 20 and max(samples) > 0
    assert max(samples) <= bound
    assert store.blob_bytes() == 0  # every batch deleted its blobs when done


def test_with_a_shared_folder_no_image_bytes_go_through_redis(settings, start_worker, image_dir, tmp_path, store):
    make_good_images(image_dir, 24)
    shared = tmp_path / "shared"
    start_worker(VLMQ_SHARED_DIR=str(shared))
    job = submit(image_dir, settings.with_overrides(shared_dir=str(shared)))
    assert job.wait(timeout=60).outcomes == {"done": 24}
    assert not list(store.r.scan_iter("vlmq:blob:*"))
    assert list(shared.rglob("*.jpg")) == []  # prepared files are removed once their batch is done
    assert os.path.isdir(shared / job.id)
