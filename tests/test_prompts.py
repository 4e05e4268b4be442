import shutil
from pathlib import Path

import pytest

from config.errors import PromptError
from config.prompts import load_prompt_set, parse_prompt
from config.settings import PACKAGE_PROMPT_DIR


def test_prompt_file_sections_are_split_into_system_and_user():
    p = parse_prompt("x", "==== SYSTEM PROMPT ====\nbe brief\n==== USER PROMPT ====\ndescribe it\n")
    assert (p.system, p.user) == ("be brief", "describe it")
    assert p.ref.startswith("x@") and len(p.digest) == 12


def test_a_file_without_sections_is_all_user_prompt():
    assert parse_prompt("x", "just text").user == "just text"


def test_categories_come_from_the_classification_prompt():
    ps = load_prompt_set(PACKAGE_PROMPT_DIR)
    assert set(ps.categories) == {"A", "B", "C", "D", "E"}
    assert ps.categories["A"].startswith("Natural landscapes")


def test_a_category_without_its_own_prompt_falls_back_to_the_default(tmp_path: Path):
    ps = load_prompt_set(PACKAGE_PROMPT_DIR)
    assert [p.name for p in ps.for_stage("score", "A")] == ["scoring_category_a"]
    assert [p.name for p in ps.for_stage("score", "D")] == ["scoring_default"]


def test_adding_a_category_and_a_prompt_variant_needs_only_files(tmp_path: Path):
    for f in PACKAGE_PROMPT_DIR.iterdir():
        (tmp_path / f.name).write_text(f.read_text())
    cls = tmp_path / "classification_default.txt"
    cls.write_text(cls.read_text().replace("Answer with", "Category F: Food and drinks\nAnswer with"))
    (tmp_path / "summary_category_f.txt").write_text("Describe the dish.")
    (tmp_path / "summary_category_f.short.txt").write_text("Name the dish in three words.")
    ps = load_prompt_set(tmp_path)
    assert "F" in ps.categories
    assert [p.name for p in ps.for_stage("summarize", "F")] == ["summary_category_f", "summary_category_f.short"]


def test_a_missing_classification_prompt_is_a_clear_error():
    with pytest.raises(PromptError, match="no classification prompt classification_nope.txt"):
        load_prompt_set(PACKAGE_PROMPT_DIR, "nope")


def test_a_folder_of_per_category_prompts_without_defaults_loads_as_it_is(tmp_path: Path):
    shutil.copy(PACKAGE_PROMPT_DIR / "classification_default.txt", tmp_path)
    for name in ("scoring_category_a.txt", "summary_category_b.txt"):
        shutil.copy(PACKAGE_PROMPT_DIR / name, tmp_path)
    ps = load_prompt_set(tmp_path)
    assert [p.name for p in ps.for_stage("score", "A")] == ["scoring_category_a"]
    assert ps.for_stage("score", "B") == [] and ps.for_stage("summarize", "A") == []


def test_a_folder_with_no_prompt_at_all_for_a_stage_is_a_clear_error(tmp_path: Path):
    shutil.copy(PACKAGE_PROMPT_DIR / "classification_default.txt", tmp_path)
    shutil.copy(PACKAGE_PROMPT_DIR / "scoring_default.txt", tmp_path)
    with pytest.raises(PromptError, match="no summary prompt"):
        load_prompt_set(tmp_path)
