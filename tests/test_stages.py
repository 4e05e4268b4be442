"""The stage functions alone: no Celery, no Redis."""

import hashlib
import shutil

import pytest

from app.job_spec import JobSpec
from app.schemas import BatchState, ImageRef, ItemState
from app.stages import MemoryCache, StageContext, run_stage
from config.errors import BatchRejectedError, EngineDeadError
from config.prompts import load_prompt_set
from config.settings import PACKAGE_PROMPT_DIR, Settings
from tests.images import jpeg_bytes
from workers.deterministic_engine import DeterministicTestEngine


class CountingEngine(DeterministicTestEngine):
    """The test engine, failing any call that contains a chosen image (an OOM stand-in)."""

    def __init__(self, poison: set[str] = frozenset()):
        super().__init__()
        self.poison = poison
        self.batch_sizes: list[int] = []

    def generate(self, requests):
        self.batch_sizes.append(len(requests))
        if any(r.image_key in self.poison for r in requests):
            raise BatchRejectedError("out of memory")
        return super().generate(requests)


def make_batch(n: int) -> tuple[BatchState, dict[str, bytes]]:
    images, items = {}, []
    for i in range(n):
        data = jpeg_bytes(40, 30, (i * 20, 50, 90), seed=i)
        sha = hashlib.sha256(data).hexdigest()
        images[sha] = data
        items.append(ItemState(ref=ImageRef(sha256=sha, names=[f"{i}.jpg"], width=40, height=30, blob=sha)))
    return BatchState(job_id="j", batch_id="j-b0", items=items), images


def run_all(batch, images, engine, cache=None, prompt_dir=None, stages=None, **conditions) -> BatchState:
    settings = Settings(conditions=conditions, engine={"backend": "test"}).with_overrides(
        prompt_dir=prompt_dir, stages=stages
    )
    spec = JobSpec.from_settings(settings, "j", load_prompt_set(settings.prompt_dir), [])
    ctx = StageContext(
        engine=lambda: engine,
        spec=spec,
        images=lambda items: {i.ref.sha256: images[i.ref.sha256] for i in items},
        cache=cache,
    )
    for stage in ("classify", "score", "summarize"):
        batch = run_stage(stage, batch, ctx)
    return batch


def test_each_stage_makes_one_engine_call_per_batch():
    batch, images = make_batch(8)
    engine = CountingEngine()
    out = run_all(batch, images, engine)
    assert engine.batch_sizes == [8, 8, 8]
    assert all(i.classification and i.scores and i.summaries and not i.error for i in out.items)


def test_a_failing_batch_is_split_until_only_the_bad_image_fails():
    batch, images = make_batch(8)
    bad = batch.items[5].ref.sha256
    engine = CountingEngine(poison={bad})
    out = run_all(batch, images, engine)
    failed = [i for i in out.items if i.error]
    assert [i.ref.sha256 for i in failed] == [bad]
    assert "out of memory" in failed[0].error and failed[0].error_stage == "classify"
    assert engine.batch_sizes[:5] == [8, 4, 4, 2, 1]


class DeadEngine(CountingEngine):
    def generate(self, requests):
        self.batch_sizes.append(len(requests))
        raise EngineDeadError("engine process died")


def test_a_dead_engine_is_not_split_but_raised_for_the_task_to_rebuild_it():
    batch, images = make_batch(32)
    engine = DeadEngine()
    with pytest.raises(EngineDeadError):
        run_all(batch, images, engine)
    assert engine.batch_sizes == [32]  # one call, not 63


def test_the_threshold_skips_summaries_and_says_why():
    batch, images = make_batch(16)
    out = run_all(batch, images, CountingEngine(), score_threshold=6)
    for item in out.items:
        if item.scores[0].score >= 6:
            assert item.summaries and "summarize" not in item.skipped
        else:
            assert not item.summaries and "below threshold 6" in item.skipped["summarize"]
    assert any(i.summaries for i in out.items) and any(not i.summaries for i in out.items)


def test_category_filters_limit_scoring_and_summaries():
    batch, images = make_batch(16)
    out = run_all(batch, images, CountingEngine(), categories_to_score=["A", "B"], categories_to_summarize=["A"])
    for item in out.items:
        cat = item.classification.category
        assert bool(item.scores) == (cat in ("A", "B"))
        assert bool(item.summaries) == (cat == "A")
        if cat not in ("A", "B"):
            assert "categories_to_score" in item.skipped["score"]


def test_a_second_run_gets_classifications_from_the_stage_cache_and_computes_the_rest():
    cache = MemoryCache()
    batch, images = make_batch(8)
    first = run_all(batch, images, CountingEngine(), cache)
    engine = CountingEngine()
    again, _ = make_batch(8)
    second = run_all(again, images, engine, cache)
    scored, summarized = sum(bool(i.scores) for i in first.items), sum(bool(i.summaries) for i in first.items)
    assert engine.batch_sizes == [scored, summarized]  # no classify call (whole records: the record cache)
    assert [i.classification for i in second.items] == [i.classification for i in first.items]
    assert all(i.cached_stages == ["classify"] for i in second.items)


def test_a_missing_blob_fails_only_that_image():
    batch, images = make_batch(4)
    del images[batch.items[0].ref.sha256]
    spec = JobSpec.from_settings(Settings(engine={"backend": "test"}), "j", load_prompt_set(PACKAGE_PROMPT_DIR), [])
    ctx = StageContext(
        engine=lambda: CountingEngine(),
        spec=spec,
        images=lambda items: {i.ref.sha256: images[i.ref.sha256] for i in items if i.ref.sha256 in images},
    )
    out = run_stage("classify", batch, ctx)
    assert "no longer in the blob store" in out.items[0].error
    assert all(i.classification for i in out.items[1:])


def test_two_summary_prompts_give_two_summaries_per_image(tmp_path):
    for f in PACKAGE_PROMPT_DIR.iterdir():
        (tmp_path / f.name).write_text(f.read_text())
    for f in tmp_path.glob("summary_category_*.txt"):
        f.unlink()  # every category uses the defaults
    (tmp_path / "summary_default.short.txt").write_text("Name the subject in three words.")
    batch, images = make_batch(6)
    out = run_all(batch, images, CountingEngine(), prompt_dir=tmp_path)
    for item in out.items:
        assert [s.prompt.split("@")[0] for s in item.summaries] == ["summary_default", "summary_default.short"]
        assert item.summaries[0].summary != item.summaries[1].summary


def test_a_stage_not_selected_is_skipped_for_every_image_without_an_engine_call():
    batch, images = make_batch(8)
    engine = CountingEngine()
    out = run_all(batch, images, engine, stages=["classify"])
    assert engine.batch_sizes == [8]
    for item in out.items:
        assert item.classification and not item.scores and not item.summaries
        assert item.skipped == {"score": "stage not selected", "summarize": "stage not selected"}


def test_outputs_an_item_already_carries_are_kept_and_their_stage_not_run_again():
    batch, images = make_batch(8)
    full = run_all(batch.model_copy(deep=True), images, CountingEngine())
    for item, done in zip(batch.items, full.items):
        item.classification = done.classification  # what a rerun takes from its parent's record
    engine = CountingEngine()
    out = run_all(batch, images, engine, stages=["score", "summarize"])
    assert engine.batch_sizes == [8, 8]
    for item, done in zip(out.items, full.items):
        assert item.classification == done.classification and item.scores == done.scores
        assert item.summaries and not item.skipped


def test_a_later_stage_without_a_classification_to_go_on_from_says_why():
    batch, images = make_batch(4)
    engine = CountingEngine()
    out = run_all(batch, images, engine, stages=["score"])
    assert engine.batch_sizes == []
    for item in out.items:
        assert "no classification" in item.skipped["score"] and item.skipped["summarize"] == "stage not selected"


def test_a_category_with_no_prompt_for_a_stage_and_no_default_skips_it_and_says_why(tmp_path):
    shutil.copy(PACKAGE_PROMPT_DIR / "classification_default.txt", tmp_path)
    for name in ("scoring_category_a.txt", "summary_category_a.txt"):
        shutil.copy(PACKAGE_PROMPT_DIR / name, tmp_path)
    batch, images = make_batch(16)
    out = run_all(batch, images, CountingEngine(), prompt_dir=str(tmp_path))
    categories = {item.classification.category for item in out.items}
    assert "A" in categories and len(categories) > 1  # both kinds are in the batch
    for item in out.items:
        if item.classification.category == "A":
            assert item.scores and item.summaries and not item.skipped
        else:
            assert not item.scores and "no score prompt for category" in item.skipped["score"]
