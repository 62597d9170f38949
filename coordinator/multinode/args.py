"""The ``lava-*`` calls' arguments: parsed and checked in one place, with no I/O.

Both sides use it: the ``lava-*`` console scripts (to refuse a malformed call
at once and to know which interface's facts to send) and the worker's relay
(``tasks/run/relay.py``), which re-checks every call it is handed, whoever
sent it.  Standard library only: every command start imports it.

Names and values must be text that encodes as UTF-8: ``lava-send id k=$'\\xff'``
is refused here, naming the key, so no other member ever reads such bytes.
"""
from __future__ import annotations

from convoy.errors import MultiNodeUsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every command start
    from collections.abc import Mapping, Sequence
    from typing import Any

#: message ids: what LAVA's scripts use, and safe in a key, a channel payload and a cache file
MAX_MESSAGE_ID = 256
#: largest JSON of one member's data for one message (every waiter of the id receives it)
MAX_DATA = 64 * 1024

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
#: the message ``lava-network broadcast`` sends and ``collect`` waits for
NETWORK_MESSAGE = "network_info"


class Help(Exception):
    """``-h``/``--help``: print the usage, exit 0."""


class Call:
    """One parsed call: what to do (``action``) and its checked arguments."""

    __slots__ = ("action", "aliases", "data", "field", "file", "iface", "job", "message_id", "prog", "role",
                 "timeout")

    def __init__(self, prog: str, action: str) -> None:
        self.prog = prog
        self.action = action
        self.message_id = ""
        self.data: dict[str, str] = {}
        self.timeout: float | None = None
        self.role: str | None = None
        self.iface: str | None = None
        self.job = ""
        self.field = "ipv4"
        self.file: str | None = None
        self.aliases = False

    @property
    def waits(self) -> bool:
        """Blocks until other members act (the calls a cancel or a lost caller ends)."""
        return self.action in ("wait", "wait-all", "sync", "network-collect")


# --- checks ------------------------------------------------------------------
def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad_name(text: str) -> bool:
    """Empty, or holds a space, a control character or a byte that is not UTF-8."""
    return not text or any(c.isspace() or not c.isprintable() for c in text)


def check_message_id(message_id: Any) -> str:
    """``message_id`` if usable, else ``MultiNodeUsageError`` saying why (exit 2)."""
    if not isinstance(message_id, str) or _bad_name(message_id) or "=" in message_id \
            or len(message_id) > MAX_MESSAGE_ID:
        raise MultiNodeUsageError(f"bad message id {message_id!r}: 1-{MAX_MESSAGE_ID} printable characters "
                                  "(UTF-8), no spaces, no '='")
    return message_id


def check_role(role: Any) -> str:
    if not isinstance(role, str) or _bad_name(role):
        raise MultiNodeUsageError(f"bad role {role!r}: printable characters (UTF-8), no spaces")
    return role


def check_data(data: Mapping[str, str]) -> dict[str, str]:
    """``data`` if every key and value can be stored and handed to every waiter, else a usage error.

    Keys: printable UTF-8 text without spaces or ``=``; values: one line of
    UTF-8 text."""
    out: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str) or _bad_name(key) or "=" in key:
            raise MultiNodeUsageError(f"bad key {key!r}: printable characters (UTF-8), no spaces, no '='")
        if not isinstance(value, str):
            raise MultiNodeUsageError(f"bad value for {key!r}: text, not {type(value).__name__}")
        if not is_utf8(value):
            raise MultiNodeUsageError(f"bad value for {key!r}: not valid UTF-8 (send text; encode binary data, "
                                      "e.g. base64)")
        if "\n" in value or "\r" in value or "\0" in value:
            raise MultiNodeUsageError(f"bad value for {key!r}: values are one line")
        out[key] = value
    return out


def seconds(raw: str, what: str) -> float:
    """A positive, finite number of seconds, else a usage error naming ``what``."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise MultiNodeUsageError(f"{what} must be a positive number of seconds, not {raw!r}")
    return value


def valid_interface(name: str) -> bool:
    """Linux interface names: 1-15 characters of ``[A-Za-z0-9_.:@-]``."""
    return 0 < len(name) <= 15 and all(c.isascii() and (c.isalnum() or c in "_.:@-") for c in name)


# --- parsing -----------------------------------------------------------------
def _options(args: list[str], timeout_ok: bool) -> tuple[float | None, list[str]]:
    """Leading options (``--timeout S``, ``--timeout=S``, ``-h``, ``--``) and the rest."""
    timeout = None
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in ("-h", "--help"):
            raise Help
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
            timeout = seconds(raw, "--timeout")
            continue
        raise MultiNodeUsageError(f"unknown option {opt!r}")
    return timeout, args


def _message_id(args: list[str]) -> str:
    if not args:
        raise MultiNodeUsageError("missing message id")
    return check_message_id(args.pop(0))


def _key_values(args: list[str]) -> dict[str, str]:
    """``key=value`` arguments, split on the first ``=``; values may hold spaces and ``=``."""
    data: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key or any(c.isspace() or not c.isprintable() for c in key):
            raise MultiNodeUsageError(f"bad key=value argument {arg!r}: the key must be non-empty, printable "
                                      "(UTF-8), without spaces")
        data[key] = value
    return check_data(data)


def _no_more(args: list[str]) -> None:
    if args:
        raise MultiNodeUsageError(f"unexpected argument {args[0]!r}")


def _iface(args: list[str], required: str | None) -> str | None:
    if not args:
        if required:
            raise MultiNodeUsageError(required)
        return None
    iface = args.pop(0)
    if not valid_interface(iface):
        raise MultiNodeUsageError(f"bad interface name {iface!r}")
    return iface


def parse(prog: str, argv: Sequence[str], *, device_ip: str | None = None) -> Call:
    """Check one call; raises ``Help`` or ``MultiNodeUsageError`` (exit 2, with the usage)."""
    if prog not in USAGE:
        raise MultiNodeUsageError(f"unknown MultiNode command {prog!r} (known: {', '.join(USAGE)})")
    args = [a if isinstance(a, str) else str(a) for a in argv]
    if prog == "lava-network":
        return _network(prog, args, device_ip)
    timeout, args = _options(args, timeout_ok=prog in ("lava-wait", "lava-wait-all", "lava-sync"))
    call = Call(prog, prog[len("lava-"):])
    call.timeout = timeout
    if prog == "lava-send":
        call.message_id = _message_id(args)
        call.data = _key_values(args)
        args = []
    elif prog in ("lava-wait", "lava-sync"):
        call.message_id = _message_id(args)
    elif prog == "lava-wait-all":
        call.message_id = _message_id(args)
        call.role = check_role(args.pop(0)) if args else None
    elif prog == "lava-group":
        call.role = args.pop(0) if args else None
    elif prog == "lava-role":
        what = args.pop(0) if args else None
        if what not in (None, "list"):
            raise MultiNodeUsageError(f"unknown argument {what!r} (only 'list')")
        call.action = "role-list" if what else "role"
    elif prog == "lava-echo-ipv4":
        call.iface = _iface(args, "missing interface")
    _no_more(args)
    return call


def _network(prog: str, args: list[str], device_ip: str | None) -> Call:
    if not args:
        raise MultiNodeUsageError("missing sub-command")
    if args[0] in ("-h", "--help"):
        raise Help
    sub = args.pop(0)
    call = Call(prog, f"network-{sub}")
    if sub == "broadcast":
        call.message_id = NETWORK_MESSAGE
        call.iface = _iface(args, None if device_ip else "missing interface (or set DEVICE_IP)")
    elif sub == "collect":
        call.message_id = NETWORK_MESSAGE
        call.timeout, args = _options(args, timeout_ok=True)
        call.iface = _iface(args, None)
        call.role = check_role(args.pop(0)) if args else None
    elif sub == "query":
        if not args:
            raise MultiNodeUsageError("query needs a job id (see lava-group)")
        call.job = args.pop(0)
        call.field = args.pop(0) if args else "ipv4"
    elif sub in ("hosts", "alias-hosts"):
        call.action = "network-hosts"
        call.aliases = sub == "alias-hosts"
        call.file = args.pop(0) if args else None
    else:
        raise MultiNodeUsageError(f"unknown sub-command {sub!r}")
    _no_more(args)
    return call


def echo_ipv4(iface: str, device_ip: str | None, interfaces: Mapping[str, Any] | None) -> str | None:
    """``lava-echo-ipv4``'s answer: ``DEVICE_IP`` if set, else the interface's address as the caller saw it."""
    if device_ip:
        return device_ip
    info = (interfaces or {}).get(iface)
    value = info.get("ipv4") if isinstance(info, dict) else None
    return value if isinstance(value, str) and value else None
