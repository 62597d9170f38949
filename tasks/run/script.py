"""Run a job's test commands as a bash script, streaming output, stoppable by cancel and stop conditions.

A stop condition is a small callable (as in Testflinger's agent runner): it
returns None while the script may go on, or the line to write to the output
when the script must stop (``Timeout``: ``global_timeout``; ``OutputTimeout``:
``output_timeout``, no output for that long).  The runner checks them every
``STOP_CHECK_SECONDS`` and stops the script's whole process group.
"""
from __future__ import annotations

import codecs
import functools
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Callable, Mapping

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


#: mounts each "$source" over "$target" given as pairs after the script, then runs the script
_MOUNT_THEN_RUN = (
    'script="$1"; shift; '
    'while [ $# -gt 1 ]; do [ -e "$2" ] || : > "$2"; mount --bind "$1" "$2" || exit 125; shift 2; done; '
    'exec bash -e "$script"'
)


def script_command(script_path: Path, private_files: Mapping[str, Path] | None = None) -> list[str]:
    """``bash -e script``; with ``private_files``, each target path shows this job's own file.

    LAVA test scripts read ``/tmp/lava_multi_node_cache.txt`` by that literal
    path; giving every job its own file there (a bind mount in a private
    mount namespace) keeps two jobs on one host from sharing it.
    """
    if not private_files or not private_mounts_supported():
        return ["bash", "-e", str(script_path)]
    pairs: list[str] = []
    for target, source in private_files.items():
        source.parent.mkdir(parents=True, exist_ok=True)
        source.touch()
        pairs += [str(source), target]
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _MOUNT_THEN_RUN, "convoy-script",
            str(script_path), *pairs]


def run_script(script: str, *, cwd: Path, env: Mapping[str, str], on_output: Callable[[str], None],
               cancel: threading.Event, timeout: float | None = None, output_timeout: float | None = None,
               name: str = "test_cmds", private_files: Mapping[str, Path] | None = None,
               on_start: Callable[[int], None] | None = None, output_grace: float = GRACE_SECONDS,
               timeout_limit: float | None = None) -> int:
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
    """
    cwd.mkdir(parents=True, exist_ok=True)
    script_path = cwd / f".{name}.sh"
    script_path.write_text(script if script.endswith("\n") else script + "\n")
    output = OutputForwarder(on_output, name=name)
    silence = OutputTimeout(output_timeout) if output_timeout else None
    conditions: list[StopCondition] = [c for c in (Timeout(timeout, name, limit=timeout_limit) if timeout else None,
                                                   silence) if c]

    def write(text: str) -> None:
        if silence is not None:
            silence.saw_output()
        output.write(text)

    try:
        code = _run(script_path, cwd, env, output, write, cancel, conditions, name, private_files, on_start)
    finally:
        lost = output.close(output_grace)
    if lost:
        log.warning("%s: %d bytes of output lost; exit code %d", name, lost, code)
        if code == 0:
            return OUTPUT_LOST_EXIT_CODE
    return code


def _run(script_path: Path, cwd: Path, env: Mapping[str, str], output: OutputForwarder,
         write: Callable[[str], None], cancel: threading.Event, conditions: list[StopCondition], name: str,
         private_files: Mapping[str, Path] | None, on_start: Callable[[int], None] | None) -> int:
    proc = subprocess.Popen(script_command(script_path, private_files), cwd=cwd, env=dict(env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
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
