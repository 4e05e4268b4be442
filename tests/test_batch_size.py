"""Batch size auto: resolved once per job from what live workers' engines hold, recorded in the job spec."""

import json
import os
import subprocess
import sys
from collections import Counter

import click
import pytest
import redis
from pydantic import ValidationError

from app import keys
from app.batch_size import resolve_batch_size
from app.heartbeat import Heartbeat
from config.settings import Settings
from producers.api import submit
from producers.cli_common import BatchSizeType
from tests.images import make_good_images
from workers.capacity import Capacity


def beat(settings, hostname: str, model: str, capacity: int | None) -> Heartbeat:
    """A live worker's heartbeat in Redis, written by the workers' own Heartbeat class."""
    heartbeat = Heartbeat(
        redis.Redis.from_url(settings.redis.url), hostname, [f"q-{hostname}"], model, capacity=lambda: capacity
    )
    heartbeat.beat()
    return heartbeat


def auto(settings, **engine) -> Settings:
    return settings.with_overrides(batch_size="auto", engine={"backend": "vllm", "model": "m", **engine})


def test_auto_is_the_least_capacity_among_live_workers_of_the_jobs_model(settings):
    beat(settings, "a@h", "m", 256)
    beat(settings, "b@h", "m", 96)
    beat(settings, "c@h", "m", None)  # engine not loaded yet: says nothing
    beat(settings, "d@h", "other-model", 8)  # serves another model: not asked
    chosen = resolve_batch_size(auto(settings), redis.Redis.from_url(settings.redis.url))
    assert chosen.size == 96
    assert "2 live workers of m" in chosen.why


def test_auto_never_goes_beyond_1024_whatever_a_worker_says(settings):
    beat(settings, "a@h", "m", 5000)
    assert resolve_batch_size(auto(settings), redis.Redis.from_url(settings.redis.url)).size == 1024


def test_a_worker_gone_from_redis_no_longer_counts(settings):
    beat(settings, "a@h", "m", 256)
    beat(settings, "b@h", "m", 16).stop()  # stopping deletes its heartbeat, as a TTL running out would
    assert resolve_batch_size(auto(settings), redis.Redis.from_url(settings.redis.url)).size == 256


def test_auto_without_a_capacity_falls_back_to_the_engines_max_num_seqs_then_to_32(settings):
    client = redis.Redis.from_url(settings.redis.url)
    beat(settings, "a@h", "m", None)
    with_seqs = resolve_batch_size(auto(settings, max_num_seqs=48), client)
    assert (with_seqs.size, with_seqs.why) == (48, "auto: engine.max_num_seqs, no worker says more")
    plain = resolve_batch_size(auto(settings), client)
    assert plain.size == 32 and "no live worker reports" in plain.why


def test_a_fixed_number_is_taken_as_it_is_whatever_the_workers_say(settings):
    beat(settings, "a@h", "m", 256)
    fixed = settings.with_overrides(batch_size=8, engine={"backend": "vllm", "model": "m"})
    chosen = resolve_batch_size(fixed, redis.Redis.from_url(settings.redis.url))
    assert (chosen.size, chosen.why) == (8, "fixed")


def test_auto_is_the_default_and_a_number_or_auto_is_read_from_the_environment(monkeypatch):
    assert Settings().batch_size == "auto"
    monkeypatch.setenv("VLMQ_BATCH_SIZE", "64")
    assert Settings().batch_size == 64
    monkeypatch.setenv("VLMQ_BATCH_SIZE", "Auto")
    assert Settings().batch_size == "auto"
    assert Settings(batch_size="12").batch_size == 12 and Settings(batch_size=1024).batch_size == 1024


@pytest.mark.parametrize("bad", [0, -3, 1025, "many", "12.5", 2.5, True])
def test_a_bad_batch_size_is_refused_saying_what_is_accepted(bad):
    with pytest.raises(ValidationError, match=r"batch size must be 'auto' or a whole number 1\.\.1024"):
        Settings(batch_size=bad)
    with pytest.raises(click.BadParameter, match="batch size must be 'auto' or a whole number"):
        BatchSizeType().convert(str(bad), None, None)


def test_an_engines_capacity_is_the_fewer_of_its_sequences_and_what_its_kv_cache_holds():
    assert Capacity(max_num_seqs=256, kv_cache_tokens=1_048_576, tokens_per_request=619).images == 256
    assert Capacity(max_num_seqs=256, kv_cache_tokens=40_000, tokens_per_request=619).images == 64
    assert Capacity(max_num_seqs=256, kv_cache_tokens=100, tokens_per_request=619).images == 1


def test_a_job_cuts_its_batches_at_the_auto_size_and_its_spec_records_the_number(settings, start_worker, image_dir):
    make_good_images(image_dir, 12)
    worker = start_worker()  # the test engine: no capacity of its own
    beat(settings, "fast@h", "deterministic-test-engine", 5)  # another worker of the same model says 5
    job = submit(image_dir, settings.with_overrides(batch_size="auto"))
    assert job.wait(timeout=60).outcomes == {"done": 12}
    assert job.store.load_spec(job.id).batch_size == 5
    assert sorted(Counter(r.batch_id for r in job.records()).values()) == [2, 5, 5]
    live = json.loads(redis.Redis.from_url(settings.redis.url).get(keys.alive(worker.name)) or "{}")
    assert live and live["capacity"] is None


def test_producer_submit_with_the_test_engine_says_it_chose_32(settings, start_worker, image_dir):
    make_good_images(image_dir, 4)
    start_worker()
    env = {**os.environ, "VLMQ_ENGINE__BACKEND": "test", "VLMQ_QUEUES": json.dumps(settings.queues)}
    out = subprocess.run(
        [sys.executable, "-m", "producers.cli", "--broker-url", settings.redis.url]
        + ["submit", str(image_dir), "--batch-size", "auto", "--wait"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "batch size 32 (auto: no live worker reports its engine's capacity)" in out.stderr


def test_producer_fleet_shows_each_workers_capacity(settings):
    beat(settings, "loaded@h", "m", 96)
    beat(settings, "cold@h", "m", None)
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "producers.cli", "--broker-url", settings.redis.url, "fleet"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = [c.strip() for c in next(line for line in lines if "capacity" in line).split("┃")]
    rows = {cells[1]: cells for line in lines if "@h" in line for cells in [[c.strip() for c in line.split("│")]]}
    column = header.index("capacity")
    assert (rows["loaded@h"][column], rows["cold@h"][column]) == ("96", "-")
