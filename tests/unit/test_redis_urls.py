"""Redis URLs as people see them: no password, wherever the URL puts it (coordinator/state/urls.py)."""
from __future__ import annotations

import pytest

from convoy.coordinator.state.urls import redact_url
from convoy.errors import ServiceUnavailable


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
    ("rediss://convoy-worker:p%40ss@redis.lab:6380/2", "rediss://convoy-worker:***@redis.lab:6380/2"),
    ("redis://h:1/0?password=pw&db=3", "redis://h:1/0?password=***&db=3"),
    ("rediss://u:pw@h:1/0?ssl_ca_certs=/etc/ca.pem", "rediss://u:***@h:1/0?ssl_ca_certs=/etc/ca.pem"),
    ("unix://:pw@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
    ("not a url", "not a url"),
])
def test_redact_url(url: str, shown: str):
    assert redact_url(url) == shown


def test_service_unavailable_masks_a_password_however_it_is_built():
    error = ServiceUnavailable("redis://:hunter2@h:1/0", "refused")
    assert "hunter2" not in str(error) and "hunter2" not in error.url
    assert str(error) == "cannot reach redis://:***@h:1/0: refused"
