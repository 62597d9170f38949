"""Settings from the environment.

Everything convoy needs to find its services and files is read here, once,
so that no other module looks at ``os.environ`` for configuration.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
COORDINATOR_QUEUE = "convoy.coordinator"
DEFAULT_GITHUB_KEYS_URL = "https://github.com/{user}.keys"
DEFAULT_LAUNCHPAD_KEYS_URL = "https://launchpad.net/~{user}/+sshkeys"


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "convoy"


@dataclass(frozen=True)
class Settings:
    """Where convoy's services and files are; see README "Configuration"."""

    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str | None = None
    state_dir: Path = field(default_factory=_default_state_dir)
    coordinator_queue: str = COORDINATOR_QUEUE
    github_keys_url: str = DEFAULT_GITHUB_KEYS_URL
    launchpad_keys_url: str = DEFAULT_LAUNCHPAD_KEYS_URL
    #: how long a whole job may live in the broker unacknowledged (seconds)
    visibility_timeout: int = 48 * 3600
    #: the longest reservation this deployment grants (Testflinger's max_reservation_time)
    max_reservation: float = 6 * 3600
    #: TLS (``rediss://`` URLs): the CA that signed Redis's certificate, this client's certificate and key
    redis_tls_ca: str | None = None
    redis_tls_cert: str | None = None
    redis_tls_key: str | None = None
    #: how long a host keeps a final job's directory (seconds; CONVOY_KEEP_JOB_DIRS, a duration)
    keep_job_dirs: float = 3 * 86400
    #: the largest packed ``artifacts/`` (tar.gz) a job's record holds (CONVOY_MAX_ARTIFACT_BYTES)
    max_artifact_bytes: int = 64 * 1024 * 1024
    #: the only directories a test definition ``from: url`` may name with ``file://`` (CONVOY_DEFINITION_DIRS,
    #: separated by ':'): a job must not read the worker's own files (its keys) through a URL
    definition_dirs: tuple[Path, ...] = ()
    #: ``convoy server``'s address (CONVOY_SERVER): set, the CLI and ``submit_job()`` & co. talk to it, not Redis
    server_url: str | None = None
    #: credentials for the server: an access token (CONVOY_TOKEN), or a client id and secret exchanged
    #: for one (CONVOY_CLIENT_ID, CONVOY_SECRET_KEY, as Testflinger's client names them)
    server_token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    secret_key: str | None = field(default=None, repr=False)

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def jobs_dir(self) -> Path:
        return self.state_dir / "jobs"

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"


def _duration(text: str) -> float:
    from convoy.config.durations import parse_duration

    return parse_duration(text, field="CONVOY_KEEP_JOB_DIRS")


#: environment variable -> (Settings field, conversion)
_FROM_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "CONVOY_REDIS_URL": ("redis_url", str),
    "CONVOY_BROKER_URL": ("broker_url", str),
    "CONVOY_STATE_DIR": ("state_dir", Path),
    "CONVOY_COORDINATOR_QUEUE": ("coordinator_queue", str),
    "CONVOY_GITHUB_KEYS_URL": ("github_keys_url", str),
    "CONVOY_LAUNCHPAD_KEYS_URL": ("launchpad_keys_url", str),
    "CONVOY_MAX_RESERVATION": ("max_reservation", float),
    "CONVOY_VISIBILITY_TIMEOUT": ("visibility_timeout", int),
    "CONVOY_REDIS_TLS_CA": ("redis_tls_ca", str),
    "CONVOY_REDIS_TLS_CERT": ("redis_tls_cert", str),
    "CONVOY_REDIS_TLS_KEY": ("redis_tls_key", str),
    "CONVOY_KEEP_JOB_DIRS": ("keep_job_dirs", _duration),
    "CONVOY_MAX_ARTIFACT_BYTES": ("max_artifact_bytes", int),
    "CONVOY_SERVER": ("server_url", lambda text: text.rstrip("/")),
    "CONVOY_TOKEN": ("server_token", str),
    "CONVOY_CLIENT_ID": ("client_id", str),
    "CONVOY_SECRET_KEY": ("secret_key", str),
    "CONVOY_DEFINITION_DIRS": ("definition_dirs", lambda text: tuple(Path(p) for p in text.split(os.pathsep) if p)),
}


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read settings from ``environ`` (default: the process environment); unset or empty means default."""
    env = os.environ if environ is None else environ
    try:
        return Settings(**{field: convert(env[name]) for name, (field, convert) in _FROM_ENV.items()
                           if env.get(name)})
    except ValueError as exc:
        from convoy.errors import ConvoyError

        raise ConvoyError(f"bad setting in the environment: {exc}") from None
