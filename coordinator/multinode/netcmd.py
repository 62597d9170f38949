"""``lava-network``: broadcast this member's addresses, collect and query the group's.

``broadcast`` is a ``lava-send network_info <fields>``; ``collect`` a
``lava-wait-all network_info [role]`` that writes the network cache file
(``<job_id>:key=value`` lines); ``query`` and ``hosts`` read the stored
broadcasts from Redis (so they work even without a prior ``collect``).
Members are named by job id, as ``lava-group`` prints them.
"""
from __future__ import annotations

from convoy.coordinator.multinode import cachefile, network, store
from convoy.errors import ConvoyError, MultiNodeUsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every command start
    from typing import Any

MESSAGE = "network_info"


def _iface(args: list[str], required: bool) -> str | None:
    if not args:
        if required:
            raise MultiNodeUsageError("missing interface (or set DEVICE_IP)")
        return None
    iface = args.pop(0)
    if not network.valid_interface(iface):
        raise MultiNodeUsageError(f"bad interface name {iface!r}")
    return iface


def _hosts_lines(env: Any, aliases: bool) -> list[str]:
    deadline = env.deadline()
    group = store.load_group(env.conn(), env.group_id, deadline=deadline)
    received = store.read_message(env.conn(), env.group_id, MESSAGE, deadline=deadline)
    lines: list[str] = []
    counts: dict[str, int] = {}
    for job, role in group.members:
        counts[role] = counts.get(role, 0) + 1
        ipv4 = received.get(job, {}).get("ipv4")
        if ipv4:
            lines.append(f"{ipv4}\t{job}" + (f"\t{role}{counts[role]:02d}" if aliases else ""))
    return lines


def run(env: Any, args: list[str]) -> int:
    """Dispatch a ``lava-network`` sub-command; returns the exit code."""
    from convoy.coordinator.multinode.commands import _no_more, _options, _out, _recorded, _timeout

    if not args:
        raise MultiNodeUsageError("missing sub-command")
    if args[0] in ("-h", "--help"):
        _options(args[:1], timeout_ok=False)
    sub = args.pop(0)
    if sub == "broadcast":
        iface = _iface(args, required=not env.device_ip)
        _no_more(args)
        env.need("redis_url", "group_id", "job_id")
        info = network.interface_info(iface or "", env.device_ip or None)
        if "ipv4" not in info:
            raise ConvoyError(f"no IPv4 address on interface {iface!r}")
        store.send(env.conn(), env.group_id, env.job_id, MESSAGE, info, deadline=env.deadline())
        return 0
    if sub == "collect":
        option, args = _options(args, timeout_ok=True)
        _iface(args, required=False)
        role = store.check_role(args.pop(0)) if args else None
        _no_more(args)
        env.need("redis_url", "group_id", "job_id")
        received = _recorded(env, "multinode-network-collect", MESSAGE, lambda: store.wait_all(
            env.conn(), env.group_id, MESSAGE, role, timeout=_timeout(env, option),
            record=(env.job_id, "multinode-network-collect")))
        cachefile.write(env.network_cache, cachefile.wait_all_lines(received))
        return 0
    if sub == "query":
        if not args:
            raise MultiNodeUsageError("query needs a job id (see lava-group)")
        job = args.pop(0)
        field = args.pop(0) if args else "ipv4"
        _no_more(args)
        data = store.read_message(env.conn(), env.group_id, MESSAGE, deadline=env.deadline()).get(job)
        if data is None:
            raise ConvoyError(f"no network data from {job!r} (has it run 'lava-network broadcast'?)")
        value = data.get(field, data.get(field.lower()))
        if value is None:
            raise ConvoyError(f"{job!r} broadcast no {field!r} (it sent: {', '.join(data)})")
        _out([value])
        return 0
    if sub in ("hosts", "alias-hosts"):
        target = args.pop(0) if args else None
        _no_more(args)
        lines = _hosts_lines(env, aliases=sub == "alias-hosts")
        if target:
            with open(target, "a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines))
        else:
            _out(lines)
        return 0
    raise MultiNodeUsageError(f"unknown sub-command {sub!r}")


__all__ = ["MESSAGE", "run"]
