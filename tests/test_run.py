"""`producer run`: one command, embedded Redis, a local worker, output folder, nothing left behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from producers.local import free_port
from tests.images import make_bad_files, make_good_images
from tests.procs import processes_matching


def producer_run(images: Path, out: Path, *args: str, port: int, **env: str) -> subprocess.Popen:
    environment = {**os.environ, "VLMQ_REDIS__URL": f"redis://127.0.0.1:{port}/0", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "run", str(images), "--output-dir", str(out), *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def started_processes(out: Path) -> list[str]:
    """Processes of the embedded Redis and the worker that this run started."""
    cfg = yaml.safe_load((out / "vlmq-run.yaml").read_text())
    port = cfg["redis"]["url"].rsplit(":", 1)[1].split("/")[0]
    return processes_matching(f"127.0.0.1:{port}", cfg["queues"][0], str(out / "redis"))


@pytest.mark.engine
def test_producer_run_does_the_whole_job_with_real_vllm_and_leaves_nothing_running(tmp_path):
    from workers.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny-smolvlm")
    images, out, port = tmp_path / "images", tmp_path / "run", free_port()
    good = make_good_images(images, 6, size=(200, 150))
    bad = make_bad_files(images / "bad")
    proc = producer_run(images, out, "--model", str(model), port=port, VLLM_CPU_KVCACHE_SPACE="1")
    output, _ = proc.communicate(timeout=500)
    assert proc.returncode == 0, output
    assert "started an embedded one" in output  # nothing answered on the configured port
    records = json.loads((out / "pipeline_results.json").read_text())
    assert sorted(r["image"] for r in records) == sorted(good + [f"bad/{b}" for b in bad])
    for name in good:
        assert (out / "classification" / f"{name}.json").is_file()
    for name in bad:
        assert "error" in json.loads((out / "errors" / "bad" / f"{name}.json").read_text())
    assert pq.read_table(out / "results.parquet").num_rows == len(records)
    assert len((out / "results.jsonl").read_text().splitlines()) == len(records)
    assert started_processes(out) == []

    # a re-run starts the embedded Redis again from its data and finds every image in the cache
    again = producer_run(images, out, "--model", str(model), port=port, VLLM_CPU_KVCACHE_SPACE="1")
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output
    records = json.loads((out / "pipeline_results.json").read_text())
    assert all(r["cached"] for r in records if not r["error"])
    assert started_processes(out) == []


def test_ctrl_c_during_producer_run_stops_everything_it_started(tmp_path):
    images, out = tmp_path / "images", tmp_path / "run"
    make_good_images(images, 64)
    proc = producer_run(
        images, out, "--engine", "test", "--batch-size", "4", port=free_port(), VLMQ_ENGINE__TEST_DELAY_S="0.5"
    )
    deadline = time.monotonic() + 60
    while not (out / "worker.log").exists() or b"stage start" not in (out / "worker.log").read_bytes():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    assert started_processes(out)  # the worker and Redis are up mid-job
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert started_processes(out) == []
