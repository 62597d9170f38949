"""Run a job's test commands as a bash script, streaming output, stoppable by cancel."""
from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Callable, Mapping

KILL_GRACE_SECONDS = 5.0
#: exit code recorded when a phase is stopped by cancel or timeout (like a shell's SIGTERM)
STOPPED_EXIT_CODE = 143


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
               on_start: Callable[[int], None] | None = None) -> int:
    """Run ``script`` with ``bash -e`` in ``cwd``; return its exit code.

    Output (stdout and stderr together) goes to ``on_output`` as it comes.
    When ``cancel`` is set or ``timeout`` passes, the script's whole process
    group gets SIGTERM, then SIGKILL after a grace period.  With
    ``private_files`` ({shared path: job's file}) the script sees its own
    file at each shared path.  ``on_start(pid)`` learns the script's process
    group, so that a worker restarted after a crash can end an orphaned script.
    """
    cwd.mkdir(parents=True, exist_ok=True)
    script_path = cwd / f".{name}.sh"
    script_path.write_text(script if script.endswith("\n") else script + "\n")
    proc = subprocess.Popen(script_command(script_path, private_files), cwd=cwd, env=dict(env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    if on_start is not None:
        on_start(proc.pid)
    reader = threading.Thread(target=_pump, args=(proc, on_output), daemon=True)
    reader.start()
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
        on_output(f"\n*** {name} timed out after {timeout:g}s; stopping it ***\n")
        _terminate(proc)
        code = proc.wait()
    finally:
        stopper_done.set()
    reader.join(timeout=10)
    if cancel.is_set() and code != 0:
        return STOPPED_EXIT_CODE if code < 0 else code
    return code if code >= 0 else 128 - code


def _pump(proc: subprocess.Popen[bytes], on_output: Callable[[str], None]) -> None:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        on_output(chunk.decode("utf-8", errors="replace"))


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
