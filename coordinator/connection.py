"""One Redis client and job store per process, made from settings."""
from __future__ import annotations

import functools

import redis

from convoy.config.settings import Settings, load_settings
from convoy.coordinator.store import JobStore
from convoy.errors import ServiceUnavailable


def make_client(url: str) -> redis.Redis:
    """A decoded Redis client that retries a dropped connection once."""
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30,
                                socket_connect_timeout=5, retry_on_timeout=True)


@functools.lru_cache(maxsize=None)
def _client_for(url: str) -> redis.Redis:
    return make_client(url)


def get_client(settings: Settings | None = None) -> redis.Redis:
    return _client_for((settings or load_settings()).redis_url)


def get_store(settings: Settings | None = None) -> JobStore:
    return _store_for((settings or load_settings()).redis_url)


@functools.lru_cache(maxsize=None)
def _store_for(url: str) -> JobStore:
    return JobStore(_client_for(url))


def check_redis(settings: Settings | None = None) -> None:
    """Raise ServiceUnavailable with a clear message when Redis does not answer."""
    settings = settings or load_settings()
    try:
        get_client(settings).ping()
    except redis.RedisError as exc:
        raise ServiceUnavailable(settings.redis_url, f"{exc} (is Redis running? set CONVOY_REDIS_URL)") from None
