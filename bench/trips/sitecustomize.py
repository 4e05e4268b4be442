"""Loaded at start-up by a bench's worker process (bench.round_trips.worker_environment)."""

import os

if os.environ.get("VLMQ_BENCH_ROUND_TRIPS_FILE"):
    from bench.round_trips import COUNT_FILE_ENV, install

    install(os.environ[COUNT_FILE_ENV])
