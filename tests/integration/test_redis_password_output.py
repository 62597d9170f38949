"""No Redis password is ever printed: CLI errors for an unreachable Redis or a wrong password, the startup
lines, Celery banners and logs of ``convoy coordinator`` and ``convoy worker`` meeting a wrong password,
and everything ``convoy run`` prints or leaves in its state directory (its Redis has a generated password)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convoy.workers.embedded.redis_server import RedisServer, free_port

pytestmark = pytest.mark.integration
CONVOY = str(Path(sys.executable).parent / "convoy")
PASSWORD = "Pw-that-must-never-show-7f3a"
#: what a component logs when Redis refuses its password (Celery's consumer; a device worker's lock)
REFUSED = ("invalid username-password", "WRONGPASS", "Redis unreachable")
JOB = "job_queue: nowhere\ntest_data: {test_cmds: echo hi}\n"


def _texts_under(root: Path, *, skip: tuple[str, ...] = ()) -> dict[Path, str]:
    return {p: p.read_text(errors="replace") for p in root.rglob("*")
            if p.is_file() and not any(part in skip for part in p.parts)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with RedisServer(tmp_path_factory.mktemp("redis"), password="the-right-one") as running:
        yield running


@pytest.mark.parametrize("where", ["unreachable", "wrong password"])
@pytest.mark.parametrize("command", [["submit", "{job}"], ["results", "123"], ["cancel", "123"], ["poll", "123"]])
def test_cli_errors_mask_the_password(server, tmp_path: Path, where: str, command: list[str]):
    port = free_port() if where == "unreachable" else server.port
    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    env = {**os.environ, "CONVOY_REDIS_URL": f"redis://someone:{PASSWORD}@127.0.0.1:{port}/0",
           "CONVOY_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run([CONVOY, *(c.format(job=job) for c in command)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert PASSWORD not in done.stdout + done.stderr
    assert "someone:***@" in done.stderr, done.stderr  # the URL is named, its password masked


@pytest.mark.parametrize("command", [["coordinator"], ["worker", "--config", "{agent}", "--no-devices"]])
def test_components_meeting_a_wrong_password_print_and_log_no_password(server, tmp_path: Path, command):
    agent = tmp_path / "agent.yaml"
    agent.write_text("name: host-1\ndevices:\n  - name: nop-1\n    queues: [nop]\n    connector: noprovision\n"
                     "    config: {device_ip: 127.0.0.1}\n")
    state = tmp_path / "state"
    env = {**os.environ, "CONVOY_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0",
           "CONVOY_STATE_DIR": str(state)}
    out = tmp_path / "out.txt"
    with out.open("w") as sink:
        proc = subprocess.Popen([CONVOY, *(c.format(agent=agent) for c in command)], env=env, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not any(marker in t for marker in REFUSED
                      for t in [*_texts_under(state).values(), out.read_text(errors="replace")]):
            assert time.monotonic() < deadline, f"no refusal logged: {out.read_text()[-2000:]}"
            assert proc.poll() is None or out.read_text(), "ended without a word"
            time.sleep(0.2)  # waiting for the component's first retry to be logged
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
    texts = {**_texts_under(state), out: out.read_text(errors="replace")}
    leaked = [str(p) for p, t in texts.items() if PASSWORD in t]
    assert not leaked, f"the password is in {leaked}"


def test_convoy_run_prints_and_keeps_no_password_of_its_redis(tmp_path: Path):
    job = tmp_path / "job.yaml"
    job.write_text("job_queue: emulated\ntest_data: {test_cmds: echo ran-fine}\n")
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k != "CONVOY_REDIS_URL"}
    done = subprocess.run([CONVOY, "run", str(job), "--state-dir", str(state)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ran-fine" in done.stdout
    conf = (state / "redis" / "redis.conf").read_text()
    password = conf.split("requirepass ", 1)[1].split()[0].strip('"')
    assert len(password) >= 16
    texts = {**_texts_under(state, skip=("redis",)), Path("stdout+stderr"): done.stdout + done.stderr}
    leaked = [str(p) for p, t in texts.items() if password in t]
    assert not leaked, f"the embedded Redis's password is in {leaked}"
