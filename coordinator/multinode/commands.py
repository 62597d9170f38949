"""The ``lava-*`` console scripts: LAVA's MultiNode API on convoy's Redis store.

Each command is a short-lived process, so this module imports only the
standard library and convoy's cheap modules (never redis-py or Celery: see
``resp.py``).  Environment, set by the runner for every test command:

``CONVOY_REDIS_URL``, ``CONVOY_GROUP_ID``, ``CONVOY_JOB_ID``, ``CONVOY_ROLE``,
optional ``DEVICE_IP``, ``CONVOY_MULTINODE_CACHE`` (default
``/tmp/lava_multi_node_cache.txt``), ``CONVOY_MULTINODE_NETWORK_CACHE``
(default ``/tmp/lava_multi_node_network_cache.txt``),
``CONVOY_MULTINODE_TIMEOUT`` (seconds; else the group's timeout).

Exit codes: 0 done; 1 failed (timeout, a member failed, Redis unreachable,
not in a group); 2 malformed call (usage on stderr), including a message id,
key, value or role that is not UTF-8 text (``lava-send id k=$'\\xff'`` is
refused, naming the key, so no other member ever reads such bytes).  Never a
traceback (``CONVOY_DEBUG=1`` shows one for an internal error).

Redis unreachable (refused, gone, or lost mid-wait): every command retries
until its own deadline - a wait's ``--timeout`` (else
``CONVOY_MULTINODE_TIMEOUT``, else the group's timeout once known), other
commands ``CONVOY_MULTINODE_TIMEOUT`` or 30 s - and then fails with exit 1
and ``cannot reach <url without password>: ...``.
"""
from __future__ import annotations

import os
import sys
import time

from convoy.coordinator.multinode import cachefile, store
from convoy.coordinator.multinode.resp import RespConn
from convoy.errors import ConvoyError, GroupMemberFailed, MultiNodeUsageError, ServiceUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every command start
    from collections.abc import Callable, Sequence
    from typing import Any

USAGE = {
    "lava-send": "lava-send <message-id> [key1=val1 [key2=val2] ...]",
    "lava-wait": "lava-wait [--timeout SECONDS] <message-id>",
    "lava-wait-all": "lava-wait-all [--timeout SECONDS] <message-id> [<role>]",
    "lava-sync": "lava-sync [--timeout SECONDS] <message-id>",
    "lava-group": "lava-group [<role>]",
    "lava-role": "lava-role [list]",
    "lava-self": "lava-self",
    "lava-network": ("lava-network broadcast [<interface>] | collect [--timeout SECONDS] [<interface> [<role>]]"
                     " | query <job-id> [<field>] | hosts [<file>] | alias-hosts [<file>]"),
    "lava-echo-ipv4": "lava-echo-ipv4 <interface>",
}


class _Help(Exception):
    pass


class Env:
    """The command's context, read from the environment the runner sets."""

    def __init__(self, environ: dict[str, str] | None = None, prog: str = "lava") -> None:
        e = os.environ if environ is None else environ
        self.prog = prog
        self.redis_url = e.get("CONVOY_REDIS_URL", "")
        self.group_id = e.get("CONVOY_GROUP_ID", "")
        self.job_id = e.get("CONVOY_JOB_ID", "")
        self.role = e.get("CONVOY_ROLE", "")
        self.device_ip = e.get("DEVICE_IP", "")
        self.cache = e.get("CONVOY_MULTINODE_CACHE") or cachefile.DEFAULT_CACHE
        self.network_cache = e.get("CONVOY_MULTINODE_NETWORK_CACHE") or cachefile.DEFAULT_NETWORK_CACHE
        raw = e.get("CONVOY_MULTINODE_TIMEOUT", "")
        self.timeout = _seconds(raw, "CONVOY_MULTINODE_TIMEOUT") if raw else None
        self._conn: RespConn | None = None

    def need(self, *names: str) -> None:
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            var = {"redis_url": "CONVOY_REDIS_URL", "group_id": "CONVOY_GROUP_ID", "job_id": "CONVOY_JOB_ID"}
            raise ConvoyError(", ".join(var.get(n, n) for n in missing)
                              + " not set: MultiNode commands run inside a convoy MultiNode test job")

    def deadline(self) -> float:
        """When a command that does not wait gives up reconnecting to Redis."""
        return time.monotonic() + (self.timeout if self.timeout is not None else store.CONNECT_BUDGET)

    def conn(self) -> RespConn:
        self.need("redis_url", "group_id")
        if self._conn is None:
            try:
                self._conn = RespConn(self.redis_url, name=f"{self.prog}:{self.group_id}:{self.job_id}")
            except ValueError as exc:
                raise ConvoyError(f"CONVOY_REDIS_URL: {exc}") from None
        return self._conn


# --- argument checks --------------------------------------------------------
def _seconds(raw: str, what: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise MultiNodeUsageError(f"{what} must be a positive number of seconds, not {raw!r}")
    return value


def _options(args: list[str], timeout_ok: bool) -> tuple[float | None, list[str]]:
    """Leading options (``--timeout S``, ``--timeout=S``, ``-h``, ``--``) and the rest."""
    timeout = None
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in ("-h", "--help"):
            raise _Help
        if opt == "--":
            break
        if timeout_ok and opt.startswith("--timeout"):
            if opt == "--timeout":
                if not args:
                    raise MultiNodeUsageError("--timeout needs a number of seconds")
                raw = args.pop(0)
            elif opt.startswith("--timeout="):
                raw = opt.split("=", 1)[1]
            else:
                raise MultiNodeUsageError(f"unknown option {opt!r}")
            timeout = _seconds(raw, "--timeout")
            continue
        raise MultiNodeUsageError(f"unknown option {opt!r}")
    return timeout, args


def _message_id(args: list[str]) -> str:
    if not args:
        raise MultiNodeUsageError("missing message id")
    return store.check_message_id(args.pop(0))


def _key_values(args: list[str]) -> dict[str, str]:
    """``key=value`` arguments, split on the first ``=``; values may hold spaces and ``=``.

    Keys and values must be UTF-8 text (see ``store.check_data``)."""
    data: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key or any(c.isspace() or not c.isprintable() for c in key):
            raise MultiNodeUsageError(f"bad key=value argument {arg!r}: the key must be non-empty, printable "
                                      "(UTF-8), without spaces")
        data[key] = value
    return store.check_data(data)


def _no_more(args: list[str]) -> None:
    if args:
        raise MultiNodeUsageError(f"unexpected argument {args[0]!r}")


def _out(lines: Sequence[str]) -> None:
    """Lines to stdout as UTF-8 whatever the locale (an ASCII locale must not fail on a value)."""
    if lines:
        text = "".join(line + "\n" for line in lines)
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:  # a text stream without bytes underneath (called in-process)
            sys.stdout.write(text)
        else:
            sys.stdout.flush()
            buffer.write(text.encode("utf-8", "surrogateescape"))
    sys.stdout.flush()


# --- recorded waits ---------------------------------------------------------
def _recorded(env: Env, name: str, message_id: str, wait: Callable[[], Any]) -> Any:
    """Run a wait and log a failure as an API call (the store logs a pass with the release)."""
    try:
        result = wait()
    except ConvoyError as exc:
        detail = str(exc)
        if isinstance(exc, GroupMemberFailed):
            exc.args = (f"{exc}; stopped waiting for {message_id!r}",)
        if not isinstance(exc, ServiceUnavailable):
            try:
                store.record_call(env.conn(), env.group_id, env.job_id, name, "fail", detail,
                                  deadline=time.monotonic() + 2.0)
            except Exception:  # noqa: BLE001, S110 - best effort: the wait's own error is what matters
                pass
        raise
    return result


def _timeout(env: Env, option: float | None) -> float | None:
    return option if option is not None else env.timeout


# --- the commands -----------------------------------------------------------
def _send(prog: str, env: Env, args: list[str]) -> int:
    _, args = _options(args, timeout_ok=False)
    mid = _message_id(args)
    data = _key_values(args)
    env.need("redis_url", "group_id", "job_id")
    store.send(env.conn(), env.group_id, env.job_id, mid, data, deadline=env.deadline())
    return 0


def _wait(prog: str, env: Env, args: list[str]) -> int:
    option, args = _options(args, timeout_ok=True)
    mid = _message_id(args)
    _no_more(args)
    env.need("redis_url", "group_id", "job_id")
    received = _recorded(env, f"multinode-wait-{mid}", mid, lambda: store.wait_any(
        env.conn(), env.group_id, mid, timeout=_timeout(env, option),
        record=(env.job_id, f"multinode-wait-{mid}")))
    cachefile.write(env.cache, cachefile.wait_lines(received))
    return 0


def _wait_all(prog: str, env: Env, args: list[str]) -> int:
    option, args = _options(args, timeout_ok=True)
    mid = _message_id(args)
    role = args.pop(0) if args else None
    _no_more(args)
    if role is not None:
        store.check_role(role)
    env.need("redis_url", "group_id", "job_id")
    received = _recorded(env, f"multinode-wait-all-{mid}", mid, lambda: store.wait_all(
        env.conn(), env.group_id, mid, role, timeout=_timeout(env, option),
        record=(env.job_id, f"multinode-wait-all-{mid}")))
    cachefile.write(env.cache, cachefile.wait_all_lines(received))
    return 0


def _sync(prog: str, env: Env, args: list[str]) -> int:
    option, args = _options(args, timeout_ok=True)
    mid = _message_id(args)
    _no_more(args)
    env.need("redis_url", "group_id", "job_id")
    received = _recorded(env, f"multinode-sync-{mid}", mid, lambda: store.sync(
        env.conn(), env.group_id, env.job_id, mid, timeout=_timeout(env, option),
        record=f"multinode-sync-{mid}"))
    cachefile.write(env.cache, cachefile.wait_all_lines(received))
    return 0


def _group(prog: str, env: Env, args: list[str]) -> int:
    _, args = _options(args, timeout_ok=False)
    role = args.pop(0) if args else None
    _no_more(args)
    group = store.load_group(env.conn(), env.group_id, deadline=env.deadline())
    if role is None:
        _out([f"{job}\t{r}" for job, r in group.members])
        return 0
    jobs = [job for job, r in group.members if r == role]
    _out(jobs)
    return 0 if jobs else 1


def _role(prog: str, env: Env, args: list[str]) -> int:
    _, args = _options(args, timeout_ok=False)
    what = args.pop(0) if args else None
    _no_more(args)
    if what not in (None, "list"):
        raise MultiNodeUsageError(f"unknown argument {what!r} (only 'list')")
    if what is None and env.role:
        _out([env.role])
        return 0
    group = store.load_group(env.conn(), env.group_id, deadline=env.deadline())
    if what == "list":
        _out(group.roles())
        return 0
    env.need("job_id")
    role = group.role_of(env.job_id)
    if role is None:
        raise ConvoyError(f"job {env.job_id!r} is not a member of MultiNode group {env.group_id!r}")
    _out([role])
    return 0


def _self(prog: str, env: Env, args: list[str]) -> int:
    _, args = _options(args, timeout_ok=False)
    _no_more(args)
    env.need("job_id")
    _out([env.job_id])
    return 0


def _echo_ipv4(prog: str, env: Env, args: list[str]) -> int:
    from convoy.coordinator.multinode import network

    _, args = _options(args, timeout_ok=False)
    if not args:
        raise MultiNodeUsageError("missing interface")
    iface = args.pop(0)
    _no_more(args)
    if not network.valid_interface(iface):
        raise MultiNodeUsageError(f"bad interface name {iface!r}")
    address = env.device_ip or network.interface_ipv4(iface)
    if not address:
        raise ConvoyError(f"no IPv4 address on interface {iface!r}")
    _out([address])
    return 0


def _network(prog: str, env: Env, args: list[str]) -> int:
    from convoy.coordinator.multinode import netcmd

    return netcmd.run(env, args)


def _main(prog: str, run: Callable[[str, Env, list[str]], int], argv: Sequence[str] | None) -> int:
    code = _run(prog, run, argv)
    if argv is None:  # a console script: this process is ours alone
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """Flush and leave without interpreter teardown (~8 ms CPU per call: N members end at once)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1
    os._exit(code)


def _run(prog: str, run: Callable[[str, Env, list[str]], int], argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env: Env | None = None
    try:
        env = Env(prog=prog)
        return run(prog, env, args)
    except _Help:
        _out([f"usage: {USAGE[prog]}"])
        return 0
    except MultiNodeUsageError as exc:
        sys.stderr.write(f"{prog}: {exc}\nusage: {USAGE[prog]}\n")
        return exc.exit_code
    except ConvoyError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 - a command never dies with a traceback
        if os.environ.get("CONVOY_DEBUG"):
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"{prog}: error: {type(exc).__name__}: {exc}\n")
        return 1
    finally:
        if env is not None and env._conn is not None:
            env._conn.close()


def lava_send(argv: Sequence[str] | None = None) -> int:
    """``lava-send <message-id> [key=value ...]``: store this member's data, never blocks."""
    return _main("lava-send", _send, argv)


def lava_wait(argv: Sequence[str] | None = None) -> int:
    """``lava-wait <message-id>``: until any member sent it; ``key=value`` lines to the cache."""
    return _main("lava-wait", _wait, argv)


def lava_wait_all(argv: Sequence[str] | None = None) -> int:
    """``lava-wait-all <message-id> [role]``: until all (of role) sent it; ``job:key=value`` lines."""
    return _main("lava-wait-all", _wait_all, argv)


def lava_sync(argv: Sequence[str] | None = None) -> int:
    """``lava-sync <message-id>``: send + wait-all, reusable in a loop."""
    return _main("lava-sync", _sync, argv)


def lava_group(argv: Sequence[str] | None = None) -> int:
    """``lava-group [role]``: ``job\\trole`` lines, or the job ids of a role (exit 1 if none)."""
    return _main("lava-group", _group, argv)


def lava_role(argv: Sequence[str] | None = None) -> int:
    """``lava-role [list]``: this member's role, or every role of the group."""
    return _main("lava-role", _role, argv)


def lava_self(argv: Sequence[str] | None = None) -> int:
    """``lava-self``: this member's job id."""
    return _main("lava-self", _self, argv)


def lava_network(argv: Sequence[str] | None = None) -> int:
    """``lava-network broadcast|collect|query|hosts``: share and query members' addresses."""
    return _main("lava-network", _network, argv)


def lava_echo_ipv4(argv: Sequence[str] | None = None) -> int:
    """``lava-echo-ipv4 <interface>``: ``DEVICE_IP`` if set, else the interface's IPv4."""
    return _main("lava-echo-ipv4", _echo_ipv4, argv)
