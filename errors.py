"""convoy's errors: one root, data-carrying subclasses.

Every error a user can meet is a :class:`ConvoyError`; the CLI prints its
message and exits non-zero instead of showing a traceback.  Subclasses keep
the data that explains them (field paths, job ids, timeouts) as attributes so
callers can act on them without parsing messages.
"""
from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

#: query parameters of a Redis URL that hold a secret (redis-py passes unknown ones to the connection)
_SECRET_PARAMS = frozenset({"password", "ssl_password"})


def redact_url(url: str) -> str:
    """``url`` without its password (for messages: secrets never reach output or errors).

    The password of the user part and any ``password=`` query parameter become ``***``; a string
    that is not a URL comes back as is."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is not None:
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{user}:***@{host}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name in _SECRET_PARAMS for name, _ in query):
        parts = parts._replace(query=urlencode([(n, "***" if n in _SECRET_PARAMS else v) for n, v in query],
                                               safe="*/"))
    return parts.geturl()


class ConvoyError(Exception):
    """Root of every error convoy raises on purpose."""

    exit_code: int = 1


class FieldError:
    """One problem in a document, at a dotted field path (``provision_data.jobs[1].job_queue``).

    A plain class rather than a dataclass: this module is imported by every
    ``lava-*`` command, and ``dataclasses`` costs milliseconds at start.
    """

    __slots__ = ("path", "message")

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldError) and (self.path, self.message) == (other.path, other.message)

    def __hash__(self) -> int:
        return hash((self.path, self.message))

    def __repr__(self) -> str:
        return f"FieldError(path={self.path!r}, message={self.message!r})"

    def __str__(self) -> str:
        return f"{self.path or '<document>'}: {self.message}"


class JobValidationError(ConvoyError):
    """A job (or agent) document is invalid; ``errors`` lists every problem at once."""

    exit_code = 2

    def __init__(self, errors: list[FieldError], what: str = "job") -> None:
        self.errors = list(errors)
        self.what = what
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"invalid {what}: {len(self.errors)} problem(s)\n{lines}")


class AgentConfigError(JobValidationError):
    """An agent file (devices of a host) is invalid."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(errors, what="agent file")


class JobNotFound(ConvoyError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no such job: {job_id}")


class JobStateError(ConvoyError):
    """An operation does not fit the job's state (e.g. cancelling a finished job)."""

    def __init__(self, job_id: str, state: str, message: str) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(message)


class ServiceUnavailable(ConvoyError):
    """Redis (or the broker) cannot be reached."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact_url(url)  # a password never reaches a message
        self.reason = reason
        super().__init__(f"cannot reach {self.url}: {reason}")


class PermissionDenied(ConvoyError):
    """A job asks for more than its submitter may (``convoy server`` answers 403 naming each limit)."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"permission denied: {len(self.errors)} limit(s) exceeded\n{lines}")


class Unauthorized(ConvoyError):
    """No valid credentials for what was asked (``convoy server`` answers 401)."""


class DeviceError(ConvoyError):
    """A device could not be provisioned, reached or cleaned up."""

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        super().__init__(f"device {device}: {message}")


class ConnectorNotFound(ConvoyError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown connector {name!r} (known: {', '.join(sorted(known)) or 'none'})")


class BarrierTimeout(ConvoyError):
    """A MultiNode wait or sync did not complete in time."""

    def __init__(self, message_id: str, timeout: float) -> None:
        self.message_id = message_id
        self.timeout = timeout
        super().__init__(f"timed out after {timeout:g}s waiting for {message_id!r}")


class GroupMemberFailed(ConvoyError):
    """A member of a MultiNode group failed or was cancelled while others waited."""

    def __init__(self, job_id: str, reason: str) -> None:
        self.job_id = job_id
        self.reason = reason
        super().__init__(f"group member {job_id} {reason}")


class KeyImportError(ConvoyError):
    """An SSH key id (``gh:user``, ``lp:user``) could not be imported."""

    def __init__(self, key_id: str, reason: str) -> None:
        self.key_id = key_id
        self.reason = reason
        super().__init__(f"cannot import SSH key {key_id}: {reason}")


class ConnectorLoadError(ConvoyError):
    """A registered connector's entry point cannot be loaded or is not a Connector."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"cannot load connector {name!r}: {reason}")


class MultiNodeUsageError(ConvoyError):
    """A MultiNode command was called wrongly (no message id, a bad ``key=value``, an unknown role)."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)


class GroupNotFound(ConvoyError):
    """The MultiNode group named by the environment does not exist (never created, or expired)."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        super().__init__(f"no MultiNode group {group_id!r} (never created, or expired)")


class NotGroupMember(ConvoyError):
    """The job running a MultiNode command is not a member of the group."""

    def __init__(self, group_id: str, job_id: str) -> None:
        self.group_id = group_id
        self.job_id = job_id
        super().__init__(f"job {job_id!r} is not a member of MultiNode group {group_id!r}")
