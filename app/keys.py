"""Every Redis key vlmq writes, named in one place (Celery's and kombu's keys are their own).

A job's keys share the job's prefix, `vlmq:job:<id>[:<part>]`; the parts are:
    (none)        hash: spec, status, total, created_at, finished_at …
    counts        hash: outcome → images, outcome|worker → images
    lease         string: the submitting producer's lease
    sent, done, chains, sent-bits, done-bits   batch marks (app.batch_marks)
    records, named, superseded, collecting[:<part>], results   the staging window (app.record_window)
    shas, shipped, alias:<sha>, alias-sources   duplicates inside the job (app.claims, app.shipping)
    prep-*, unit-counts, claims                 preparation on CPU workers (app.prepare_state)
"""

from __future__ import annotations

PREFIX = "vlmq:"
JOBS = f"{PREFIX}jobs"  # sorted set of job ids by creation time
DEAD_LETTERS = f"{PREFIX}dead"  # hash: letter id → DeadLetter
PREPARE_QUEUES = f"{PREFIX}prepare-queues"  # set: CPU queues; GPU chains are never routed there
BLOB_PREFIX = f"{PREFIX}blob:"
ALIVE_PREFIX = f"{PREFIX}alive:"  # worker heartbeats (app.heartbeat)
MOVING_PREFIX = f"{PREFIX}moving:"  # a message between two queues (app.routing)
WORKER_STATS_PREFIX = f"{PREFIX}worker:"
QUEUE_MODELS = f"{PREFIX}queue-models"  # hash: queue → the model its messages need (app.routing)
PARKING_PREFIX = f"{PREFIX}parked:"  # a queue no worker consumes: batches waiting for their model


def job(job_id: str, part: str = "") -> str:
    return f"{PREFIX}job:{job_id}" + (f":{part}" if part else "")


def blob(job_id: str, sha256: str) -> str:
    return f"{BLOB_PREFIX}{job_id}:{sha256}"


def chat_blob(batch_id: str, index: int) -> str:
    return f"{BLOB_PREFIX}chat:{batch_id}:{index}"  # under the blob prefix: blob readers accept it


def chat_answers(batch_id: str) -> str:
    return f"{PREFIX}chat:answers:{batch_id}"


def record_index(fingerprint: str) -> str:
    """Content hash → dataset part, for one cache fingerprint (model, prompts, sampling)."""
    return f"{PREFIX}rindex:{fingerprint}"


def stage_cache(bucket: str) -> str:
    return f"{PREFIX}scache:{bucket}"


def alive(worker: str) -> str:
    return f"{ALIVE_PREFIX}{worker}"


def worker_stats(worker: str) -> str:
    return f"{WORKER_STATS_PREFIX}{worker}"


def attempts(task_id: str, retries: int) -> str:
    return f"{PREFIX}attempts:{task_id}:{retries}"  # per retry: a retry is not a redelivery


def running_alone(task_id: str) -> str:
    return f"{PREFIX}running:{task_id}"  # sha256 of the image now running alone (app.poison)


def losses(task_id: str) -> str:
    return f"{PREFIX}losses:{task_id}"  # sha256 → times its worker was lost while it ran alone


def moving(dst_key: str) -> str:
    return f"{MOVING_PREFIX}{dst_key}"
