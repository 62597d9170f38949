"""An emulated device's sandbox: a machine of its own, built from Linux namespaces.

Each sandboxed device has its own network namespace (one ``eth0`` on its
farm's lab bridge, see :mod:`.labnet`, and its own loopback), mount
namespace (root = a copy-on-write overlay of the host's ``/`` on a tmpfs,
fresh ``/proc``, ``/sys``, ``/tmp``, ``/run``, a minimal ``/dev``
(no disks), convoy's state directory and ``/root/.ssh`` masked, the device's
home bind-mounted read-write at the same path; with ``config.packages``, the
lab's apt repository as its only package source), UTS namespace (hostname =
device name), IPC and pid namespaces.  Its pid 1 is
:mod:`.sandbox_init`; killing it ends every process the device started and
drops every write outside the home: that is a reboot.

Why ``unshare``/``nsenter`` (util-linux) and iproute2 rather than
bubblewrap or systemd-nspawn: bubblewrap (0.8 in Debian) cannot make an
overlay root, and nspawn wants a machine image and systemd as manager;
util-linux and iproute2 are on every Linux host, and what they do here is
a dozen lines of mounts (verified with the brief's recipe).  Commands enter
the sandbox with ``nsenter`` (all of its namespaces and its root, cwd = the
home) under ``setpriv`` dropping ``CAP_SYS_ADMIN``/``CAP_NET_ADMIN``
and a few others, so a device's root can neither unmount the masks nor
give itself a route out of the lab.

Unprivileged user namespaces are not used (they cannot create the veth on
the host's bridge without a privileged helper); without root, or with
``CONVOY_SANDBOX=0``, devices run unsandboxed, as :func:`sandbox_problem`
explains.
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from convoy.connectors.emulated import labnet
from convoy.errors import DeviceError

INIT = Path(__file__).with_name("sandbox_init.py")
TOOLS = ("unshare", "nsenter", "setpriv", "ip")
#: capabilities a device's commands never get: mounts (unmasking), network config (a route out), modules,
#: raw I/O and device nodes (the host's disks), open_by_handle_at (files behind the masks), immutable
#: files in the shared home, the clock, accounting, audit, BPF
DROPPED_CAPS = ("sys_admin", "net_admin", "sys_module", "sys_rawio", "mknod", "dac_read_search",
                "linux_immutable", "sys_time", "sys_boot", "sys_pacct", "sys_tty_config", "mac_admin",
                "mac_override", "syslog", "bpf", "perfmon", "audit_control", "audit_read", "checkpoint_restore",
                "wake_alarm", "block_suspend")
START_TIMEOUT = 20.0
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def sandbox_problem() -> str | None:
    """Why emulated devices cannot be sandboxed here, or None if they can."""
    if os.environ.get("CONVOY_SANDBOX", "").strip().lower() in ("0", "no", "false", "off"):
        return "CONVOY_SANDBOX=0"
    if not sys.platform.startswith("linux"):
        return "namespaces need Linux"
    if os.geteuid() != 0:
        return "not running as root (unprivileged user namespaces are not supported)"
    lacking = [name for name, bit in (("CAP_SYS_ADMIN", 21), ("CAP_NET_ADMIN", 12)) if not _capable(bit)]
    if lacking:
        return f"root without {' and '.join(lacking)} (an unprivileged container?)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (util-linux, iproute2)"
    try:
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "the kernel has no overlayfs"
    except OSError as exc:
        return f"cannot read /proc/filesystems: {exc.strerror}"
    return None


def _capable(bit: int) -> bool:
    """Whether this process has capability ``bit`` now (``CapEff`` in /proc/self/status)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    effective = next((line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), "0")
    return bool(int(effective, 16) >> bit & 1)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


class Sandbox:
    """One device's namespaces and pid 1; :meth:`start`, :meth:`restart`, :meth:`stop` (blocking)."""

    def __init__(self, name: str, index: int, address: str, lab: labnet.Lab, home: Path, scratch: Path,
                 masks: list[Path], *, packages: Path | None = None) -> None:
        self.name, self.index, self.address, self.lab = name, index, address, lab
        self.home, self.scratch, self.masks, self.packages = home, scratch, masks, packages
        self.pid: int | None = None  # the init's pid on the host
        self._proc: subprocess.Popen[bytes] | None = None
        self._watch_w: int | None = None

    def start(self) -> None:
        """Boot: start the init, wait until its root is built, plug it into the lab."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        report_r, report_w = os.pipe()
        watch_r, self._watch_w = os.pipe()
        spec = {"hostname": self.name, "scratch": str(self.scratch), "home": str(self.home),
                "masks": [str(m) for m in self.masks], "report_fd": report_w, "watch_fd": watch_r,
                "packages": str(self.packages) if self.packages else None}
        argv = ["unshare", "--net", "--mount", "--uts", "--ipc", "--pid", "--fork", "--kill-child", "--",
                sys.executable, "-I", "-S", str(INIT), json.dumps(spec)]
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, pass_fds=(report_w, watch_r),
                                          start_new_session=True)
        finally:
            os.close(report_w)
            os.close(watch_r)
        try:
            self.pid = self._await_ready(report_r)
            labnet.attach(self.lab, self.index, self.pid, self.address)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(report_r)

    def _await_ready(self, report_r: int) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        buffer, pid = b"", None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([report_r], [], [], remaining)[0]:
                raise DeviceError(self.name, f"sandbox not ready after {START_TIMEOUT:g}s")
            chunk = os.read(report_r, 4096)
            buffer += chunk
            lines = buffer.decode(errors="replace").splitlines()
            for line in lines:
                if line.startswith("pid "):
                    pid = int(line.split()[1])
                elif line.startswith("error "):
                    raise DeviceError(self.name, f"cannot build its sandbox: {line[6:]}")
                elif line == "ready" and pid is not None:
                    return pid
            if not chunk:
                assert self._proc is not None
                err = self._proc.stderr.read().decode(errors="replace").strip() if self._proc.stderr else ""
                raise DeviceError(self.name, f"its sandbox exited while starting: {err or 'no output'}")

    def processes(self) -> list[int]:
        """Host pids of the processes running in the device (its init excluded)."""
        if self.pid is None or self._proc is None or self._proc.poll() is not None:
            return []  # its init is gone (and its pid may be another process's now)
        try:
            ns = os.readlink(f"/proc/{self.pid}/ns/pid")
        except OSError:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.pid:
                try:
                    if os.readlink(f"/proc/{entry}/ns/pid") == ns:
                        found.append(int(entry))
                except OSError:
                    continue
        return found

    def stop(self) -> int:
        """Power off: kill the init (the kernel kills the rest); return how many other processes ran."""
        running = len(self.processes())
        if self._proc is not None:
            # SIGKILL to unshare, our unreaped child (its pid cannot be another process's): its
            # --kill-child SIGKILLs the init, and the kernel every other process of the namespace
            self._proc.kill()
            self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None
        if self._watch_w is not None:
            os.close(self._watch_w)
            self._watch_w = None
        labnet.detach(self.lab, self.index, self.address)
        self.pid = None
        return running

    def restart(self) -> int:
        """Reboot: a fresh overlay and no process of the previous boot; return how many were ended."""
        ended = self.stop()
        self.start()
        return ended

    def enter(self, argv: list[str], cwd: Path) -> list[str]:
        """``argv`` run inside the sandbox, in ``cwd``, without the dropped capabilities."""
        if self.pid is None:
            raise DeviceError(self.name, "its sandbox is not running")
        return ["nsenter", "-t", str(self.pid), "-m", "-u", "-i", "-n", "-p", "-r", f"--wdns={cwd}", "--",
                "setpriv", "--bounding-set", ",".join("-" + c for c in DROPPED_CAPS), "--", *argv]

    def listen(self, port: int, backlog: int = 100) -> socket.socket:
        """A TCP socket listening on the device's address, created inside its network namespace.

        (A socket stays in the namespace it was made in, so the farm serves
        every device from one process.)  Call from a thread that does nothing else meanwhile.
        """
        if self.pid is None:
            raise DeviceError(self.name, "its sandbox is not running")
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY)
        try:
            _setns(target)
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((self.address, port))
                    sock.listen(backlog)
                    sock.setblocking(False)
                except OSError:
                    sock.close()
                    raise
            finally:
                _setns(own)  # if this failed the thread would serve the wrong network: let it raise
        finally:
            os.close(own)
            os.close(target)
        return sock
