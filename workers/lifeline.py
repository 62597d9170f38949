"""Child processes that die with the process that started them (Linux ``PR_SET_PDEATHSIG``).

A supervisor killed with SIGKILL runs no cleanup, so its children must go by
themselves: the kernel sends each the signal it asked for when the thread
that forked it ends.  A process we write (a Celery worker) asks for it
itself, at start, and checks its parent is still the one it was started by
(the parent may have died before the request); for a binary we don't write
(``redis-server``) :func:`preexec_die_with_parent` asks for it between fork
and exec.  Elsewhere than Linux these are no-ops.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from typing import Callable

#: environment variable naming the pid a child must die with
PARENT_PID_ENV = "CONVOY_DIE_WITH_PID"
_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    return libc.prctl


def set_parent_death_signal(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent ends; False where unsupported."""
    prctl = _prctl()
    return prctl is not None and prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """In a child started with :data:`PARENT_PID_ENV`: end with ``sig`` when that parent ends.

    The variable is removed so that this process's own children (test
    scripts) don't inherit the request.
    """
    expected = os.environ.pop(PARENT_PID_ENV, "")
    if not expected.isdigit() or not set_parent_death_signal(sig):
        return
    if os.getppid() != int(expected):  # the parent died before the request: too late to be told
        os.kill(os.getpid(), sig)


def preexec_die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when this thread ends.

    libc is loaded here, before the fork, so the child only makes one call.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def request() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return request
