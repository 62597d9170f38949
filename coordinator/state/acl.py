"""Redis ACL users for a lab: one user per role, each with only the commands, keys and channels it needs.

Pure logic on plain data (no Redis, no files): :func:`render_acl` gives the
text of a Redis ACL file (``aclfile`` in redis.conf), :func:`role_urls` the
URL each role's processes use.  ``convoy redis-acl`` writes both.

The roles:

* ``worker``: ``convoy worker`` and its per-device Celery workers.
* ``coordinator``: ``convoy coordinator`` (parent steps, the scheduler).
* ``submitter``: the CLI and ``submit_job()`` & co.: submit, status,
  results, poll, cancel, reservation extend/release.  It reads convoy's
  records (``%R~convoy:*``) and writes only jobs and what putting a job in
  line or cancelling it writes; it writes jobs' secrets but cannot read any
  (``convoy.secret:*``, outside ``convoy:``); it cannot take a device lock, read or
  consume the broker's queues (it may only push to the coordinator's queue:
  cancelling a multi job sends its cleanup step), subscribe to anything, or
  run an admin or dangerous command (``FLUSHALL``, ``CONFIG``, ``KEYS``...).
* ``server``: ``convoy server``, the users' one front door: what a submitter
  may, plus its own records: clients and their tokens (``convoy:client:*``,
  ``convoy:token:*``), idempotent submissions and LAVA's job numbers.  With
  a server, users hold no Redis credential at all; the submitter role is left
  for lab-side tools.

Lab components (workers, coordinator) own convoy's state and Celery's broker
and result keys; they too are refused admin and dangerous commands.  The
``default`` user is off.  Key permissions by kind (``%R~``, ``%W~``) need
Redis 7 or later.

Key patterns come from ``coordinator/state/keys.py`` (``convoy:*``), the
task queues (``tasks/canvas.py``: ``convoy.device.<name>`` and the
coordinator's queue, each with kombu's priority suffixes), kombu's Redis
transport (``_kombu.binding.*`` routing tables, ``unacked*`` for late acks,
``<worker>.celery.pidbox`` remote control, fanout pub/sub on ``/<db>.<exchange>``)
and Celery's Redis result backend (``celery-task-meta-*``, chord counters).
"""
from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from convoy.config.settings import COORDINATOR_QUEUE

ROLES: tuple[str, ...] = ("worker", "coordinator", "submitter", "server")
#: ACL user names by role
USERS: dict[str, str] = {role: f"convoy-{role}" for role in ROLES}

#: commands every role may run: connection handling, transactions, scripts (convoy's Lua runs under the
#: caller's permissions, key by key)
_BASE_COMMANDS = ("-@all", "+@connection", "+@transaction", "+@scripting", "+time",
                  "-@admin", "-@dangerous", "-script|flush", "-script|kill", "-function")
#: lab components: reads and writes of every data type, pub/sub, blocking reads; ``CLIENT UNBLOCK`` ends
#: a control watcher's blocking read at the end of its phase
_COMPONENT_COMMANDS = ("+@read", "+@write", "+@pubsub", "+@blocking",
                       "-@admin", "-@dangerous", "+client|unblock")
#: submitters: reads and writes (on their keys only), blocking stream reads (``poll``, ``wait``)
_SUBMITTER_COMMANDS = ("+@read", "+@write", "+@blocking", "-@pubsub", "-@admin", "-@dangerous",
                       "+client|unblock", "+publish")


def _component_keys(coordinator_queue: str) -> tuple[str, ...]:
    return (
        "~convoy:*",                      # convoy's own state (keys.py)
        "~convoy.secret:*",               # jobs' secrets (the task running a job reads them)
        "~convoy.device.*",               # device queues (with kombu's priority suffixes)
        f"~{coordinator_queue}*",         # the coordinator's queue
        "~_kombu.*",                      # kombu's routing tables and their deadlines
        "~unacked", "~unacked_index", "~unacked_mutex",  # late acks: unacknowledged messages
        "~*.celery.pidbox*",              # remote control queues (``celery inspect``)
        "~*.reply.celery.pidbox*",
        "~celery-task-meta-*", "~celery-taskset-meta-*", "~chord-unlock-*",  # the result backend
        "~*.j", "~*.t",                   # chord counters (``<group id>.j``, ``.t``)
    )


def _component_channels(db: int) -> tuple[str, ...]:
    # convoy's wake-ups (MultiNode groups) and kombu's fanout exchanges (events, remote control); a
    # pattern subscription (kombu's PSUBSCRIBE) must name its pattern literally
    return ("&convoy:*", f"&/{db}.*", f"&/{db}.celery.pidbox", f"&/{db}.celeryev/*",
            "&celery-task-meta-*")  # the result backend announces each stored result


def _submitter_keys(coordinator_queue: str) -> tuple[str, ...]:
    return (
        "%R~convoy:*",                    # read every record (status, results, device summaries, poll)
        "~convoy:job:*",                  # its jobs: records, phases, events, control (cancel), once-marks
        "~convoy:jobs",                   # the index of jobs
        "~convoy:scheduler:waiting", "~convoy:scheduler:events",  # in line for the scheduler, its wake-up
        "~convoy:queue:*:waiting",        # in line for a queue's devices
        "~convoy:timers",                 # the allocation deadline of a multi job
        "~convoy:parents:active",         # an aborted allocation's cleanup is watched
        "~convoy:group:*",                # a multi job's MultiNode group, created at submission
        "%W~convoy.secret:*",             # its jobs' secrets: written, never read back
        f"%W~{coordinator_queue}*",       # push (only) the parent's next step (a cancelled multi job's cleanup)
        f"~_kombu.binding.{coordinator_queue}",    # the route to that queue (kombu declares it as it sends)
        f"~_kombu.binding_permanent.{coordinator_queue}", "~_kombu.binding_deadlines",
    )


def _server_keys(coordinator_queue: str) -> tuple[str, ...]:
    return (
        *_submitter_keys(coordinator_queue),
        "~convoy:clients", "~convoy:client:*",  # clients, their permissions and their lists of jobs
        "~convoy:token:*",                      # access and refresh tokens (by digest, with TTLs)
        "~convoy:submission:*",                 # idempotent submissions
        "~convoy:lava:ids:*",                   # LAVA's job numbers for convoy's job ids
    )


def _submitter_channels(db: int) -> tuple[str, ...]:
    # Celery's task-sent event (Flower shows it) when it sends a cancelled multi job's cleanup
    return (f"&/{db}.celeryev/task.sent",)


@dataclass(frozen=True)
class AclUser:
    role: str
    name: str
    password_sha256: str
    keys: tuple[str, ...]
    channels: tuple[str, ...]
    commands: tuple[str, ...]

    def line(self) -> str:
        """The user's line of a Redis ACL file."""
        channels = ("resetchannels", *self.channels)
        return " ".join(("user", self.name, "reset", "on", f"#{self.password_sha256}", "resetkeys",
                         *self.keys, *channels, *self.commands))


def password_hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def new_password() -> str:
    return secrets.token_urlsafe(32)


def acl_users(passwords: Mapping[str, str], *, db: int = 0,
              coordinator_queue: str = COORDINATOR_QUEUE) -> list[AclUser]:
    """The lab's users, one per role of :data:`ROLES`; ``passwords`` by role (every role needs one)."""
    missing = [role for role in ROLES if not passwords.get(role)]
    if missing:
        raise ValueError(f"no password for {', '.join(missing)}")
    components = _component_keys(coordinator_queue)
    users = [AclUser(role, USERS[role], password_hash(passwords[role]), components, _component_channels(db),
                     (*_BASE_COMMANDS, *_COMPONENT_COMMANDS))
             for role in ("worker", "coordinator")]
    users.append(AclUser("submitter", USERS["submitter"], password_hash(passwords["submitter"]),
                         _submitter_keys(coordinator_queue), _submitter_channels(db),
                         (*_BASE_COMMANDS, *_SUBMITTER_COMMANDS)))
    users.append(AclUser("server", USERS["server"], password_hash(passwords["server"]),
                         _server_keys(coordinator_queue), _submitter_channels(db),
                         (*_BASE_COMMANDS, *_SUBMITTER_COMMANDS)))
    return users


def render_acl(passwords: Mapping[str, str], *, db: int = 0, coordinator_queue: str = COORDINATOR_QUEUE) -> str:
    """A Redis ACL file: the default user off, one user per role (passwords only as SHA-256 hashes).

    Redis refuses comments in an ACL file: the file holds user lines only."""
    lines = ["user default off resetkeys resetchannels -@all"]
    lines += [user.line() for user in acl_users(passwords, db=db, coordinator_queue=coordinator_queue)]
    return "\n".join(lines) + "\n"


def role_urls(base_url: str, passwords: Mapping[str, str]) -> dict[str, str]:
    """Each role's URL: ``base_url`` (scheme, host, port, db, query) with the role's user and password."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis:// or rediss:// URL: {parts.scheme}://…")
    host = parts.netloc.rpartition("@")[2]
    return {role: parts._replace(netloc=f"{quote(USERS[role], safe='')}:{quote(passwords[role], safe='')}@{host}")
            .geturl() for role in ROLES}


def url_db(url: str) -> int:
    """The database number of a Redis URL (its path), 0 when none."""
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def env_lines(urls: Mapping[str, str]) -> str:
    """The URLs file: ``CONVOY_REDIS_URL_<ROLE>=url`` lines (a shell or systemd ``EnvironmentFile``)."""
    return "".join(f"CONVOY_REDIS_URL_{role.upper()}={urls[role]}\n" for role in ROLES)


def parse_env_lines(text: str) -> dict[str, str]:
    """Role -> password from a URLs file written by :func:`env_lines` (so a re-render keeps them)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, _, url = line.strip().partition("=")
        role = name.removeprefix("CONVOY_REDIS_URL_").lower()
        if name.startswith("CONVOY_REDIS_URL_") and role in ROLES:
            password = urlsplit(url).password
            if password:
                from urllib.parse import unquote

                found[role] = unquote(password)
    return found
