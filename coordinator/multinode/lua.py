"""The Lua scripts behind the MultiNode store (``lua/*.lua``): one atomic round trip per operation.

Why Lua: a send, a sync arrival or a failure changes several keys and then
publishes a wake-up; doing it in one script makes the state change and the
wake-up atomic (no waiter can read half of it) and costs one round trip.
Every script takes ``KEYS[1]`` = group info, ``KEYS[2]`` = group members, so
it can refuse unknown groups and non-members and can give keys created late
the group's TTL (see ``group.expire_group``).  Each file's header names its
KEYS, ARGV and reply.

Wake-up payloads on the group channel (hints only, never state):
``m <message-id>`` (a send), ``s <generation> <message-id>`` (a sync
generation completed), ``f <job-id>`` (a member failed).

The files are read on a script's first call (the ``lava-*`` commands start
in milliseconds and use only a few of them).
"""
from __future__ import annotations

import os

try:  # the builtin module: hashlib would load OpenSSL at every command start
    from _sha1 import sha1
except ImportError:  # pragma: no cover - CPython always has it
    from hashlib import sha1

from convoy.coordinator.multinode.resp import RespError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every command start
    from typing import Any

    from convoy.coordinator.multinode.resp import RespConn

#: where the ``.lua`` files are installed (``[options.package_data]`` in setup.cfg)
LUA_DIR = os.path.join(os.path.dirname(__file__), "lua")
#: the helpers every script starts with (``keep``, ``with_role``, ``log_pass``)
PRELUDE = "keep_ttl.lua"


def read_lua(name: str) -> str:
    """The text of ``lua/<name>``."""
    with open(os.path.join(LUA_DIR, name), encoding="utf-8") as f:
        return f.read()


class Script:
    """A Lua script made of ``lua/`` files (the prelude first), run with EVALSHA (EVAL after a NOSCRIPT)."""

    def __init__(self, *files: str) -> None:
        self.files = (PRELUDE, *files)
        self._loaded: tuple[str, str] | None = None  # source and its SHA1, read on first use

    def _load(self) -> tuple[str, str]:
        if self._loaded is None:
            src = "".join(read_lua(name) for name in self.files)
            self._loaded = (src, sha1(src.encode("utf-8")).hexdigest())
        return self._loaded

    @property
    def src(self) -> str:
        return self._load()[0]

    @property
    def sha(self) -> str:
        return self._load()[1]

    def __call__(self, conn: RespConn, keys: list[str], args: list[Any]) -> Any:
        try:
            return conn.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return conn.execute_command("EVAL", self.src, len(keys), *keys, *args)


SEND = Script("send.lua")
LOG = Script("log.lua")
WAIT_CHECK = Script("wait_check.lua")
SYNC_ENTER = Script("sync_state.lua", "sync_enter.lua")
SYNC_CHECK = Script("sync_state.lua", "sync_check.lua")
FAIL = Script("fail.lua")
CREATE = Script("create.lua")
EXPIRE = Script("expire.lua")
