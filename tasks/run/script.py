"""Run a job's test commands as a bash script, streaming output, stoppable by cancel."""
from __future__ import annotations

import codecs
import functools
import logging
import os
import shutil
import signal
import subprocess
import threading
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
               cancel: threading.Event, timeout: float | None = None, name: str = "test_cmds",
               private_files: Mapping[str, Path] | None = None,
               on_start: Callable[[int], None] | None = None, output_grace: float = GRACE_SECONDS) -> int:
    """Run ``script`` with ``bash -e`` in ``cwd``; return its exit code.

    Output (stdout and stderr together) goes to ``on_output`` as it comes,
    in order, through an :class:`OutputForwarder`: the pipe is always read,
    and an ``on_output`` failing with a Redis connection error is retried
    until it works again (up to ``output_grace`` s after the script ended).
    Output that is lost all the same is said in the output, and a script
    that exited 0 then returns ``OUTPUT_LOST_EXIT_CODE``.
    When ``cancel`` is set or ``timeout`` passes, the script's whole process
    group gets SIGTERM, then SIGKILL after a grace period.  With
    ``private_files`` ({shared path: job's file}) the script sees its own
    file at each shared path.  ``on_start(pid)`` learns the script's process
    group, so that a worker restarted after a crash can end an orphaned script.
    """
    cwd.mkdir(parents=True, exist_ok=True)
    script_path = cwd / f".{name}.sh"
    script_path.write_text(script if script.endswith("\n") else script + "\n")
    output = OutputForwarder(on_output, name=name)
    try:
        code = _run(script_path, cwd, env, output, cancel, timeout, name, private_files, on_start)
    finally:
        lost = output.close(output_grace)
    if lost:
        log.warning("%s: %d bytes of output lost; exit code %d", name, lost, code)
        if code == 0:
            return OUTPUT_LOST_EXIT_CODE
    return code


def _run(script_path: Path, cwd: Path, env: Mapping[str, str], output: OutputForwarder, cancel: threading.Event,
         timeout: float | None, name: str, private_files: Mapping[str, Path] | None,
         on_start: Callable[[int], None] | None) -> int:
    proc = subprocess.Popen(script_command(script_path, private_files), cwd=cwd, env=dict(env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    assert proc.stdout is not None
    # the reader holds the pipe's file object, so it stays open for as long as something reads it
    reader = threading.Thread(target=_pump, args=(proc.stdout, output.write), daemon=True)
    reader.start()
    if on_start is not None:
        try:  # a Redis restart right now delays the record of the pid; the script runs meanwhile
            patiently(on_start, proc.pid)
        except BaseException:
            _terminate(proc)
            raise
    stopper_done = threading.Event()

    def stop_on_cancel() -> None:
        # wakes when cancel is set, or when the script ends (stopper_done)
        while not stopper_done.is_set():
            if cancel.wait(0.5):
                _terminate(proc)
                return

    stopper = threading.Thread(target=stop_on_cancel, daemon=True)
    stopper.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        output.write(f"\n*** {name} timed out after {timeout:g}s; stopping it ***\n")
        _terminate(proc)
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
