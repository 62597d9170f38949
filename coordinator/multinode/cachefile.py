"""The MultiNode cache files that test scripts read after a wait.

Formats (``reference/lava-multinode-api.rst``): after ``lava-wait`` one
``key=value`` line per key of the received data; after ``lava-wait-all`` and
``lava-sync`` one ``<job_id>:key=value`` line each.  Like LAVA, every wait
first removes the old file and writes nothing when no data came, so a script
never reads a previous wait's data by mistake.
"""
from __future__ import annotations

import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every command start
    from collections.abc import Mapping

DEFAULT_CACHE = "/tmp/lava_multi_node_cache.txt"
DEFAULT_NETWORK_CACHE = "/tmp/lava_multi_node_network_cache.txt"


def wait_lines(received: Mapping[str, Mapping[str, str]]) -> list[str]:
    """``key=value`` lines of every sender's data, senders in member order."""
    return [f"{key}={value}" for data in received.values() for key, value in data.items()]


def wait_all_lines(received: Mapping[str, Mapping[str, str]]) -> list[str]:
    """``<job_id>:key=value`` lines, senders in member order."""
    return [f"{job}:{key}={value}" for job, data in received.items() for key, value in data.items()]


def write(path: str, lines: list[str]) -> None:
    """Replace the cache file with ``lines`` (atomically); remove it when there are none.

    One system call in the common case (no data: an unlink), as every member
    of a barrier does this at the same moment."""
    if not lines:
        try:
            os.unlink(path)
        except FileNotFoundError:  # no old file, or not even its directory: nothing to remove
            pass
        except OSError as exc:  # the job's private file, bind-mounted here (tasks/runner.py): empty it
            if exc.errno != errno.EBUSY:
                raise
            _write_in_place(path, "")
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        f = open(tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        f = open(tmp, "w", encoding="utf-8")  # noqa: SIM115
    text = "".join(line + "\n" for line in lines)
    with f:
        f.write(text)
    try:
        os.replace(tmp, path)
    except OSError as exc:  # a bind mount cannot be replaced: write the mounted file itself
        os.unlink(tmp)
        if exc.errno != errno.EBUSY:
            raise
        _write_in_place(path, text)


def _write_in_place(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def read(path: str) -> list[str]:
    """The cache file's lines ([] when absent)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []
