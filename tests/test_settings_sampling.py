"""Sampling settings: a partial override merges into the stage's defaults; unknown names are refused."""

import pytest
from pydantic import ValidationError

from config.sampling import StageSampling
from config.settings import Settings


def test_setting_one_sampling_field_of_a_stage_from_the_environment_keeps_the_stages_other_defaults(monkeypatch):
    monkeypatch.setenv("VLMQ_SAMPLING__SUMMARIZE__TEMPERATURE", "0.5")
    summary = Settings().sampling.summarize
    assert summary.temperature == 0.5
    assert (summary.max_tokens, summary.min_tokens) == (192, 1)


def test_setting_one_sampling_field_from_yaml_keeps_the_stages_other_defaults(tmp_path, monkeypatch):
    (tmp_path / "vlmq.yaml").write_text("sampling:\n  score:\n    top_k: 5\n")
    monkeypatch.setenv("VLMQ_CONFIG", str(tmp_path / "vlmq.yaml"))
    settings = Settings()
    assert settings.sampling.score.top_k == 5 and settings.sampling.score.max_tokens == 96
    assert settings.sampling.classify.max_tokens == 4  # stages not named keep theirs


def test_every_engine_sampling_parameter_can_be_set_per_stage():
    stage = StageSampling(
        top_k=40, min_p=0.05, repetition_penalty=1.1, presence_penalty=0.2, frequency_penalty=0.3, stop=["###"], seed=7
    )
    assert stage.model_dump()["stop"] == ["###"]


def test_an_unknown_sampling_name_is_an_error_not_ignored(monkeypatch):
    monkeypatch.setenv("VLMQ_SAMPLING__SUMMARIZE__TEMPRATURE", "0.5")
    with pytest.raises(ValidationError, match="temprature"):
        Settings()


@pytest.mark.parametrize("group", ["redis", "images", "engine", "conditions", "serve"])
def test_an_unknown_name_in_any_group_is_an_error_not_ignored(monkeypatch, group):
    monkeypatch.setenv(f"VLMQ_{group.upper()}__API_KEY", '["k"]')  # e.g. a misspelt serve.api_keys
    with pytest.raises(ValidationError, match="api_key"):
        Settings()
