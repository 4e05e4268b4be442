"""Secrets stay off disk and out of command lines: producer run, Flower, the compose file, the image."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from producers.submit import new_job_id
from tests.images import make_good_images


def test_producer_run_writes_the_redis_password_nowhere(tmp_path):
    import subprocess
    import sys

    import redis

    from producers.local import free_port, redis_server_binary

    password = "s3cret-" + new_job_id()
    images, out, port = tmp_path / "images", tmp_path / "run", free_port()
    make_good_images(images, 8)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    # the password by config on stdin ('-'), as the compose file does, never in an argument
    server = subprocess.Popen(
        [redis_server_binary(), "-", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    server.stdin.write(f"requirepass {password}\n".encode())
    server.stdin.close()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.RedisError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.1)
        proc = subprocess.run(
            [sys.executable, "-m", "producers.cli", "run", str(images), "--output-dir", str(out), "--engine", "test"],
            env={**os.environ, "VLMQ_REDIS__URL": url},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.terminate()
        server.wait(10)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "started an embedded one" not in proc.stderr  # it used the password-protected Redis
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {"vlmq-run.yaml", "worker.log", "pipeline_results.json", "results.csv"} <= {p.name for p in written}
    assert [p for p in written if password.encode() in p.read_bytes()] == []
    assert password not in proc.stdout + proc.stderr
    assert (out / "vlmq-run.yaml").stat().st_mode & 0o077 == 0
    assert ":***@" in (out / "vlmq-run.yaml").read_text()


def test_flower_takes_its_credentials_from_the_environment_as_compose_passes_them(settings, tmp_path):
    import base64
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from producers.local import free_port

    secret, port = "flower-" + new_job_id(), free_port()
    log = open(tmp_path / "flower.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "app", "flower", "--address=0.0.0.0", f"--port={port}"],
        env={**os.environ, "VLMQ_REDIS__URL": settings.redis.url, "FLOWER_BASIC_AUTH": f"admin:{secret}"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api/workers"
    auth = {"Authorization": "Basic " + base64.b64encode(f"admin:{secret}".encode()).decode()}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=auth), timeout=5) as response:
                    assert response.status == 200
                break
            except urllib.error.HTTPError:
                raise
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "flower.log").read_text()
                time.sleep(0.3)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401
        assert secret.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    finally:
        proc.terminate()
        proc.wait(10)


ROOT = Path(__file__).parent.parent


def test_the_compose_files_redis_takes_its_password_from_the_environment_and_the_image_is_not_root(tmp_path):
    import shutil
    import subprocess

    import redis
    import yaml

    from producers.local import free_port, redis_server_binary

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name, service in services.items():  # no credential in any command line
        command = json.dumps(service.get("command", ""))
        assert "--requirepass" not in command and "--basic-auth" not in command and "PASSWORD:" not in command, name
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_USER")
    users = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")

    # run the compose file's own Redis command and health check, on a free port, with a password
    password, port = "compose-" + new_job_id(), free_port()
    script = (
        services["redis"]["command"][2]
        .replace("$$", "$")
        .replace(
            "redis-server -", f"{redis_server_binary()} - --port {port} --bind 127.0.0.1 --dir {tmp_path} --save ''"
        )
    )
    env = {**os.environ, "REDIS_PASSWORD": password}
    server = subprocess.Popen(["sh", "-c", script], env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.1)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        assert password.encode() not in Path(f"/proc/{server.pid}/cmdline").read_bytes()
        if shutil.which("redis-cli"):
            check = (
                services["redis"]["healthcheck"]["test"][1]
                .replace("$$", "$")
                .replace("redis-cli", f"redis-cli -p {port}")
            )
            assert subprocess.run(["sh", "-c", check], env=env, capture_output=True).returncode == 0
    finally:
        server.terminate()
        server.wait(10)
    if shutil.which("docker-compose"):
        checked = subprocess.run(
            ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
            env={**env, "FLOWER_USER": "u", "FLOWER_PASSWORD": "p"},
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stderr
