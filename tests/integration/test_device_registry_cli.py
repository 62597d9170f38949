"""``convoy agents`` and ``convoy device maintenance|online`` on a real Redis (devices registered directly, no workers).

What an admin sees of each device (health, type, tags, the job it holds, why
it is out of service) and how they take it out of service and back.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from convoy.config.devices import DeviceConfig
from convoy.coordinator.state import devices
from helpers import CONVOY

pytestmark = pytest.mark.integration
CLI_TIMEOUT = 30


@pytest.fixture
def cli(redis_url: str, redis_client):
    """Run ``convoy`` against the test Redis (``redis_client`` empties it first)."""
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([CONVOY, *args], capture_output=True, text=True, timeout=CLI_TIMEOUT,
                              env={**os.environ, "CONVOY_REDIS_URL": redis_url})
    return run


@pytest.fixture
def lab(redis_client):
    """Two registered devices: one with a type and tags, one serving two queues without."""
    devices.register(redis_client, DeviceConfig(name="rpi-1", queues=("rpi4b",), device_type="rpi4",
                                                tags=("usb-ethernet", "hdmi")), "host-a")
    devices.register(redis_client, DeviceConfig(name="vm-1", queues=("qemu", "x86")), "host-b")
    return redis_client


def agent_lines(cli) -> dict[str, str]:
    """``convoy agents`` output, one line per device, by the device name that starts it."""
    result = cli("agents")
    assert result.returncode == 0, result.stderr
    return {line.split()[0]: line for line in result.stdout.splitlines()}


def test_agents_lists_each_device_with_health_type_tags_and_job(cli, lab):
    devices.claim_device(lab, "vm-1", "job-7")
    lines = agent_lines(cli)
    assert set(lines) == {"rpi-1", "vm-1"}
    assert lines["rpi-1"].split()[1] == "idle"
    for field in ("host=host-a", "queues=rpi4b", "type=rpi4", "tags=usb-ethernet,hdmi"):
        assert field in lines["rpi-1"].split()
    assert "job=" not in lines["rpi-1"]
    assert lines["vm-1"].split()[1] == "busy"
    for field in ("host=host-b", "queues=qemu,x86", "type=-", "tags=-", "job=job-7"):
        assert field in lines["vm-1"].split()


def test_agents_json_lists_the_summaries(cli, lab):
    result = cli("agents", "--json")
    assert result.returncode == 0, result.stderr
    listed = {d["name"]: d for d in json.loads(result.stdout)}
    expected = {"name": "rpi-1", "host": "host-a", "queues": ["rpi4b"], "health": "idle", "job_id": None,
                "device_type": "rpi4", "tags": ["usb-ethernet", "hdmi"], "connector": "emulated",
                "maintenance": "", "failures": 0}
    assert {key: listed["rpi-1"].get(key) for key in expected} == expected
    assert (listed["vm-1"]["device_type"], listed["vm-1"]["tags"]) == (None, [])


def test_maintenance_with_a_reason_then_online(cli, lab):
    result = cli("device", "maintenance", "rpi-1", "--reason", "flaky usb")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "device rpi-1: maintenance (flaky usb)"
    line = agent_lines(cli)["rpi-1"]
    assert line.split()[1] == "maintenance" and line.endswith("reason: flaky usb")

    result = cli("device", "online", "rpi-1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "device rpi-1: back in service"
    line = agent_lines(cli)["rpi-1"]
    assert line.split()[1] == "idle" and "reason" not in line


def test_maintenance_without_a_reason_records_the_default(cli, lab):
    assert cli("device", "maintenance", "vm-1").returncode == 0
    [summary] = [d for d in devices.device_summaries(lab) if d.name == "vm-1"]
    assert (summary.health, summary.maintenance) == ("maintenance", "maintenance by admin")


def test_a_busy_device_finishes_its_job_before_maintenance(cli, lab):
    devices.claim_device(lab, "vm-1", "job-7")
    result = cli("device", "maintenance", "vm-1", "--reason", "disk swap")
    assert result.stdout.strip() == "device vm-1: maintenance (disk swap); its current job job-7 finishes first"
    line = agent_lines(cli)["vm-1"]
    assert line.split()[1] == "busy" and "job=job-7" in line.split()
    assert line.endswith("maintenance when its job ends: disk swap")
    devices.release_device(lab, "vm-1", "job-7")
    assert agent_lines(cli)["vm-1"].split()[1] == "maintenance"


@pytest.mark.parametrize("args", [("maintenance", "nope", "--reason", "x"), ("online", "nope")])
def test_an_unknown_device_is_an_error_naming_the_registered_ones(cli, lab, args):
    result = cli("device", *args)
    assert result.returncode != 0
    assert "no device named 'nope' is registered (registered: rpi-1, vm-1)" in result.stderr
    assert "Traceback" not in result.stderr
    assert [d.maintenance for d in devices.device_summaries(lab)] == ["", ""]
