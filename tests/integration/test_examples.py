"""The example jobs run unchanged through ``convoy run`` on the embedded default.

``convoy run`` starts its own private Redis here (CONVOY_REDIS_URL is
removed), emulated devices for every queue the job names, their workers
and the coordinator, and leaves the artifacts users read.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess

import pytest

from helpers import CONVOY, REPO

pytestmark = pytest.mark.integration
EXAMPLES = ["single-device.yaml", "two-device.yaml", "coordinated-testing.yaml", "demo-coordinated-testing.yaml"]


def convoy_run(example: str, artifacts, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CONVOY_REDIS_URL", "CONVOY_STATE_DIR")}
    env.update(extra_env or {})
    return subprocess.run([CONVOY, "run", str(REPO / "examples" / example), "--artifacts", str(artifacts)],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_runs_to_complete_with_its_artifacts(example, tmp_path):
    result = convoy_run(example, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (job_dir,) = list(tmp_path.iterdir())
    results = json.loads((job_dir / "results.json").read_text())
    assert results["job_state"] == "complete" and results["outcome"] == "pass"
    assert f"job {job_dir.name} complete (pass)" in result.stdout
    if results["job_queue"] != "multi":
        assert (job_dir / "test.log").read_text() == results["test_output"]
        return
    job_list = json.loads((job_dir / "job_list.json").read_text())
    assert [entry["job_id"] for entry in job_list] == [child["job_id"] for child in results["children"]]
    for entry, child in zip(job_list, results["children"]):
        info = entry["device_info"]  # each device's own address: on its lab when sandboxed, else loopback
        assert ipaddress.IPv4Address(info["device_ip"]).is_loopback != info["sandboxed"]
        assert child["job_state"] == "cancelled" and child["provision_status"] == 0
        assert child["cleanup_status"] == 0 and child["parent_job_id"] == job_dir.name
        assert (job_dir / "children" / child["job_id"] / "provision.log").is_file()
    if example == "coordinated-testing.yaml":
        assert results["test_status"] == 0
        # one iperf3 server takes one client at a time, as on real devices: at least one run completes
        assert "iperf Done." in results["test_output"], results["test_output"][-2000:]
    if example == "demo-coordinated-testing.yaml":
        # the demo's variant: one server per client, so both clients measure and nothing reports an error
        assert results["test_output"].count("iperf Done.") == 2, results["test_output"][-2000:]
        assert "error" not in (result.stdout + result.stderr).lower(), result.stdout[-3000:]


def test_reservation_example_runs_unchanged_against_a_loopback_key_server(tmp_path):
    """The example reserves for two hours; the deployment's cap (CONVOY_MAX_RESERVATION) makes it 2 s here."""
    import subprocess as sp

    from keyserver import KeyServer

    key = tmp_path / "user_ed25519"
    sp.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, stdin=sp.DEVNULL)
    public = key.with_suffix(".pub").read_text()
    with KeyServer({("gh", "github-username"): public, ("lp", "launchpad-username"): public}) as server:
        result = convoy_run("multi-device-reservation.yaml", tmp_path / "artifacts",
                            {**server.env(), "CONVOY_MAX_RESERVATION": "2"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (job_dir,) = list((tmp_path / "artifacts").iterdir())
    results = json.loads((job_dir / "results.json").read_text())
    assert results["outcome"] == "pass" and results["reserve_status"] == 0
    assert "*** CONVOY SYSTEMS RESERVED ***" in results["reserve_output"]
    assert len(re.findall(r"ubuntu@\d+\.\d+\.\d+\.\d+", results["reserve_output"])) >= 3  # each device's address
    assert "reserving for 2s" in results["reserve_output"]


def test_run_with_an_agent_file_uses_exactly_its_devices(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CONVOY_REDIS_URL", "CONVOY_STATE_DIR")}
    result = subprocess.run([CONVOY, "run", str(REPO / "examples" / "single-device.yaml"), "--agent",
                             str(REPO / "config" / "agents" / "emulated.yaml"), "--artifacts", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "convoy run: starting 2 device(s)" in result.stdout
    (served,) = [line for line in result.stdout.splitlines() if line.startswith("convoy run: devices ")]
    assert "emulated-1 (" in served and "emulated-2 (" in served, served  # each with the address it is served on
    (job_dir,) = list(tmp_path.iterdir())
    results = json.loads((job_dir / "results.json").read_text())
    assert results["device"] in ("emulated-1", "emulated-2")


@pytest.mark.skipif(not os.environ.get("CONVOY_TEST_BROKER_URL"),
                    reason="set CONVOY_TEST_BROKER_URL (e.g. amqp://guest:guest@127.0.0.1:5672//) to test another broker")
def test_a_multi_job_runs_with_another_broker(tmp_path):
    """Celery's messages on e.g. RabbitMQ; Redis stays the job store and result backend."""
    result = convoy_run("two-device.yaml", tmp_path, {"CONVOY_BROKER_URL": os.environ["CONVOY_TEST_BROKER_URL"]})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (job_dir,) = list(tmp_path.iterdir())
    assert json.loads((job_dir / "results.json").read_text())["outcome"] == "pass"


def test_run_warns_of_a_duplicate_key_and_uses_the_last_value(tmp_path):
    """``convoy run`` reads a job as LAVA's loader does: the last of two equal keys wins, with a warning."""
    job = tmp_path / "dup.yaml"
    job.write_text("job_queue: emulated\nprovision_data: {distro: focal}\nprovision_data: {distro: jammy}\n"
                   "test_data:\n  test_cmds: ssh ubuntu@$DEVICE_IP grep -q IMAGE=jammy os-release\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CONVOY_REDIS_URL", "CONVOY_STATE_DIR")}
    result = subprocess.run([CONVOY, "run", str(job), "--artifacts", str(tmp_path / "artifacts")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"warning: {job}: line 3: duplicate key 'provision_data' (first at line 2)" in result.stderr
