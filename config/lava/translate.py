"""LAVA's job form, translated into a convoy job before convoy validates it.

A LAVA MultiNode submission (``protocols: lava-multinode: roles:``, or the
older ``device_group`` list) becomes a ``job_queue: multi`` job with one
child per role, in the order the roles are written:

==============================================  =============================================
LAVA                                            convoy
==============================================  =============================================
``job_name``                                    ``name``
``timeouts.job`` (V1: ``timeout``, seconds)     ``global_timeout``
``protocols.lava-multinode.timeout``            ``timeouts.multinode`` (the group's waits)
role name, ``count``, ``tags``                  child ``role``, ``count``, ``tags``
role ``device_type``                            child ``job_queue`` (a device type is a queue)
role ``timeout``                                child ``timeouts.multinode`` (and, with
                                                ``request: lava-start``, the start timeout)
role ``request: lava-start``, ``expect_role``   child ``multinode: {request, expect_role, timeout}``
                                                (``expect_role`` alone: accepted, no delay, as LAVA)
role ``connection: ssh``, ``host_role``         a guest child (no device, no queue)
role ``context``                                child ``provision_data.context``
==============================================  =============================================

A role's ``actions:`` (deploy, boot, test and their MultiNode requests) become
its ``provision_data`` and ``test_data.lava_tests`` (run on the device by the
test shell): see
:mod:`convoy.config.lava.actions`, which also lists the actions accepted,
ignored and rejected.  A job without roles (``device_type`` and ``actions``
only) becomes a single-device job.

LAVA's ``priority`` (``high``/``medium``/``low`` or 0..100) becomes
``job_priority`` on Testflinger's scale (100/50/0; a number is kept), unless
the job also gives convoy's own ``job_priority``.  A role's (or the job's)
``device_type`` and ``tags`` are what the scheduler selects its devices by
(child ``device_type`` and ``tags``; ``job_queue`` repeats the type for display).

Accepted and ignored: ``protocols.lava-multinode.target_group`` (LAVA's
group id; convoy makes its own), ``visibility``, ``metadata`` (a mapping, as in LAVA),
``notify``, ``logging_level``, ``reboot_to_fastboot``,
``timeouts`` other than ``job``, role ``essential`` (in convoy every member is
essential: a failing member fails every wait of the group).  convoy's own
``allocation_timeout``, ``reserve_data``, ``job_priority`` and ``multinode``
(``cache_file``) may be added to a LAVA job and pass through unchanged.

Rejected, each with a ``JobValidationError`` naming the field: any protocol
other than ``lava-multinode`` (``lava-lxc``, ``lava-vland``, ``lava-xnbd``),
role connections other than ``ssh``, and fields LAVA does not define.
convoy's findings on the translated job are reported at the LAVA fields they
came from (:mod:`convoy.config.lava.errors`).
"""
from __future__ import annotations

from typing import Any

from convoy.config.lava.actions import DEPLOY_METHODS, MULTINODE, ActionTranslator, Role
from convoy.config.lava.errors import is_lava_field, overlaps, remap, under
from convoy.config.schemas import LAVA_START, SSH_CONNECTION, join_path, kind_of, path_key
from convoy.config.shown import shown
from convoy.errors import JobValidationError

__all__ = ["DEPLOY_METHODS", "LAVA_PRIORITIES", "lava_priority", "looks_like_lava", "translate",
           "validate_lava_job"]

#: LAVA's named priorities on Testflinger's ``job_priority`` scale (LAVA itself uses 0..100)
LAVA_PRIORITIES = {"high": 100, "medium": 50, "low": 0}


def lava_priority(value: object) -> int:
    """A LAVA ``priority`` (``high``/``medium``/``low`` or 0..100) as a ``job_priority``; ValueError if neither."""
    problem = f"LAVA priority must be high, medium, low or 0..100, got {shown(value)}"
    if isinstance(value, bool):
        raise ValueError(problem)
    if isinstance(value, int):
        if 0 <= value <= 100:
            return value
        raise ValueError(problem)
    if isinstance(value, str) and value.lower() in LAVA_PRIORITIES:
        return LAVA_PRIORITIES[value.lower()]
    raise ValueError(problem)

#: top-level keys that make a document a LAVA job (convoy jobs never have them)
LAVA_MARKERS = ("protocols", "device_group", "actions")

_TOP_USED = {"job_name", "timeouts", "timeout", "protocols", "device_group", "actions", "device_type", "tags",
             "context", "priority", "secrets"}
_TOP_IGNORED = {"visibility", "metadata", "notify", "logging_level", "reboot_to_fastboot",
                "description"}
_TOP_CONVOY = {"allocation_timeout", "reserve_data", "job_priority", "multinode"}
_ROLE_KEYS = {"device_type", "count", "tags", "timeout", "context", "request", "expect_role", "connection",
              "host_role", "essential"}
_GROUP_KEYS = {"role", "count", "device_type", "tags"}


def looks_like_lava(doc: Any) -> bool:
    """True for a document in LAVA's form (``protocols``, ``device_group`` or ``actions`` at the top)."""
    return isinstance(doc, dict) and any(key in doc for key in LAVA_MARKERS)


def validate_lava_job(doc: dict[str, Any]) -> dict[str, Any]:
    """Translate a LAVA job and validate the result as any convoy job; errors name LAVA's fields.

    Every problem is reported at once: what cannot be translated, and what
    convoy's validator finds in the fields that could (a role's device_type
    that is no queue name, a count of 0...).
    """
    from convoy.config.jobs import check_plain_data, validate_job

    errors = check_plain_data(doc)
    if errors:
        raise JobValidationError(errors)
    translator = _Translator()
    job = translator.run(doc)
    try:
        normalised = validate_job(job)
    except JobValidationError as exc:
        found = [remap(error, translator.origins) for error in exc.errors]
    else:
        if not translator.errors:
            return normalised
        found = []
    if translator.errors:  # keep only convoy's findings on LAVA fields (and roles) the translator did not question
        questioned = [t.path for t in translator.errors]
        questioned += [r for r in translator.role_paths if any(under(t, r) for t in questioned)]
        found = [e for e in found if not translator.incomplete
                 and is_lava_field(e, translator.origins, _TOP_CONVOY)
                 and not any(overlaps(e.path, q) for q in questioned)]
    # a finding on a value copied into several children (timeouts.job) is reported once
    raise JobValidationError(sorted(dict.fromkeys(translator.errors + found), key=path_key))


def translate(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The convoy job for LAVA job ``doc``, and where each convoy field came from (convoy path → LAVA path).

    Raises JobValidationError listing everything that cannot be translated.
    """
    translator = _Translator()
    job = translator.run(doc)
    if translator.errors:
        raise JobValidationError(translator.errors)
    return job, translator.origins


class _Translator(ActionTranslator):
    """The whole job and its roles; the actions are :class:`ActionTranslator`'s."""

    def __init__(self) -> None:
        super().__init__()
        self.origins: dict[str, str] = {}
        self.role_paths: list[str] = []
        #: no role could be read: convoy's validator has nothing useful to add
        self.incomplete = False

    # --- the whole job ------------------------------------------------------------
    def run(self, doc: dict[str, Any]) -> dict[str, Any]:
        for key in doc:
            if key not in _TOP_USED | _TOP_IGNORED | _TOP_CONVOY:
                self.error(join_path("", key), "not a field of a LAVA job convoy knows (job_name, protocols, "
                                               "device_group, actions, timeouts, visibility, priority, metadata, "
                                               "notify, ...)")
        if "metadata" in doc and not isinstance(doc["metadata"], dict):
            self.error("metadata", f"must be a mapping of name: value, got {kind_of(doc['metadata'])}")
        roles = self.roles(doc)
        multinode = roles is not None
        if roles is None:
            roles = self.single_role(doc)
        self.incomplete = not roles
        self.role_paths = [r.path for r in roles if r.path]
        self.actions(doc.get("actions"), roles, multinode)
        job: dict[str, Any] = {}
        if "job_name" in doc:
            job["name"] = doc["job_name"]
            self.origins["name"] = "job_name"
        self.global_timeout(doc, job)
        self.priority(doc, job)
        for key in sorted(_TOP_CONVOY & doc.keys()):
            job[key] = doc[key]
        if not multinode:
            return self.secrets(doc, self.single_job(doc, job, roles[0]) if roles else job, "")
        job["job_queue"] = "multi"
        protocols = doc.get("protocols")
        group = protocols.get(MULTINODE) if isinstance(protocols, dict) and "device_group" not in doc else None
        if isinstance(group, dict) and "timeout" in group:
            where = f"protocols.{MULTINODE}.timeout"
            job["timeouts"] = {"multinode": self.duration(group["timeout"], where)}
            self.origins["timeouts.multinode"] = where
        if "tags" in doc:
            job["tags"] = doc["tags"]
        job["provision_data"] = {"jobs": [self.secrets(doc, self.child(role, i, job), f"provision_data.jobs[{i}].")
                                          for i, role in enumerate(roles)]}
        self.origins["provision_data.jobs"] = ("device_group" if "device_group" in doc
                                               else f"protocols.{MULTINODE}.roles")
        return job

    def secrets(self, doc: dict[str, Any], job: dict[str, Any], path: str) -> dict[str, Any]:
        """LAVA's ``secrets`` (variables of the test shell, never shown) as ``test_data.secrets`` of ``job``."""
        if "secrets" not in doc:
            return job
        if not isinstance(doc["secrets"], dict):
            self.error("secrets", f"must be a mapping of NAME: value, got {kind_of(doc['secrets'])}")
            return job
        job.setdefault("test_data", {})["secrets"] = dict(doc["secrets"])
        self.origins[f"{path}test_data.secrets"] = "secrets"
        return job

    def global_timeout(self, doc: dict[str, Any], job: dict[str, Any]) -> None:
        timeouts = doc.get("timeouts")
        if "timeouts" in doc and not isinstance(timeouts, dict):
            self.error("timeouts", f"must be a mapping (job: {{minutes: 30}}, ...), got {kind_of(timeouts)}")
        elif isinstance(timeouts, dict) and "job" in timeouts:
            job["global_timeout"] = self.duration(timeouts["job"], "timeouts.job")
            self.origins["global_timeout"] = "timeouts.job"
        if "timeout" in doc:
            if "global_timeout" in job:
                self.error("timeout", "give the job's timeout once: timeouts.job (or V1's timeout)")
            else:
                job["global_timeout"] = self.duration(doc["timeout"], "timeout")
                self.origins["global_timeout"] = "timeout"

    def priority(self, doc: dict[str, Any], job: dict[str, Any]) -> None:
        if "priority" not in doc:
            return
        try:
            job["job_priority"] = lava_priority(doc["priority"])
            self.origins["job_priority"] = "priority"
        except ValueError as exc:
            self.error("priority", str(exc))

    def single_job(self, doc: dict[str, Any], job: dict[str, Any], role: Role) -> dict[str, Any]:
        job["job_queue"] = doc["device_type"]
        self.origins["job_queue"] = "device_type"
        if isinstance(doc["device_type"], str):
            job["device_type"] = doc["device_type"]
            self.origins["device_type"] = "device_type"
        if "tags" in doc:
            job["tags"] = doc["tags"]
        if "context" in doc:
            role.provision["context"] = doc["context"]
        if role.provision:
            job["provision_data"] = role.provision
        if role.tests:
            job["test_data"] = {"lava_tests": role.tests}
        return job

    # --- roles --------------------------------------------------------------------
    def roles(self, doc: dict[str, Any]) -> list[Role] | None:
        """The roles of a MultiNode job, in the order written; None for a single-device job."""
        protocols = doc.get("protocols")
        group = None
        if "protocols" in doc:
            if not isinstance(protocols, dict):
                self.error("protocols", f"must be a mapping of protocols, got {kind_of(protocols)}")
            else:
                for name in protocols:
                    if name != MULTINODE:
                        self.error(join_path("protocols", name), f"convoy translates only the {MULTINODE} protocol")
                group = protocols.get(MULTINODE)
        if "device_group" in doc:
            if group is not None:
                self.error("device_group", f"give the roles once: protocols.{MULTINODE}.roles or device_group")
                return []
            return self.device_group(doc["device_group"])
        if group is None:
            if "protocols" in doc and isinstance(protocols, dict) and not self.errors:
                self.error("protocols", f"no {MULTINODE} protocol: convoy translates MultiNode jobs "
                                        f"(protocols: {{{MULTINODE}: {{roles: ...}}}})")
            return None if "protocols" not in doc else []
        path = f"protocols.{MULTINODE}"
        if not isinstance(group, dict):
            self.error(path, f"must be a mapping (roles, timeout), got {kind_of(group)}")
            return []
        for key in group:
            if key not in ("roles", "timeout", "target_group"):  # target_group: LAVA's group id, convoy makes its own
                self.error(join_path(path, key), "unknown field (lava-multinode takes roles, timeout, target_group)")
        roles = group.get("roles")
        if not isinstance(roles, dict) or not roles:
            self.error(f"{path}.roles", "required: a mapping of role name to its devices "
                                        "(device_type, count) or connection" if roles is None else
                       f"must be a non-empty mapping of role name to its devices, got {kind_of(roles)}")
            return []
        found = []
        for name, spec in roles.items():
            role_path = join_path(f"{path}.roles", name)
            if not isinstance(spec, dict):
                self.error(role_path, f"must be a mapping (device_type, count, ...), got {kind_of(spec)}")
                continue
            for key in spec:
                if key not in _ROLE_KEYS:
                    self.error(join_path(role_path, key), f"unknown field of a role ({', '.join(sorted(_ROLE_KEYS))})")
            found.append(Role(str(name), role_path, role_path, spec))
        return found

    def device_group(self, group: Any) -> list[Role]:
        if not isinstance(group, list) or not group:
            self.error("device_group", f"must be a non-empty list of {{role, count, device_type, tags}}, "
                                       f"got {kind_of(group)}")
            return []
        found = []
        for i, spec in enumerate(group):
            path = f"device_group[{i}]"
            if not isinstance(spec, dict):
                self.error(path, f"must be a mapping (role, count, device_type, tags), got {kind_of(spec)}")
                continue
            for key in spec:
                if key not in _GROUP_KEYS:
                    self.error(join_path(path, key),
                               "unknown field of a device_group entry (role, count, device_type, tags)")
            if not isinstance(spec.get("role"), str):
                self.error(f"{path}.role", "required: the role's name" if "role" not in spec
                           else f"must be a string, got {kind_of(spec['role'])}")
                continue
            found.append(Role(spec["role"], path, f"{path}.role", spec))
        names = [r.name for r in found]
        for i, role in enumerate(found):
            if role.name in names[:i]:
                self.error(role.name_path, f"role {shown(role.name)} is given twice; give it once with a count")
        return found

    def single_role(self, doc: dict[str, Any]) -> list[Role]:
        if "device_type" not in doc:
            self.error("device_type", "required: a LAVA job names its device_type "
                                      f"(or its roles under protocols.{MULTINODE})")
            return []
        return [Role("", "", "", {})]

    def child(self, role: Role, index: int, job: dict[str, Any]) -> dict[str, Any]:
        spec, child_path = role.spec, f"provision_data.jobs[{index}]"
        child: dict[str, Any] = {"role": role.name}
        origins = {"": role.path, ".role": role.name_path}
        if "global_timeout" in job:  # LAVA's job timeout bounds each device's job too
            child["global_timeout"] = job["global_timeout"]
            origins[".global_timeout"] = self.origins["global_timeout"]
        if role.guest:
            child["connection"] = SSH_CONNECTION
        elif "connection" in spec:
            self.error(f"{role.path}.connection",
                       f"only connection: ssh can be translated (got {shown(spec['connection'])})")
        elif "device_type" not in spec:
            self.error(f"{role.path}.device_type", "required field (or connection: ssh with host_role)")
        else:
            child["job_queue"] = spec["device_type"]
            if isinstance(spec["device_type"], str):
                child["device_type"] = spec["device_type"]
        for key in ("count", "tags", "host_role"):
            if key in spec:
                child[key] = spec[key]
        timeout = self.duration(spec["timeout"], f"{role.path}.timeout") if "timeout" in spec else None
        if timeout is not None:
            child["timeouts"] = {"multinode": timeout}
        if "request" in spec:  # as in LAVA, expect_role without request: lava-start delays nothing
            child["multinode"] = {k: spec[k] for k in ("request", "expect_role") if k in spec}
            if timeout is not None and spec.get("request") == LAVA_START:
                child["multinode"]["timeout"] = timeout
        if "context" in spec:
            role.provision["context"] = spec["context"]
        if role.provision and not role.guest:
            child["provision_data"] = role.provision
        if role.tests:
            child["test_data"] = {"lava_tests": role.tests}
        for key in ("count", "tags", "host_role", "connection", "request", "expect_role"):
            origins[f".{key}"] = f"{role.path}.{key}"
        origins.update({".job_queue": f"{role.path}.device_type", ".device_type": f"{role.path}.device_type",
                        ".timeouts.multinode": f"{role.path}.timeout",
                        ".multinode.timeout": f"{role.path}.timeout",
                        ".multinode.request": f"{role.path}.request",
                        ".multinode.expect_role": f"{role.path}.expect_role"})
        self.origins.update({child_path + suffix: where for suffix, where in origins.items()})
        return child
