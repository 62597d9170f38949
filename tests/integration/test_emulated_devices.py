"""Emulated devices against real clients: OpenSSH ssh/scp/ssh-copy-id, Fabric.

One farm (a child process, two devices: sandboxed on a lab network where the
platform allows, else on random 127.x.y.z addresses) serves the whole module;
every test starts from a cleaned device (empty home, only the agent key
authorised).  A pid a device reports is one of its own pid namespace:
:func:`host_pid` finds the process on the host.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import psutil
import pytest

from convoy.config.devices import DeviceConfig
from convoy.connectors.emulated.addresses import allocate_addresses
from convoy.connectors.emulated.connector import EmulatedConnector
from convoy.connectors.emulated.farm import DeviceFarm, device_paths
from convoy.connectors.emulated.processes import MARKER
from convoy.connectors.ssh import add_authorized_keys
from convoy.connectors.sshkeys import ensure_agent_key, public_key_path
from convoy.errors import DeviceError

pytestmark = pytest.mark.integration

BASE_OPTS = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def process_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (an unreaped corpse runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before or while reading
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def host_pid(device: str, pid: int) -> int:
    """The host's pid of the process ``device`` knows as ``pid`` (the same one unsandboxed)."""
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARKER) != device:
                continue
            status = Path(f"/proc/{process.pid}/status").read_text()
        except (psutil.Error, OSError):
            continue
        nspids = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if nspids and int(nspids[-1]) == pid:
            return process.pid
    raise AssertionError(f"no process of {device} has pid {pid} there")


def make_key(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class Env:
    def __init__(self, state: Path, agent_key: Path, other_key: Path, farm: DeviceFarm) -> None:
        self.state, self.agent_key, self.other_key, self.farm = state, agent_key, other_key, farm
        self.connectors = {d.name: EmulatedConnector(d, agent_key, state_dir=state) for d in farm.devices}

    def home(self, name: str) -> Path:
        return self.connectors[name].paths.home

    def authorise(self, name: str, key: Path, user: str = "ubuntu") -> int:
        """What reserving the device does: add ``key`` over SSH, with the agent key (convoy's one writer)."""
        target = self.connectors[name].ssh_target()
        return add_authorized_keys(target.host, target.port, user, self.agent_key,
                                   [public_key_path(key).read_text()])

    def ssh_argv(self, name: str, *command: str, key: Path | None = None, user: str = "ubuntu",
                 opts: tuple[str, ...] = ()) -> list[str]:
        target = self.connectors[name].ssh_target()
        return ["ssh", *BASE_OPTS, "-o", "IdentitiesOnly=yes", "-i", str(key or self.agent_key),
                "-p", str(target.port), *opts, f"{user}@{target.host}", *command]

    def ssh(self, name: str, *command: str, input: bytes | str | None = None, timeout: float = 30,
            **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.ssh_argv(name, *command, **kwargs), input=input, capture_output=True,
                              timeout=timeout, text=not isinstance(input, bytes))

    def scp(self, name: str, *paths: str, legacy: bool = False) -> subprocess.CompletedProcess:
        target = self.connectors[name].ssh_target()
        argv = ["scp", *BASE_OPTS, "-o", "IdentitiesOnly=yes", "-i", str(self.agent_key),
                "-P", str(target.port), *(["-O"] if legacy else []),
                *(p.replace("DEV:", f"{target.username}@{target.host}:") for p in paths)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("emulated") / "state"
    agent_key = ensure_agent_key(state / "keys")
    other_key = make_key(tmp_path_factory.mktemp("keys") / "other_ed25519")
    devices = [DeviceConfig("dev-a", ("queue-a",)), DeviceConfig("dev-b", ("queue-b",))]
    with DeviceFarm(devices, state) as farm:
        yield Env(state, agent_key, other_key, farm)


@pytest.fixture(autouse=True)
def clean_devices(env: Env) -> None:
    for connector in env.connectors.values():
        connector.cleanup(lambda line: None)


def test_login_runs_in_the_home_as_the_device_user(env: Env) -> None:
    result = env.ssh("dev-a", 'pwd; echo "$HOME $USER $LOGNAME"')
    assert result.returncode == 0, result.stderr
    home = str(env.home("dev-a"))
    assert result.stdout.splitlines() == [home, f"{home} ubuntu ubuntu"]


def test_wrong_user_unknown_key_and_passwords_are_refused(env: Env) -> None:
    wrong_user = env.ssh("dev-a", "true", user="root")
    assert wrong_user.returncode == 255 and "Permission denied" in wrong_user.stderr
    unknown_key = env.ssh("dev-a", "true", key=env.other_key)
    assert unknown_key.returncode == 255 and "Permission denied" in unknown_key.stderr
    password = env.ssh("dev-a", "true", opts=("-o", "PreferredAuthentications=password,keyboard-interactive"))
    assert password.returncode == 255 and "Permission denied (publickey)" in password.stderr


def test_exit_status_stdout_stderr_and_stdin_propagate(env: Env) -> None:
    result = env.ssh("dev-a", "echo out; echo err >&2; exit 7")
    assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")
    payload = os.urandom(1 << 20)
    echoed = env.ssh("dev-a", "cat", input=payload)
    assert echoed.returncode == 0 and echoed.stdout == payload
    killed = env.ssh("dev-a", "kill -TERM $$")
    assert killed.returncode == 255  # OpenSSH's code for "remote command killed by a signal"


def test_client_environment_is_passed_but_not_identity(env: Env) -> None:
    result = env.ssh("dev-a", 'echo "$FOO|$HOME"', opts=("-o", "SetEnv=FOO=bar HOME=/elsewhere"))
    assert result.stdout.strip() == f"bar|{env.home('dev-a')}"


def test_pty_when_requested_and_plain_pipes_otherwise(env: Env) -> None:
    with_tty = env.ssh("dev-a", "tty; test -t 0 && echo is-a-tty", opts=("-tt",))
    assert with_tty.returncode == 0
    assert "/dev/pts/" in with_tty.stdout and "is-a-tty" in with_tty.stdout
    without = env.ssh("dev-a", "test -t 0 || echo no-tty")
    assert without.stdout == "no-tty\n"


def test_shell_request_runs_an_interactive_shell(env: Env) -> None:
    result = env.ssh("dev-a", opts=("-T",), input="echo shell-$((40+2)) in $PWD\nexit 5\n")
    assert result.returncode == 5
    assert f"shell-42 in {env.home('dev-a')}" in result.stdout


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp", "scp-O"])
def test_scp_both_ways(env: Env, tmp_path: Path, legacy: bool) -> None:
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(300_000))
    up = env.scp("dev-a", str(local), "DEV:copied.bin", legacy=legacy)
    assert up.returncode == 0, up.stderr
    assert (env.home("dev-a") / "copied.bin").read_bytes() == local.read_bytes()
    down = env.scp("dev-a", "DEV:copied.bin", str(tmp_path / "down.bin"), legacy=legacy)
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "down.bin").read_bytes() == local.read_bytes()


def test_sftp_is_rooted_at_the_home(env: Env, tmp_path: Path) -> None:
    local = tmp_path / "f.txt"
    local.write_text("rooted\n")
    assert env.scp("dev-a", str(local), "DEV:/f.txt").returncode == 0
    assert (env.home("dev-a") / "f.txt").read_text() == "rooted\n"
    escape = env.scp("dev-a", "DEV:/../../../etc/hostname", str(tmp_path / "h"))
    assert escape.returncode != 0  # "/.." is still the home: no such file there


def client_home(tmp_path: Path) -> dict[str, str]:
    """ssh-copy-id keeps temporary files in the client's ~/.ssh: give it a private one."""
    (tmp_path / "client" / ".ssh").mkdir(parents=True)
    return {**os.environ, "HOME": str(tmp_path / "client")}


def test_ssh_copy_id_forced_with_the_agent_key(env: Env, tmp_path: Path) -> None:
    assert env.ssh("dev-a", "true", key=env.other_key).returncode == 255
    target = env.connectors["dev-a"].ssh_target()
    result = subprocess.run(
        ["ssh-copy-id", "-f", "-i", str(public_key_path(env.other_key)), "-p", str(target.port), *BASE_OPTS,
         "-o", f"IdentityFile={env.agent_key}", "-o", "IdentitiesOnly=yes", f"ubuntu@{target.host}"],
        env=client_home(tmp_path), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert env.ssh("dev-a", "echo in", key=env.other_key).stdout == "in\n"


def test_ssh_copy_id_through_an_ssh_agent(env: Env, tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        agent_env = {**client_home(tmp_path), "SSH_AUTH_SOCK": str(sock)}
        listing = ["ssh-add", "-l"]  # exit 2: cannot reach the agent (yet)
        wait_for(lambda: subprocess.run(listing, env=agent_env, capture_output=True).returncode != 2,
                 what="ssh-agent to listen")
        subprocess.run(["ssh-add", "-q", str(env.agent_key)], env=agent_env, check=True, timeout=10,
                       capture_output=True)
        target = env.connectors["dev-b"].ssh_target()
        result = subprocess.run(
            ["ssh-copy-id", "-i", str(public_key_path(env.other_key)), "-p", str(target.port), *BASE_OPTS,
             f"ubuntu@{target.host}"], env=agent_env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "Number of key(s) added: 1" in result.stdout + result.stderr
    finally:
        agent.terminate()
        agent.wait(timeout=10)
    assert env.ssh("dev-b", "echo in", key=env.other_key).stdout == "in\n"


def test_fabric_run_put_and_get(env: Env, tmp_path: Path) -> None:
    from fabric import Config, Connection

    target = env.connectors["dev-b"].ssh_target()
    local = tmp_path / "payload.bin"
    local.write_bytes(os.urandom(100_000))
    conn = Connection(target.host, user=target.username, port=target.port, connect_timeout=10,
                      config=Config(overrides={"load_ssh_configs": False}),
                      connect_kwargs={"key_filename": str(env.agent_key), "look_for_keys": False,
                                      "allow_agent": False})
    with conn:
        assert conn.run("pwd", hide=True, in_stream=False).stdout.strip() == str(env.home("dev-b"))
        assert conn.run("exit 3", hide=True, warn=True, in_stream=False).exited == 3
        conn.put(str(local), remote="payload.bin")
        assert (env.home("dev-b") / "payload.bin").read_bytes() == local.read_bytes()
        conn.get("payload.bin", local=str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()


def test_provision_resets_the_home_and_installs_the_image(env: Env) -> None:
    connector = env.connectors["dev-a"]
    assert env.authorise("dev-a", env.other_key) == 1
    assert env.ssh("dev-a", "echo leftover > junk.txt", key=env.other_key).returncode == 0
    lines: list[str] = []
    info = connector.provision({"distro": "noble"}, threading.Event(), lines.append)
    target = connector.ssh_target()
    assert info == {"device_ip": target.host, "ssh_port": target.port, "ssh_username": "ubuntu",
                    "device_name": "dev-a", "image": "noble", "sandboxed": env.farm.sandboxed}
    assert any("noble" in line for line in lines)
    release = env.ssh("dev-a", "cat os-release; ls")
    assert "ID=convoy-emulated\nIMAGE=noble\nVERSION_CODENAME=noble\n" in release.stdout
    assert "DEVICE=dev-a" in release.stdout and "junk.txt" not in release.stdout
    assert env.ssh("dev-a", "true", key=env.other_key).returncode == 255  # old keys are gone
    default = connector.provision({}, threading.Event(), lines.append)
    assert default["image"] == "emulated-default"
    assert "IMAGE=emulated-default" in env.ssh("dev-a", "cat os-release").stdout


def test_provision_fail_is_a_clear_device_error(env: Env) -> None:
    device = env.farm.device("dev-a")
    failing = EmulatedConnector(replace(device, config={**device.config, "provision_fail": True}),
                                env.agent_key, state_dir=env.state)
    with pytest.raises(DeviceError, match="provision_fail") as caught:
        failing.provision({"distro": "noble"}, threading.Event(), lambda line: None)
    assert caught.value.device == "dev-a"


def test_provision_delay_is_interrupted_by_cancel(env: Env) -> None:
    device = env.farm.device("dev-b")
    slow = EmulatedConnector(replace(device, config={**device.config, "provision_delay": 600}),
                             env.agent_key, state_dir=env.state)
    (env.home("dev-b") / "marker").write_text("untouched")
    waiting, cancel, outcome = threading.Event(), threading.Event(), {}

    def log(line: str) -> None:
        if "installation" in line:
            waiting.set()

    def run() -> None:
        try:
            slow.provision({}, cancel, log)
        except DeviceError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert waiting.wait(10)
    cancel.set()
    thread.join(10)
    assert not thread.is_alive()
    assert "cancelled" in str(outcome["error"])
    assert (env.home("dev-b") / "marker").read_text() == "untouched"


def test_short_provision_delay_then_success(env: Env) -> None:
    device = env.farm.device("dev-b")
    connector = EmulatedConnector(replace(device, config={**device.config, "provision_delay": 0.2}),
                                  env.agent_key, state_dir=env.state)
    assert connector.provision({"image": "custom"}, threading.Event(), lambda line: None)["image"] == "custom"


def test_cleanup_removes_reservation_keys_and_files(env: Env) -> None:
    import paramiko

    connector = env.connectors["dev-b"]
    assert env.authorise("dev-b", env.other_key) == 1
    assert env.authorise("dev-b", env.other_key) == 0  # idempotent
    assert env.ssh("dev-b", "touch mine", key=env.other_key).returncode == 0
    with pytest.raises(paramiko.AuthenticationException):  # the device has no user root
        env.authorise("dev-b", env.other_key, user="root")
    connector.cleanup(lambda line: None)
    assert env.ssh("dev-b", "true", key=env.other_key).returncode == 255
    assert env.ssh("dev-b", "ls -A").stdout.split() == [".ssh"]


def test_devices_have_their_own_host_keys_and_homes(env: Env) -> None:
    keys = {}
    for name in ("dev-a", "dev-b"):
        target = env.connectors[name].ssh_target()
        scan = subprocess.run(["ssh-keyscan", "-T", "10", "-t", "ed25519", "-p", str(target.port), target.host],
                              capture_output=True, text=True, timeout=30)
        keys[name] = scan.stdout.split()[2]
        stored = device_paths(env.farm.device(name), env.state).host_key.with_suffix(".pub").read_text()
        assert stored.split()[1] == keys[name]
    assert keys["dev-a"] != keys["dev-b"]
    assert env.ssh("dev-a", "echo only-a > mine.txt").returncode == 0
    assert env.ssh("dev-b", "cat mine.txt").returncode != 0
    assert env.home("dev-a") != env.home("dev-b")


def test_client_disconnect_kills_the_running_command(env: Env) -> None:
    client = subprocess.Popen(env.ssh_argv("dev-a", "sleep 300 & echo $! > sleeper.pid; wait"),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = env.home("dev-a") / "sleeper.pid"
    try:
        pid = host_pid("dev-a", int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(),
                                             what="the command")))
        assert process_alive(pid)
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait(10)
    wait_for(lambda: not process_alive(pid), timeout=10, what="the command to be killed")


def test_host_key_is_reused_across_restarts_and_stop_kills_commands(tmp_path: Path) -> None:
    state = tmp_path / "state"
    agent_key = ensure_agent_key(state / "keys")

    def scan(device: DeviceConfig) -> str:
        port, host = str(device.config["port"]), device.config["address"]
        out = subprocess.run(["ssh-keyscan", "-T", "10", "-t", "ed25519", "-p", port, host],
                             capture_output=True, text=True, timeout=30).stdout
        return out.split()[2]

    with DeviceFarm([DeviceConfig("dev-r", ("r",))], state) as farm:
        device = farm.device("dev-r")
        first = scan(device)
        connector = EmulatedConnector(device, agent_key, state_dir=state)
        connector.cleanup(lambda line: None)
        target = connector.ssh_target()
        client = subprocess.Popen(["ssh", *BASE_OPTS, "-i", str(agent_key), "-p", str(target.port),
                                   f"ubuntu@{target.host}", "echo $$ > shell.pid; exec sleep 300"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid_file = connector.paths.home / "shell.pid"
        pid = host_pid("dev-r", int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(),
                                             what="the command")))
    try:
        wait_for(lambda: not process_alive(pid), timeout=10, what="the farm's stop to kill the command")
    finally:
        client.kill()
        client.wait(10)
    with DeviceFarm([device], state) as again:
        assert scan(again.device("dev-r")) == first


def test_farm_reports_an_address_it_cannot_bind(tmp_path: Path) -> None:
    address = allocate_addresses(1, 2222)[0]
    with socket.socket() as holder:
        holder.bind((address, 2222))
        holder.listen()
        farm = DeviceFarm([DeviceConfig("dev-x", ("x",), config={"address": address, "port": 2222})],
                          tmp_path / "state", sandbox=False)
        with pytest.raises(DeviceError, match=f"cannot listen on {address}:2222"):
            farm.start()


def test_provisioning_a_device_nobody_serves_says_so(env: Env) -> None:
    address = allocate_addresses(1, 22)[0]
    device = DeviceConfig("dev-orphan", ("o",), config={"address": address, "port": 22})
    connector = EmulatedConnector(device, env.agent_key, state_dir=env.state)
    connector.ssh_attempts = 1
    with pytest.raises(DeviceError, match="no SSH server answers at.*is the device farm serving it"):
        connector.provision({}, threading.Event(), lambda line: None)


def test_serve_devices_in_process_until_stopped(tmp_path: Path) -> None:
    from convoy.connectors.emulated.farm import serve_devices

    address = allocate_addresses(1, 2222)[0]
    device = DeviceConfig("dev-t", ("t",), config={"address": address, "port": 2222})
    ready, stop, errors = threading.Event(), threading.Event(), []

    def serve() -> None:
        try:
            serve_devices([device], tmp_path / "state", ready, stop=stop, sandbox=False)
        except Exception as exc:  # surfaced by the asserts below
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert ready.wait(20), errors
        socket.create_connection((address, 2222), timeout=5).close()
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive() and not errors
    with pytest.raises(OSError):
        socket.create_connection((address, 2222), timeout=5).close()


def test_cleanup_ends_daemons_started_on_the_device(env: Env) -> None:
    result = env.ssh("dev-a", "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > daemon.pid")
    assert result.returncode == 0
    pid = host_pid("dev-a", int((env.home("dev-a") / "daemon.pid").read_text()))
    assert process_alive(pid), "the daemon must outlive its ssh session"
    lines: list[str] = []
    env.connectors["dev-a"].cleanup(lines.append)
    wait_for(lambda: not process_alive(pid), timeout=10, what="the daemon to end")
    assert any("ended 1 process" in line for line in lines), lines
