"""The one way vlmq opens a Redis connection (TLS options from the settings' redis group)."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from app import redis_full
from config.settings import Settings


def redis_client(settings: Settings, url: str | None = None, retry_s: float = 60.0) -> redis.Redis:
    """A client that rides out a Redis restart (retries with backoff for about `retry_s`) and
    waits while Redis is full (app.redis_full)."""
    redis_full.install()
    kwargs: dict[str, Any] = settings.redis.tls(url) or {}
    retries = max(1, int(retry_s / 2))
    return redis.Redis.from_url(
        url or settings.redis.url,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_timeout=30,
        socket_connect_timeout=5,
        health_check_interval=15,
        **kwargs,
    )
