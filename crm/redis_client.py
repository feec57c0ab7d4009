"""The process-wide Redis connection used by the limiter and the lookup cache."""

from __future__ import annotations

import functools

import redis
from django.conf import settings


@functools.cache
def get_redis() -> redis.Redis:
    # redis-py pools are fork-safe (a child process opens its own connections).
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
