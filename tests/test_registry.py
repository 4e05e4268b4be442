"""The model registry: every family vlmq names is one vLLM knows, and found from a name or a config."""

import importlib.util
import json

import pytest

from config.errors import ConfigError
from workers.registry import REGISTRY, resolve_spec

HUB_IDS = {
    "HuggingFaceTB/SmolVLM-256M-Instruct": "idefics3",
    "Qwen/Qwen2-VL-7B-Instruct": "qwen2_vl",
    "Qwen/Qwen2.5-VL-3B-Instruct": "qwen2_5_vl",
    "Qwen/Qwen3-VL-8B-Instruct": "qwen3_vl",
    "google/paligemma2-3b-pt-448": "paligemma",
    "google/gemma-3-4b-it": "gemma3",
    "OpenGVLab/InternVL3-8B": "internvl",
    "llava-hf/llava-onevision-qwen2-7b-ov-hf": "llava_onevision",
    "mistralai/Mistral-Small-3.1-24B-Instruct-2503": "mistral3",
    "mistralai/Pixtral-12B-2409": "pixtral",
    "microsoft/Phi-3.5-vision-instruct": "phi3_v",
    "microsoft/Phi-4-multimodal-instruct": "phi4mm",
    "openbmb/MiniCPM-V-2_6": "minicpmv",
    "zai-org/GLM-4.1V-9B-Thinking": "glm4v",
    "moonshotai/Kimi-VL-A3B-Instruct": "kimi_vl",
    "allenai/Molmo-7B-D-0924": "molmo",
    "meta-llama/Llama-4-Scout-17B-16E-Instruct": "llama4",
}


@pytest.mark.parametrize("model,family", sorted(HUB_IDS.items()))
def test_a_hub_id_names_its_family(model, family):
    assert resolve_spec(model).family == family


def test_every_family_has_a_row_and_no_model_type_belongs_to_two_rows():
    model_types = [t for spec in REGISTRY for t in spec.model_types]
    assert len(model_types) == len(set(model_types))
    assert {s.family for s in REGISTRY} == set(HUB_IDS.values()) | {"mllama"}


def test_a_local_checkpoint_is_found_by_its_config_model_type_or_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3"}))
    assert resolve_spec(str(tmp_path)).family == "gemma3"
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Llama4ForConditionalGeneration"]}))
    assert resolve_spec(str(tmp_path)).family == "llama4"


def test_llama_3_2_vision_is_refused_with_the_reason_and_what_to_use_instead(tmp_path):
    with pytest.raises(ConfigError) as by_name:
        resolve_spec("meta-llama/Llama-3.2-11B-Vision-Instruct")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mllama"}))
    with pytest.raises(ConfigError) as by_config:
        resolve_spec(str(tmp_path))
    for message in (str(by_name.value), str(by_config.value)):
        assert "removed Llama 3.2 Vision" in message and "0.10.2" in message and "llama4" in message
        assert "cannot tell the model family" not in message


def test_an_unknown_model_still_asks_for_its_family():
    with pytest.raises(ConfigError, match="cannot tell the model family"):
        resolve_spec("acme/some-text-model")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed")
def test_every_row_names_architectures_this_vllm_supports_or_says_why_not():
    from vllm.model_executor.models import registry as vllm_registry

    supported = set(vllm_registry._MULTIMODAL_MODELS)
    removed = vllm_registry._PREVIOUSLY_SUPPORTED_MODELS
    for spec in REGISTRY:
        for arch in spec.architectures:
            if spec.unsupported:
                assert arch in removed and removed[arch] in spec.unsupported, spec.family
            else:
                assert arch in supported, (spec.family, arch)


def test_submitting_for_llama_3_2_vision_is_refused_plainly_before_any_job_exists(settings, image_dir):
    import os
    import subprocess
    import sys

    import redis

    from tests.images import make_good_images

    make_good_images(image_dir, 2)
    env = {
        **os.environ,
        "VLMQ_ENGINE__BACKEND": "vllm",
        "VLMQ_ENGINE__MODEL": "meta-llama/Llama-3.2-11B-Vision-Instruct",
        "VLMQ_QUEUES": json.dumps(settings.queues),
    }
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", "--broker-url", settings.redis.url, "submit", str(image_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, said
    assert "removed Llama 3.2 Vision" in said and "llama4" in said and "Traceback" not in said
    assert redis.Redis.from_url(settings.redis.url).keys("*") == []
