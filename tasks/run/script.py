"""Run a job's test commands as a bash script, streaming output, stoppable by cancel and stop conditions.

A stop condition is a small callable (as in Testflinger's agent runner): it
returns None while the script may go on, or the line to write to the output
when the script must stop (``Timeout``: ``global_timeout``; ``OutputTimeout``:
``output_timeout``, no output for that long).  The runner checks them every
``STOP_CHECK_SECONDS`` and stops the script's whole process group.
"""
from __future__ import annotations

import codecs
import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from shlex import quote
from typing import IO, Callable, Iterable, Mapping

from convoy.coordinator.multinode.commands import SOCKET_ENV
from convoy.tasks.run import jobuser
from convoy.tasks.run.jobuser import JobUser
from convoy.tasks.run.output import GRACE_SECONDS, OutputForwarder, patiently

log = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 5.0
#: exit code recorded when a phase is stopped by cancel or timeout (like a shell's SIGTERM)
STOPPED_EXIT_CODE = 143
#: exit code recorded for a script that exited 0 but whose output was partly lost: never a silent pass
OUTPUT_LOST_EXIT_CODE = 1
#: how long the end of the script waits for its output reader (a background child may hold the pipe)
READER_JOIN_SECONDS = 10.0
#: how often cancel and the stop conditions are checked while the script runs
STOP_CHECK_SECONDS = 0.2

StopCondition = Callable[[], "str | None"]
"""None while the script may go on; else the line that says why it is stopped."""


class Timeout:
    """Stop once ``seconds`` have passed since the start (what is left of ``global_timeout``).

    ``limit`` is the timeout as the user set it, for the message (a re-run has less than that left).
    """

    def __init__(self, seconds: float, name: str = "test_cmds",
                 clock: Callable[[], float] = time.monotonic, limit: float | None = None) -> None:
        self.seconds, self.name, self.clock = seconds, name, clock
        self.limit = seconds if limit is None else limit
        self.deadline = clock() + seconds

    def __call__(self) -> str | None:
        if self.clock() < self.deadline:
            return None
        return f"\n*** {self.name} timed out after {self.limit:g}s; stopping it ***\n"


class OutputTimeout:
    """Stop once the script has printed nothing for ``seconds`` (``output_timeout``).

    ``saw_output()`` is called for every chunk the script prints."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self.last_output = clock()

    def saw_output(self) -> None:
        self.last_output = self.clock()

    def __call__(self) -> str | None:
        if self.clock() - self.last_output < self.seconds:
            return None
        return f"\n*** no output for {self.seconds:g} s (output_timeout); stopping ***\n"


@functools.lru_cache(maxsize=1)
def private_mounts_supported() -> bool:
    """Whether this host lets a script have files of its own at shared paths (a mount namespace)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


def script_command(script_path: Path, private_files: Mapping[str, Path] | None = None,
                   user: JobUser | None = None, private_tmp: Path | None = None,
                   keep_in_tmp: tuple[Path, ...] = (), read_only_in_tmp: tuple[Path, ...] = ()) -> list[str]:
    """``bash -e script``; with ``private_files``, each target path shows this job's own file; with
    ``user``, as that job's own uid (:mod:`~convoy.tasks.run.jobuser`).

    LAVA test scripts read ``/tmp/lava_multi_node_cache.txt`` by that literal
    path; giving every job its own file there (a bind mount in a private
    mount namespace) keeps two jobs on one host from sharing it.  The mounts
    are made as root, before the commands become the job's user (who cannot
    undo them).  With ``user``, the same namespace gives the job
    ``private_tmp`` as its ``/tmp`` (still showing ``keep_in_tmp``: its
    directory or relay socket if they are under /tmp) and replaces
    directories the job's uid could not enter on the way to what it needs
    (convoy's Python, its directory) by ones showing only that; ``read_only_in_tmp`` (convoy's own
    code and Python where they live under /tmp, as in a checkout there) shows read-only.
    """
    run = ["bash", "-e", str(script_path)]
    if user is not None:
        run = jobuser.wrap(run, user.uid)
    steps: list[str] = []
    if user is not None and private_tmp is not None:
        # the job's own /tmp (its TMPDIR), still showing the paths under /tmp it needs (its directory, its relay)
        tmp = quote(str(private_tmp))
        for path in (*keep_in_tmp, *read_only_in_tmp):
            inside = quote(str(private_tmp / path.relative_to("/tmp")))
            first = quote(str(private_tmp / path.relative_to("/tmp").parts[0]))
            read_only = f" && mount -o remount,bind,ro {inside}" if path in read_only_in_tmp else ""
            steps.append(f"{{ [ ! -L {first} ] || rm -f {first}; }} && mkdir -p {inside} && "
                         f"mount --bind {quote(str(path))} {inside}{read_only} || exit 125")
        steps.append(f"mount --rbind {tmp} /tmp || exit 125")
    if user is not None and private_tmp is not None and user.hidden:
        # a directory the job's uid cannot enter on the way to what it needs: an empty one showing just that
        stage = "/tmp/.convoy-stage"  # in the job's own /tmp by now
        steps.append(f"{{ [ ! -L {stage} ] || rm -f {stage}; }} && mkdir -p {stage} || exit 125")
        for directory, names in user.hidden:
            keep = " && ".join(f"mkdir -p {stage}/{quote(n)} && mount --rbind {quote(directory + '/' + n)} "
                               f"{stage}/{quote(n)}" for n in names)
            steps.append(f"mount -t tmpfs -o mode=755 convoy-job {stage} && {keep} && "
                         f"mount --move {stage} {quote(directory)} || exit 125")
    if private_files and private_mounts_supported():
        for target, source in private_files.items():
            source.parent.mkdir(parents=True, exist_ok=True)
            source.touch()
            steps.append(f"{{ [ -e {quote(target)} ] || : > {quote(target)}; }} && "
                         f"mount --bind {quote(str(source))} {quote(target)} || exit 125")
    if not steps:
        return run
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            "; ".join([*steps, 'exec "$@"']), "convoy-script", *run]


def _outermost(paths: Iterable[Path]) -> tuple[Path, ...]:
    """``paths`` without those inside another of them, each once."""
    unique = sorted(set(paths), key=lambda p: len(p.parts))
    return tuple(p for i, p in enumerate(unique) if not any(p.is_relative_to(q) for q in unique[:i]))


def run_script(script: str, *, cwd: Path, env: Mapping[str, str], on_output: Callable[[str], None],
               cancel: threading.Event, timeout: float | None = None, output_timeout: float | None = None,
               name: str = "test_cmds", private_files: Mapping[str, Path] | None = None,
               on_start: Callable[[int], None] | None = None, output_grace: float = GRACE_SECONDS,
               timeout_limit: float | None = None, job: str | None = None, job_dir: Path | None = None) -> int:
    """Run ``script`` with ``bash -e`` in ``cwd``; return its exit code.

    Output (stdout and stderr together) goes to ``on_output`` exactly as
    printed (a chunk may end mid-line), in order, through an
    :class:`OutputForwarder`: the pipe is always read,
    and an ``on_output`` failing with a Redis connection error is retried
    until it works again (up to ``output_grace`` s after the script ended).
    Output that is lost all the same is said in the output, and a script
    that exited 0 then returns ``OUTPUT_LOST_EXIT_CODE``.
    When ``cancel`` is set, ``timeout`` passes or the script prints nothing
    for ``output_timeout`` seconds, the script's whole process group gets
    SIGTERM, then SIGKILL after a grace period (a stop condition says why in
    the output; the exit code is ``STOPPED_EXIT_CODE``).  With
    ``private_files`` ({shared path: job's file}) the script sees its own
    file at each shared path.  ``on_start(pid)`` learns the script's process
    group, so that a worker restarted after a crash can end an orphaned script.

    With ``job`` (the id whose commands these are), the script runs as that
    job's own uid where the platform allows (:func:`jobuser.job_user`), with
    ``job_dir`` (default ``cwd``: the job's whole directory, which holds
    ``cwd``) handed over to it while it runs.  ``TMPDIR`` in ``env``, if in
    ``cwd``, is created.
    """
    cwd.mkdir(parents=True, exist_ok=True)
    script_path = cwd / f".{name}.sh"
    with contextlib.suppress(FileNotFoundError):
        script_path.unlink()  # never write through a link a job's commands left
    script_path.write_text(script if script.endswith("\n") else script + "\n")
    tmp = Path(env["TMPDIR"]) if env.get("TMPDIR") else None
    if tmp is not None and tmp.is_relative_to(cwd) and not tmp.is_symlink():
        tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
    for source in (private_files or {}).values():  # made before the job's directory is handed over
        source.parent.mkdir(parents=True, exist_ok=True)
        source.touch()
    private_tmp: Path | None = None
    keep_in_tmp: tuple[Path, ...] = ()
    read_only_in_tmp: tuple[Path, ...] = ()
    if job is None:
        isolated: contextlib.AbstractContextManager[JobUser | None] = contextlib.nullcontext(None)
    else:
        top = job_dir or cwd
        socket = Path(env[SOCKET_ENV]) if env.get(SOCKET_ENV) else None
        extra = [socket, socket.parent] if socket is not None and not socket.is_relative_to(top) else []
        isolated = jobuser.job_user(job, top, extra)
        private_tmp = tmp if tmp is not None and tmp.is_relative_to(top) and not tmp.is_symlink() else cwd / "tmp"
        private_tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        keep_in_tmp = tuple(p for p in (top, *extra[1:]) if p.is_relative_to("/tmp") and p != Path("/tmp"))
        read_only_in_tmp = _outermost(p.resolve() for p in jobuser.convoy_paths()
                                      if p.resolve().is_relative_to("/tmp") and p.resolve() != Path("/tmp"))
    output = OutputForwarder(on_output, name=name)
    silence = OutputTimeout(output_timeout) if output_timeout else None
    conditions: list[StopCondition] = [c for c in (Timeout(timeout, name, limit=timeout_limit) if timeout else None,
                                                   silence) if c]

    def write(text: str) -> None:
        if silence is not None:
            silence.saw_output()
        output.write(text)

    try:
        with isolated as user:
            command = script_command(script_path, private_files, user, private_tmp, keep_in_tmp, read_only_in_tmp)
            code = _run(command, cwd, env, output, write, cancel, conditions, on_start, user)
    finally:
        lost = output.close(output_grace)
    if lost:
        log.warning("%s: %d bytes of output lost; exit code %d", name, lost, code)
        if code == 0:
            return OUTPUT_LOST_EXIT_CODE
    return code


def _run(command: list[str], cwd: Path, env: Mapping[str, str], output: OutputForwarder,
         write: Callable[[str], None], cancel: threading.Event, conditions: list[StopCondition],
         on_start: Callable[[int], None] | None, user: JobUser | None = None) -> int:
    name = output.name
    proc = subprocess.Popen(command, cwd=cwd, env=dict(env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, extra_groups=[] if user is not None else None)
    assert proc.stdout is not None
    # the reader holds the pipe's file object, so it stays open for as long as something reads it
    reader = threading.Thread(target=_pump, args=(proc.stdout, write), daemon=True)
    reader.start()
    if on_start is not None:
        try:  # a Redis restart right now delays the record of the pid; the script runs meanwhile
            patiently(on_start, proc.pid)
        except BaseException:
            _terminate(proc)
            raise
    stopper_done = threading.Event()

    def stop_when_asked() -> None:
        # wakes when cancel is set, a stop condition holds, or the script ends (stopper_done)
        while not stopper_done.is_set():
            if cancel.wait(STOP_CHECK_SECONDS):
                _terminate(proc)
                return
            reason = next((r for r in (condition() for condition in conditions) if r), None)
            if reason and not stopper_done.is_set():
                output.write(reason)
                _terminate(proc)
                return

    stopper = threading.Thread(target=stop_when_asked, daemon=True)
    stopper.start()
    try:
        code = proc.wait()
    finally:
        stopper_done.set()
    reader.join(timeout=READER_JOIN_SECONDS)
    if reader.is_alive():  # the reader keeps draining the pipe, but the phase's output ends here
        output.write(f"\n*** {name} ended; a process it left running still holds its output, "
                     "which is not kept from here on ***\n")
    if cancel.is_set() and code != 0:
        return STOPPED_EXIT_CODE if code < 0 else code
    return code if code >= 0 else 128 - code


def _pump(stream: IO[bytes], write: Callable[[str], None]) -> None:
    """Read the script's output until EOF; ``write`` must not block (a forwarder's write does not)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character split across reads stays whole
    fd = stream.fileno()
    while True:
        chunk = os.read(fd, 65536)
        text = decoder.decode(chunk, final=not chunk)
        if text:
            write(text)
        if not chunk:
            return


def kill_process_group(pgid: int) -> bool:
    """SIGKILL a script's process group left behind by a dead worker; True if there was one."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
