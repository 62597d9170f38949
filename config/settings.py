"""Settings from the environment.

Everything convoy needs to find its services and files is read here, once,
so that no other module looks at ``os.environ`` for configuration.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def jobs_dir(self) -> Path:
        return self.state_dir / "jobs"

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read settings from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    kwargs: dict = {}
    if env.get("CONVOY_REDIS_URL"):
        kwargs["redis_url"] = env["CONVOY_REDIS_URL"]
    if env.get("CONVOY_BROKER_URL"):
        kwargs["broker_url"] = env["CONVOY_BROKER_URL"]
    if env.get("CONVOY_STATE_DIR"):
        kwargs["state_dir"] = Path(env["CONVOY_STATE_DIR"])
    if env.get("CONVOY_COORDINATOR_QUEUE"):
        kwargs["coordinator_queue"] = env["CONVOY_COORDINATOR_QUEUE"]
    if env.get("CONVOY_GITHUB_KEYS_URL"):
        kwargs["github_keys_url"] = env["CONVOY_GITHUB_KEYS_URL"]
    if env.get("CONVOY_LAUNCHPAD_KEYS_URL"):
        kwargs["launchpad_keys_url"] = env["CONVOY_LAUNCHPAD_KEYS_URL"]
    if env.get("CONVOY_MAX_RESERVATION"):
        kwargs["max_reservation"] = float(env["CONVOY_MAX_RESERVATION"])
    if env.get("CONVOY_VISIBILITY_TIMEOUT"):
        kwargs["visibility_timeout"] = int(env["CONVOY_VISIBILITY_TIMEOUT"])
    return Settings(**kwargs)
