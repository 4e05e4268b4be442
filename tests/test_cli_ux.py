"""The CLI as a new user meets it: ids usable as printed, wrong input refused at once, no silent waits."""

import json
import os
import subprocess
import sys
import time

import pytest
import redis

from producers.api import submit
from tests.images import make_good_images


def cli(settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "VLMQ_ENGINE__BACKEND": "test", "VLMQ_QUEUES": json.dumps(settings.queues)}
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", "--broker-url", settings.redis.url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def redis_keys(settings) -> set[bytes]:
    return set(redis.Redis.from_url(settings.redis.url).keys("*"))


def test_submit_wait_without_a_worker_says_so_within_ten_seconds_and_finishes_once_one_starts(
    settings, start_worker, image_dir, tmp_path
):
    make_good_images(image_dir, 12)
    env = {**os.environ, "VLMQ_ENGINE__BACKEND": "test", "VLMQ_QUEUES": json.dumps(settings.queues)}
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "w") as err_out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "producers.cli",
                "--broker-url",
                settings.redis.url,
                "submit",
                str(image_dir),
                "--wait",
            ],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=err_out,
        )
    started = time.monotonic()
    while "no live worker serves" not in err_file.read_text() and time.monotonic() - started < 10:
        time.sleep(0.2)
    assert f"no live worker serves {settings.queues[0]}" in err_file.read_text()
    start_worker()
    out, _ = proc.communicate(timeout=60)
    err = err_file.read_text()
    assert proc.returncode == 0, err
    job_id = out.split()[0]
    assert f"job {job_id} done: 12/12" in err


def test_job_ids_are_printed_whole_and_unique_prefixes_work_in_every_command(
    settings, start_worker, image_dir, tmp_path
):
    make_good_images(image_dir, 5)
    start_worker()
    job = submit(image_dir, settings)
    job.wait(timeout=60)
    prefix = job.id[:8]
    status = cli(settings, "status", prefix, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["job_id"] == job.id
    results = cli(settings, "results", prefix, "--format", "jsonl")
    assert len(results.stdout.splitlines()) == 5
    exported = cli(settings, "export", prefix, "--format", "jsonl", "--output", str(tmp_path / "out"))
    assert exported.returncode == 0 and (tmp_path / "out" / "results.jsonl").is_file()
    jobs = cli(settings, "jobs")
    assert job.id in jobs.stdout  # whole, not cut to the terminal's width


@pytest.mark.parametrize("command", ["status", "results", "export", "cancel"])
def test_an_unknown_job_id_is_a_clear_error_that_creates_nothing(settings, command, tmp_path):
    before = redis_keys(settings)
    extra = ["--output", str(tmp_path / "x")] if command == "export" else []
    out = cli(settings, command, "deadbeef", *extra)
    assert out.returncode == 2
    assert "no job 'deadbeef'" in out.stderr
    assert redis_keys(settings) == before
    assert not (tmp_path / "x").exists()


def test_an_ambiguous_prefix_names_the_jobs_it_could_mean(settings, store):
    from app.job_spec import JobSpec
    from config.prompts import load_prompt_set

    prompts = load_prompt_set(settings.prompt_dir, "default")
    for job_id in ("abcd1111", "abcd2222"):
        store.create_job(JobSpec.from_settings(settings, job_id, prompts, []))
    out = cli(settings, "status", "abcd")
    assert out.returncode == 2 and "ambiguous" in out.stderr and "abcd1111" in out.stderr


def test_submitting_a_missing_folder_exits_non_zero_with_one_line_and_creates_no_job(settings, tmp_path):
    before = redis_keys(settings)
    out = cli(settings, "submit", str(tmp_path / "nope"))
    assert out.returncode == 2 and out.stdout == ""
    assert f"no such file or folder: {tmp_path / 'nope'}" in out.stderr
    assert redis_keys(settings) == before


def test_submitting_an_empty_folder_exits_non_zero_and_run_starts_no_worker(settings, tmp_path):
    (tmp_path / "empty").mkdir()
    before = redis_keys(settings)
    out = cli(settings, "submit", str(tmp_path / "empty"))
    assert out.returncode == 2 and "no files found in" in out.stderr
    ran = cli(settings, "run", str(tmp_path / "empty"), "--engine", "test", "--output-dir", str(tmp_path / "run"))
    assert ran.returncode == 2 and "no files found in" in ran.stderr
    assert "worker" not in ran.stderr and not (tmp_path / "run").exists()
    assert redis_keys(settings) == before


def test_fleet_without_workers_says_there_are_none(settings):
    out = cli(settings, "fleet")
    assert out.returncode == 0 and "no live workers" in out.stderr


def test_ctrl_c_in_producer_run_against_an_existing_redis_cancels_its_job_and_leaves_no_queue(
    settings, image_dir, tmp_path
):
    import signal

    from producers.api import Job

    make_good_images(image_dir, 48)
    env = {**os.environ, "VLMQ_ENGINE__TEST_DELAY_S": "0.5"}
    out_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "producers.cli",
            "--broker-url",
            settings.redis.url,
            "run",
            str(image_dir),
            "--engine",
            "test",
            "--batch-size",
            "4",
            "--output-dir",
            str(out_dir),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (out_dir / "worker.log").exists() or b"stage start" not in (out_dir / "worker.log").read_bytes():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    job_id = next(line.split()[1] for line in output.splitlines() if line.startswith("job "))
    assert f"interrupted: stopped the worker; job {job_id} cancelled" in output
    assert "embedded" not in output.split("interrupted:")[1]
    assert Job(job_id, settings).progress().status == "cancelled"
    leftovers = [k for k in redis.Redis.from_url(settings.redis.url).keys("*") if b"local-" in k]
    assert leftovers == []


def test_producer_run_with_an_unavailable_default_model_points_to_the_tiny_model_and_creates_nothing(
    settings, image_dir, tmp_path
):
    make_good_images(image_dir, 2)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("VLMQ_ENGINE__MODEL", None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "producers.cli",
            "--broker-url",
            settings.redis.url,
            "run",
            str(image_dir),
            "--output-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 2
    assert "python -m workers.tiny_model" in " ".join(out.stderr.split())
    assert not (tmp_path / "run").exists()
