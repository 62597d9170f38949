"""Settings from the environment, and the Celery configuration built from them."""
from __future__ import annotations

from pathlib import Path

import pytest

from convoy.tasks.celery import celery_config
from convoy.config.settings import load_settings
from convoy.errors import ConvoyError


def test_defaults_and_overrides():
    assert load_settings({}).redis_url == "redis://127.0.0.1:6379/0"
    settings = load_settings({"CONVOY_REDIS_URL": "redis://127.0.0.1:7000/2", "CONVOY_STATE_DIR": "/srv/convoy",
                              "CONVOY_MAX_RESERVATION": "2", "CONVOY_BROKER_URL": ""})
    assert settings.redis_url == "redis://127.0.0.1:7000/2"
    assert settings.state_dir == Path("/srv/convoy") and settings.jobs_dir == Path("/srv/convoy/jobs")
    assert settings.max_reservation == 2.0
    assert settings.effective_broker_url == settings.redis_url


def test_bad_value_is_a_clear_error():
    with pytest.raises(ConvoyError, match="bad setting in the environment"):
        load_settings({"CONVOY_VISIBILITY_TIMEOUT": "soon"})


def test_celery_is_json_only_late_acking_one_at_a_time_with_events():
    conf = celery_config(load_settings({"CONVOY_BROKER_URL": "amqp://guest@127.0.0.1:5672//"}))
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["result_accept_content"] == ["json"]
    assert conf["task_acks_late"] is True and conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_send_task_events"] is True and conf["task_send_sent_event"] is True
    assert conf["broker_url"].startswith("amqp://")
    assert conf["result_backend"].endswith("+redis://127.0.0.1:6379/0")
    assert conf["broker_transport_options"]["visibility_timeout"] > 24 * 3600
    assert isinstance(conf["task_default_priority"], int)
