"""`producer serve` with real workers: the official openai client, jobs over HTTP, metrics, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from producers.api import Job
from tests.images import jpeg_bytes, make_bad_files, make_good_images
from tests.serving import ImageServer, ServeProcess, data_url, image_message
from workers.engine import TEST_ENGINE_ID

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["category", "score", "tags"],
    "properties": {
        "category": {"type": "string", "enum": ["animal", "landscape", "other"]},
        "score": {"type": "integer", "minimum": 0, "maximum": 10},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
}


@pytest.fixture
def serve(settings, tmp_path):
    started = []

    def start(*args: str, **env: str) -> ServeProcess:
        base = {
            "VLMQ_REDIS__URL": settings.redis.url,
            "VLMQ_ENGINE__BACKEND": settings.engine.backend,
            "VLMQ_QUEUES": f'["{settings.queues[0]}"]',
            "VLMQ_SERVE__ALLOW_PRIVATE_URLS": "true",
        }
        proc = ServeProcess({**base, **env}, tmp_path / f"serve-{len(started)}.log", list(args)).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def wait_for(fn, timeout: float = 60, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := fn()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)
    return value


def test_the_openai_client_gets_answers_for_images_by_url_and_by_base64_with_micro_batching(
    settings, start_worker, serve, tmp_path, store
):
    worker = start_worker()
    server = serve("--batch-window-ms", "50")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    folder = tmp_path / "web"
    make_good_images(folder, 3)
    assert [m.id for m in client.models.list().data] == [TEST_ENGINE_ID]
    with ImageServer(folder) as web:
        by_url = client.chat.completions.with_raw_response.create(
            model=TEST_ENGINE_ID,
            messages=image_message(web.url("img_00000.jpg")),
            extra_headers={"X-Request-ID": "req-by-url-1"},
        )
    assert by_url.headers["x-request-id"] == "req-by-url-1"
    answer = by_url.parse()
    assert answer.object == "chat.completion" and answer.model == TEST_ENGINE_ID and answer.id.startswith("chatcmpl-")
    assert (
        answer.choices[0].message.content.startswith("Test engine text") and answer.choices[0].finish_reason == "stop"
    )
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    assert by_url.headers["x-usage-estimated"] == "true"
    by_b64 = client.chat.completions.create(
        model=TEST_ENGINE_ID,
        temperature=0,
        max_tokens=3,
        seed=7,
        messages=image_message(data_url((folder / "img_00001.jpg").read_bytes())),
    )
    assert by_b64.choices[0].finish_reason == "length" and by_b64.usage.completion_tokens == 3  # max_tokens honoured
    stopped = client.chat.completions.create(
        model=TEST_ENGINE_ID,
        stop=["for image"],
        presence_penalty=0.5,
        messages=image_message(data_url((folder / "img_00001.jpg").read_bytes())),
    )
    assert stopped.choices[0].message.content == "Test engine text "  # the stop string ends the answer
    # the request id reached the worker's log lines for that batch
    wait_for(lambda: '"request_id": "req-by-url-1"' in (tmp_path / "worker-0.log").read_text(), timeout=10)

    images = [data_url(jpeg_bytes(64, 48, (i * 5 % 256, 40, 90), seed=i)) for i in range(50)]
    before = store.worker_stats(worker.name)
    with ThreadPoolExecutor(50) as pool:
        answers = list(
            pool.map(
                lambda url: client.chat.completions.create(model=TEST_ENGINE_ID, messages=image_message(url)), images
            )
        )
    stats = store.worker_stats(worker.name)
    engine_calls = stats["chat.engine_calls"] - before.get("chat.engine_calls", 0)
    tasks = stats["chat.batches"] - before.get("chat.batches", 0)
    print(f"50 concurrent requests answered in {engine_calls:g} engine calls ({tasks:g} chat tasks)")
    assert len(answers) == 50 and all(a.choices[0].message.content for a in answers)
    assert len({a.choices[0].message.content for a in answers}) == 50  # each its own image's answer
    assert engine_calls < 50 and tasks < 50

    structured = [
        client.chat.completions.create(
            model=TEST_ENGINE_ID,
            messages=image_message(images[0], "Classify as JSON."),
            response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA}},
        )
        for _ in range(2)
    ]
    value = json.loads(structured[0].choices[0].message.content)
    jsonschema.validate(value, SCHEMA)
    assert structured[0].choices[0].message.content == structured[1].choices[0].message.content  # deterministic

    with pytest.raises(openai.BadRequestError) as streamed:
        client.chat.completions.create(model=TEST_ENGINE_ID, messages=image_message(images[0]), stream=True)
    assert streamed.value.status_code == 400 and streamed.value.body["code"] == "stream_not_supported"


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_bad_requests_get_openai_style_errors_and_keys_are_enforced(settings, start_worker, serve, tmp_path):
    start_worker()
    server = serve(
        VLMQ_SERVE__API_KEYS='["k-123"]',
        VLMQ_SERVE__MAX_IMAGE_BYTES="4096",
        VLMQ_SERVE__JOB_ROOTS=json.dumps([str(tmp_path / "allowed")]),
    )
    small = data_url(jpeg_bytes(32, 32, (1, 2, 3)))
    body = {"model": TEST_ENGINE_ID, "messages": image_message(small)}
    url = f"{server.url}/v1/chat/completions"

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()
    no_key = httpx.post(url, json=body)
    assert no_key.status_code == 401 and error_of(no_key)["code"] == "invalid_api_key"
    assert httpx.get(f"{server.url}/metrics").status_code == 401

    auth = {"Authorization": "Bearer k-123"}
    assert httpx.post(url, json=body, headers=auth).status_code == 200
    cases = {
        "malformed JSON": (httpx.post(url, content=b'{"model": "x", "messages": [', headers=auth), 400),
        "malformed JSON body": (
            httpx.post(url, content=b'{"model": "x"', headers={**auth, "Content-Type": "application/json"}),
            400,
        ),
        "missing image": (
            httpx.post(url, headers=auth, json={**body, "messages": [{"role": "user", "content": "no picture here"}]}),
            400,
        ),
        "two images": (
            httpx.post(
                url,
                headers=auth,
                json={
                    **body,
                    "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": small}}] * 2}],
                },
            ),
            400,
        ),
        "oversize image": (
            httpx.post(
                url,
                headers=auth,
                json={**body, "messages": image_message(data_url(jpeg_bytes(640, 480, (9, 9, 9), seed=3)))},
            ),
            413,
        ),
        "not an image": (
            httpx.post(
                url, headers=auth, json={**body, "messages": image_message(data_url(b"plain text, not a picture"))}
            ),
            400,
        ),
        "unknown model": (httpx.post(url, headers=auth, json={**body, "model": "no-such-model"}), 404),
        "wrong type": (httpx.post(url, headers=auth, json={**body, "temperature": "hot"}), 400),
        "no messages": (httpx.post(url, headers=auth, json={"model": TEST_ENGINE_ID}), 400),
        "folder outside roots": (
            httpx.post(f"{server.url}/v1/jobs", headers=auth, json={"folder": str(tmp_path)}),
            403,
        ),
        "unknown job": (httpx.get(f"{server.url}/v1/jobs/nope", headers=auth), 404),
    }
    for name, (response, status) in cases.items():
        assert response.status_code == status, (name, response.text)
        error = error_of(response)
        assert error["message"] and error["type"], name
    assert error_of(cases["unknown model"][0])["code"] == "model_not_found"
    assert error_of(cases["missing image"][0])["code"] == "missing_image"
    assert (
        error_of(cases["malformed JSON"][0])["code"]
        == error_of(cases["malformed JSON body"][0])["code"]
        == "invalid_json"
    )


def test_serve_refuses_to_listen_beyond_loopback_without_keys(settings):
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", "serve", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "without API keys" in done.stderr


def test_a_job_over_http_finishes_its_records_match_producer_results_and_metrics_count_them(
    settings, start_worker, serve, tmp_path
):
    folder = tmp_path / "allowed" / "batch"
    make_good_images(folder, 20)
    make_bad_files(folder / "bad")
    worker = start_worker()
    server = serve(VLMQ_SERVE__JOB_ROOTS=json.dumps([str(tmp_path / "allowed")]))
    api = httpx.Client(base_url=server.url, timeout=30)
    created = api.post("/v1/jobs", json={"folder": str(folder), "batch_size": 4})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    progress = wait_for(lambda: (p := api.get(f"/v1/jobs/{job_id}").json()).get("finished_at") and p)
    assert progress["total"] == 26 and progress["outcomes"] == {"done": 20, "failed": 6}
    records = api.get(f"/v1/jobs/{job_id}/records").json()["data"]
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "producers.cli",
            "--broker-url",
            settings.redis.url,
            "results",
            job_id,
            "--format",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert records == [json.loads(line) for line in cli.stdout.splitlines()]

    photos = tmp_path / "web"
    names = make_good_images(photos, 3, start=100)
    with ImageServer(photos) as web:
        urls = [web.url(n) for n in names] + [web.url("missing.jpg")]
        url_job = api.post("/v1/jobs", json={"urls": urls}).json()["id"]
        url_progress = wait_for(lambda: (p := api.get(f"/v1/jobs/{url_job}").json()).get("finished_at") and p)
    assert url_progress["outcomes"] == {"done": 3, "failed": 1}
    url_records = api.get(f"/v1/jobs/{url_job}/records").json()
    failed = [r for r in url_records["data"] if r["error"]]
    assert [r["image"] for r in failed] == [urls[-1]] and "HTTP 404" in failed[0]["error"]
    assert sorted(url_records["sources"].values()) == sorted(urls[:3])

    families = {f.name: f for f in text_string_to_metric_families(api.get("/metrics").text)}
    counted: dict[str, float] = {}
    for sample in families["vlmq_images"].samples:
        if sample.name == "vlmq_images_total":
            counted[sample.labels["outcome"]] = counted.get(sample.labels["outcome"], 0) + sample.value
            assert sample.labels["model"] == TEST_ENGINE_ID
    jobs = [Job(j, settings).progress() for j in (job_id, url_job)]
    assert counted == {k: sum(p.outcomes.get(k, 0) for p in jobs) for k in ("done", "failed")}
    done_by_worker = {
        s.labels["worker"]: s.value
        for s in families["vlmq_images"].samples
        if s.name == "vlmq_images_total" and s.labels["outcome"] == "done"
    }
    assert done_by_worker == {worker.name: 23}
    assert {s.labels["queue"] for s in families["vlmq_queue_depth"].samples} >= {settings.queues[0]}
    assert any(
        s.labels["worker"] == worker.name and s.labels["stage"] == "summarize" and s.value > 0
        for s in families["vlmq_worker_batches"].samples
    )
    health = api.get("/health").json()
    assert health["redis"] and health["models"][TEST_ENGINE_ID]["workers"] == 1
    # The worker beats as soon as its engine state moves, within a heartbeat's round trip.
    engines = wait_for(
        lambda: (e := api.get("/health").json()["models"][TEST_ENGINE_ID]["engines"]) == {"ready": 1} and e, timeout=3
    )
    assert engines == {"ready": 1}

    cancelled = api.delete(f"/v1/jobs/{job_id}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


def test_a_job_over_http_may_select_its_stages_and_one_without_classify_is_refused(
    settings, start_worker, serve, tmp_path
):
    folder = tmp_path / "allowed" / "batch"
    make_good_images(folder, 8)
    start_worker()
    server = serve(VLMQ_SERVE__JOB_ROOTS=json.dumps([str(tmp_path / "allowed")]))
    api = httpx.Client(base_url=server.url, timeout=30)
    refused = api.post("/v1/jobs", json={"folder": str(folder), "stages": ["score"]})
    assert refused.status_code in (400, 422) and "starts with classify" in refused.text, refused.text
    created = api.post("/v1/jobs", json={"folder": str(folder), "stages": ["classify"]})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    wait_for(lambda: api.get(f"/v1/jobs/{job_id}").json().get("finished_at"))
    records = api.get(f"/v1/jobs/{job_id}/records").json()["data"]
    assert len(records) == 8
    for r in records:
        assert r["classification"] and not r["scores"] and r["skipped"]["score"] == "stage not selected", r
