"""One emulated device: a real SSH server (asyncssh) on its own address.

With a sandbox (:mod:`.sandbox`) the server listens on the device's lab
address inside the device's network namespace (the farm creates the
socket there, so one farm process still serves every device) and runs
every command, shell and ``scp -t`` inside the device's namespaces, so
they see its filesystem, network, hostname and process tree.  SFTP is
served by the farm on the home itself, which the sandbox shares.
Without a sandbox it listens on a loopback address and commands run on
the host.

Real clients (OpenSSH ``ssh``/``scp``/``ssh-copy-id``, Fabric) must work
against it unchanged, so it behaves like sshd where they can tell:

* the configured user (default ``ubuntu``) logs in with a key listed in
  ``<home>/.ssh/authorized_keys``, re-read on every login; any other user
  name, and every password, is refused;
* commands run as ``$SHELL -c CMD`` (bash, else sh) in their own session,
  cwd = home, with HOME/USER/LOGNAME/SHELL set; exit status (or signal),
  stdout and stderr propagate; a shell request runs a login shell, on a PTY
  when one is requested;
* SFTP is served chrooted at the home (``scp`` uses SFTP by default since
  OpenSSH 9); legacy ``scp -O`` simply execs the host's ``scp -t``.

Unlike sshd it kills a command's process group when the client goes away
(SIGHUP, then SIGKILL after a grace period), so an abandoned job never keeps
running on a device.  Commands run with the server's uid (in the sandbox, root of the device without
the capabilities :data:`.sandbox.DROPPED_CAPS`).
Nothing secret is logged: not commands, not environment values.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import shutil
import signal
import struct
import termios
from pathlib import Path
from typing import Any, Awaitable, Callable

import asyncssh

from convoy.config.devices import DeviceConfig
from convoy.connectors.emulated.image import device_paths, device_settings
from convoy.connectors.emulated.processes import MARKER
from convoy.connectors.emulated.sandbox import Sandbox
from convoy.errors import DeviceError

log = logging.getLogger(__name__)

SHELL = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
_SETSID = shutil.which("setsid")
#: seconds between SIGHUP and SIGKILL when a command's client has gone
KILL_GRACE = 2.0
#: seconds a PTY session's output may still flow after its shell exited
PTY_DRAIN = 2.0
#: client environment variables never passed through (set by us, or able to subvert the shell)
_BLOCKED_ENV = {"HOME", "USER", "LOGNAME", "SHELL", "PATH", "PWD", "MAIL", "IFS", "ENV",
                "BASH_ENV", "SHELLOPTS", "BASHOPTS", "PS4", "TERM"}
_BLOCKED_ENV_PREFIXES = ("LD_", "SSH_", "BASH_FUNC_")


def ensure_host_key(path: Path) -> asyncssh.SSHKey:
    """Load the device's host key, generating it (0600, with ``.pub``) the first time."""
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519", comment=f"convoy-emulated-{path.parent.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.export_private_key())
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key())
    os.replace(tmp, path)
    return key


def load_authorized_keys(path: Path) -> asyncssh.SSHAuthorizedKeys | None:
    """The keys in ``path`` now, or None if there are none (invalid lines are skipped, as sshd does)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc.strerror)
        return None
    try:
        return asyncssh.import_authorized_keys(text)
    except ValueError:  # no valid entry
        return None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _hang_up(pgid: int) -> None:
    """What a hung-up session gets: SIGHUP (and SIGCONT, so stopped jobs see it)."""
    _signal_group(pgid, signal.SIGHUP)
    _signal_group(pgid, signal.SIGCONT)


def _set_winsize(fd: int, size: tuple[int, int, int, int]) -> None:
    width, height, pixwidth, pixheight = size
    if width and height:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, pixwidth, pixheight))


async def _pump(read: Callable[[], Awaitable[bytes]], writer: Any) -> None:
    """Copy a subprocess's output to the channel until EOF (EIO: the PTY's slave side closed)."""
    while True:
        try:
            chunk = await read()
        except OSError:
            return
        if not chunk:
            return
        try:
            writer.write(chunk)
            await writer.drain()
        except (OSError, asyncssh.Error):
            return  # channel gone; the session kills the command


class _PtyReaderProtocol(asyncio.StreamReaderProtocol):
    """Reads a PTY master: EIO (every slave fd closed) is EOF, after the buffered output."""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(None if isinstance(exc, OSError) and exc.errno == errno.EIO else exc)


class _Spawned:
    """A started command: its process, its output pumps, and how to feed/resize/close it."""

    def __init__(self, proc: asyncio.subprocess.Process, outputs: list[Awaitable[None]],
                 write: Callable[[bytes], Awaitable[None]], close_stdin: Callable[[], None],
                 resize: Callable[[tuple[int, int, int, int]], None], close: Callable[[], None]):
        self.proc, self.outputs, self.write = proc, outputs, write
        self.close_stdin, self.resize, self.close = close_stdin, resize, close


async def _spawn_pipes(process: asyncssh.SSHServerProcess, argv: list[str], cwd: Path,
                       env: dict[str, str]) -> _Spawned:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=cwd, env=env, start_new_session=True)
    assert proc.stdin and proc.stdout and proc.stderr

    async def write(data: bytes) -> None:
        proc.stdin.write(data)  # type: ignore[union-attr]
        await proc.stdin.drain()  # type: ignore[union-attr]

    outputs = [_pump(lambda: proc.stdout.read(65536), process.stdout),  # type: ignore[union-attr]
               _pump(lambda: proc.stderr.read(65536), process.stderr)]  # type: ignore[union-attr]
    return _Spawned(proc, outputs, write, proc.stdin.close, lambda size: None, lambda: None)


async def _spawn_pty(process: asyncssh.SSHServerProcess, argv: list[str], cwd: Path,
                     env: dict[str, str]) -> _Spawned:
    loop = asyncio.get_running_loop()
    master, slave = os.openpty()
    try:
        _set_winsize(master, process.term_size)
        # ``setsid -c`` makes the PTY the controlling terminal (no preexec_fn in a threaded process)
        full = [_SETSID, "-c", *argv] if _SETSID else argv
        proc = await asyncio.create_subprocess_exec(
            *full, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
            start_new_session=_SETSID is None)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    reader = asyncio.StreamReader()
    read_transport, _ = await loop.connect_read_pipe(
        lambda: _PtyReaderProtocol(reader), os.fdopen(master, "rb", buffering=0))
    write_transport, _ = await loop.connect_write_pipe(
        asyncio.Protocol, os.fdopen(os.dup(master), "wb", buffering=0))

    async def write(data: bytes) -> None:
        if proc.returncode is None and not write_transport.is_closing():
            write_transport.write(data)

    def close() -> None:
        write_transport.close()
        read_transport.close()

    return _Spawned(proc, [_pump(lambda: reader.read(65536), process.stdout)], write,
                    lambda: None, lambda size: _set_winsize(master, size), close)


class _HomeSFTPServer(asyncssh.SFTPServer):
    """SFTP rooted at the device home that, like sshd, ends with exit status 0.

    (asyncssh closes an SFTP channel without an exit status; OpenSSH's
    ``scp`` then reports failure.)
    """

    def exit(self) -> None:
        try:
            self.channel.exit(0)
        except (OSError, asyncssh.Error):
            pass


class _DeviceSSHServer(asyncssh.SSHServer):
    """Per-connection callbacks: who may log in."""

    def __init__(self, device: "EmulatedDevice") -> None:
        self._device = device
        self._conn: asyncssh.SSHServerConnection | None = None
        self._peer = "?"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self._peer = f"{peer[0]}:{peer[1]}"
        self._device.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._device.connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        assert self._conn is not None
        keys = None
        if username == self._device.username:
            keys = load_authorized_keys(self._device.paths.authorized_keys)
        else:
            log.info("%s: refusing unknown user %r from %s", self._device.name, username, self._peer)
        self._conn.set_authorized_keys(keys)
        return True  # authentication is always required

    def public_key_auth_supported(self) -> bool:
        return True

    def auth_completed(self) -> None:
        log.info("%s: %s logged in from %s", self._device.name, self._device.username, self._peer)


class EmulatedDevice:
    """One device's SSH server; :meth:`start` and :meth:`stop` it inside a running event loop."""

    def __init__(self, device: DeviceConfig, state_dir: Path, sandbox: Sandbox | None = None) -> None:
        settings = device_settings(device)
        if not settings.address:
            raise DeviceError(device.name, "config.address is required to serve an emulated device")
        self.device = device
        self.name = device.name
        self.address: str = settings.address
        self.port = settings.port
        self.username = settings.username
        self.paths = device_paths(device, state_dir)
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self._running: dict[int, asyncio.subprocess.Process] = {}  # pgid -> leader
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self.sandbox = sandbox
        self._rebooting = asyncio.Lock()

    @property
    def sandboxed(self) -> bool:
        return self.sandbox is not None

    async def start(self) -> None:
        """Boot the sandbox (if any) and listen; raise :class:`DeviceError` if the address/port cannot be bound."""
        self.paths.home.mkdir(parents=True, exist_ok=True)
        self.paths.ssh_dir.mkdir(mode=0o700, exist_ok=True)
        if self.sandbox is not None:
            await asyncio.to_thread(self.sandbox.start)
        try:
            await self._listen()
        except BaseException:
            if self.sandbox is not None:
                await asyncio.to_thread(self.sandbox.stop)
            raise
        log.info("%s: SSH server on %s:%d, home %s%s", self.name, self.address, self.port, self.paths.home,
                 ", sandboxed" if self.sandbox else "")

    async def _listen(self) -> None:
        host_key = ensure_host_key(self.paths.host_key)
        chroot = str(self.paths.home.resolve())
        where: dict[str, Any] = {"host": self.address, "port": self.port}
        try:
            if self.sandbox is not None:
                where = {"sock": await asyncio.to_thread(self.sandbox.listen, self.port)}
            self._acceptor = await asyncssh.create_server(
                lambda: _DeviceSSHServer(self), **where,
                server_host_keys=[host_key], authorized_client_keys=None,
                process_factory=self._session,
                sftp_factory=lambda chan: _HomeSFTPServer(chan, chroot=chroot),
                encoding=None, line_editor=False, allow_pty=True, agent_forwarding=False,
                x11_forwarding=False, rdns_lookup=False, gss_kex=False, gss_auth=False,
                password_auth=False, kbdint_auth=False, keepalive_interval=30, reuse_address=True)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise DeviceError(self.name, f"cannot listen on {self.address}:{self.port}: {reason}") from None

    async def reboot(self) -> int:
        """Restart the sandbox: drop clients, end every process, fresh overlay; return how many processes ended.

        Without a sandbox nothing is restarted (the connector ends the device's processes itself).
        """
        if self.sandbox is None:
            return 0
        async with self._rebooting:
            await self._close(grace=0.0)
            ended = await asyncio.to_thread(self.sandbox.restart)
            await self._listen()
        log.info("%s: rebooted (%d process(es) ended)", self.name, ended)
        return ended

    async def stop(self) -> None:
        """Stop listening, drop clients, hang up running commands (SIGKILL after a grace period), power off."""
        await self._close()
        if self.sandbox is not None:
            await asyncio.to_thread(self.sandbox.stop)

    async def _close(self, grace: float = KILL_GRACE) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        for conn in list(self.connections):
            conn.abort()
        running = dict(self._running)
        for pgid in running:
            _hang_up(pgid)
        if running and grace:
            await asyncio.wait([asyncio.ensure_future(p.wait()) for p in running.values()], timeout=grace)
        for pgid in running:
            _signal_group(pgid, signal.SIGKILL)

    def _environment(self, process: asyncssh.SSHServerProcess) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C.UTF-8"}
        for key, value in process.env.items():
            if key not in _BLOCKED_ENV and not key.startswith(_BLOCKED_ENV_PREFIXES):
                env[key] = value
        peer = process.get_extra_info("peername") or ("", 0)
        sock = process.get_extra_info("sockname") or ("", 0)
        env[MARKER] = self.device.name  # lets cleanup find what was started here, daemons included
        env.update(HOME=str(self.paths.home), USER=self.username, LOGNAME=self.username,
                   SHELL=SHELL, PWD=str(self.paths.home),
                   SSH_CONNECTION=f"{peer[0]} {peer[1]} {sock[0]} {sock[1]}",
                   SSH_CLIENT=f"{peer[0]} {peer[1]} {sock[1]}")
        if process.term_type:
            env["TERM"] = process.term_type
        return env

    async def _session(self, process: asyncssh.SSHServerProcess) -> None:
        """Serve one exec or shell request (SFTP is handled by asyncssh through ``sftp_factory``)."""
        if process.subsystem:
            process.stderr.write(f"subsystem {process.subsystem} is not supported\n".encode())
            process.exit(1)
            return
        argv = [SHELL, "-c", process.command] if process.command is not None else [SHELL, "-l"]
        if self.sandbox is not None:
            try:
                argv = self.sandbox.enter(argv, self.paths.home)
            except DeviceError as exc:  # rebooting
                process.stderr.write(f"{exc}\n".encode())
                process.exit(255)
                return
        spawn = _spawn_pty if process.term_type else _spawn_pipes
        self.paths.home.mkdir(parents=True, exist_ok=True)
        try:
            spawned = await spawn(process, argv, self.paths.home, self._environment(process))
        except OSError as exc:
            process.stderr.write(f"cannot start {SHELL}: {exc.strerror}\n".encode())
            process.exit(127)
            return
        pgid = spawned.proc.pid
        self._running[pgid] = spawned.proc
        log.info("%s: %s started (pid %d)", self.name, "command" if process.command is not None
                 else "shell", pgid)
        feeding = asyncio.ensure_future(self._feed(process, spawned, pgid))
        finished = asyncio.ensure_future(self._finish(spawned, pty=bool(process.term_type)))
        closed = asyncio.ensure_future(process.wait_closed())
        completed = False
        try:
            await asyncio.wait({finished, closed}, return_when=asyncio.FIRST_COMPLETED)
            if finished.done() and not closed.done():
                completed = True
                status = finished.result()
                log.info("%s: pid %d exited with status %d", self.name, pgid, status)
                if status >= 0:
                    process.exit(status)
                else:
                    process.exit_with_signal(signal.Signals(-status).name.removeprefix("SIG"))
        finally:
            if not completed:  # the client went away (or the server is stopping)
                log.info("%s: client went away; killing process group %d", self.name, pgid)
                self._kill(pgid)
            for task in (feeding, finished, closed):
                task.cancel()
            spawned.close()
            self._running.pop(pgid, None)

    def _kill(self, pgid: int) -> None:
        _hang_up(pgid)
        asyncio.get_running_loop().call_later(KILL_GRACE, _signal_group, pgid, signal.SIGKILL)

    @staticmethod
    async def _finish(spawned: _Spawned, pty: bool) -> int:
        """The command's exit status once its output is fully sent (negative: killed by a signal)."""
        outputs = asyncio.gather(*spawned.outputs)
        if pty:  # a process that escaped the hangup may keep the PTY open: don't wait for it long
            status = await spawned.proc.wait()
            try:
                await asyncio.wait_for(asyncio.shield(outputs), timeout=PTY_DRAIN)
            except asyncio.TimeoutError:
                outputs.cancel()
            return status
        await outputs
        return await spawned.proc.wait()

    @staticmethod
    async def _feed(process: asyncssh.SSHServerProcess, spawned: _Spawned, pgid: int) -> None:
        """Copy the client's stdin to the command; apply window changes and signals."""
        try:
            while True:
                try:
                    data = await process.stdin.read(65536)
                except asyncssh.TerminalSizeChanged as exc:
                    spawned.resize((exc.width, exc.height, exc.pixwidth, exc.pixheight))
                    continue
                except asyncssh.SignalReceived as exc:
                    sig = getattr(signal, "SIG" + exc.signal, None)
                    if isinstance(sig, signal.Signals):
                        _signal_group(pgid, sig)
                    continue
                except asyncssh.BreakReceived:
                    continue
                if not data:
                    break
                try:
                    await spawned.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    break  # the command closed its stdin; discard the rest
        except (asyncssh.Error, OSError):
            pass
        finally:
            try:
                spawned.close_stdin()
            except OSError:
                pass
