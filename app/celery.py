"""The Celery application: `celery -A app worker -Q gpu0 -c 1`, `celery -A app flower`.

Settings come from the environment (VLMQ_*) and the optional YAML file; see config.settings.
"""

import sys

from celery import signals

from app.factory import create_app
from config.settings import load_settings

if "flower" in sys.argv[1:]:
    from app.flower_guard import install

    install()

settings = load_settings()
app = create_app(settings)


def _asks_for_prefork(argv: list[str]) -> bool:
    """`-P prefork` / `--pool prefork` / `--pool=prefork` on the worker's command line."""
    for i, arg in enumerate(argv):
        if arg in ("-P", "--pool") and argv[i + 1 : i + 2] == ["prefork"]:
            return True
        if arg in ("-Pprefork", "--pool=prefork"):
            return True
    return False


# Celery reads an explicit `-P prefork` as "no pool given" (it is the CLI's default value) and then
# uses the configured pool, solo here: CPU workers for prepare tasks (`-Q cpu -P prefork -c N`)
# would silently run one task at a time. Asked for by name, prefork it is.
if _asks_for_prefork(sys.argv[1:]):
    app.conf.worker_pool = "prefork"


@signals.celeryd_init.connect
def _one_batch_at_a_time(options=None, **_):
    """A worker holds one engine and runs one batch at a time: say so when asked for more."""
    concurrency = (options or {}).get("concurrency") or 1
    pool = str((options or {}).get("pool") or app.conf.worker_pool)
    if concurrency > 1 and any(name in pool for name in ("solo", "threads", "thread", "HandBackPool")):
        sys.stderr.write(
            f"warning: -c {concurrency} ignored: a worker runs one batch at a time on its one "
            "engine; start one worker per GPU (or tensor-parallel group) instead\n"
        )
