"""Each job's commands as a user of their own on the host: an unprivileged uid in a user namespace.

Where the platform allows it (the worker is root, util-linux ``unshare`` and
``setpriv``, user namespaces), a job's test commands run as an outer uid
allocated to the job from a range no real user has (``CONVOY_JOB_UID_BASE``,
default 0x60000000, plus a slot; the gid is the same number), inside a new
user namespace whose root is that uid (so ``ssh`` and ``getpwuid`` work).
The slot is held with an exclusive lock on ``<state_dir>/uids/<slot>.lock``
for as long as the job's commands run, so two running jobs never share one.

Before the commands start, the job's directory (its SSH set-up and key pair
included) is handed over to that uid, mode 0700: the job can write it, no
other job can read it, and the host's agent key (root's, 0600) is out of its
reach.  When the last of the job's scripts on this host ends, every process
of the uid is killed, the directory goes back to root, and what root reads
or writes there after (the SSH set-up, the job's key, the MultiNode files,
``artifacts/``) is freed of the job's symbolic links.

``CONVOY_JOB_USERNS=0`` turns it off (the commands then run as the worker's
user, as they do where the platform does not allow it; the worker's log says
so once).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from convoy.config.settings import load_settings

log = logging.getLogger(__name__)

#: the first outer uid (and gid) of jobs; no real user has one this high
DEFAULT_UID_BASE = 0x60000000
#: how many jobs one host can run at once, each with its own uid
SLOTS = 65536
SWITCH_ENV = "CONVOY_JOB_USERNS"
BASE_ENV = "CONVOY_JOB_UID_BASE"
#: names in a job's directory that root reads or writes after the job's commands ran
ROOT_USED = (".convoy-key", ".multinode", "multinode", "artifacts", "tmp")
#: how long reclaiming a uid keeps killing its processes before giving up
KILL_SECONDS = 10.0


@dataclass(frozen=True)
class JobUser:
    """The outer uid (= gid) a job's commands run as, and what their mount namespace must show them."""

    uid: int
    slot: int
    #: (a directory others cannot enter, the names in it the commands need): convoy's Python lives there
    hidden: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass
class _Held:
    user: JobUser
    fd: int
    count: int = 1
    dirs: list[Path] = field(default_factory=list)


_held: dict[str, _Held] = {}
_lock = threading.Lock()


def uid_base() -> int:
    text = os.environ.get(BASE_ENV)
    return int(text, 0) if text else DEFAULT_UID_BASE


def _off() -> bool:
    return os.environ.get(SWITCH_ENV, "1").strip().lower() in ("0", "no", "off", "false")


def wrap(command: list[str], uid: int) -> list[str]:
    """``command`` as ``uid`` (no supplementary groups, no new privileges), root in a user namespace of its own."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
            "unshare", "--user", "--map-root-user", *command]


@functools.lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why jobs' commands cannot run as their own users here, or None if they can (checked once)."""
    if _off():
        return f"{SWITCH_ENV}=0"
    if os.geteuid() != 0:
        return "the worker is not root"
    missing = [tool for tool in ("setpriv", "unshare", "mount", "kill") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found"
    probe = subprocess.run(wrap(["true"], uid_base() + SLOTS - 1), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, extra_groups=[])
    if probe.returncode != 0:
        return f"no user namespace for an unprivileged uid ({probe.stderr.strip()[:200]})"
    return None


_told = False


def _tell_once(reason: str) -> None:
    global _told
    if not _told:
        _told = True
        log.warning("job isolation is off (%s): test commands run as this worker's user", reason)


def _mode(path: Path) -> int:
    return path.stat().st_mode


def hidden_dirs(needed: Sequence[Path], private: Path = Path("/tmp"),
                mode: Callable[[Path], int] = _mode) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """For the paths the commands need: the first directory on each one's way that others cannot enter.

    Such a directory (root's 0700 home holding pyenv's Python or the state
    directory, pytest's 0700 temporary root) is replaced in the job's mount
    namespace by an empty one showing only the needed paths under it:
    (directory, needed paths relative to it), shortest first.  Paths under
    ``private`` (/tmp: the job has its own, showing what it needs) are not looked at; ``mode`` is
    a directory's ``st_mode``."""
    paths = sorted({p.resolve() for p in needed if not p.resolve().is_relative_to(private)},
                   key=lambda p: len(p.parts))
    paths = [p for i, p in enumerate(paths) if not any(p.is_relative_to(q) for q in paths[:i])]
    found: dict[str, list[str]] = {}
    for path in paths:
        for depth in range(2, len(path.parts)):
            ancestor = Path(*path.parts[:depth])
            try:
                bits = mode(ancestor)
            except OSError:
                break
            if not bits & 0o001:
                found.setdefault(str(ancestor), []).append(str(path.relative_to(ancestor)))
                break
    return tuple((d, tuple(names)) for d, names in sorted(found.items()))


def convoy_paths() -> list[Path]:
    """Where convoy's Python, its environment and its code are: what the job's ``lava-*`` commands run from."""
    return [Path(sys.base_prefix), Path(sys.prefix), Path(__file__).resolve().parents[2]]


def uid_pids(uid: int) -> list[int]:
    """Live (not zombie) processes whose real or effective uid is ``uid``."""
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uids = fields.get("Uid", "").split()
        if fields.get("State", "").strip().startswith("Z"):
            continue
        if str(uid) in uids[:2]:
            pids.append(int(entry))
    return pids


def kill_uid(uid: int) -> bool:
    """SIGKILL every process of ``uid`` (``kill -1`` as that uid: one call, fork bombs too); True once none is left."""
    deadline = time.monotonic() + KILL_SECONDS
    while True:
        pids = uid_pids(uid)
        if not pids:
            return True
        if time.monotonic() > deadline:
            log.error("uid %d: processes %s survive SIGKILL", uid, pids[:10])
            return False
        subprocess.run(["kill", "-KILL", "-1"], user=uid, group=uid, extra_groups=[],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for pid in pids:  # what kill -1 could not reach (a process that changed its uid since)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _chown_tree(top: Path, uid: int) -> None:
    """``top`` and everything under it to ``uid``:``uid``, links themselves, never what they point to."""
    os.chown(top, uid, uid, follow_symlinks=False)
    # relative to each directory's descriptor: a directory swapped for a link meanwhile never leads it elsewhere
    for _here, dirs, files, dir_fd in os.fwalk(top):
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                os.chown(name, uid, uid, dir_fd=dir_fd, follow_symlinks=False)


def _unlink_links(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(directory):
            if entry.is_symlink():
                os.unlink(entry.path)


def _sanitise(job_dir: Path) -> None:
    """Root works in the job's directory after its commands: no link of theirs may lead it elsewhere."""
    for work in [job_dir, *[p for p in job_dir.glob("guest-*") if p.is_dir() and not p.is_symlink()]]:
        _unlink_links(work)
        shutil.rmtree(work / ".convoy-ssh", ignore_errors=True)  # rewritten by root before every use
        for name in ROOT_USED:
            if (work / name).is_dir():
                _unlink_links(work / name)


def _acquire(owner: str) -> tuple[int, int]:
    """A free slot's lock (fd) and slot number, starting from one derived from ``owner``."""
    uids = load_settings().state_dir / "uids"
    uids.mkdir(parents=True, exist_ok=True, mode=0o700)
    start = zlib.crc32(owner.encode()) % SLOTS
    for i in range(SLOTS):
        slot = (start + i) % SLOTS
        fd = os.open(uids / f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                continue
            raise
        _reclaim_left(fd, uid_base() + slot)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{owner} {os.getpid()}\n".encode())
        return fd, slot
    raise OSError(f"all {SLOTS} job uid slots of this host are in use")


def _reclaim_left(fd: int, uid: int) -> None:
    """What a worker that died holding this slot left: its job's processes and directories (named in the lock)."""
    kill_uid(uid)
    lines = os.pread(fd, 1 << 16, 0).decode(errors="replace").splitlines()[1:]
    for line in lines:
        job_dir = Path(line)
        if job_dir.is_absolute() and job_dir.is_dir() and not job_dir.is_symlink() and job_dir.stat().st_uid == uid:
            log.warning("giving %s back to root: its job's worker died while its commands ran as uid %d", job_dir, uid)
            _chown_tree(job_dir, 0)
            _sanitise(job_dir)


def _reclaim(held: _Held) -> None:
    uid = held.user.uid
    try:
        kill_uid(uid)
        for job_dir in held.dirs:
            if job_dir.is_dir() and not job_dir.is_symlink():
                _chown_tree(job_dir, 0)
                _sanitise(job_dir)
    finally:
        os.close(held.fd)  # the slot is free again


@contextlib.contextmanager
def job_user(owner: str, job_dir: Path, extra: Sequence[Path] = ()) -> Iterator[JobUser | None]:
    """The uid ``owner``'s commands run as, with ``job_dir`` (and ``extra`` paths) handed over to it.

    None where the platform does not allow it (said once in the log).  Nested
    or concurrent uses for one owner in this process (a parent and its guests)
    share the uid; the last one to end reclaims it: kills its processes and
    gives ``job_dir`` back to root.
    """
    reason = unavailable()
    if reason is not None:
        _tell_once(reason)
        yield None
        return
    with _lock:
        held = _held.get(owner)
        if held is None:
            fd, slot = _acquire(owner)
            needed = [*convoy_paths(), job_dir, *extra]
            held = _Held(JobUser(uid_base() + slot, slot, hidden_dirs(needed)), fd)
            _held[owner] = held
        else:
            held.count += 1
        if job_dir not in held.dirs:
            held.dirs.append(job_dir)
            os.write(held.fd, f"{job_dir}\n".encode())  # for the next holder, should this worker die
        uid = held.user.uid
        try:
            _chown_tree(job_dir, uid)
            os.chmod(job_dir, 0o700, follow_symlinks=False)
            for path in extra:
                with contextlib.suppress(FileNotFoundError):
                    os.chown(path, uid, uid, follow_symlinks=False)
        except BaseException:
            _release(owner)
            raise
    try:
        yield held.user
    finally:
        with _lock:
            _release(owner)


def _release(owner: str) -> None:
    held = _held[owner]
    held.count -= 1
    if held.count == 0:
        del _held[owner]
        _reclaim(held)
