"""Images from anywhere: list files, http(s) URLs, webdataset shards, Parquet/Arrow datasets.

Real files, a real HTTP server on loopback, a real Redis and real workers: every good image gets a
record naming its source, every broken entry exactly one error record, and the job finishes.
"""

import io
import json
import tarfile
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.names import display_name
from producers.api import submit
from tests.images import jpeg_bytes, make_good_images
from tests.test_cli_ux import cli, redis_keys
from tests.webserver import WebServer

SOURCE_LIMITS = dict(images={"fetch_timeout_s": 2.0, "max_file_bytes": 200_000})  # the slow route answers after 5 s


def photo(i: int) -> bytes:
    return jpeg_bytes(64, 48, ((i * 41) % 256, (i * 13) % 256, (i * 97) % 256), seed=1000 + i)


def make_shard(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def web_root(tmp_path: Path) -> Path:
    """Files the HTTP server serves: 4 good images, one too big, a shard."""
    root = tmp_path / "www"
    (root / "img").mkdir(parents=True)
    for i in range(4):
        (root / "img" / f"good{i}.jpg").write_bytes(photo(i))
    (root / "img" / "huge.jpg").write_bytes(b"\xff\xd8" + bytes(300_000))
    make_shard(root / "shards" / "web-000.tar", {f"{k:04d}.jpg": photo(20 + k) for k in range(3)})
    return root


def url_list(path: Path, base: str) -> Path:
    path.write_text(
        "\n".join(
            [
                "# images of the catalogue, one per line",
                "",
                f"{base}/img/good0.jpg",
                f"{base}/img/good1.jpg",
                f"{base}/to/img/good2.jpg",  # a redirect to http: followed
                f"{base}/missing.jpg",  # 404
                f"{base}/slow/a.jpg",  # answers after 5 s: the 2 s limit cuts it off
                f"{base}/img/huge.jpg",  # over max_file_bytes
                f"{base}/to-ftp/b.jpg",  # a redirect to ftp://: refused
                "ftp://127.0.0.1/c.jpg",  # not http(s): refused without a connection
            ]
        )
        + "\n"
    )
    return path


BROKEN_URLS = {
    "missing.jpg": "HTTP 404",
    "a.jpg": "timed out",
    "huge.jpg": "over the limit",
    "b.jpg": "redirect to a non-http(s) URL",
    "c.jpg": "only http and https",
}


def by_tail(records) -> dict[str, object]:
    return {r.image.rsplit("-", 1)[-1]: r for r in records}


def check_url_list(records, base: str) -> None:
    found = by_tail(records)
    for tail, url in [
        ("good0.jpg", f"{base}/img/good0.jpg"),
        ("good1.jpg", f"{base}/img/good1.jpg"),
        ("good2.jpg", f"{base}/to/img/good2.jpg"),
    ]:
        assert found[tail].error is None and found[tail].classification and found[tail].source == url
    for tail, phrase in BROKEN_URLS.items():
        print(tail, "→", found[tail].error)
        assert phrase in found[tail].error and found[tail].source.endswith(tail) and found[tail].error_stage == "ingest"


def test_a_list_of_urls_gives_each_good_image_a_record_naming_its_url_and_each_failed_download_one_error(
    settings, start_worker, tmp_path
):
    with WebServer(web_root(tmp_path)) as web:
        roots = [url_list(tmp_path / "catalogue.txt", web.url), f"{web.url}/img/good3.jpg"]
        start_worker()
        job = submit(roots, settings.with_overrides(**SOURCE_LIMITS))
        progress = job.wait(timeout=90)
    records = list(job.records())
    assert progress.total == 9 and progress.outcomes == {"done": 4, "failed": 5}
    check_url_list(records, web.url)
    bare = next(r for r in records if r.image.endswith("good3.jpg") and "catalogue" not in r.image)
    assert bare.source == f"{web.url}/img/good3.jpg" and bare.error is None


def test_a_list_file_names_local_images_relative_to_itself_and_a_missing_one_is_one_error(
    settings, start_worker, tmp_path
):
    make_good_images(tmp_path / "pics", 3)
    (tmp_path / "picked.lst").write_text(
        "pics/img_00000.jpg\npics/img_00002.jpg\n# pics/img_00001.jpg\npics/gone.jpg\n"
    )
    start_worker()
    job = submit(tmp_path / "picked.lst", settings)
    assert job.wait(timeout=60).outcomes == {"done": 2, "failed": 1}
    found = {r.source: r for r in job.records()}
    assert set(found) == {"pics/img_00000.jpg", "pics/img_00002.jpg", "pics/gone.jpg"}
    assert "not found" in found["pics/gone.jpg"].error


def make_shards(folder: Path) -> tuple[Path, Path]:
    """000.tar: 4 images, sidecars, one corrupt member; 001.tar: cut short inside its third image."""
    members = {f"{k:04d}.jpg": photo(40 + k) for k in range(4)}
    members.update({"0000.json": b'{"caption": "x"}', "0001.txt": b"sidecar", "0004.jpg": b"not a jpeg at all"})
    good = make_shard(folder / "000.tar", dict(sorted(members.items())))
    full = make_shard(folder / "001.tar.full", {f"{k:04d}.jpg": photo(60 + k) for k in range(4)})
    with tarfile.open(full) as tar:
        third = tar.getmembers()[2].offset_data
    cut = folder / "001.tar"
    cut.write_bytes(full.read_bytes()[: third + 300])  # two whole members, then 300 bytes of the third
    full.unlink()
    return good, cut


def check_shards(records, folder: Path) -> None:
    found = {r.image: r for r in records}
    for k in range(4):
        assert found[f"000/{k:04d}.jpg"].error is None and found[f"000/{k:04d}.jpg"].source.endswith("000.tar")
    assert "not an image" in found["000/0004.jpg"].error
    assert found["001/0000.jpg"].error is None and found["001/0001.jpg"].error is None
    print("001.tar →", found["001.tar"].error)
    assert "truncated or corrupt after 2 image members" in found["001.tar"].error
    assert not any(name.endswith((".json", ".txt")) for name in found)


def test_webdataset_shards_by_glob_give_one_record_per_image_member_and_one_per_damage(
    settings, start_worker, tmp_path
):
    make_shards(tmp_path / "shards")
    start_worker()
    job = submit(str(tmp_path / "shards" / "*.tar"), settings)
    progress = job.wait(timeout=60)
    assert progress.total == 8 and progress.outcomes == {"done": 6, "failed": 2}
    check_shards(list(job.records()), tmp_path / "shards")


def make_tables(tmp_path: Path) -> tuple[Path, Path]:
    """A `datasets` folder (Image feature, 5 images and a null) and a Parquet file with a binary column."""
    import datasets
    from PIL import Image

    images = [Image.open(io.BytesIO(photo(80 + i))) for i in range(5)]
    ds = datasets.Dataset.from_dict(
        {"image": images[:3] + [None] + images[3:], "label": list(range(6))},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int32")}),
    )
    ds.save_to_disk(str(tmp_path / "catalogue_ds"))
    table = pa.table({"picture": pa.array([photo(90), None, photo(91)], pa.binary()), "id": [1, 2, 3]})
    pq.write_table(table, tmp_path / "extra.parquet")
    return tmp_path / "catalogue_ds", tmp_path / "extra.parquet"


def check_tables(records) -> None:
    found = {r.source: r for r in records}
    for row in (0, 1, 2, 4, 5):
        assert found[f"catalogue_ds#row={row}"].error is None and found[f"catalogue_ds#row={row}"].classification
    assert "cell is null" in found["catalogue_ds#row=3"].error


def test_a_hugging_face_dataset_folder_gives_one_record_per_row_and_a_null_image_one_error(
    settings, start_worker, tmp_path
):
    folder, _ = make_tables(tmp_path)
    start_worker()
    job = submit(folder, settings)
    assert job.wait(timeout=60).outcomes == {"done": 5, "failed": 1}
    check_tables(list(job.records()))


def test_a_parquet_file_reads_the_image_column_the_flag_names(settings, start_worker, tmp_path):
    _, parquet = make_tables(tmp_path)
    start_worker()
    job = submit(parquet, settings.with_overrides(images={"image_column": "picture"}))
    assert job.wait(timeout=60).outcomes == {"done": 2, "failed": 1}
    found = {r.source: r for r in job.records()}
    assert found["extra#row=0"].error is None and "cell is null" in found["extra#row=1"].error


@pytest.mark.parametrize(
    "root, message",
    [
        ("ftp://127.0.0.1/a.jpg", "only http and https"),
        ("{tmp}/shards/*.tar", "no file matches"),
        ("{tmp}/extra.parquet", "no column 'image'"),
    ],
)
def test_a_source_that_cannot_be_read_is_refused_before_anything_is_created(settings, tmp_path, root, message):
    make_tables(tmp_path)
    before = redis_keys(settings)
    out = cli(settings, "submit", root.format(tmp=tmp_path))
    assert out.returncode == 2 and out.stdout == "" and message in out.stderr, out.stderr
    assert redis_keys(settings) == before


def cpu_worker(start_worker, settings, processes: int = 2, shared: Path | None = None, **kw):
    """A CPU worker for prepare tasks: `celery -A app worker -Q cpu-… -P prefork -c N`; `shared`: the
    storage it shares with the producer (its prepare_roots)."""
    queue = f"cpu-{uuid.uuid4().hex[:6]}"
    if shared is not None:
        kw["VLMQ_PREPARE_ROOTS"] = json.dumps([str(shared)])
    start_worker(queue=queue, extra_args=["-P", "prefork", "-c", str(processes)], **kw)
    return settings.with_overrides(prepare_queue=queue, prepare_chunk=4)


def test_a_cpu_worker_asked_for_prefork_gets_prefork_although_gpu_workers_default_to_solo(
    settings, start_worker, celery_app
):
    worker = start_worker(queue="cpu-pool", extra_args=["-P", "prefork", "-c", "2"])
    stats = celery_app.control.inspect([worker.name], timeout=5).stats()[worker.name]
    assert "prefork" in stats["pool"]["implementation"] and stats["pool"]["max-concurrency"] == 2


def test_preparation_on_a_cpu_queue_gives_every_source_kind_the_same_records_as_local_preparation(
    settings, start_worker, tmp_path
):
    make_good_images(tmp_path / "folder", 5)
    make_shards(tmp_path / "shards")
    folder, _ = make_tables(tmp_path)
    with WebServer(web_root(tmp_path)) as web:
        roots = [
            tmp_path / "folder",
            url_list(tmp_path / "catalogue.txt", web.url),
            str(tmp_path / "shards" / "*.tar"),
            folder,
        ]
        start_worker()
        local = submit(roots, settings.with_overrides(**SOURCE_LIMITS, use_cache=False))
        local.wait(timeout=90)
        remote_settings = cpu_worker(start_worker, settings, shared=tmp_path).with_overrides(
            **SOURCE_LIMITS, use_cache=False
        )
        remote = submit(roots, remote_settings)
        progress = remote.wait(timeout=120)
    assert progress.total == 5 + 8 + 8 + 6 and progress.outcomes == {"done": 19, "failed": 8}
    records = list(remote.records())
    check_url_list([r for r in records if r.image.startswith("catalogue/")], web.url)
    check_shards(records, tmp_path / "shards")
    check_tables(records)
    assert all("cpu-" not in (r.worker or "") for r in records)  # GPU chains never ran on the CPU queue
    summary = lambda job: sorted((r.image, r.source, r.error is None, r.sha256) for r in job.records())  # noqa: E731
    assert summary(remote) == summary(local), set(summary(remote)) ^ set(summary(local))


def test_a_prepare_order_delivered_again_ships_no_batch_twice(settings, start_worker, store, tmp_path):
    from dataclasses import asdict

    from app.limits import limits_from
    from app.orders import TASK_NAME, order_settings
    from producers.sources import units

    make_good_images(tmp_path / "folder", 12)
    start_worker()
    remote = cpu_worker(start_worker, settings, processes=1, shared=tmp_path).with_overrides(
        batch_size=4, use_cache=False
    )
    job = submit(tmp_path / "folder", remote)
    assert job.wait(timeout=60).outcomes == {"done": 12}
    chains, sent = store.chains(job.id), store.r.smembers(store.key(job.id, "sent"))
    assert len(chains) == 3
    # The first order again, as a redelivery would bring it: same job, same index, same entries.
    first = [u.to_message() for u in units([tmp_path / "folder"], True, remote)][: remote.prepare_chunk]
    order = {
        "job_id": job.id,
        "index": 0,
        "units": first,
        "limits": asdict(limits_from(remote)),
        "queues": None,
        **order_settings(remote),
    }
    assert job.celery.send_task(TASK_NAME, args=(order,), queue=remote.prepare_queue).get(timeout=60) == {
        "prepared": 0,
        "failed": 0,
        "batches": 0,
    }  # its group is marked finished: skipped
    store.r.delete(store.key(job.id, "prep-groups"))  # as if the first delivery died after publishing
    assert job.celery.send_task(TASK_NAME, args=(order,), queue=remote.prepare_queue).get(timeout=60) == {
        "prepared": 0,
        "failed": 0,
        "batches": 0,
    }  # its batch's chain is published: skipped all the same
    assert store.chains(job.id) == chains and store.r.smembers(store.key(job.id, "sent")) == sent
    assert job.progress().outcomes == {"done": 12}


def test_two_deliveries_claiming_one_batch_at_once_publish_it_once_and_a_dead_claim_lapses(store):
    import threading
    import time

    from app.prepare_state import PrepareState

    state, batch = PrepareState(store, "job1"), "job1-p000000-b00000"
    assert state.reserve(batch, max_inflight=4)  # the first delivery claims, then publishes (slowly)
    second: list[bool] = []
    waiting = threading.Thread(target=lambda: second.append(state.reserve(batch, max_inflight=4)))
    waiting.start()
    time.sleep(0.5)
    assert waiting.is_alive()  # the second delivery waits while the first one publishes
    store.add_chain("job1", batch, ["a", "b", "c"])
    waiting.join(5)
    assert second == [False]  # published by the first: the second ships nothing
    orphan = "job1-p000001-b00000"
    assert state.reserve(orphan, max_inflight=4, lease_s=0.2)  # claimed by a delivery that then dies
    time.sleep(0.3)
    assert state.reserve(orphan, max_inflight=4, lease_s=0.2)  # its claim lapsed: the redelivery publishes


def test_no_more_batches_are_claimed_than_the_in_flight_limit(store):
    import threading

    from app.prepare_state import PrepareState

    state = PrepareState(store, "job2")
    assert all(state.reserve(f"job2-b{i}", max_inflight=2) for i in range(2))
    third: list[bool] = []
    waiting = threading.Thread(target=lambda: third.append(state.reserve("job2-b2", max_inflight=2)))
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive() and not third  # no room: waits
    store.r.sadd(store.key("job2", "done"), "job2-b0")  # one batch finished
    waiting.join(5)
    assert third == [True]


def test_a_cpu_worker_without_access_to_the_producers_files_prepares_a_url_list_and_a_shard(
    settings, start_worker, tmp_path
):
    import shutil
    import subprocess

    from tests.conftest import WITHOUT_DAC

    private = tmp_path / "private"  # the producer's files: only 'nobody' may look inside
    www = web_root(private)
    make_good_images(private / "local", 2)
    lst = url_list(private / "catalogue.txt", "{base}")
    shutil.chown(private, "nobody", "nogroup")
    private.chmod(0o700)
    probe = subprocess.run([*WITHOUT_DAC, "ls", str(private)], capture_output=True, text=True)
    assert probe.returncode != 0 and "Permission denied" in probe.stderr
    start_worker()
    remote = cpu_worker(start_worker, settings, prefix=WITHOUT_DAC, cwd="/").with_overrides(**SOURCE_LIMITS)
    with WebServer(www) as web:  # serves the files over HTTP, as a file server next to the producer would
        lst.write_text(lst.read_text().replace("{base}", web.url) + f"{private}/local/img_00000.jpg\n")
        job = submit([lst, f"{web.url}/shards/web-000.tar"], remote)
        progress = job.wait(timeout=120)
    records = list(job.records())
    assert progress.total == 8 + 1 + 3 and progress.outcomes == {"done": 6, "failed": 6}
    check_url_list(records, web.url)
    for k in range(3):
        member = next(r for r in records if r.image == f"web-000/{k:04d}.jpg")
        assert member.error is None and member.source == f"{web.url}/shards/web-000.tar"
    local = next(r for r in records if r.image.endswith("img_00000.jpg"))
    print("a local path on a worker without the producer's storage:", local.error)
    assert "not under this CPU worker's prepare_roots" in local.error  # local paths need shared storage


def test_a_cpu_worker_reads_local_files_only_under_its_prepare_roots_and_never_through_a_symlink(
    settings, start_worker, tmp_path
):
    shared, outside = tmp_path / "shared", tmp_path / "outside"
    make_good_images(shared / "pics", 3)
    make_good_images(outside, 1, start=7)
    (shared / "pics" / "link.jpg").symlink_to(outside / "img_00007.jpg")  # a symlink inside the shared root
    make_shard(outside / "elsewhere.tar", {"0000.jpg": photo(5)})
    (tmp_path / "list.txt").write_text(
        f"{shared}/pics/img_00000.jpg\n{shared}/pics/link.jpg\n{outside}/img_00007.jpg\n{outside}/elsewhere.tar\n"
    )
    start_worker()
    remote = cpu_worker(start_worker, settings, shared=shared)
    job = submit(tmp_path / "list.txt", remote)
    progress = job.wait(timeout=60)
    found = {r.source: r for r in job.records()}
    for source, record in sorted(found.items()):
        print(source, "→", record.error)
    assert progress.total == 4 and progress.outcomes == {"done": 1, "failed": 3}
    assert found[f"{shared}/pics/img_00000.jpg"].error is None
    assert "symlink" in found[f"{shared}/pics/link.jpg"].error
    assert "prepare_roots" in found[f"{outside}/img_00007.jpg"].error
    assert "prepare_roots" in found[display_name(f"{outside}/elsewhere.tar")].error


def test_the_same_image_at_two_urls_is_processed_once_and_each_record_names_its_own_url(
    settings, start_worker, tmp_path
):
    www = web_root(tmp_path)
    (www / "img" / "copy0.jpg").write_bytes((www / "img" / "good0.jpg").read_bytes())
    start_worker()
    with WebServer(www) as web:
        urls = [f"{web.url}/img/{n}.jpg" for n in ("good0", "good1", "good2", "copy0")]
        (tmp_path / "dupes.txt").write_text("\n".join(urls) + "\n")
        job = submit(tmp_path / "dupes.txt", settings.with_overrides(batch_size=2))  # the copy: a later batch
        assert job.wait(timeout=60).outcomes == {"done": 4}
    found = by_tail(list(job.records()))
    assert found["copy0.jpg"].source == urls[3] and found["good0.jpg"].source == urls[0]
    assert found["copy0.jpg"].sha256 == found["good0.jpg"].sha256
    assert found["copy0.jpg"].batch_id == found["good0.jpg"].batch_id  # processed once, in the first batch
