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

Each script runs through redis-py's ``register_script`` (EVALSHA, loading
the script after a ``NOSCRIPT``), registered on first use.
"""
from __future__ import annotations

import os
import threading
from typing import Any

import redis
from redis.commands.core import Script as RedisScript

#: where the ``.lua`` files are installed (``[options.package_data]`` in setup.cfg)
LUA_DIR = os.path.join(os.path.dirname(__file__), "lua")
#: the helpers every script starts with (``keep``, ``with_role``, ``log_pass``)
PRELUDE = "keep_ttl.lua"


def read_lua(name: str) -> str:
    """The text of ``lua/<name>``."""
    with open(os.path.join(LUA_DIR, name), encoding="utf-8") as f:
        return f.read()


class Script:
    """A Lua script made of ``lua/`` files (the prelude first), callable on any client."""

    def __init__(self, *files: str) -> None:
        self.files = (PRELUDE, *files)
        self._script: RedisScript | None = None
        self._lock = threading.Lock()

    @property
    def src(self) -> str:
        return "".join(read_lua(name) for name in self.files)

    def __call__(self, client: redis.Redis, keys: list[str], args: list[Any]) -> Any:
        if self._script is None:
            with self._lock:
                if self._script is None:
                    self._script = client.register_script(self.src)
        return self._script(keys=keys, args=args, client=client)


SEND = Script("send.lua")
LOG = Script("log.lua")
WAIT_CHECK = Script("wait_check.lua")
SYNC_ENTER = Script("sync_state.lua", "sync_enter.lua")
SYNC_CHECK = Script("sync_state.lua", "sync_check.lua")
FAIL = Script("fail.lua")
CREATE = Script("create.lua")
EXPIRE = Script("expire.lua")
