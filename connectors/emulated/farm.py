"""A device farm: many emulated devices served by one asyncio process.

``serve_devices`` is what ``convoy devices`` runs; :class:`DeviceFarm` runs
the same thing in a child process for tests and ``convoy run``, so that a
test (or a Celery worker) never shares an event loop or signal handlers
with the SSH servers.  CLI::

    python -m convoy.connectors.emulated.farm --config devices.json --state-dir DIR

The config file (JSON or YAML) is a list of devices, or ``{"devices": [...]}``,
each ``{"name", "queues", "connector", "config"}`` like an agent file.
Devices whose connector is not ``emulated`` are skipped.

Where the platform allows (:func:`.sandbox.sandbox_problem`), every device
is a sandbox of its own on the farm's lab network (:mod:`.labnet`): the
farm claims a free private /24, makes its bridge, boots one sandbox per
device and serves each device's SSH inside it; it answers each device's
control socket (:mod:`.control`: ``reboot``), and removes the bridge and
claim when it stops.  Otherwise it says once why not and serves devices on
loopback addresses, commands running on the host.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from convoy.config.devices import DeviceConfig, device_from_dict, device_to_dict
from convoy.connectors.emulated import control, labnet
from convoy.connectors.emulated.addresses import FARM, assign_addresses
from convoy.connectors.emulated.image import device_paths, device_settings
from convoy.connectors.emulated.sandbox import sandbox_problem
from convoy.errors import ConvoyError, DeviceError

__all__ = ["DeviceFarm", "claim_lab", "device_paths", "load_devices", "serve_devices", "main"]

log = logging.getLogger("convoy.connectors.emulated.farm")  # not __main__ under -m
_told: set[str] = set()


def use_sandbox(wanted: bool | None = None) -> bool:
    """Whether devices get sandboxes (``wanted`` None: where possible); says once per process why not."""
    problem = sandbox_problem() if wanted is not False else "sandbox=False"
    if problem and problem not in _told:
        _told.add(problem)
        log.warning("emulated devices are not sandboxed: %s", problem)
    return problem is None


def _masks(state_dir: Path) -> list[Path]:
    """What a device must not read: convoy's state (keys, other homes, Redis data), root's SSH keys."""
    from convoy.config.settings import load_settings

    paths = [state_dir.resolve(), load_settings().state_dir, Path("/root/.ssh"), Path.home() / ".ssh"]
    return list(dict.fromkeys(Path(os.path.abspath(p)) for p in paths))


def load_devices(path: Path) -> list[DeviceConfig]:
    """Devices from a JSON/YAML file: a list, or a mapping with ``devices``."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, dict):
        data = data.get("devices")
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ConvoyError(f"{path}: expected a list of devices (or a mapping with 'devices')")
    return [device_from_dict(d) for d in data]


def _sandboxes(devices: list[DeviceConfig], state_dir: Path, lab: labnet.Lab) -> dict[str, Any]:
    from convoy.connectors.emulated.sandbox import Sandbox

    masks = _masks(state_dir)
    found = {}
    for index, device in enumerate(d for d in devices if d.connector == "emulated"):
        paths = device_paths(device, state_dir)
        found[device.name] = Sandbox(device.name, index, device.config["address"], lab, paths.home,
                                     paths.root / "sandbox", masks, packages=device_settings(device).packages)
    return found


async def _control(server: Any) -> control.Handler:
    async def handle(command: str) -> dict[str, Any]:
        reply: dict[str, Any] = {"ok": True, "address": server.address, "port": server.port,
                                 "sandboxed": server.sandboxed}
        if command == "reboot":
            reply["ended"] = await server.reboot()
        elif command != "info":
            return {"ok": False, "error": f"unknown command {command!r}"}
        return reply
    return handle


async def _serve(devices: list[DeviceConfig], state_dir: Path, ready: threading.Event | None,
                 stop: threading.Event | None, lab: labnet.Lab | None) -> None:
    from convoy.connectors.emulated.server import EmulatedDevice  # asyncssh only where served

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    handled: list[int] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
            handled.append(sig)
    if stop is not None:
        def relay() -> None:
            stop.wait()
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # loop already closed
                pass
        threading.Thread(target=relay, name="farm-stop", daemon=True).start()
    sandboxes = _sandboxes(devices, state_dir, lab) if lab is not None else {}
    servers = [EmulatedDevice(d, state_dir, sandboxes.get(d.name)) for d in devices if d.connector == "emulated"]
    if not servers:
        log.warning("no emulated devices to serve")
    started: list[Any] = []
    controls: list[tuple[asyncio.AbstractServer, Path]] = []
    try:
        if lab is not None:
            await asyncio.to_thread(labnet.create_bridge, lab)
        results = await asyncio.gather(*(server.start() for server in servers), return_exceptions=True)
        started = [s for s, r in zip(servers, results, strict=True) if not isinstance(r, BaseException)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        for server in started:
            path = server.paths.root / control.SOCKET_NAME
            controls.append((await control.serve(path, await _control(server)), path))
        log.info("serving %d emulated device(s)%s", len(started), f" on lab {lab}" if lab else "")
        if ready is not None:
            ready.set()
        await stopping.wait()
        log.info("stopping")
    finally:
        for ctl, path in controls:
            ctl.close()
            path.unlink(missing_ok=True)
        await asyncio.gather(*(server.stop() for server in started), return_exceptions=True)
        if lab is not None:
            await asyncio.to_thread(labnet.release, lab)
        for sig in handled:
            loop.remove_signal_handler(sig)


def serve_devices(devices: list[DeviceConfig], state_dir: Path, ready: threading.Event | None = None,
                  *, stop: threading.Event | None = None, sandbox: bool | None = None,
                  lab: labnet.Lab | None = None) -> list[DeviceConfig]:
    """Serve every ``emulated`` device until SIGTERM/SIGINT (main thread) or ``stop`` is set.

    ``ready`` is set once every device listens.  With a sandbox (``sandbox``
    None: where possible) devices get lab addresses on ``lab`` (claimed by
    the caller) or on a lab claimed here.  Returns the devices as served.
    Raises :class:`DeviceError` if a device's config is invalid or its
    address cannot be bound.
    """
    ssh_log = logging.getLogger("asyncssh")
    if ssh_log.level == logging.NOTSET:
        ssh_log.setLevel(logging.WARNING)  # its INFO lines include the commands clients run
    devices = list(devices)
    owned = False
    if lab is not None:
        if not lab.external:
            labnet.add_claimant(lab, os.getpid())
    elif sandbox is not False and use_sandbox(sandbox):
        lab, devices = claim_lab(devices, os.getpid())
        owned = True
    try:
        asyncio.run(_serve(devices, Path(state_dir), ready, stop, lab))
    finally:
        if owned and lab is not None:
            labnet.release(lab)
    return devices


def claim_lab(devices: list[DeviceConfig], pid: int) -> tuple[labnet.Lab, list[DeviceConfig]]:
    """Plan a lab for ``devices`` and claim it for ``pid`` (planning again if another farm was faster)."""
    labnet.collect_garbage()
    for _ in range(20):
        lab, resolved = labnet.plan_lab(devices)
        if lab.external or labnet.claim(lab, pid):  # the host's own lab bridge is nobody's claim
            return lab, resolved
    raise DeviceError(FARM, f"cannot claim a lab network (another farm holds {lab})")


class DeviceFarm:
    """Emulated devices served by a child process while the ``with`` block runs.

    Sandboxed (``sandbox`` None: where possible), devices get addresses on
    the farm's lab network (an explicit lab address is kept), port 22; the
    lab is claimed and the addresses final when :meth:`start` returns.
    Otherwise devices without ``address`` get a free loopback address (and,
    without ``port``, port 22 if this process may bind it, else 2222).  The
    resolved configs are in :attr:`devices`.  The child logs to
    ``<state_dir>/farm.log`` and exits by itself if this process dies.
    """

    def __init__(self, devices: list[DeviceConfig], state_dir: Path, *, startup_timeout: float = 30.0,
                 sandbox: bool | None = None) -> None:
        self.state_dir = Path(state_dir)
        for device in devices:
            if device.connector == "emulated":
                device_settings(device)  # fail here, in the caller, on a bad config
        self.sandboxed = use_sandbox(sandbox)
        self._given = list(devices)
        self.lab: labnet.Lab | None = None
        self._claimed = False
        if self.sandboxed:
            self.lab, self.devices = labnet.plan_lab(devices)
        else:
            for device in devices:
                if device.connector == "emulated" and labnet.is_lab_address(str(device.config.get("address") or "")):
                    raise DeviceError(device.name, f"config.address {device.config['address']} is a lab address, "
                                                   "but emulated devices are not sandboxed here")
            self.devices = assign_addresses(devices)
        self.startup_timeout = startup_timeout
        self.log_path = self.state_dir / "farm.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._watch_w: int | None = None
        self._log_offset = 0
        self._config: Path | None = None

    def device(self, name: str) -> DeviceConfig:
        return next(d for d in self.devices if d.name == name)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> "DeviceFarm":
        """Start the child and wait until every device accepts TCP connections."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.sandboxed:
            self.lab, self.devices = claim_lab(self._given, os.getpid())
            self._claimed = True
        self._config = config = self.state_dir / f"farm-{uuid.uuid4().hex[:8]}.json"
        config.write_text(json.dumps({"devices": [device_to_dict(d) for d in self.devices],
                                      "sandbox": self.sandboxed, "lab": self.lab.describe() if self.lab else None},
                                     indent=1))
        ready_r, ready_w = os.pipe()
        watch_r, self._watch_w = os.pipe()
        cmd = [sys.executable, "-m", "convoy.connectors.emulated.farm", "--config", str(config),
               "--state-dir", str(self.state_dir), "--ready-fd", str(ready_w), "--watch-fd", str(watch_r)]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as logfile:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
                                          pass_fds=(ready_w, watch_r), start_new_session=True)
        os.close(ready_w)
        os.close(watch_r)
        try:
            self._wait_ready(ready_r)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(ready_r)
        return self

    def _wait_ready(self, ready_r: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        readable, _, _ = select.select([ready_r], [], [], self.startup_timeout)
        if not readable or not os.read(ready_r, 64):  # timeout, or EOF: the child died
            assert self._proc is not None
            try:
                self._proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise DeviceError(FARM, f"devices not ready after {self.startup_timeout:g}s; "
                                        f"see {self.log_path}") from None
            raise DeviceError(FARM, f"exited with status {self._proc.returncode}: {self._log_tail()}")
        for device in self.devices:
            if device.connector != "emulated":
                continue
            settings = device_settings(device)
            try:
                socket.create_connection((settings.address, settings.port),
                                         timeout=max(0.1, deadline - time.monotonic())).close()
            except OSError as exc:
                raise DeviceError(device.name, f"not accepting connections: {exc}") from None

    def _log_tail(self, lines: int = 3) -> str:
        """The last lines this run wrote to the (shared, appended) log."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self._log_offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the child (running commands are hung up), SIGKILL it if it lingers."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._watch_w is not None:
            os.close(self._watch_w)
            self._watch_w = None
        if self._config is not None:
            self._config.unlink(missing_ok=True)
            self._config = None
        if self.sandboxed and self.lab is not None and self._claimed:
            labnet.release(self.lab)  # the child's job, unless it was killed
            self._claimed = False

    def __enter__(self) -> "DeviceFarm":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _signal_ready(ready: threading.Event, fd: int) -> None:
    if ready.wait():
        os.write(fd, b"ready\n")
        os.close(fd)


def _watch_parent(fd: int, stop: threading.Event) -> None:
    while os.read(fd, 64):  # returns b"" once every write end is closed: the parent is gone
        pass
    stop.set()


def _lab_of(path: Path) -> tuple[bool | None, labnet.Lab | None]:
    """What a :class:`DeviceFarm` decided for its child: sandbox or not, and the lab it claimed.

    A config file written by hand says neither: sandbox where possible.
    """

    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        return None, None
    lab = data.get("lab")
    return data.get("sandbox"), labnet.Lab.from_description(lab) if lab else None


def main(argv: list[str] | None = None) -> int:
    """CLI: serve the devices of ``--config`` until SIGTERM/SIGINT."""
    from convoy.config.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m convoy.connectors.emulated.farm",
                                     description="Serve emulated devices (SSH servers on loopback addresses).")
    parser.add_argument("--config", required=True, type=Path, help="JSON/YAML list of devices")
    parser.add_argument("--state-dir", type=Path, default=None, help="default: convoy's state directory")
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--watch-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ready, stop = threading.Event(), threading.Event()
    if args.ready_fd is not None:
        threading.Thread(target=_signal_ready, args=(ready, args.ready_fd), daemon=True).start()
    if args.watch_fd is not None:
        threading.Thread(target=_watch_parent, args=(args.watch_fd, stop), daemon=True).start()
    try:
        devices = load_devices(args.config)
        sandbox, lab = _lab_of(args.config)
        serve_devices(devices, args.state_dir or load_settings().state_dir, ready, stop=stop,
                      sandbox=sandbox, lab=lab)
    except ConvoyError as exc:
        print(f"convoy devices: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
