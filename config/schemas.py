"""Cerberus schemas of jobs and agent files, and the validator that runs them.

The schemas state the rules; :class:`ConvoyValidator` adds the checks that
need words a user understands (queue names, key ids, durations, fields that
are only allowed in some places).  :func:`run` validates and normalises one
mapping and returns its errors as :class:`~convoy.errors.FieldError` with
dotted paths (``reserve_data.timeout``, ``tags[2]``), so callers can merge
the errors of a parent and all its children into one report.
"""
from __future__ import annotations

import functools
import threading
import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

import cerberus
from cerberus import TypeDefinition

from convoy.config.durations import DurationError, as_seconds, parse_duration
from convoy.config.shown import shown
from convoy.errors import FieldError

# Every pattern is matched whole with ``fullmatch`` (``$`` would let a trailing newline through).
QUEUE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
SSH_KEY_RE = re.compile(r"(gh|lp):[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: a role reaches environment variables and ``lava-*`` command lines: no leading '-' (an option)
ROLE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DEVICE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
AGENT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: a LAVA test definition's name: its suite (``<index>_<name>``) and its directory on the device
DEFINITION_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
CONNECTOR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
#: a device tag: the registry stores a device's tags comma-separated, and they are shown space-separated
TAG_RE = re.compile(r"[^\s,]{1,128}")
#: POSIX-style login names (as Debian's adduser accepts them); they reach SSH configs and command lines
UNIX_USER_RE = re.compile(r"[a-z_][a-z0-9_-]*\$?")
MAX_USERNAME = 32
MAX_PATH = 4096

MULTI_QUEUE = "multi"
LAVA_START = "lava-start"
SSH_CONNECTION = "ssh"
MAX_CHILDREN = 512
MAX_DEVICES = 1024
DEFAULT_GLOBAL_TIMEOUT = 14400
DEFAULT_ALLOCATION_TIMEOUT = 7200
DEFAULT_RESERVE_TIMEOUT = 3600
DEFAULT_MULTINODE_TIMEOUT = 600
DEFAULT_TEST_USERNAME = "ubuntu"
#: most errors one validator keeps: cerberus re-sorts its error list on every
#: addition (quadratic), so a document with thousands of bad items would
#: otherwise take minutes to reject
MAX_ERRORS = 100

#: fields a user may not write where they are, and why
_NOT_HERE = {
    "parent_job_id": "set by convoy; remove it from the job",
    "child_reserve_data": "a child job cannot reserve its device; put reserve_data on the multi job",
    "child_allocation_timeout": "only allowed on the multi job, not on a child job",
    "single_allocation_timeout": "only allowed on a multi job (job_queue: multi)",
    "parent_role": "only allowed on a child job (an entry of provision_data.jobs)",
    "parent_count": "only allowed on a child job (an entry of provision_data.jobs)",
    "parent_allocate_data": "set by convoy on child jobs; not allowed on a multi job",
    # Testflinger phases convoy does not run: refused rather than silently skipped
    "setup_data": "convoy does not run Testflinger's setup phase; remove setup_data "
                  "(put the commands in test_data.test_cmds)",
    "firmware_update_data": "convoy does not run Testflinger's firmware_update phase; remove firmware_update_data",
}


_KINDS = {dict: "mapping", list: "list", tuple: "list", str: "string", int: "integer",
          float: "number", bool: "boolean", type(None): "nothing (empty document)"}


def kind_of(value: Any) -> str:
    """A user's word for the type of ``value`` (``mapping``, ``list``, ``string``...)."""
    return _KINDS.get(type(value), type(value).__name__)


def username_problem(value: str) -> str | None:
    """Why ``value`` is no login name (it reaches SSH configs and command lines), or None."""
    if UNIX_USER_RE.fullmatch(value) and len(value) <= MAX_USERNAME:
        return None
    return (f"invalid user name {shown(value)}: use lowercase letters, digits, '_' or '-', starting with a "
            f"letter or '_' (a final '$' is allowed), at most {MAX_USERNAME} characters")


def message_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a MultiNode message id, by the rule ``lava-send``/``lava-wait`` apply, or None."""
    if 0 < len(value) <= 256 and "=" not in value and all(c.isprintable() and not c.isspace() for c in value):
        return None
    return f"invalid message id {shown(value)}: 1-256 printable characters, no spaces, no '='"


def tag_problem(value: str) -> str | None:
    """Why ``value`` cannot be a device tag (a device's or a LAVA role's), or None."""
    if TAG_RE.fullmatch(value) and value.isprintable():
        return None
    return f"invalid tag {shown(value)}: 1-128 printable characters, no spaces or commas"


def _queue_problem(value: str) -> str | None:
    if QUEUE_RE.fullmatch(value):
        return None
    return (f"invalid queue name {shown(value)}: use letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit, at most 128 characters")


def _only(*types: type) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Run a ``check_with`` only on values of ``types``: cerberus calls checks even
    on null or mistyped values, which the ``type``/``nullable`` rules already report."""
    def wrap(check: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(check)
        def run_check(self: Any, field: str, value: Any) -> None:
            if isinstance(value, types) and not isinstance(value, bool):
                check(self, field, value)
        return run_check
    return wrap


class ConvoyValidator(cerberus.Validator):
    """cerberus with convoy's checks; booleans are never integers or numbers."""

    types_mapping = dict(cerberus.Validator.types_mapping)
    types_mapping["integer"] = TypeDefinition("integer", (int,), (bool,))
    types_mapping["number"] = TypeDefinition("number", (int, float), (bool,))

    def _error(self, *args: Any) -> None:
        """Every error arrives here as one batch (see ``cerberus.Validator._error``).

        Cerberus re-sorts its error list and two error trees on each addition,
        which is quadratic: a file with thousands of bad items took minutes.
        This keeps at most MAX_ERRORS per validator and skips the sorting and
        the trees (only used by rules these schemas do not use: dependencies,
        readonly, coerce chains); :func:`run` sorts the result once.
        """
        if len(args) != 1:
            super()._error(*args)
            return
        new = list(args[0])
        room = max(0, MAX_ERRORS - len(self._errors))
        if len(new) > room:
            budget = self._config.get("budget")
            if budget is not None:
                if not budget["dropped"]:
                    budget["first"] = new[room].document_path
                budget["dropped"] += len(new) - room
            new = new[:room]
        self._errors.extend(new)
        for error in new:
            self.error_handler.emit(error)

    # -- coercers: never raise; a value they cannot convert is left for the checks
    def _normalize_coerce_positive_duration(self, value: Any) -> Any:
        try:
            return as_seconds(parse_duration(value, field="value"))
        except (DurationError, TypeError):
            return value

    def _normalize_coerce_nonneg_duration(self, value: Any) -> Any:
        try:
            return as_seconds(parse_duration(value, field="value", allow_zero=True))
        except (DurationError, TypeError):
            return value

    def _normalize_coerce_script(self, value: Any) -> Any:
        if isinstance(value, list) and all(isinstance(line, str) for line in value):
            return "\n".join(value)
        return value

    def _normalize_coerce_none_to_dict(self, value: Any) -> Any:
        return {} if value is None else value

    def _normalize_coerce_scalar_to_str(self, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return value

    # -- checks
    def _check_with_positive_duration(self, field: str, value: Any) -> None:
        self._check_duration(field, value, allow_zero=False)

    def _check_with_nonneg_duration(self, field: str, value: Any) -> None:
        self._check_duration(field, value, allow_zero=True)

    def _check_duration(self, field: str, value: Any, allow_zero: bool) -> None:
        if value is None:
            return  # "null value not allowed" already
        try:
            parse_duration(value, field=str(field), allow_zero=allow_zero)
        except DurationError as exc:
            self._error(field, exc.reason)

    @_only(str)
    def _check_with_queue_name(self, field: str, value: Any) -> None:
        problem = _queue_problem(value)
        if problem:
            self._error(field, problem)

    @_only(str)
    def _check_with_child_queue(self, field: str, value: Any) -> None:
        if value == MULTI_QUEUE:
            self._error(field, "a child job cannot be a multi job (job_queue: multi); name the device's queue")
        else:
            self._check_with_queue_name(field, value)

    @_only(str)
    def _check_with_device_queue(self, field: str, value: Any) -> None:
        if value == MULTI_QUEUE:
            self._error(field, "'multi' is reserved for multi jobs; a device cannot serve it")
        else:
            self._check_with_queue_name(field, value)

    @_only(str)
    def _check_with_device_type(self, field: str, value: Any) -> None:
        # a LAVA job on one device is queued under its type, so a type follows the queue rule
        if value == MULTI_QUEUE:
            self._error(field, "'multi' is reserved for multi jobs; it cannot be a device type")
        elif not QUEUE_RE.fullmatch(value):
            self._error(field, f"invalid device type {shown(value)}: use letters, digits, '.', '_', ':' or '-', "
                               "starting with a letter or digit, at most 128 characters")

    @_only(str)
    def _check_with_device_tag(self, field: str, value: Any) -> None:
        problem = tag_problem(value)
        if problem:
            self._error(field, problem)

    @_only(str)
    def _check_with_ssh_key_id(self, field: str, value: Any) -> None:
        if not SSH_KEY_RE.fullmatch(value):
            self._error(field, f"invalid SSH key id {shown(value)}: use gh:<github-user> or lp:<launchpad-user>")

    @_only(str)
    def _check_with_role(self, field: str, value: Any) -> None:
        if not ROLE_RE.fullmatch(value):
            self._error(field, f"invalid role {shown(value)}: use letters, digits, '_', '.' or '-', "
                               "starting with a letter, digit or '_', at most 128 characters")

    @_only(str)
    def _check_with_env_name(self, field: str, value: Any) -> None:
        if not ENV_NAME_RE.fullmatch(value):
            self._error(field, f"invalid environment variable name {shown(value)}: use letters, digits "
                               "and '_', not starting with a digit, at most 128 characters")
        elif value.startswith("CONVOY_"):
            self._error(field, f"{value} is set by convoy; choose another name")

    @_only(str)
    def _check_with_abs_path(self, field: str, value: Any) -> None:
        if not value.startswith("/") or not value.isprintable() or len(value) > MAX_PATH:
            self._error(field, f"must be an absolute path (printable, at most {MAX_PATH} characters), "
                               f"got {shown(value)}")

    @_only(str)
    def _check_with_device_name(self, field: str, value: Any) -> None:
        if not DEVICE_NAME_RE.fullmatch(value):
            self._error(field, f"invalid device name {shown(value)}: use letters, digits, '.', '_' or '-', "
                               "starting with a letter or digit, at most 64 characters")

    @_only(str)
    def _check_with_agent_name(self, field: str, value: Any) -> None:
        if not AGENT_NAME_RE.fullmatch(value):
            self._error(field, f"invalid agent name {shown(value)}: use letters, digits, '.', '_' or '-'")

    @_only(str)
    def _check_with_unix_user(self, field: str, value: Any) -> None:
        problem = username_problem(value)
        if problem:
            self._error(field, problem)

    @_only(str)
    def _check_with_loopback_ipv4(self, field: str, value: Any) -> None:
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError:
            self._error(field, f"not an IPv4 address: {shown(value)}")
            return
        if not address.is_loopback:
            self._error(field, f"an emulated device lives on a loopback address (127.0.0.0/8), got {value}")

    def _check_with_not_here(self, field: str, value: Any) -> None:
        self._error(field, _NOT_HERE.get(self._config.get("context", "") + "_" + str(field))
                    or _NOT_HERE.get(str(field), "not allowed here"))

    def _check_with_script(self, field: str, value: Any) -> None:
        if value is not None and not isinstance(value, (str, list)):
            self._error(field, f"must be a string or a list of strings, got {kind_of(value)}")
            self._drop_remaining_rules()  # keep ``schema`` from reading a mapping as fields

    @_only(int)
    def _check_with_single_count(self, field: str, value: Any) -> None:
        if value != 1:
            self._error(field, "a job on one device has count 1; use job_queue: multi with "
                               "provision_data.jobs to run on several devices")

    @_only(list)
    def _check_with_nonempty_keys(self, field: str, value: Any) -> None:
        if not value:
            self._error(field, "must list at least one SSH key id (gh:<user> or lp:<user>)")
            self._drop_remaining_rules()

    @_only(list)
    def _check_with_nonempty_queues(self, field: str, value: Any) -> None:
        if not value:
            self._error(field, "must list at least one queue")
            self._drop_remaining_rules()

    @_only(list)
    def _check_with_device_count(self, field: str, value: Any) -> None:
        if not value:
            self._error(field, "must list at least one device")
        elif len(value) > MAX_DEVICES:
            self._error(field, f"too many devices ({len(value)}, limit {MAX_DEVICES})")

    def _check_with_child_jobs(self, field: str, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, list):
            self._error(field, f"must be a list of child jobs, got {kind_of(value)}")
        elif not value:
            self._error(field, "must list at least one child job")
        elif len(value) > MAX_CHILDREN:
            self._error(field, f"too many child jobs ({len(value)}, limit {MAX_CHILDREN})")


# ---------------------------------------------------------------- job schemas
def _duration(default: int | None = None, *, zero: bool = False) -> dict[str, Any]:
    rules: dict[str, Any] = {
        "coerce": "nonneg_duration" if zero else "positive_duration",
        "check_with": "nonneg_duration" if zero else "positive_duration",
    }
    if default is not None:
        rules["default"] = default
    return rules


def _not_here() -> dict[str, Any]:
    return {"nullable": True, "check_with": "not_here"}


_STR_LIST = {"type": "list", "schema": {"type": "string"}}

#: one LAVA test definition as the test shell runs it: inline (``repository`` the definition as data), or
#: fetched by the worker from git (``repository`` the URL, ``path`` in it) or a URL
LAVA_DEFINITION = {
    "type": "dict",
    "schema": {
        "name": {"type": "string", "required": True, "regex": DEFINITION_NAME_RE.pattern},
        "path": {"type": "string"},
        "from": {"type": "string", "required": True, "allowed": ["inline", "git", "url"]},
        "repository": {"type": ["dict", "string"], "required": True},
        "revision": {"type": "string"},
        "branch": {"type": "string"},
        "history": {"type": "boolean"},
        "skip_install": {"type": ["boolean", "list"],
                         "allowed": [True, False, "keys", "sources", "deps", "steps", "git-repos", "all"]},
        "parameters": {
            "type": "dict",
            "keysrules": {"type": "string", "check_with": "env_name"},
            "valuesrules": {"type": "string", "coerce": "scalar_to_str"},
        },
    },
}
#: LAVA test actions, run on the device by the test shell: each one SSH session, its requests first
LAVA_TESTS = {
    "type": "list",
    "schema": {
        "type": "dict",
        "schema": {
            "definitions": {"type": "list", "required": True, "schema": LAVA_DEFINITION},
            "timeout": _duration(),
            "requests": {"type": "list", "schema": {"type": "string"}},
        },
    },
}

TEST_DATA = {
    "type": "dict",
    "schema": {
        "test_cmds": {"coerce": "script", "check_with": "script", "schema": {"type": "string"}},
        "lava_tests": LAVA_TESTS,
        "test_username": {"type": "string", "check_with": "unix_user", "default": DEFAULT_TEST_USERNAME},
        "env": {
            "type": "dict",
            "keysrules": {"type": "string", "check_with": "env_name"},
            "valuesrules": {"type": "string", "coerce": "scalar_to_str"},  # NUL: see convoy.config.plain_data
        },
        # like env, but never shown: stored apart from the job's record, masked (***) in its output
        "secrets": {
            "type": "dict",
            "keysrules": {"type": "string", "check_with": "env_name"},
            "valuesrules": {"type": "string", "coerce": "scalar_to_str", "empty": False},
        },
    },
}

RESERVE_DATA = {
    "type": "dict",
    "schema": {
        "ssh_keys": {"type": "list", "required": True, "check_with": "nonempty_keys",
                     "schema": {"type": "string", "check_with": "ssh_key_id"}},
        "timeout": _duration(DEFAULT_RESERVE_TIMEOUT),
    },
}

TIMEOUTS = {"type": "dict", "schema": {"multinode": _duration()}}
MULTINODE: dict[str, Any] = {"type": "dict", "schema": {"cache_file": {"type": "string", "check_with": "abs_path"}}}
ALLOCATE_DATA = {"type": "dict", "schema": {"allocate": {"type": "boolean"}}}

_COMMON = {
    "name": {"type": "string"},
    "tags": _STR_LIST,
    "global_timeout": _duration(DEFAULT_GLOBAL_TIMEOUT),
    "output_timeout": _duration(),  # a stop condition of the test phase's script runner
    # Testflinger's scale: a non-negative integer, higher first (the scheduler orders by it)
    "job_priority": {"type": "integer", "min": 0},
    # Testflinger: devices that may not run this job
    "exclude_agents": _STR_LIST,
    "setup_data": _not_here(),
    "firmware_update_data": _not_here(),
    "test_data": TEST_DATA,
    "timeouts": TIMEOUTS,
    "multinode": MULTINODE,
    "parent_job_id": _not_here(),
}

#: a job on one device (a top-level job or, with CHILD_JOB, an entry of provision_data.jobs)
SINGLE_JOB: dict[str, Any] = {
    **_COMMON,
    "job_queue": {"type": "string", "required": True, "check_with": "queue_name"},
    # LAVA's device_type: the device is selected by type and ``tags`` (set by LAVA's translation)
    "device_type": {"type": "string", "check_with": "queue_name"},
    "provision_data": {"type": "dict", "coerce": "none_to_dict", "default_setter": lambda _doc: {}},
    "allocate_data": ALLOCATE_DATA,
    "reserve_data": RESERVE_DATA,
    "role": {"type": "string", "check_with": "role"},
    "count": {"type": "integer", "min": 1, "check_with": "single_count"},
    "allocation_timeout": _not_here(),
}

#: LAVA's delayed start (``request: lava-start``, ``expect_role``), for a child only
CHILD_MULTINODE = {"type": "dict", "schema": {
    **MULTINODE["schema"],
    "request": {"type": "string", "allowed": [LAVA_START]},
    "expect_role": {"type": "string", "check_with": "role"},
    "timeout": _duration(),
}}

#: an entry of ``provision_data.jobs``; ``job_queue`` is required unless the entry is a
#: secondary connection (``connection: ssh`` + ``host_role``), checked in convoy.config.jobs
CHILD_JOB: dict[str, Any] = {
    **SINGLE_JOB,
    "job_queue": {"type": "string", "check_with": "child_queue"},
    "count": {"type": "integer", "min": 1, "max": MAX_CHILDREN},
    "reserve_data": _not_here(),
    "multinode": CHILD_MULTINODE,
    "connection": {"type": "string", "allowed": [SSH_CONNECTION]},
    "host_role": {"type": "string", "check_with": "role"},
}

MULTI_JOB: dict[str, Any] = {
    **_COMMON,
    "job_queue": {"type": "string", "required": True, "allowed": [MULTI_QUEUE]},
    "allocation_timeout": _duration(DEFAULT_ALLOCATION_TIMEOUT),
    "provision_data": {
        "type": "dict", "required": True,
        "schema": {"jobs": {"required": True, "check_with": "child_jobs"}},
    },
    "reserve_data": RESERVE_DATA,
    "role": _not_here(),
    "count": _not_here(),
    "allocate_data": _not_here(),
}

# -------------------------------------------------------------- agent schemas
DEVICE = {
    "name": {"type": "string", "required": True, "check_with": "device_name"},
    "queues": {"type": "list", "check_with": "nonempty_queues",
               "schema": {"type": "string", "check_with": "device_queue"}},
    "queue": {"type": "string", "check_with": "device_queue"},
    "connector": {"type": "string", "default": "emulated"},
    "config": {"type": "dict", "coerce": "none_to_dict", "default_setter": lambda _doc: {}},
    # LAVA's device type and device tags: what a LAVA role selects its devices by
    "device_type": {"type": "string", "check_with": "device_type"},
    "tags": {"type": "list", "schema": {"type": "string", "check_with": "device_tag"}},
}

#: an agent file; each entry of ``devices`` is then checked against DEVICE on its own
AGENT = {
    "name": {"type": "string", "check_with": "agent_name"},
    "devices": {"type": "list", "required": True, "check_with": "device_count"},
}

# each connector declares the schema of its devices' ``config`` (``Connector.config_schema``, in
# ``convoy.connectors``); agent files are checked against it by ``load_agent`` with the registry's
# ``config_schemas()``, and may use this module's rules (``loopback_ipv4``, ``unix_user``, durations)


# ------------------------------------------------------------------- running
def join_path(prefix: str, key: Any) -> str:
    """``prefix`` + ``key`` as a dotted path; list indexes as ``[i]``; an empty key as ``""``
    (so that every path names something); unprintable characters escaped (``\\n``)."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{prefix}[{key}]"
    name = str(key) or '""'
    if not name.isprintable():  # a path is one line of a message: "\n" is shown, not printed
        name = name.encode("unicode_escape", "backslashreplace").decode("ascii")
    return f"{prefix}.{name}" if prefix else name


def path_key(error: FieldError) -> tuple:
    """Sort key: paths in natural order (``tags[2]`` before ``tags[10]``)."""
    return tuple((0, int(tok), "") if tok.isdigit() else (1, 0, tok)
                 for tok in re.split(r"[.\[\]]+", error.path) if tok)


def _flatten(tree: Mapping[Any, Any], prefix: str, out: list[FieldError]) -> None:
    for key, items in tree.items():
        path = join_path(prefix, key)
        for item in items if isinstance(items, list) else [items]:
            if isinstance(item, Mapping):
                _flatten(item, path, out)
            else:
                out.append(FieldError(path, str(item)))


_validators = threading.local()


def _validator_for(schema: dict[str, Any], context: str) -> ConvoyValidator:
    """One validator per (schema, context) and thread: building one re-checks the whole schema,
    which cost about 2 ms per child of a multi job."""
    cache = getattr(_validators, "cache", None)
    if cache is None:
        cache = _validators.cache = {}
    key = (id(schema), context)
    if key not in cache:
        cache[key] = (schema, ConvoyValidator(schema, context=context, budget={"dropped": 0}))
    return cache[key][1]


def run(schema: dict[str, Any], document: dict[str, Any], *, prefix: str = "",
        context: str = "") -> tuple[dict[str, Any], list[FieldError]]:
    """Validate and normalise ``document``; return (normalised, errors with ``prefix``ed paths)."""
    validator = _validator_for(schema, context)
    budget = validator._config["budget"]
    budget["dropped"] = 0
    validator.validate(document)
    errors: list[FieldError] = []
    _flatten(validator.errors, prefix, errors)
    errors.sort(key=path_key)
    if budget["dropped"]:
        first = prefix
        for key in budget.get("first") or ():
            first = join_path(first, key)
        errors.append(FieldError(first or "<document>", f"... and {budget['dropped']} more problem(s) not shown"))
    return (validator.document or {}), errors
