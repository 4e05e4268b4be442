"""Security defaults: JSON only; TLS and ACL users for Redis."""

import time
import uuid

from kombu import Connection, Exchange, Producer, Queue

from producers.api import submit
from tests.images import make_good_images


def test_a_pickle_message_is_refused_and_the_worker_keeps_working(settings, start_worker, image_dir, tmp_path):
    worker = start_worker()
    queue = settings.queues[0]
    task_id = f"evil-{uuid.uuid4().hex}"
    with Connection(settings.redis.url) as conn:
        producer = Producer(conn.channel(), exchange=Exchange(queue, "direct"), routing_key=queue)
        # a well-formed Celery message, but pickled: deserializing it could run arbitrary code
        producer.publish(
            ((), {}, {}),
            serializer="pickle",
            declare=[Queue(queue, Exchange(queue, "direct"), queue)],
            headers={"lang": "py", "task": "app.tasks.classify", "id": task_id, "argsrepr": "()"},
        )
    deadline = time.monotonic() + 20
    log = next(tmp_path.glob("worker-0.log"))
    while "pickle" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    assert "Refusing to deserialize untrusted content of type pickle" in log.read_text()
    assert worker.alive()
    make_good_images(image_dir, 8)
    assert submit(image_dir, settings).wait(timeout=60).outcomes == {"done": 8}


def make_certs(folder) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    import subprocess

    def run(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=vlmq-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    for who in ("server", "client"):
        run(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}", "-keyout", f"{who}.key", "-out", f"{who}.csr"
        )
        (folder / f"{who}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run(
            "x509",
            "-req",
            "-in",
            f"{who}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{who}.ext",
            "-out",
            f"{who}.crt",
        )
    return {name: str(folder / name) for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


def test_the_pipeline_runs_over_tls_with_an_acl_user_and_strangers_are_refused(tmp_path, start_worker, image_dir):
    import subprocess

    import pytest
    import redis

    from app.factory import create_app
    from config.settings import Settings
    from producers.local import free_port, redis_server_binary

    certs = make_certs(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--tls-cert-file",
            certs["server.crt"],
            "--tls-key-file",
            certs["server.key"],
            "--tls-ca-cert-file",
            certs["ca.crt"],
            "--tls-auth-clients",
            "yes",
            # no default user; the pipeline's user may do everything but the dangerous commands
            "--user",
            "default",
            "off",
            "--user",
            "vlmq",
            "on",
            ">pipeline-pw",
            "~*",
            "&*",
            "+@all",
            "-@dangerous",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    tls = dict(ssl_ca_certs=certs["ca.crt"], ssl_certfile=certs["client.crt"], ssl_keyfile=certs["client.key"])
    url = f"rediss://vlmq:pipeline-pw@127.0.0.1:{port}/0"
    worker = None
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url, ssl_cert_reqs="required", **tls).ping()
                break
            except redis.RedisError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        settings = Settings(
            queues=["tls0"],
            batch_size=4,
            redis={
                "url": url,
                "ssl_ca_certs": tls["ssl_ca_certs"],
                "ssl_certfile": tls["ssl_certfile"],
                "ssl_keyfile": tls["ssl_keyfile"],
            },
            engine={"backend": "test"},
        )
        worker = start_worker(
            queue="tls0",
            app=create_app(settings),
            VLMQ_REDIS__URL=url,
            VLMQ_REDIS__SSL_CA_CERTS=tls["ssl_ca_certs"],
            VLMQ_REDIS__SSL_CERTFILE=tls["ssl_certfile"],
            VLMQ_REDIS__SSL_KEYFILE=tls["ssl_keyfile"],
        )
        make_good_images(image_dir, 12)
        assert submit(image_dir, settings, queues=["tls0"]).wait(timeout=60).outcomes == {"done": 12}

        with pytest.raises(redis.ConnectionError):  # plain TCP to the TLS port
            redis.Redis(port=port, socket_timeout=2).ping()
        with pytest.raises(redis.ConnectionError):  # TLS, but no client certificate
            redis.Redis.from_url(url, ssl_cert_reqs="required", ssl_ca_certs=certs["ca.crt"], socket_timeout=2).ping()
        with pytest.raises(redis.AuthenticationError):  # certificate, wrong password
            redis.Redis.from_url(url.replace("pipeline-pw", "guess"), ssl_cert_reqs="required", **tls).ping()
        with pytest.raises(redis.exceptions.NoPermissionError):  # the pipeline's user cannot wipe Redis
            redis.Redis.from_url(url, ssl_cert_reqs="required", **tls).flushall()
    finally:
        if worker is not None:
            worker.stop()  # before its Redis goes away, or it waits to reconnect
        server.terminate()
        server.wait(10)
