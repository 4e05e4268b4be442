"""Each registry family the CPU engine runs here, as a tiny random model, through a real vLLM worker.

Also the output shapes on the real engine: with random weights the text is noise, yet the
structured decoding makes every classification carry its reasoning and every scoring record
the fields its prompt's schema declares, through to the exports.
"""

import csv
import importlib.util
import json
import os
import shutil

import pytest

from config.settings import PACKAGE_PROMPT_DIR
from producers.api import submit
from producers.export import export
from tests.images import make_good_images
from workers.tiny_models import FAMILIES, build

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None and not os.environ.get("CI"),
        reason="vLLM not installed: bash install.sh",
    ),
]
# vLLM 0.32 looks a PaliGemma's vision encoder up through its Pixtral module, which imports torchvision.
NEEDS_TORCHVISION = {"paligemma"}
ENGINE_ENV = dict(
    VLMQ_ENGINE__BACKEND="vllm",
    VLMQ_ENGINE__DTYPE="float32",
    VLMQ_ENGINE__ENFORCE_EAGER="true",
    VLMQ_ENGINE__MAX_MODEL_LEN="1024",
    VLLM_CPU_KVCACHE_SPACE="1",
)
SCHEMA_PROMPT = """==== USER PROMPT ====
List what the image shows as tags, and whether it contains text. Answer as JSON.
==== SCHEMA ====
{"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 24},
 "maxItems": 3}, "has_text": {"type": "boolean"}}}
"""


def shaped_prompts(folder):
    shutil.copytree(PACKAGE_PROMPT_DIR, folder)
    cls = folder / "classification_default.txt"
    cls.write_text(
        cls.read_text().replace(
            "Answer with the category letter only.", 'Answer as JSON: {"category": "<letter>", "reasoning": "<why>"}'
        )
    )
    for name in ("scoring_default", "scoring_category_a", "scoring_category_b"):
        (folder / f"{name}.txt").write_text(SCHEMA_PROMPT)
    return folder


@pytest.mark.parametrize("family", FAMILIES)
def test_a_tiny_model_of_each_runnable_family_runs_a_real_batch_through_the_three_stages(
    family, settings, start_worker, image_dir, tmp_path
):
    if family in NEEDS_TORCHVISION and importlib.util.find_spec("torchvision") is None:
        pytest.skip(f"{family}: vLLM needs torchvision for it (README, Models)")
    model = build(family, tmp_path / f"tiny-{family}")
    make_good_images(image_dir, 4, size=(320, 240))
    start_worker(timeout=180, VLMQ_ENGINE__MODEL=str(model), **ENGINE_ENV)
    job = submit(image_dir, settings.with_overrides(engine={"backend": "vllm", "model": str(model)}))
    assert job.wait(timeout=400).finished
    records = list(job.records())
    assert len(records) == 4
    for r in records:
        print(family, r.image, r.classification, r.scoring, r.summary, r.error)
        assert r.model == str(model) and r.classification and r.classification.category in "ABCDE"
        # random weights: a summary may be empty text, but then it is a readable per-image error
        assert (r.scoring and r.summary and not r.error) or r.error_stage in ("score", "summarize"), r
    assert any(r.summary for r in records)


def test_a_prompt_schema_shapes_real_vllm_outputs_into_record_fields_and_exports(
    settings, start_worker, image_dir, tmp_path
):
    model = build("idefics3", tmp_path / "tiny-idefics3")
    prompts = shaped_prompts(tmp_path / "prompts")
    make_good_images(image_dir, 6, size=(320, 240))
    start_worker(timeout=180, VLMQ_ENGINE__MODEL=str(model), **ENGINE_ENV)
    job = submit(
        image_dir, settings.with_overrides(prompt_dir=prompts, engine={"backend": "vllm", "model": str(model)})
    )
    assert job.wait(timeout=400).finished
    records = list(job.records())
    assert len(records) == 6
    for r in records:
        print("record:", r.classification, r.scoring, r.error)
        assert r.error_stage not in ("classify", "score"), r.error  # constrained: never unparseable
        assert r.classification.category in "ABCDE" and isinstance(r.classification.reasoning, str)
        fields = r.scoring.fields
        assert set(fields) == {"tags", "has_text"} and isinstance(fields["has_text"], bool)
        assert isinstance(fields["tags"], list) and len(fields["tags"]) <= 3
        assert all(isinstance(t, str) and len(t) <= 24 for t in fields["tags"])
    out = tmp_path / "export"
    export(records, out, ["jsonl", "csv", "parquet"])
    by_image = {r.image: r.scoring.fields for r in records}
    jsonl = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {row["image"]: row["scoring"]["fields"] for row in jsonl} == by_image
    with open(out / "results.csv", newline="") as fh:
        assert {row["image"]: json.loads(row["fields"]) for row in csv.DictReader(fh)} == by_image
    import pyarrow.parquet as pq

    table = pq.read_table(out / "results.parquet").to_pylist()
    assert {row["image"]: json.loads(row["fields"]) for row in table} == by_image
