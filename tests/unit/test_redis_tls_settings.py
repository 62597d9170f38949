"""TLS settings reach every Redis client: redis-py's through the URL, Celery's broker and backend through
their options; plain redis:// URLs are left alone."""
from __future__ import annotations

import ssl
from urllib.parse import parse_qsl, urlsplit

import pytest

from convoy.config.settings import load_settings
from convoy.coordinator.state.connection import with_tls
from convoy.tasks.celery import celery_config

TLS_ENV = {"CONVOY_REDIS_TLS_CA": "/etc/convoy/ca.crt", "CONVOY_REDIS_TLS_CERT": "/etc/convoy/host.crt",
           "CONVOY_REDIS_TLS_KEY": "/etc/convoy/host.key"}


@pytest.mark.parametrize(("url", "env", "query"), [
    ("redis://:pw@h:6379/0", TLS_ENV, None),  # not TLS: unchanged
    ("rediss://:pw@h:6380/0", {}, {"ssl_cert_reqs": "required"}),
    ("rediss://:pw@h:6380/0", TLS_ENV, {"ssl_cert_reqs": "required", "ssl_ca_certs": "/etc/convoy/ca.crt",
                                        "ssl_certfile": "/etc/convoy/host.crt",
                                        "ssl_keyfile": "/etc/convoy/host.key"}),
    ("rediss://:pw@h:6380/0?ssl_cert_reqs=optional", {"CONVOY_REDIS_TLS_CA": "/ca"},
     {"ssl_cert_reqs": "optional", "ssl_ca_certs": "/ca"}),  # the URL's own options win
])
def test_with_tls(url: str, env: dict, query: dict | None):
    made = with_tls(url, load_settings(env))
    if query is None:
        assert made == url
    else:
        assert dict(parse_qsl(urlsplit(made).query)) == query
        assert made.startswith(url.split("?")[0])


@pytest.mark.parametrize(("env", "broker_tls", "backend_tls"), [
    ({"CONVOY_REDIS_URL": "redis://h/0"}, False, False),
    ({"CONVOY_REDIS_URL": "rediss://h/0", **TLS_ENV}, True, True),
    ({"CONVOY_REDIS_URL": "rediss://h/0", "CONVOY_BROKER_URL": "amqp://h//"}, False, True),
])
def test_celery_gets_tls_options_for_rediss_urls(env: dict, broker_tls: bool, backend_tls: bool):
    conf = celery_config(load_settings(env))
    assert ("broker_use_ssl" in conf) is broker_tls
    assert ("redis_backend_use_ssl" in conf) is backend_tls
    if backend_tls:
        assert conf["redis_backend_use_ssl"]["ssl_cert_reqs"] == ssl.CERT_REQUIRED
        if "CONVOY_REDIS_TLS_CA" in env:
            assert conf["redis_backend_use_ssl"]["ssl_ca_certs"] == "/etc/convoy/ca.crt"
            assert conf["redis_backend_use_ssl"]["ssl_keyfile"] == "/etc/convoy/host.key"
