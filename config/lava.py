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
role ``connection: ssh``, ``host_role``         a guest child (no device, no queue)
role ``context``                                child ``provision_data.context``
``deploy`` of a role                            ``provision_data``: ``deploy`` (the ``to:``
                                                method), ``os``, ``images`` (name → url)
``boot`` of a role                              ``provision_data.boot`` (the method)
``test`` inline definitions of a role           ``test_data.test_cmds``: every ``install.steps``
                                                and ``run.steps``, in action and definition order
an action's ``protocols: lava-multinode``       the same API call (``lava-wait ipv4`` …) at that
requests (``lava-wait``, ``lava-send`` …)       point of the role's commands
==============================================  =============================================

An action without ``role`` applies to every role.  A job without roles
(``device_type`` and ``actions`` only) becomes a single-device job.

Accepted and ignored: ``visibility``, ``priority`` (convoy's ``job_priority``
is Celery's, with no agreed mapping from LAVA's high/medium/low), ``metadata``,
``notify``, ``logging_level``, ``secrets``, ``reboot_to_fastboot``,
``timeouts`` other than ``job``, action ``timeout``/``name``/``namespace``,
role ``essential`` (in convoy every member is essential: a failing member
fails every wait of the group), ``install.deps`` (the image must provide them;
they are listed as a comment in the commands), ``parse``.  convoy's own
``allocation_timeout``, ``reserve_data``, ``job_priority`` and ``multinode``
(``cache_file``) may be added to a LAVA job and pass through unchanged.

Deploy methods (``to:``) accepted, all meaning "provision the device with the
image/os named" (the emulated connector uses ``os`` as the image name):
see :data:`DEPLOY_METHODS`.  Rejected, each with a ``JobValidationError``
naming the field: test definitions that are not ``from: inline`` (convoy does
not fetch ``git``/``url``/``bzr``/``tar`` definitions), ``interactive`` and
``monitors`` tests, deploy or boot to ``lxc``/``docker`` (LAVA's dispatcher
runs those containers; convoy has no connector for them), any protocol other
than ``lava-multinode`` (``lava-lxc``, ``lava-vland``, ``lava-xnbd``), role
connections other than ``ssh``, ``install`` sources convoy cannot honour
(``git-repos``, ``sources``, ``keys``), a second deploy for one role, and
fields LAVA does not define.  From LAVA's V1 JSON actions (``command:`` +
``parameters:``) ``deploy_*`` (the ``image`` is recorded), ``boot_*`` and
``submit_results*`` are accepted; ``lava_test_shell`` names remote test
definitions and is rejected.

Differences users should know: the steps run as one ``bash -e`` script per
device on the device's host (LAVA also stops at a failing step, ``set -e``),
with ``DEVICE_IP`` set and the MultiNode commands on PATH; guests' steps run
on the coordinator (``ssh ubuntu@$DEVICE_IP`` reaches the host device).
LAVA's ``lava-test-case`` helpers are not provided.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from convoy.config.schemas import LAVA_START, SSH_CONNECTION, join_path, kind_of, path_key
from convoy.errors import FieldError, JobValidationError

__all__ = ["DEPLOY_METHODS", "looks_like_lava", "translate", "validate_lava_job"]

MULTINODE = "lava-multinode"

#: top-level keys that make a document a LAVA job (convoy jobs never have them)
LAVA_MARKERS = ("protocols", "device_group", "actions")

#: ``deploy: to:`` methods translated as "provision with the image/os named"
DEPLOY_METHODS = frozenset({
    "tftp", "nfs", "tmpfs", "ssh", "overlay", "download", "flasher", "fastboot", "usb", "sata", "nbd",
    "iso-installer", "u-boot-ums", "uuu", "recovery", "removeable", "vemsd", "mps", "musca",
})
#: deploy and boot methods that need LAVA's dispatcher itself
_CONTAINER_METHODS = {
    "lxc": "lxc needs LAVA's lava-lxc protocol (a container on the dispatcher); convoy has no connector for it",
    "docker": "docker runs on LAVA's dispatcher; convoy has no connector for it",
}
_TOP_USED = {"job_name", "timeouts", "timeout", "protocols", "device_group", "actions", "device_type", "tags",
             "context"}
_TOP_IGNORED = {"visibility", "priority", "metadata", "notify", "logging_level", "secrets", "reboot_to_fastboot",
                "description"}
_TOP_CONVOY = {"allocation_timeout", "reserve_data", "job_priority", "multinode"}
_ROLE_KEYS = {"device_type", "count", "tags", "timeout", "context", "request", "expect_role", "connection",
              "host_role", "essential"}
_GROUP_KEYS = {"role", "count", "device_type", "tags"}
_DURATION_UNITS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
_API_REQUESTS = {"lava-send", "lava-wait", "lava-wait-all", "lava-sync"}
_TEST_REJECTED = {
    "interactive": "interactive tests drive a device's console; convoy runs shell test definitions only",
    "monitors": "monitors watch a device's console; convoy runs shell test definitions only",
    "docker": "tests in docker run on LAVA's dispatcher; convoy has no equivalent",
}
_INSTALL_REJECTED = {"git-repos", "bzr-repos", "sources", "keys"}


@dataclass
class _Role:
    name: str
    path: str                       #: where the role is written (``protocols.lava-multinode.roles.server``)
    name_path: str                  #: where its name is written
    spec: dict[str, Any]
    deploy_at: str | None = None
    provision: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)

    @property
    def guest(self) -> bool:
        return self.spec.get("connection") == SSH_CONNECTION


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
        found = [_remap(error, translator.origins) for error in exc.errors]
    else:
        if not translator.errors:
            return normalised
        found = []
    if translator.errors:  # keep only convoy's findings on LAVA fields (and roles) the translator did not question
        questioned = [t.path for t in translator.errors]
        questioned += [r for r in translator.role_paths if any(_under(t, r) for t in questioned)]
        found = [e for e in found if not translator.incomplete and _is_lava_field(e, translator.origins)
                 and not any(_overlaps(e.path, q) for q in questioned)]
    raise JobValidationError(sorted(translator.errors + found, key=path_key))


def translate(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The convoy job for LAVA job ``doc``, and where each convoy field came from (convoy path → LAVA path).

    Raises JobValidationError listing everything that cannot be translated.
    """
    translator = _Translator()
    job = translator.run(doc)
    if translator.errors:
        raise JobValidationError(translator.errors)
    return job, translator.origins


def _origin(path: str, origins: dict[str, str]) -> str | None:
    """The longest convoy path in ``origins`` that ``path`` is or lies under."""
    best = None
    for convoy_path in origins:
        if _under(path, convoy_path) and (best is None or len(convoy_path) > len(best)):
            best = convoy_path
    return best


def _remap(error: FieldError, origins: dict[str, str]) -> FieldError:
    """``error`` at the LAVA field its convoy field came from."""
    best = _origin(error.path, origins)
    if best is None:
        return error
    return FieldError(origins[best] + error.path[len(best):], error.message)


def _is_lava_field(error: FieldError, origins: dict[str, str]) -> bool:
    return error.path in origins.values() or any(_under(error.path, lava) for lava in origins.values()) \
        or error.path.split(".")[0].split("[")[0] in _TOP_CONVOY


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def _overlaps(a: str, b: str) -> bool:
    return _under(a, b) or _under(b, a)


class _Translator:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.origins: dict[str, str] = {}
        self.role_paths: list[str] = []
        #: no role could be read: convoy's validator has nothing useful to add
        self.incomplete = False

    def error(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    # --- the whole job ------------------------------------------------------------
    def run(self, doc: dict[str, Any]) -> dict[str, Any]:
        for key in doc:
            if key not in _TOP_USED | _TOP_IGNORED | _TOP_CONVOY:
                self.error(key, "not a field of a LAVA job convoy knows (job_name, protocols, device_group, "
                                "actions, timeouts, visibility, priority, metadata, notify, ...)")
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
        for key in sorted(_TOP_CONVOY & doc.keys()):
            job[key] = doc[key]
        if not multinode:
            return self.single_job(doc, job, roles[0]) if roles else job
        job["job_queue"] = "multi"
        protocols = doc.get("protocols")
        group = protocols.get(MULTINODE) if isinstance(protocols, dict) and "device_group" not in doc else None
        if isinstance(group, dict) and "timeout" in group:
            where = f"protocols.{MULTINODE}.timeout"
            job["timeouts"] = {"multinode": self.duration(group["timeout"], where)}
            self.origins["timeouts.multinode"] = where
        if "tags" in doc:
            job["tags"] = doc["tags"]
        job["provision_data"] = {"jobs": [self.child(role, i, job) for i, role in enumerate(roles)]}
        self.origins["provision_data.jobs"] = ("device_group" if "device_group" in doc
                                               else f"protocols.{MULTINODE}.roles")
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

    def single_job(self, doc: dict[str, Any], job: dict[str, Any], role: _Role) -> dict[str, Any]:
        job["job_queue"] = doc["device_type"]
        self.origins["job_queue"] = "device_type"
        if "tags" in doc:
            job["tags"] = doc["tags"]
        if "context" in doc:
            role.provision["context"] = doc["context"]
        if role.provision:
            job["provision_data"] = role.provision
        if role.commands:
            job["test_data"] = {"test_cmds": "\n".join(role.commands)}
        return job

    # --- roles --------------------------------------------------------------------
    def roles(self, doc: dict[str, Any]) -> list[_Role] | None:
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
            if key not in ("roles", "timeout"):
                self.error(join_path(path, key), "unknown field (lava-multinode takes roles and timeout)")
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
            found.append(_Role(str(name), role_path, role_path, spec))
        return found

    def device_group(self, group: Any) -> list[_Role]:
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
            found.append(_Role(spec["role"], path, f"{path}.role", spec))
        names = [r.name for r in found]
        for i, role in enumerate(found):
            if role.name in names[:i]:
                self.error(role.name_path, f"role {role.name!r} is given twice; give it once with a count")
        return found

    def single_role(self, doc: dict[str, Any]) -> list[_Role]:
        if "device_type" not in doc:
            self.error("device_type", "required: a LAVA job names its device_type "
                                      f"(or its roles under protocols.{MULTINODE})")
            return []
        return [_Role("", "", "", {})]

    def child(self, role: _Role, index: int, job: dict[str, Any]) -> dict[str, Any]:
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
                       f"only connection: ssh can be translated (got {spec['connection']!r})")
        elif "device_type" not in spec:
            self.error(f"{role.path}.device_type", "required field (or connection: ssh with host_role)")
        else:
            child["job_queue"] = spec["device_type"]
        for key in ("count", "tags", "host_role"):
            if key in spec:
                child[key] = spec[key]
        timeout = self.duration(spec["timeout"], f"{role.path}.timeout") if "timeout" in spec else None
        if timeout is not None:
            child["timeouts"] = {"multinode": timeout}
        if "request" in spec or "expect_role" in spec:
            child["multinode"] = {k: spec[k] for k in ("request", "expect_role") if k in spec}
            if timeout is not None and spec.get("request") == LAVA_START:
                child["multinode"]["timeout"] = timeout
        if "context" in spec:
            role.provision["context"] = spec["context"]
        if role.provision and not role.guest:
            child["provision_data"] = role.provision
        if role.commands:
            child["test_data"] = {"test_cmds": "\n".join(role.commands)}
        for key in ("count", "tags", "host_role", "connection", "request", "expect_role"):
            origins[f".{key}"] = f"{role.path}.{key}"
        origins.update({".job_queue": f"{role.path}.device_type", ".timeouts.multinode": f"{role.path}.timeout",
                        ".multinode.timeout": f"{role.path}.timeout",
                        ".multinode.request": f"{role.path}.request",
                        ".multinode.expect_role": f"{role.path}.expect_role"})
        self.origins.update({child_path + suffix: where for suffix, where in origins.items()})
        return child

    # --- actions ------------------------------------------------------------------
    def actions(self, actions: Any, roles: list[_Role], multinode: bool) -> None:
        if actions is None:
            return
        if not isinstance(actions, list):
            self.error("actions", f"must be a list of deploy, boot and test actions, got {kind_of(actions)}")
            return
        for i, action in enumerate(actions):
            path = f"actions[{i}]"
            if isinstance(action, dict) and isinstance(action.get("command"), str):
                self.v1_action(action, path, roles, multinode)
                continue
            if not isinstance(action, dict) or len(action) != 1:
                self.error(path, "each action is a mapping with one key: deploy, boot or test")
                continue
            ((kind, body),) = action.items()
            path = join_path(path, kind)
            if kind not in ("deploy", "boot", "test"):
                self.error(path, "convoy translates deploy, boot and test actions only")
                continue
            if not isinstance(body, dict):
                self.error(path, f"must be a mapping, got {kind_of(body)}")
                continue
            targets = self.targets(body.get("role"), f"{path}.role", roles, multinode, "role" in body)
            requests = self.protocol_requests(body.get("protocols"), f"{path}.protocols") \
                if "protocols" in body else []
            for role in targets:
                role.commands.extend(requests)
            getattr(self, kind)(body, path, targets)

    def targets(self, value: Any, path: str, roles: list[_Role], multinode: bool, given: bool) -> list[_Role]:
        """The roles an action applies to: those listed, or all when it names none."""
        if not given:
            return roles
        if not multinode:
            self.error(path, f"role is only used in MultiNode jobs (protocols: {MULTINODE})")
            return []
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            self.error(path, f"must be a list of role names, got {kind_of(value)}")
            return []
        by_name = {r.name: r for r in roles}
        chosen = []
        for j, name in enumerate(names):
            if name not in by_name:
                self.error(path if isinstance(value, str) else f"{path}[{j}]",
                           f"no role {name!r} (roles: {', '.join(by_name) or 'none'})")
            elif by_name[name] not in chosen:
                chosen.append(by_name[name])
        return chosen

    def deploy(self, body: dict[str, Any], path: str, roles: list[_Role]) -> None:
        method = body.get("to")
        if "to" not in body:
            self.error(f"{path}.to", "required: the deploy method (tftp, nfs, tmpfs, ssh, ...)")
            return
        if method in _CONTAINER_METHODS:
            self.error(f"{path}.to", _CONTAINER_METHODS[method])
            return
        if method not in DEPLOY_METHODS:
            self.error(f"{path}.to", f"deploy method {method!r} cannot be translated "
                                     f"(accepted: {', '.join(sorted(DEPLOY_METHODS))})")
            return
        provision: dict[str, Any] = {"deploy": method}
        if "os" in body:
            provision["os"] = body["os"]
        images = _images(body)
        if images:
            provision["images"] = images
        for role in roles:
            if role.guest:
                continue  # a secondary connection has no device to deploy to
            if role.deploy_at is not None:
                self.error(path, f"role {role.name or 'of this job'} is already deployed by {role.deploy_at}; "
                                 "convoy provisions a device once per job")
                continue
            role.deploy_at = path
            role.provision.update(provision)

    def boot(self, body: dict[str, Any], path: str, roles: list[_Role]) -> None:
        method = body.get("method")
        if method in _CONTAINER_METHODS:
            self.error(f"{path}.method", _CONTAINER_METHODS[method])
            return
        for role in roles:
            if not role.guest and isinstance(method, str):
                role.provision.setdefault("boot", method)

    def test(self, body: dict[str, Any], path: str, roles: list[_Role]) -> None:
        for key, reason in _TEST_REJECTED.items():
            if key in body:
                self.error(f"{path}.{key}", reason)
        if any(key in body for key in _TEST_REJECTED):
            return
        definitions = body.get("definitions")
        if not isinstance(definitions, list) or not definitions:
            self.error(f"{path}.definitions", "required: a list of test definitions" if definitions is None
                       else f"must be a non-empty list of test definitions, got {kind_of(definitions)}")
            return
        lines: list[str] = []
        for j, definition in enumerate(definitions):
            lines.extend(self.definition(definition, f"{path}.definitions[{j}]"))
        for role in roles:
            role.commands.extend(lines)

    def definition(self, definition: Any, path: str) -> list[str]:
        if not isinstance(definition, dict):
            self.error(path, f"must be a mapping (from, repository, name, path), got {kind_of(definition)}")
            return []
        source = definition.get("from")
        if source != "inline":
            self.error(f"{path}.from", "required: convoy translates from: inline test definitions" if source is None
                       else f"only inline test definitions can be translated (got {source}); convoy does not "
                            "fetch test definitions: paste it under repository: with from: inline")
            return []
        repo = definition.get("repository")
        if not isinstance(repo, dict):
            self.error(f"{path}.repository", "must be the inline test definition (metadata, run: {steps: [...]}), "
                                             f"got {kind_of(repo)}")
            return []
        name = definition.get("name") or (repo.get("metadata") or {}).get("name") or "inline"
        lines = [f"# LAVA test definition {name} ({path})"]
        params, overrides = repo.get("params") or {}, definition.get("parameters") or {}
        for value, where in ((params, f"{path}.repository.params"), (overrides, f"{path}.parameters")):
            if not isinstance(value, dict):
                self.error(where, f"must be a mapping of NAME: value, got {kind_of(value)}")
                return []
        params = {**params, **overrides}
        for key, value in params.items():
            if not isinstance(key, str) or not key.isidentifier():
                self.error(f"{path}.parameters.{key}", "not a shell variable name")
                continue
            lines.append(f"export {key}={shlex.quote(_text(value))}")
        lines.extend(self.install(repo.get("install"), f"{path}.repository.install"))
        run = repo.get("run")
        steps = run.get("steps") if isinstance(run, dict) else None
        if not isinstance(steps, list):
            self.error(f"{path}.repository.run.steps", "required: the list of shell steps to run" if steps is None
                       else f"must be a list of shell commands, got {kind_of(steps)}")
            return []
        return lines + self.commands(steps, f"{path}.repository.run.steps")

    def commands(self, steps: list[Any], path: str) -> list[str]:
        for j, step in enumerate(steps):
            if isinstance(step, (dict, list)) or step is None:
                hint = " (quote a step that contains ': ')" if isinstance(step, dict) else ""
                self.error(f"{path}[{j}]", f"must be a shell command (a string), got {kind_of(step)}{hint}")
        return [_text(step).rstrip("\n") for step in steps]

    def install(self, install: Any, path: str) -> list[str]:
        if install is None:
            return []
        if not isinstance(install, dict):
            self.error(path, f"must be a mapping (deps, steps), got {kind_of(install)}")
            return []
        lines = []
        for key in install:
            if key in _INSTALL_REJECTED:
                self.error(join_path(path, key), "convoy does not change the device's software sources; "
                                                 "provide it in the image")
        deps = install.get("deps") or []
        if deps:
            lines.append(f"# install.deps (the image provides them; convoy installs nothing): "
                         f"{' '.join(map(_text, deps)) if isinstance(deps, list) else _text(deps)}")
        steps = install.get("steps") or []
        if not isinstance(steps, list):
            self.error(f"{path}.steps", f"must be a list of shell commands, got {kind_of(steps)}")
            return lines
        return lines + self.commands(steps, f"{path}.steps")

    def protocol_requests(self, protocols: Any, path: str) -> list[str]:
        """An action's MultiNode requests (``{request: lava-wait, messageID: ipv4}``) as API commands."""
        if not isinstance(protocols, dict):
            self.error(path, f"must be a mapping of protocols, got {kind_of(protocols)}")
            return []
        commands = []
        for name, requests in protocols.items():
            ppath = join_path(path, name)
            if name != MULTINODE:
                self.error(ppath, f"convoy translates only the {MULTINODE} protocol")
                continue
            for k, request in enumerate(requests if isinstance(requests, list) else [requests]):
                rpath = f"{ppath}[{k}]" if isinstance(requests, list) else ppath
                command = self.request(request, rpath)
                if command:
                    commands.append(command)
        return commands

    def request(self, request: Any, path: str) -> str | None:
        if not isinstance(request, dict):
            self.error(path, f"must be a mapping (request, messageID, message), got {kind_of(request)}")
            return None
        kind, mid = request.get("request"), request.get("messageID")
        if kind not in _API_REQUESTS:
            self.error(f"{path}.request", f"must be one of {', '.join(sorted(_API_REQUESTS))} (got {kind!r})")
            return None
        if not isinstance(mid, str) or not mid:
            self.error(f"{path}.messageID", "required: the message id")
            return None
        words = [kind]
        if "timeout" in request and kind != "lava-send":
            seconds = self.duration(request["timeout"], f"{path}.timeout")
            if isinstance(seconds, (int, float)):
                words += ["--timeout", str(seconds)]
        words.append(mid)
        message = request.get("message") or {}
        if kind == "lava-send" and isinstance(message, dict):
            words += [f"{key}={_text(value)}" for key, value in message.items()]
        if kind == "lava-wait-all" and isinstance(request.get("role"), str):
            words.append(request["role"])
        return " ".join(shlex.quote(word) for word in words)

    def v1_action(self, action: dict[str, Any], path: str, roles: list[_Role], multinode: bool) -> None:
        """A LAVA V1 JSON action: ``{"command": "deploy_linaro_image", "parameters": {...}}``."""
        command, params = action["command"], action.get("parameters") or {}
        if not isinstance(params, dict):
            self.error(f"{path}.parameters", f"must be a mapping, got {kind_of(params)}")
            return
        targets = self.targets(params.get("role"), f"{path}.parameters.role", roles, multinode, "role" in params)
        if command.startswith("deploy_"):
            for role in targets:
                if role.deploy_at is not None:
                    self.error(path, f"role {role.name or 'of this job'} is already deployed by {role.deploy_at}")
                    continue
                role.deploy_at = path
                role.provision["deploy"] = command
                for key in ("image", "rootfs", "hwpack"):
                    if isinstance(params.get(key), str):
                        role.provision.setdefault("image", params[key])
        elif command == "lava_test_shell":
            remote = [("testdef_repos", "git-repo"), ("testdef_urls", "url")]
            for key, kind in remote:
                for j, _ in enumerate(params.get(key) or []):
                    self.error(f"{path}.parameters.{key}[{j}]",
                               f"only inline test definitions can be translated (got {kind})")
            if not any(params.get(key) for key, _ in remote):
                self.error(f"{path}.parameters", "lava_test_shell without testdef_repos or testdef_urls")
        elif not command.startswith(("boot_", "submit_results")):
            self.error(f"{path}.command", f"LAVA V1 command {command!r} cannot be translated "
                                          "(deploy_*, boot_*, submit_results* can)")

    # --- values -------------------------------------------------------------------
    def duration(self, value: Any, path: str) -> Any:
        """LAVA's ``{minutes: 10}`` as seconds; any other value is left for convoy to check."""
        if not isinstance(value, dict):
            return value
        total = 0.0
        for unit, amount in value.items():
            if unit not in _DURATION_UNITS:
                self.error(join_path(path, unit), f"unknown unit (use {', '.join(_DURATION_UNITS)})")
                return value
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                self.error(join_path(path, unit), f"must be a non-negative number, got {amount!r}")
                return value
            total += amount * _DURATION_UNITS[unit]
        if total <= 0:
            self.error(path, "must be a positive duration ({minutes: 10}, {seconds: 30}, ...)")
        return int(total) if float(total).is_integer() else total


def _images(deploy: dict[str, Any]) -> dict[str, str]:
    """Every artifact a deploy names with a url (kernel, dtb, nfsrootfs, images: {rootfs: ...})."""
    images: dict[str, str] = {}
    for key, value in deploy.items():
        if isinstance(value, dict) and isinstance(value.get("url"), str):
            images[key] = value["url"]
        elif key == "images" and isinstance(value, dict):
            for name, image in value.items():
                if isinstance(image, dict) and isinstance(image.get("url"), str):
                    images[str(name)] = image["url"]
    return images


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
