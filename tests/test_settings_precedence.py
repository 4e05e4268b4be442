"""Settings precedence: defaults < YAML file < environment < flags; nested partial overrides merge."""

import os
import subprocess
import sys
from pathlib import Path

from config.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_each_source_overrides_the_one_before_and_nested_partial_overrides_merge(tmp_path, monkeypatch):
    config = tmp_path / "settings.yaml"
    config.write_text("batch_size: 5\nmax_inflight_batches: 3\nsampling:\n  summarize:\n    temperature: 0.7\n")
    monkeypatch.setenv("VLMQ_CONFIG", str(config))
    monkeypatch.setenv("VLMQ_MAX_INFLIGHT_BATCHES", "6")
    monkeypatch.setenv("VLMQ_SAMPLING__SUMMARIZE__MAX_TOKENS", "100")
    settings = load_settings(max_inflight_batches=None, queues=["flagged"])
    assert settings.redis.job_ttl_s == 30 * 24 * 3600  # default
    assert settings.batch_size == 5  # YAML over default
    assert settings.max_inflight_batches == 6  # env over YAML; a flag not given (None) changes nothing
    assert settings.queues == ["flagged"]  # flag over all
    summary = settings.sampling.summarize
    assert (summary.temperature, summary.max_tokens, summary.min_tokens) == (0.7, 100, 1)  # YAML, env, default
    assert load_settings(batch_size=9).batch_size == 9  # flag over YAML


def test_a_vlmq_yaml_in_the_working_directory_cannot_change_what_the_tests_see(tmp_path):
    stray = "conditions: {categories_to_score: [Z], score_threshold: 11}\nsampling: {summarize: {max_tokens: 1}}\n"
    (tmp_path / "vlmq.yaml").write_text(stray)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(ROOT),
            str(ROOT / "tests" / "test_stages.py"),
            str(ROOT / "tests" / "test_settings_sampling.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout and "failed" not in out.stdout


def test_an_override_keeps_what_was_a_default_a_default():
    # `producer --broker-url … run` must still pick the GPU default model: only a model someone
    # named may count as set, whatever else was overridden.
    settings = load_settings(redis={"url": "redis://elsewhere:6379/0"}, batch_size=4)
    assert "model" not in settings.engine.model_fields_set
    assert settings.engine.model == "HuggingFaceTB/SmolVLM-256M-Instruct" and settings.batch_size == 4
    assert "model" in settings.with_overrides(engine={"model": "m"}).engine.model_fields_set


def test_an_old_flat_name_in_the_environment_is_refused_with_its_new_name(monkeypatch):
    import pytest

    from config.errors import ConfigError

    monkeypatch.setenv("VLMQ_BROKER_URL", "redis://elsewhere:6379/0")  # would be ignored: redis.url stays local
    monkeypatch.setenv("VLMQ_MODEL", "/models/x")
    with pytest.raises(
        ConfigError, match=r"VLMQ_BROKER_URL \(now VLMQ_REDIS__URL\).*VLMQ_MODEL \(now VLMQ_ENGINE__MODEL\)"
    ):
        load_settings()
