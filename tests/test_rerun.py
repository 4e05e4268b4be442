"""Stages on their own: `--stages`, `producer rerun` over an earlier job's outputs, `producer retry`
of its failed images (real Redis, real workers, the test engine)."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from producers.api import Job, rerun, resume, submit
from producers.rerun import resubmit
from producers.submit import Submitter
from tests.images import make_good_images
from tests.test_cli_ux import cli

PACKAGE_PROMPTS = Path(__file__).resolve().parent.parent / "config" / "prompts"


def job_id_of(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[0]


def stricter_scoring_prompts(folder: Path) -> Path:
    """The package's prompts with every scoring prompt changed (a new digest)."""
    shutil.copytree(PACKAGE_PROMPTS, folder)
    for path in folder.glob("scoring_*.txt"):
        path.write_text(path.read_text() + "\nBe strict: reserve scores above 8 for exceptional images.\n")
    return folder


def test_stages_classify_gives_classifications_without_scores_or_summaries_and_no_later_engine_call(
    settings, start_worker, image_dir, store
):
    names = make_good_images(image_dir, 10)
    worker = start_worker()
    job_id = job_id_of(cli(settings, "submit", str(image_dir), "--stages", "classify", "--wait"))
    records = list(Job(job_id, settings).records())
    assert sorted(r.image for r in records) == names
    for r in records:
        assert r.error is None and r.classification.category in "ABCDE"
        assert r.scoring is None and r.summary is None and not r.scores and not r.summaries
        assert r.skipped == {"score": "stage not selected", "summarize": "stage not selected"}
    assert store.load_spec(job_id).stages == ["classify"]
    stats = store.worker_stats(worker.name)
    assert stats["classify.batches"] >= 1 and stats["classify.engine_calls"] >= 1
    assert not any(k.startswith(("score.", "summarize.")) for k in stats)  # no engine call, no batch


def test_rerun_of_later_stages_keeps_the_parents_classification_and_scores_with_the_new_prompt(
    settings, start_worker, image_dir, store, tmp_path
):
    from config.prompts import load_prompt_set

    names = make_good_images(image_dir, 12)
    worker = start_worker()
    parent = submit(image_dir, settings.with_overrides(stages=["classify"]))
    parent.wait(timeout=60)
    before = store.worker_stats(worker.name)
    prompts = stricter_scoring_prompts(tmp_path / "prompts")
    done = cli(settings, "rerun", parent.id, "--stages", "score,summarize", "--prompt-dir", str(prompts), "--wait")
    rerun_id = job_id_of(done)
    after = store.worker_stats(worker.name)
    assert after["classify.batches"] == before["classify.batches"]  # nothing classified again
    assert after["classify.engine_calls"] == before["classify.engine_calls"]
    assert after["score.engine_calls"] >= 1 and after["summarize.engine_calls"] >= 1
    spec = store.load_spec(rerun_id)
    assert spec.parent == parent.id and spec.stages == ["score", "summarize"]
    classified = {r.image: r.classification for r in parent.records()}
    records = list(Job(rerun_id, settings).records())
    assert sorted(r.image for r in records) == names  # one record per image, exactly once
    new_prompts = load_prompt_set(prompts)
    for r in records:
        assert r.error is None and r.classification == classified[r.image]
        expected = new_prompts.for_stage("score", r.classification.category)[0]
        assert r.prompts["scoring"] == expected.ref and r.scoring.prompt == expected.ref
        assert r.summary.summary and "classify" not in r.timings_ms


def test_a_rerun_from_python_of_the_summaries_alone_keeps_the_parents_classification_and_scores(
    settings, start_worker, image_dir, store
):
    make_good_images(image_dir, 6)
    start_worker()
    parent = submit(image_dir, settings)
    parent.wait(timeout=60)
    child = rerun(parent.id, ["summarize"], settings)
    assert child.wait(timeout=60).outcomes == {"done": 6}
    earlier = {r.image: r for r in parent.records()}
    records = list(child.records())
    assert sorted(r.image for r in records) == sorted(earlier)
    for r in records:
        assert r.job_id == child.id and r.summary.summary
        assert r.classification == earlier[r.image].classification and r.scores == earlier[r.image].scores


def test_an_interrupted_rerun_resumed_still_takes_the_parents_classification(
    settings, start_worker, image_dir, store, monkeypatch
):
    names = make_good_images(image_dir, 24)  # three batches of 8
    worker = start_worker()
    parent = submit(image_dir, settings.with_overrides(stages=["classify"]))
    parent.wait(timeout=60)
    before = store.worker_stats(worker.name)
    ship = Submitter._ship

    def ship_one_batch_then_die(self, items, stats):
        if stats.batches:
            raise RuntimeError("producer lost")
        ship(self, items, stats)

    monkeypatch.setattr(Submitter, "_ship", ship_one_batch_then_die)
    with pytest.raises(RuntimeError):
        resubmit(Submitter(settings.with_overrides(stages=["score", "summarize"])), parent.id)
    monkeypatch.undo()
    rerun_id = store.job_ids()[0]
    assert rerun_id != parent.id and store.progress(rerun_id).status == "interrupted"
    job = resume(rerun_id, settings)  # a fresh producer: it reads the parent's records again
    assert job.wait(timeout=60).outcomes == {"done": 24}
    classified = {r.image: r.classification for r in parent.records()}
    records = list(job.records())
    assert sorted(r.image for r in records) == names
    assert all(r.classification == classified[r.image] and r.scoring for r in records)
    assert store.worker_stats(worker.name)["classify.batches"] == before["classify.batches"]


def test_retry_recomputes_only_the_failed_images_and_they_now_succeed(settings, start_worker, image_dir, store):
    names = make_good_images(image_dir, 10)
    failing = names[2], names[7]
    shas = [hashlib.sha256((image_dir / n).read_bytes()).hexdigest() for n in failing]
    flaky = start_worker(VLMQ_ENGINE__TEST_FAIL_ON=json.dumps([s[:16] for s in shas]))
    parent = submit(image_dir, settings)
    parent.wait(timeout=60)
    failed = sorted(r.image for r in parent.records() if r.error)
    assert failed == sorted(failing)
    flaky.stop()
    healthy = start_worker()
    retry_id = job_id_of(cli(settings, "retry", parent.id[:8], "--wait"))
    status = json.loads(cli(settings, "status", retry_id, "--json").stdout)
    assert status["parent"] == parent.id and status["total"] == 2
    spec = store.load_spec(retry_id)
    assert spec.parent == parent.id and spec.parent_images == "failed"
    assert spec.prompts == store.load_spec(parent.id).prompts  # the parent's own spec again
    records = list(Job(retry_id, settings).records())
    assert sorted(r.image for r in records) == failed  # the others are not computed again
    for r in records:
        assert r.error is None and r.classification and r.scoring and r.summary
        assert r.worker == healthy.name


def test_retry_of_a_job_without_failures_says_so_and_submits_nothing(settings, start_worker, image_dir, store):
    make_good_images(image_dir, 3)
    start_worker()
    parent = submit(image_dir, settings)
    parent.wait(timeout=60)
    done = cli(settings, "retry", parent.id)
    assert done.returncode != 0 and "no failed image" in done.stderr
    assert store.job_ids() == [parent.id]


def test_an_unknown_stage_name_is_a_usage_error_and_nothing_is_submitted(settings, image_dir, store):
    make_good_images(image_dir, 3)
    done = cli(settings, "submit", str(image_dir), "--stages", "classify,scroe")
    assert done.returncode == 2 and "unknown stage 'scroe'" in done.stderr
    later_only = cli(settings, "submit", str(image_dir), "--stages", "score")
    assert later_only.returncode == 2 and "producer rerun" in later_only.stderr
    assert store.job_ids() == []
