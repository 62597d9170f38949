"""Every Redis key and channel convoy uses, in one place.

Keys are namespaced under ``convoy:`` so a shared Redis stays readable.  Each
helper returns the key for one object; nothing else in the code base builds
key strings by hand.
"""
from __future__ import annotations

PREFIX = "convoy"

# --- jobs -----------------------------------------------------------------
#: sorted set: job id -> submission time (all jobs, newest last)
JOBS = f"{PREFIX}:jobs"


def job(job_id: str) -> str:
    """Hash: the job record (state, queue, document, device_info, ...)."""
    return f"{PREFIX}:job:{job_id}"


def job_phases(job_id: str) -> str:
    """Hash: phase name -> JSON {status (exit code), started, ended}."""
    return f"{PREFIX}:job:{job_id}:phases"


def job_output(job_id: str, phase: str) -> str:
    """String: output text of one phase (appended as it arrives)."""
    return f"{PREFIX}:job:{job_id}:output:{phase}"


def job_events(job_id: str) -> str:
    """Stream: state changes and output chunks, read by ``poll`` and waiters."""
    return f"{PREFIX}:job:{job_id}:events"


def job_control(job_id: str) -> str:
    """Stream: signals to the task that runs the job (cancel, test, release)."""
    return f"{PREFIX}:job:{job_id}:control"


def job_children(job_id: str) -> str:
    """List: child job ids of a multi job, in ``provision_data.jobs`` order."""
    return f"{PREFIX}:job:{job_id}:children"


def job_once(job_id: str, what: str) -> str:
    """String set with NX: makes a one-time action (abort, cleanup) happen once."""
    return f"{PREFIX}:job:{job_id}:once:{what}"


def job_artifacts(job_id: str) -> str:
    """String (binary): the tar.gz of what the job's commands left in ``artifacts/``."""
    return f"{PREFIX}:job:{job_id}:artifacts"


def job_step_lease(job_id: str) -> str:
    """String with a TTL (a lease): the coordinator running one of the parent's steps now."""
    return f"{PREFIX}:job:{job_id}:step-lease"


def job_secrets(job_id: str) -> str:
    """Hash: the job's ``test_data.secrets`` (name -> value), apart from its record.

    Outside ``convoy:`` on purpose: a submitter's ACL user reads ``convoy:*``
    (every record) but may only write here (``coordinator/state/acl.py``)."""
    return f"convoy.secret:job:{job_id}"


# --- the scheduler ---------------------------------------------------------
#: sorted set: top-level jobs waiting for devices -> submission time
SCHEDULER_WAITING = f"{PREFIX}:scheduler:waiting"
#: sorted set: every durable deadline, "<kind>:<job id>" -> when it falls due (epoch seconds)
TIMERS = f"{PREFIX}:timers"
#: set: multi jobs whose parent is past waiting and not yet final (the scheduler watches their steps)
ACTIVE_PARENTS = f"{PREFIX}:parents:active"
#: stream: wake-ups of the scheduler (a submit, a release, a device changing state)
SCHEDULER_EVENTS = f"{PREFIX}:scheduler:events"
#: string with a TTL (a lease): the token of the one scheduler deciding now
SCHEDULER_LEASE = f"{PREFIX}:scheduler:lease"


def queue_waiting(queue: str) -> str:
    """Sorted set: ids of jobs waiting for a device of ``queue``."""
    return f"{PREFIX}:queue:{queue}:waiting"


# --- devices --------------------------------------------------------------
#: set of every device name that ever registered
DEVICES = f"{PREFIX}:devices"
#: set of every queue some device serves
QUEUES = f"{PREFIX}:queues"
#: string with a TTL: present while a coordinator worker beats
COORDINATOR_ALIVE = f"{PREFIX}:coordinator:alive"


def device(name: str) -> str:
    """Hash: device record (host, queues, connector, state, job_id)."""
    return f"{PREFIX}:device:{name}"


def device_alive(name: str) -> str:
    """String with a TTL: present while the device's worker beats."""
    return f"{PREFIX}:device:{name}:alive"


def device_worker(name: str) -> str:
    """String with a TTL (a lease): the token of the one worker process serving the device."""
    return f"{PREFIX}:device:{name}:worker"


# --- MultiNode groups (the group id is the parent job id) -----------------
def group_members(group_id: str) -> str:
    """Hash: member job id -> role."""
    return f"{PREFIX}:group:{group_id}:members"


def group_info(group_id: str) -> str:
    """Hash: group settings (timeout, cache file path, ...)."""
    return f"{PREFIX}:group:{group_id}:info"


def group_message(group_id: str, message_id: str) -> str:
    """Hash: sender job id -> JSON data of ``lava-send <message_id>``."""
    return f"{PREFIX}:group:{group_id}:msg:{message_id}"


def group_sync(group_id: str, message_id: str) -> str:
    """Hash: state of the reusable ``lava-sync <message_id>`` barrier."""
    return f"{PREFIX}:group:{group_id}:sync:{message_id}"


def group_failed(group_id: str) -> str:
    """Hash: failed member job id -> reason; non-empty fails every wait."""
    return f"{PREFIX}:group:{group_id}:failed"


def group_channel(group_id: str) -> str:
    """Pub/sub channel that wakes the group's waiters (never carries state)."""
    return f"{PREFIX}:group:{group_id}:wake"


def group_api_log(group_id: str) -> str:
    """List: JSON records of MultiNode API calls (for results and poll)."""
    return f"{PREFIX}:group:{group_id}:calls"


def group_keys(group_id: str) -> str:
    """Set: the group's message and sync keys, so expiry and deletion find them all."""
    return f"{PREFIX}:group:{group_id}:keys"


# --- LAVA test results ------------------------------------------------------
def job_testcases(job_id: str) -> str:
    """List: JSON test cases of the job (``lava-test-case`` and the like), in the order reported."""
    return f"{PREFIX}:job:{job_id}:testcases"


# --- clients of convoy server (coordinator/state/clients.py) ----------------
#: set: the ids of every client of ``convoy server``
CLIENTS = f"{PREFIX}:clients"


def client(client_id: str) -> str:
    """Hash: one client of ``convoy server`` (hashed secret, admin flag, permissions as JSON)."""
    return f"{PREFIX}:client:{client_id}"


def client_jobs(client_id: str) -> str:
    """Sorted set: the top-level jobs a client (or ``anonymous``) submitted -> submission time."""
    return f"{PREFIX}:client:{client_id}:jobs"


#: set: the restricted queues (only clients allowed them may use them; ``convoy queues restrict``)
RESTRICTED_QUEUES = f"{PREFIX}:queues:restricted"


def submission(digest: str) -> str:
    """String with a TTL: the job id an idempotent submission (by its SHA-256 key) created."""
    return f"{PREFIX}:submission:{digest}"


def access_token(digest: str) -> str:
    """String with a TTL: the client id an access token (by its SHA-256) stands for."""
    return f"{PREFIX}:token:access:{digest}"


def refresh_token(digest: str) -> str:
    """String with a TTL: the client id a refresh token (by its SHA-256) stands for."""
    return f"{PREFIX}:token:refresh:{digest}"


# --- LAVA job numbers of convoy server's XML-RPC front (coordinator/state/lavaids.py) ----------------
# (issue 14: LAVA names jobs by integers, convoy by UUIDs; these keys map one onto the other)
#: string: the last LAVA job number handed out (INCRBY)
LAVA_ID_COUNTER = f"{PREFIX}:lava:ids:last"
#: hash: LAVA job number -> convoy job id
LAVA_ID_JOBS = f"{PREFIX}:lava:ids:jobs"
#: hash: convoy job id -> LAVA job number
LAVA_ID_NUMBERS = f"{PREFIX}:lava:ids:numbers"
