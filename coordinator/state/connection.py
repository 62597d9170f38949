"""Redis clients for every convoy process (API, coordinator, workers), made in one place.

Why the explicit settings: redis-py 8 gives a client a 5 s socket timeout by
default, and a blocking read (``XREAD BLOCK``, a pub/sub read) that waits
longer than the socket timeout fails with ``TimeoutError`` although nothing
is wrong.  So here:

* the socket timeout (``SOCKET_TIMEOUT_SECONDS``) is well above the longest
  single blocking call convoy makes (``BLOCK_SLICE_SECONDS``); a wait of any
  length is a loop of such slices, re-checking its condition between them;
* a connect gives up after ``CONNECT_TIMEOUT_SECONDS`` (a down Redis is
  reported, or retried, quickly);
* a connection idle for ``HEALTH_CHECK_SECONDS`` is PINGed before reuse, and
  TCP keepalive is on, so a connection that died silently is replaced;
* a refused or dropped connection is retried by redis-py itself for a few
  seconds (``COMMAND_RETRIES``: a quick restart goes unnoticed), a read that
  times out is not (a hung Redis would cost the socket timeout per retry);
* a wait that outlives a longer outage reconnects with back-off through
  :func:`reconnecting`, the one retry helper for blocking calls, until the
  wait's own deadline.

The ``lava-*`` commands do not use Redis at all: they ask their job's relay
(``tasks/run/relay.py``), which uses the MultiNode store on redis-py.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Callable, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from convoy.config.settings import Settings, load_settings
from convoy.coordinator.state.urls import redact_url, safe_client_name
from convoy.errors import ServiceUnavailable
from convoy.retry import retry_call

if TYPE_CHECKING:
    from convoy.coordinator.state.jobs import JobStore

log = logging.getLogger(__name__)
T = TypeVar("T")

#: the longest one blocking Redis call may block; longer waits are loops of these
BLOCK_SLICE_SECONDS = 10.0
BLOCK_SLICE_MS = int(BLOCK_SLICE_SECONDS * 1000)
#: no reply for this long means a dead link; 3x the slice, so a loaded Redis is not mistaken for one
SOCKET_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 5.0
HEALTH_CHECK_SECONDS = 15
#: redis-py's own retries of a command after a refused or dropped connection (a few seconds in all)
COMMAND_RETRIES = 10
#: what a lost or refused connection looks like from redis-py
CONNECTION_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)

#: the URL each client of :func:`make_client` was made from (for a dedicated sibling connection)
_URLS: weakref.WeakKeyDictionary[redis.Redis, str] = weakref.WeakKeyDictionary()


def tls_query(settings: Settings) -> dict[str, str]:
    """redis-py's TLS options from the settings, as URL query parameters (``rediss://`` URLs only).

    The server's certificate is always verified (against ``CONVOY_REDIS_TLS_CA``, else the system's
    CAs); a client certificate and key are sent when set."""
    query = {"ssl_cert_reqs": "required"}
    for name, value in (("ssl_ca_certs", settings.redis_tls_ca), ("ssl_certfile", settings.redis_tls_cert),
                        ("ssl_keyfile", settings.redis_tls_key)):
        if value:
            query[name] = value
    return query


def with_tls(url: str, settings: Settings | None = None) -> str:
    """``url`` with the configured TLS options in its query when it is a ``rediss://`` URL (else as is).

    Options the URL gives itself win.  The URL keeps them, so every client
    made from it (``client_url``, the MultiNode store's) uses TLS alike."""
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return url
    query = dict(parse_qsl(parts.query))
    added = {k: v for k, v in tls_query(settings or load_settings()).items() if k not in query}
    if not added:
        return url
    return parts._replace(query=urlencode({**query, **added})).geturl()


def make_client(url: str, *, decode_responses: bool = True, single_connection: bool = False,
                name: str | None = None) -> redis.Redis:
    """A Redis client with convoy's timeouts (see the module docstring for why).

    ``single_connection``: the client keeps one connection of its own, for a
    thread that blocks on it (and can be woken with ``CLIENT UNBLOCK``).
    ``name`` shows in ``CLIENT LIST`` (who holds which connection).
    A ``rediss://`` URL gets the TLS settings (``with_tls``).
    """
    url = with_tls(url)
    client = redis.Redis.from_url(
        url, decode_responses=decode_responses, single_connection_client=single_connection,
        client_name=safe_client_name(name) if name else None,
        socket_timeout=SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_keepalive=True, health_check_interval=HEALTH_CHECK_SECONDS,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=COMMAND_RETRIES,
                    supported_errors=(redis.ConnectionError,)))
    _URLS[client] = url
    return client


def client_url(client: redis.Redis) -> str:
    """The URL a client connects to (with its credentials: never print it, see ``redact_url``)."""
    known = _URLS.get(client)
    if known:
        return known
    pool = client.connection_pool
    kw = pool.connection_kwargs
    auth = ""
    if kw.get("password") is not None:
        auth = f"{quote(kw.get('username') or '', safe='')}:{quote(kw['password'], safe='')}@"
    if kw.get("path"):
        return f"unix://{auth}{kw['path']}?db={kw.get('db', 0)}"
    scheme = "rediss" if issubclass(pool.connection_class, redis.SSLConnection) else "redis"
    return f"{scheme}://{auth}{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def dedicated_client(client: redis.Redis, name: str | None = None) -> redis.Redis:
    """A new client on a connection of its own to the same Redis as ``client``, same decoding.

    Built from the URL, never by copying a pool's ``connection_kwargs``: in
    redis-py 8 those hold objects bound to the original pool."""
    decode = bool(client.connection_pool.connection_kwargs.get("decode_responses", False))
    return make_client(client_url(client), decode_responses=decode, single_connection=True, name=name)


def reconnecting(call: Callable[[], T], *, deadline: float | None = None,
                 stop: threading.Event | None = None, what: str = "Redis call") -> T:
    """Run ``call``; after a lost or refused connection, retry it with convoy's back-off (``retry.py``).

    Retries until it succeeds, until ``deadline`` (``time.monotonic()``) or
    until ``stop`` is set; then the last connection error is raised.  Any
    other error is raised at once.  ``call`` must be safe to repeat (a read,
    or a wait that re-checks its condition).
    """
    return retry_call(call, errors=CONNECTION_ERRORS, deadline=deadline, stop=stop, what=f"{what}: Redis unreachable")


def block_ms_before(deadline: float | None) -> int | None:
    """Milliseconds for the next blocking slice before ``deadline``; None when it has passed."""
    if deadline is None:
        return BLOCK_SLICE_MS
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    return max(1, int(min(remaining, BLOCK_SLICE_SECONDS) * 1000))


@functools.lru_cache(maxsize=None)
def _client_for(url: str) -> redis.Redis:
    return make_client(url)


def get_client(settings: Settings | None = None) -> redis.Redis:
    """This process's shared client for the configured Redis (thread-safe, pooled)."""
    return _client_for((settings or load_settings()).redis_url)


def get_store(settings: Settings | None = None) -> JobStore:
    return _store_for((settings or load_settings()).redis_url)


@functools.lru_cache(maxsize=None)
def _store_for(url: str) -> JobStore:
    from convoy.coordinator.state.jobs import JobStore

    return JobStore(_client_for(url))


def check_redis(settings: Settings | None = None) -> None:
    """Raise ServiceUnavailable with a clear message when Redis does not answer."""
    settings = settings or load_settings()
    try:
        get_client(settings).ping()
    except redis.RedisError as exc:
        raise ServiceUnavailable(redact_url(settings.redis_url),
                                 f"{exc} (is Redis running? set CONVOY_REDIS_URL)") from None
