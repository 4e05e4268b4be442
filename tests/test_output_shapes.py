"""Output shapes: classification with reasoning, one-decimal scores, prompts that declare a schema."""

import re
import shutil

import pytest

from app.schemas import ImageRecord
from config.errors import PromptError
from config.prompts import parse_prompt
from config.settings import PACKAGE_PROMPT_DIR
from tests.test_stages import CountingEngine, make_batch, run_all
from workers.formats import SCORE_REGEX, parse_score

TAGS_SCHEMA = """==== SCHEMA ====
{"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}},
 "has_text": {"type": "boolean"}, "mood": {"enum": ["calm", "busy"]}}}
"""


def prompt_dir(tmp_path, **files):
    folder = tmp_path / "prompts"
    shutil.copytree(PACKAGE_PROMPT_DIR, folder)
    for name, text in files.items():
        (folder / f"{name}.txt").write_text(text)
    return folder


class RecordingEngine(CountingEngine):
    def __init__(self):
        super().__init__()
        self.seen: list[list] = []  # the requests of every call

    def generate(self, requests):
        self.seen.append(list(requests))
        return super().generate(requests)


def test_scores_carry_one_decimal_and_the_constraint_allows_it():
    assert re.fullmatch(SCORE_REGEX, '{"score": 8.5, "reasoning": "crisp"}')
    assert re.fullmatch(SCORE_REGEX, '{"score": 10, "reasoning": ""}')
    for bad in ('{"score": 8.55, "reasoning": ""}', '{"score": 10.5, "reasoning": ""}'):
        assert not re.fullmatch(SCORE_REGEX, bad)
    assert parse_score('{"score": 8.5, "reasoning": "crisp"}') == (8.5, "crisp")
    assert parse_score("I'd say 7.46 out of 10")[0] == 7.5


def test_the_default_classification_stays_a_single_constrained_letter():
    engine = RecordingEngine()
    batch, images = make_batch(2)
    run_all(batch, images, engine)
    assert all(item.classification.reasoning == "" for item in batch.items)
    assert [r.format for r in engine.seen[0]] == ["choice", "choice"]
    assert engine.seen[0][0].sampling.max_tokens == 4


def test_a_classification_prompt_asking_for_reasoning_gets_it_with_the_category_as_an_enum(tmp_path):
    text = (
        (PACKAGE_PROMPT_DIR / "classification_default.txt")
        .read_text()
        .replace(
            "Answer with the category letter only.", 'Answer as JSON: {"category": "<letter>", "reasoning": "<why>"}'
        )
    )
    engine = RecordingEngine()
    batch, images = make_batch(4)
    run_all(batch, images, engine, prompt_dir=prompt_dir(tmp_path, classification_default=text))
    request = engine.seen[0][0]
    assert request.format == "json" and request.sampling.max_tokens >= 128
    assert request.schema["properties"]["category"]["enum"] == ["A", "B", "C", "D", "E"]
    for item in batch.items:
        assert item.classification.category in "ABCDE" and item.classification.reasoning


def test_a_scoring_prompt_with_a_schema_yields_its_fields_in_the_record(tmp_path):
    scoring = "==== USER PROMPT ====\nList tags and whether the image shows text, as JSON.\n" + TAGS_SCHEMA
    folder = prompt_dir(tmp_path, scoring_default=scoring, scoring_category_a=scoring, scoring_category_b=scoring)
    batch, images = make_batch(6)
    out = run_all(batch, images, CountingEngine(), prompt_dir=folder, score_threshold=5)
    for item in out.items:
        scoring = item.scores[0]
        assert scoring.score is None and set(scoring.fields) == {"tags", "has_text", "mood"}
        assert isinstance(scoring.fields["has_text"], bool) and scoring.fields["mood"] in ("calm", "busy")
        assert scoring.fields["tags"] and all(isinstance(t, str) for t in scoring.fields["tags"])
        assert item.skipped["summarize"].startswith("no score to compare")  # a threshold needs a score
        record = ImageRecord.from_item(item, "x.jpg", "j", "b", "m", None)
        assert record.fields == scoring.fields


def test_an_output_that_does_not_fit_the_schema_is_one_image_error_and_the_batch_goes_on(tmp_path):
    scoring = "==== USER PROMPT ====\nTags?\n" + TAGS_SCHEMA
    folder = prompt_dir(tmp_path, scoring_default=scoring, scoring_category_a=scoring, scoring_category_b=scoring)

    class HalfBroken(CountingEngine):
        def generate(self, requests):
            out = super().generate(requests)
            return [
                '{"tags": ["a"], "has_text": "yes", "mood": "calm"}'
                if r.format == "json" and i == 0
                else '{"tags": ["a", "b'
                if r.format == "json" and i == 1
                else o
                for i, (r, o) in enumerate(zip(requests, out))
            ]

    batch, images = make_batch(4)
    out = run_all(batch, images, HalfBroken(), prompt_dir=folder)
    errors = [item.error for item in out.items if item.error]
    assert len(errors) == 2 and all("unparseable score output" in e for e in errors), errors
    assert "has_text" in errors[0] and "not JSON" in errors[1]
    assert sum(1 for item in out.items if item.scores and not item.error) == 2


@pytest.mark.parametrize(
    "schema,why",
    [
        ('{"properties": {"n": {"type": "object"}}}', "unsupported type 'object'"),
        ('{"properties": {"n": {"type": "array", "items": {"type": "integer"}}}}', "must hold strings"),
        ('{"type": "array"}', "top level must be an object"),
        ('{"properties": {"n": ', "not valid JSON"),
    ],
)
def test_an_unsupported_schema_is_refused_when_the_prompt_is_read(schema, why):
    with pytest.raises(PromptError, match=re.escape(why)):
        parse_prompt("scoring_default", f"==== USER PROMPT ====\nx\n==== SCHEMA ====\n{schema}\n")


def test_a_schema_changes_the_prompt_version_and_a_prompt_without_one_keeps_its_hash():
    plain = parse_prompt("p", "==== USER PROMPT ====\nRate it.")
    with_schema = parse_prompt("p", "==== USER PROMPT ====\nRate it.\n" + TAGS_SCHEMA)
    assert with_schema.user == plain.user and with_schema.output_schema["additionalProperties"] is False
    assert plain.ref == "p@" + __import__("hashlib").sha256(b"\x00Rate it.").hexdigest()[:12]
    assert with_schema.ref != plain.ref


def test_classification_and_summary_prompts_may_declare_schemas_of_their_own(tmp_path):
    cls = (PACKAGE_PROMPT_DIR / "classification_default.txt").read_text() + (
        '==== SCHEMA ====\n{"properties": {"is_photo": {"type": "boolean"}, "reasoning": {"type": "string"}}}\n'
    )
    summary = (
        "==== USER PROMPT ====\nSummarize, with keywords.\n==== SCHEMA ====\n"
        '{"properties": {"summary": {"type": "string"}, "keywords": {"type": "array"}}}\n'
    )
    folder = prompt_dir(
        tmp_path,
        classification_default=cls,
        summary_default=summary,
        summary_category_a=summary,
        summary_category_b=summary,
    )
    engine = RecordingEngine()
    batch, images = make_batch(4)
    out = run_all(batch, images, engine, prompt_dir=folder)
    schema = engine.seen[0][0].schema
    assert list(schema["properties"]) == ["category", "is_photo", "reasoning"]  # the letters as an enum, first
    for item in out.items:
        assert not item.error
        assert item.classification.category in "ABCDE" and item.classification.reasoning
        assert set(item.classification.fields) == {"is_photo"}
        # the schema's "summary" property becomes the summary text; the rest are fields
        assert item.summaries[0].summary.strip() and set(item.summaries[0].fields) == {"keywords"}
        assert isinstance(item.summaries[0].fields["keywords"], list)
