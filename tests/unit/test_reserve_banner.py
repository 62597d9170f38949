"""The reserve phase's pure parts: banner, timeout, devices; copying to all devices at once; phase outcomes."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest

from convoy.tasks.run import reserve
from convoy.tasks.run.keyimport import PublicKey
from convoy.tasks.run.reserve import Device, copy_to_all, reservation_banner, reserve_devices, reserve_timeout

NOW = datetime(2026, 11, 22, 10, 30, 0, 123456, tzinfo=timezone.utc)


def test_banner_matches_testflingers_layout_in_convoys_words():
    devices = [Device("c1", "127.1.2.3"), Device("c2", "127.1.2.4")]
    assert reservation_banner(devices, 3600, "parent-1", NOW) == (
        "*** CONVOY SYSTEMS RESERVED ***\n"
        "You can now connect to the following devices:\n"
        "ubuntu@127.1.2.3\n"
        "ubuntu@127.1.2.4\n"
        "Current time:           2026-11-22T10:30:00+00:00\n"
        "Reservation expires at: 2026-11-22T11:30:00+00:00\n"
        "Reservation will automatically timeout in 3600 seconds\n"
        "To end the reservation sooner use: convoy release parent-1\n"
        "To extend it: convoy reserve extend parent-1 DURATION\n"
    )


def test_banner_gives_the_port_when_not_22_and_marks_devices_without_keys():
    ok, bad = Device("c1", "127.1.2.3", 2222, "admin"), Device("c2", "10.0.0.9", 22)
    text = reservation_banner([ok, bad], 90.5, "p", NOW, failed=[bad])
    lines = text.splitlines()
    assert lines[2] == "admin@127.1.2.3 (ssh -p 2222)"
    assert lines[3] == "ubuntu@10.0.0.9 -- keys NOT copied (see above)"
    assert "Reservation expires at: 2026-11-22T10:31:30+00:00" in lines
    assert "Reservation will automatically timeout in 90.5 seconds" in lines


def test_banner_times_are_utc_whatever_the_clock_zone():
    local = NOW.astimezone(timezone(timedelta(hours=-5)))
    assert "Current time:           2026-11-22T10:30:00+00:00" in reservation_banner([], 60, "p", local)


@pytest.mark.parametrize("value,seconds", [(7200, 7200.0), ("7200", 7200.0), ("2h", 7200.0), (1.5, 1.5)])
def test_reserve_timeout_in_seconds(value, seconds):
    assert reserve_timeout({"reserve_data": {"timeout": value}}) == seconds


def test_reserve_timeout_default_is_an_hour():
    assert reserve_timeout({"reserve_data": {"ssh_keys": ["gh:a"]}}) == 3600.0


class FakeStore:
    def __init__(self, infos: dict[str, dict]) -> None:
        self.infos = infos
        self.fields: dict[str, dict] = {}

    def set_fields(self, job_id: str, **fields) -> None:
        self.fields.setdefault(job_id, {}).update(fields)

    def children(self, parent_id: str) -> list[str]:
        return list(self.infos)

    def get(self, job_id: str) -> dict:
        return {"device_info": self.infos[job_id]}


def test_devices_come_in_child_order_as_the_test_user():
    store = FakeStore({"b": {"device_ip": "10.0.0.2", "ssh_port": 2222}, "a": {"device_ip": "10.0.0.1"}})
    assert reserve_devices(store, "p", {"test_data": {"test_username": "admin"}}) == [
        Device("b", "10.0.0.2", 2222, "admin"), Device("a", "10.0.0.1", 22, "admin")]
    assert reserve_devices(store, "p", {})[0].username == "ubuntu"


KEY = PublicKey("ssh-ed25519", "AAAA", "me")


def test_copies_run_on_every_device_at_once_and_one_failure_spares_the_others(tmp_path):
    devices = [Device(f"c{i}", f"10.0.0.{i}") for i in range(1, 5)]
    together = threading.Barrier(len(devices), timeout=10)  # breaks unless all copies run concurrently
    lines: list[str] = []

    def copy(device, keys, agent_key):
        together.wait()
        if device.host == "10.0.0.3":
            raise OSError("Authentication failed.")
        return len(keys)

    failed = copy_to_all(devices, [KEY], tmp_path / "agent", lines.append, copy=copy)
    assert failed == [devices[2]]
    assert "could not copy keys to ubuntu@10.0.0.3: Authentication failed. (OSError)" in lines
    assert sorted(line for line in lines if line.startswith("copied")) == [
        f"copied keys to ubuntu@10.0.0.{i} (1 new)" for i in (1, 2, 4)]


# --- the phase's outcomes, without devices ----------------------------------------------------------------

class FakeControl:
    """The reservation's cancel event, and what it was told to hold (devices, seconds): no thread waits."""

    def __init__(self, cancelled: bool = False) -> None:
        self.cancel_event = threading.Event()
        if cancelled:
            self.cancel_event.set()
        self.held: list[tuple[list[str], float]] = []

    def on_reserved(self, devices, seconds):
        self.held.append(([d.host for d in devices], seconds))


@pytest.fixture
def phase(tmp_path, monkeypatch):
    """run_reservation with a fake store, a key server answering gh:alice, copies recorded."""
    from keyserver import KeyServer

    monkeypatch.setenv("CONVOY_STATE_DIR", str(tmp_path / "state"))
    key_line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsZtM0Jz7Pd0Y2kUMo+I/0cUPGQeYvh0c5bB0Vv1m0a alice@x"
    with KeyServer({("gh", "alice"): key_line + "\n"}) as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        copied: list[tuple[str, list[str]]] = []
        recorded: dict[str, dict] = {}

        def copy(device, keys, agent_key):
            copied.append((device.host, [k.line for k in keys]))
            return len(keys)

        monkeypatch.setattr(reserve, "copy_keys", copy)
        # the parent's own key, which every device trusts (tasks/run/jobkeys.py), copies the users' keys
        monkeypatch.setattr("convoy.tasks.run.jobkeys.parent_key", lambda *args: tmp_path / "parent-key")

        def run(job, control=None, job_list=True):
            from convoy.tasks.parent import parent_dir

            if job_list:
                (parent_dir("p") / "job_list.json").write_text(json.dumps([]))
            lines: list[str] = []
            store = FakeStore({"c1": {"device_ip": "10.0.0.1"}, "c2": {"device_ip": "10.0.0.2", "ssh_port": 2022}})
            control = control or FakeControl()
            status = reserve.run_reservation(store, "p", job, control, lines.append, on_reserved=control.on_reserved)
            recorded.update(store.fields)
            return status, "\n".join(lines), copied

        run.recorded = recorded  # type: ignore[attr-defined]
        yield run


def job(*ids, timeout=600):
    return {"job_queue": "multi", "reserve_data": {"ssh_keys": list(ids), "timeout": timeout}}


def test_phase_copies_to_every_device_then_asks_to_hold_them_for_the_timeout(phase):
    control = FakeControl()
    status, out, copied = phase(job("gh:alice"), control)
    assert status == 0
    assert sorted(host for host, _ in copied) == ["10.0.0.1", "10.0.0.2"]
    assert copied[0][1][0].endswith("alice@x # ssh-import-id gh:alice")
    assert "ubuntu@10.0.0.1\nubuntu@10.0.0.2 (ssh -p 2022)\n" in out
    # the hold is the caller's durable deadline: the phase returns at once
    assert control.held == [(["10.0.0.1", "10.0.0.2"], 600)]
    # each device's record says which keys it got, for its cleanup to remove
    blob = " ".join(copied[0][1][0].split()[:2])
    assert phase.recorded == {"c1": {"reserved_keys": [blob]}, "c2": {"reserved_keys": [blob]}}


def test_phase_ends_early_on_cancel(phase):
    status, out, _ = phase(job("gh:alice"), FakeControl(cancelled=True))
    assert status == 0 and "reservation ended early by cancel" in out


def test_phase_fails_without_job_list(phase):
    status, out, copied = phase(job("gh:alice"), job_list=False)
    assert status == 1 and "Missing job_list.json" in out and not copied


def test_phase_fails_on_an_unknown_key_and_copies_nothing(phase):
    control = FakeControl()
    status, out, copied = phase(job("gh:alice", "lp:nobody"), control)
    assert status == 1
    assert "could not import SSH key lp:nobody: no such Launchpad user" in out
    assert not copied and control.held == []
