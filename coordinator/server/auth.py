"""Who is asking, and what they may do: pure rules over a client's permissions (no Redis, no HTTP).

Permissions per client (``convoy clients add|set``), each a table of queue -> limit where ``*`` stands
for every queue not named:

* ``max_priority``: the highest ``job_priority`` a job may ask for on that queue (unnamed: 0);
* ``max_reservation_time``: the longest ``reserve_data.timeout`` (seconds) on that queue (unnamed: the
  deployment's ``CONVOY_MAX_RESERVATION``).

A job is checked against every queue it uses (a multi job: each child's queue, or its LAVA
``device_type``): the strictest limit holds.  Anonymous callers (no token) get the defaults: priority 0,
the deployment's reservation cap.  Admins are not limited.  A restricted queue (``convoy
restricted-queues add``) takes only jobs of clients whose ``allowed_queues`` names it.  A multi job's
children are checked against their parent's submitter: a child can never do what its parent may not,
and a refusal names the child's field path.

Who sees what: a client sees, follows and cancels the jobs it submitted; an admin every job; a caller
without a token sees an anonymously submitted job by its id (a random UUID, as Testflinger does) and can
neither list jobs nor cancel or change one.  A job stored without ``submitted_by`` (put in Redis by lab
tooling, not through the server) is for admins only.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from convoy.config.jobs import GUEST_QUEUE, is_multi
from convoy.coordinator.state.clients import ANONYMOUS, Client
from convoy.errors import FieldError


@dataclass(frozen=True)
class Identity:
    """The caller of one request: a client, or anonymous (``client`` None)."""

    client: Client | None = None

    @property
    def name(self) -> str:
        return self.client.client_id if self.client else ANONYMOUS

    @property
    def admin(self) -> bool:
        return bool(self.client and self.client.admin)

    @property
    def anonymous(self) -> bool:
        return self.client is None


def limit_for(table: Mapping[str, float], queue: str, default: float) -> float:
    """The queue's own limit, else the ``*`` limit, else ``default``."""
    if queue in table:
        return table[queue]
    return table.get("*", default)


def job_queues(job: dict[str, Any]) -> list[str]:
    """The queues a normalised job uses: its own, or each child's queue (or LAVA device_type)."""
    if not is_multi(job):
        return [job.get("job_queue") or GUEST_QUEUE]
    children = job.get("provision_data", {}).get("jobs", [])
    return [c.get("job_queue") or c.get("device_type") or GUEST_QUEUE for c in children] or ["multi"]


def _queue_field(job: dict[str, Any], index: int | None) -> str:
    if index is None:
        return "job_queue"
    child = job.get("provision_data", {}).get("jobs", [])[index]
    lava_form = child.get("device_type") and child.get("job_queue") in (None, child.get("device_type"))
    return f"provision_data.jobs[{index}]." + ("device_type" if lava_form else "job_queue")


def queue_errors(identity: Identity, job: dict[str, Any], restricted: set[str] | frozenset[str]) -> list[FieldError]:
    """A refusal for each restricted queue the job (or a child) uses that ``identity`` is not allowed."""
    if identity.admin or not restricted:
        return []
    allowed = set(identity.client.allowed_queues) if identity.client else set()
    who = f"client {identity.name}" if identity.client else "anonymous users (no token)"
    errors = []
    indexed: list[tuple[int | None, str]] = list(enumerate(job_queues(job))) if is_multi(job) \
        else [(None, job_queues(job)[0])]
    for index, queue in indexed:
        if queue in restricted and queue not in allowed:
            role = job["provision_data"]["jobs"][index].get("role") if index is not None else None
            errors.append(FieldError(_queue_field(job, index), f"queue {queue!r}" + (f" (role {role})" if role else "")
                                     + f" is restricted and {who} is not allowed it"))
    return errors


def permission_errors(identity: Identity, job: dict[str, Any], max_reservation: float,
                      restricted: set[str] | frozenset[str] = frozenset()) -> list[FieldError]:
    """Every limit a normalised job exceeds for ``identity`` (empty: allowed), each naming field and limit."""
    if identity.admin:
        return []
    priorities = identity.client.max_priority if identity.client else {}
    reservations = identity.client.max_reservation_time if identity.client else {}
    who = f"client {identity.name}" if identity.client else "anonymous users (no token)"
    errors: list[FieldError] = queue_errors(identity, job, restricted)
    queues = job_queues(job)

    def priority_limit(queue_list: list[str]) -> tuple[int, str]:
        return min((int(limit_for(priorities, q, 0)), q) for q in queue_list)

    wanted = int(job.get("job_priority") or 0)
    if wanted:
        limit, queue = priority_limit(queues)
        if wanted > limit:
            errors.append(FieldError("job_priority", f"priority {wanted} is above max_priority {limit} of {who} "
                                                     f"on queue {queue!r}"))
    if is_multi(job):
        for i, child in enumerate(job.get("provision_data", {}).get("jobs", [])):
            wanted = int(child.get("job_priority") or 0)
            if wanted:
                limit, queue = priority_limit([queues[i]])
                if wanted > limit:
                    errors.append(FieldError(f"provision_data.jobs[{i}].job_priority",
                                             f"priority {wanted} is above max_priority {limit} of {who} "
                                             f"on queue {queue!r}"))
    reserve = job.get("reserve_data")
    if isinstance(reserve, dict) and reserve.get("timeout") is not None:
        seconds = float(reserve["timeout"])
        limit_s, queue = min((limit_for(reservations, q, max_reservation), q) for q in queues)
        if seconds > limit_s:
            errors.append(FieldError("reserve_data.timeout", f"reservation of {seconds:g}s is above "
                                                             f"max_reservation_time {limit_s:g}s of {who} "
                                                             f"on queue {queue!r}"))
    return errors


def reservation_cap(identity: Identity, job: dict[str, Any], max_reservation: float) -> float:
    """The longest total reservation ``identity`` may hold on a job (for ``reserve extend``)."""
    if identity.admin:
        return max_reservation
    table = identity.client.max_reservation_time if identity.client else {}
    return min(limit_for(table, q, max_reservation) for q in job_queues(job))


def may_see(identity: Identity, submitter: str | None) -> bool:
    """Whether ``identity`` may see (and follow) a job submitted by ``submitter`` (None: not recorded)."""
    if identity.admin:
        return True
    return submitter is not None and submitter == identity.name


def may_change(identity: Identity, submitter: str | None) -> bool:
    """Whether ``identity`` may cancel a job or change its reservation: its own job, with a token."""
    return not identity.anonymous and may_see(identity, submitter)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(client_id, secret)`` from an ``Authorization: Basic ...`` header, else None."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header (Testflinger's client sends the bare token too)."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip() or None
    if rest or scheme.lower() == "basic":
        return None
    return scheme  # a bare token
