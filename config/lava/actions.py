"""LAVA's ``actions:`` (deploy, boot, test), translated into what each role's convoy job runs.

The actions are read in the order written; each fills in the roles it names
(:class:`Role`), and :mod:`convoy.config.lava.translate` turns the roles into jobs:

==============================================  =============================================
LAVA                                            convoy
==============================================  =============================================
``deploy`` of a role                            ``provision_data``: ``deploy`` (the ``to:``
                                                method), ``os``, ``images`` (name → url),
                                                ``authorize`` (``ssh``)
``boot`` of a role                              ``provision_data.boot`` (the method)
``test`` action of a role                      one entry of ``test_data.lava_tests``:
                                                ``{definitions, timeout, requests}``, in order
an inline definition                            ``{name, path, from: inline, repository,
                                                parameters}`` (the definition kept as data)
a ``from: git`` / ``from: url`` definition      ``{name, path, from, repository (the URL),
                                                revision|branch, history, parameters,
                                                skip_install}``: the worker fetches it
                                                (:mod:`convoy.tasks.run.testshell.fetch`)
an action's ``protocols: lava-multinode``       the same API call (``lava-wait ipv4`` …) as a
requests (``lava-wait``, ``lava-send`` …)       command line in that test action's
                                                ``requests`` (a deploy's or boot's: the next
                                                test action's), run before its definitions
==============================================  =============================================

An action without ``role`` applies to every role.  A MultiNode request is
checked here by the rules its ``lava-*`` command applies (message id, one-line
``key=value`` message, timeout), so a job that would fail at run time is
refused at submission; text that goes into comment lines (a definition's name,
``install.deps``) is kept on one line.

A test action's ``timeout`` bounds its session on the device (seconds).
Accepted and ignored: the other actions' ``timeout``, ``name``/``namespace``,
``parse``.  ``install.deps`` go to the device's package manager (on emulated
devices a stand-in that records what was asked).

Every LAVA deploy method (``to:``) and boot ``method:`` but ``docker`` and
``lxc`` is accepted, meaning "provision the device with the image/os named"
(the emulated connector uses ``os`` as the image name); the method is kept in
``provision_data`` (``deploy``, ``boot``) for a connector that can honour
only some to refuse the others by name.  An action's ``protocols:
lava-multinode`` takes a request or a list of them in every form LAVA
documents: ``{request, messageID, message, timeout}`` (``action:``, the
pipeline action making the call, is ignored), the older ``{api, id, key}``,
and ``{request: lava-start, expect_role: R}`` (wait for ``lava_start`` from
every member of R: ``lava-wait-all lava_start R``).  Rejected, each with a ``JobValidationError``
naming the field: test definitions that are not ``from: inline``, ``git``
or ``url`` (``bzr``, ``tar``), ``interactive`` and
``monitors`` tests, deploy or boot to ``lxc``/``docker`` (LAVA's dispatcher
runs those containers; convoy has no connector for them), an action's
protocols other than ``lava-multinode``, ``install`` sources convoy cannot
honour (``git-repos``, ``sources``, ``keys``), and a second deploy for one
role.  From LAVA's V1 JSON actions (``command:`` + ``parameters:``)
``deploy_*`` (the ``image`` is recorded), ``boot_*`` and ``submit_results*``
are accepted; ``lava_test_shell`` names remote test definitions and is
rejected.

The definitions run on the device, in LAVA's test shell
(:mod:`convoy.tasks.run.testshell`): one SSH session per test action, each
definition's steps one ``sh -e`` script in its own directory with its
parameters exported, LAVA's helpers (``lava-test-case`` …, the MultiNode API)
on PATH.  A guest's (``connection: ssh``) definitions run on its host role's
device over the guest's own SSH session.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from convoy.config.durations import MAX_DURATION, DurationError, as_seconds, parse_duration
from convoy.config.schemas import (
    DEFINITION_NAME_RE,
    ENV_NAME_RE,
    LAVA_START,
    ROLE_RE,
    SSH_CONNECTION,
    join_path,
    kind_of,
    message_id_problem,
)
from convoy.config.shown import shown
from convoy.errors import FieldError

__all__ = ["DEFINITION_NAME_RE", "DEPLOY_METHODS", "MULTINODE", "ActionTranslator", "Role"]

MULTINODE = "lava-multinode"

#: LAVA's ``deploy: to:`` methods convoy knows by name; every other method (but docker and lxc) is accepted
#: too, all meaning "provision the device with the image/os named", and recorded in ``provision_data.deploy``
DEPLOY_METHODS = frozenset({
    "tftp", "nfs", "tmpfs", "ssh", "overlay", "download", "flasher", "fastboot", "usb", "sata", "nbd",
    "iso-installer", "u-boot-ums", "uuu", "recovery", "removeable", "vemsd", "mps", "musca", "usbg-ms",
})
#: deploy and boot methods that need LAVA's dispatcher itself
_CONTAINER_METHODS = {
    "lxc": "lxc needs LAVA's lava-lxc protocol (a container on the dispatcher); convoy has no connector for it",
    "docker": "docker runs on LAVA's dispatcher; convoy has no connector for it",
}
_DURATION_UNITS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
_API_REQUESTS = {"lava-send", "lava-wait", "lava-wait-all", "lava-sync", LAVA_START}
#: the message a delayed start waits for (``lava-send lava_start`` on the expected role)
_START_MESSAGE = "lava_start"
_TEST_REJECTED = {
    "interactive": "interactive tests drive a device's console; convoy runs shell test definitions only",
    "monitors": "monitors watch a device's console; convoy runs shell test definitions only",
    "docker": "tests in docker run on LAVA's dispatcher; convoy has no equivalent",
}
_INSTALL_REJECTED = {"git-repos", "bzr-repos", "sources", "keys"}
#: LAVA's ``skip_install`` parts
_SKIP_INSTALL = ("keys", "sources", "deps", "steps", "git-repos", "all")


@dataclass
class Role:
    """One LAVA role as the actions fill it in: what its device is provisioned with and what it runs."""

    name: str
    path: str                       #: where the role is written (``protocols.lava-multinode.roles.server``)
    name_path: str                  #: where its name is written
    spec: dict[str, Any]
    deploy_at: str | None = None
    provision: dict[str, Any] = field(default_factory=dict)
    #: its test actions, in order: ``{definitions, timeout, requests}`` (``test_data.lava_tests``)
    tests: list[dict[str, Any]] = field(default_factory=list)
    #: MultiNode requests of deploy/boot actions, run before the next test action's definitions
    pending: list[str] = field(default_factory=list)

    def finish(self) -> None:
        """Requests no test action followed still run: as a test action of their own."""
        if self.pending:
            self.tests.append({"definitions": [], "requests": self.pending})
            self.pending = []

    @property
    def guest(self) -> bool:
        return self.spec.get("connection") == SSH_CONNECTION


class ActionTranslator:
    """Translates ``actions:`` into the roles, collecting every problem rather than stopping at the first.

    :class:`convoy.config.lava.translate._Translator` builds on it for the job and its roles.
    """

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    # --- actions ------------------------------------------------------------------
    def actions(self, actions: Any, roles: list[Role], multinode: bool) -> None:
        """Each action, in order, into the roles it names: the order of the commands is the order written."""
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
                role.pending.extend(requests)
            getattr(self, kind)(body, path, targets)
        for role in roles:
            role.finish()

    def targets(self, value: Any, path: str, roles: list[Role], multinode: bool, given: bool) -> list[Role]:
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
                           f"no role {shown(name)} (roles: {', '.join(by_name) or 'none'})")
            elif by_name[name] not in chosen:
                chosen.append(by_name[name])
        return chosen

    def deploy(self, body: dict[str, Any], path: str, roles: list[Role]) -> None:
        """The deploy as the role's provision_data; a device is provisioned once, so a second deploy is an error."""
        method = body.get("to")
        if "to" not in body:
            self.error(f"{path}.to", "required: the deploy method (tftp, nfs, tmpfs, ssh, ...)")
            return
        if not isinstance(method, str):
            self.error(f"{path}.to", f"must be the deploy method's name (tftp, nfs, ...), got {kind_of(method)}")
            return
        if method in _CONTAINER_METHODS:
            self.error(f"{path}.to", _CONTAINER_METHODS[method])
            return
        if not method or not method.isprintable() or any(c.isspace() for c in method):
            self.error(f"{path}.to", f"must be the deploy method's name (tftp, nfs, ...), got {shown(method)}")
            return
        provision: dict[str, Any] = {"deploy": method}
        if "os" in body:
            provision["os"] = body["os"]
        if isinstance(body.get("authorize"), str):  # LAVA's authorize: ssh, kept for the connector to honour
            provision["authorize"] = body["authorize"]
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

    def boot(self, body: dict[str, Any], path: str, roles: list[Role]) -> None:
        """The boot method, recorded for the connector; guests have no device to boot."""
        method = body.get("method")
        if "method" in body and not isinstance(method, str):
            self.error(f"{path}.method", f"must be the boot method's name (u-boot, qemu, ...), got {kind_of(method)}")
            return
        if method in _CONTAINER_METHODS:
            self.error(f"{path}.method", _CONTAINER_METHODS[method])
            return
        if isinstance(method, str) and (not method or not method.isprintable()
                                        or any(c.isspace() for c in method)):
            self.error(f"{path}.method", f"must be the boot method's name (u-boot, qemu, ...), got {shown(method)}")
            return
        for role in roles:
            if not role.guest and isinstance(method, str):
                role.provision.setdefault("boot", method)

    def test(self, body: dict[str, Any], path: str, roles: list[Role]) -> None:
        """A test action as one entry of each role's ``lava_tests``, its requests first."""
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
        found = [self.definition(d, f"{path}.definitions[{j}]") for j, d in enumerate(definitions)]
        action: dict[str, Any] = {"definitions": [d for d in found if d is not None]}
        if "timeout" in body:
            seconds = self.seconds(body["timeout"], f"{path}.timeout")
            if seconds is not None:
                action["timeout"] = seconds
        for role in roles:
            role.tests.append({**action, "requests": role.pending})
            role.pending = []

    def definition(self, definition: Any, path: str) -> dict[str, Any] | None:
        """One inline definition, checked here and kept as data for the test shell's overlay."""
        if not isinstance(definition, dict):
            self.error(path, f"must be a mapping (from, repository, name, path), got {kind_of(definition)}")
            return None
        source = definition.get("from")
        if source in ("git", "url"):
            return self.fetched_definition(definition, path, source)
        if source != "inline":
            self.error(f"{path}.from", "required: inline, git or url" if source is None
                       else f"must be inline, git or url (got {shown(source)}); paste other definitions "
                            "under repository: with from: inline")
            return None
        repo = definition.get("repository")
        if not isinstance(repo, dict):
            self.error(f"{path}.repository", "must be the inline test definition (metadata, run: {steps: [...]}), "
                                             f"got {kind_of(repo)}")
            return None
        metadata = repo.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            self.error(f"{path}.repository.metadata", f"must be a mapping (format, name, description, ...), "
                                                      f"got {kind_of(metadata)}")
            return None
        name = definition.get("name") if "name" in definition else (metadata or {}).get("name") or "inline"
        if not isinstance(name, str) or not DEFINITION_NAME_RE.fullmatch(name):
            self.error(f"{path}.name", f"must be a test definition name (letters, digits, '-', '_', '.'), "
                                       f"got {shown(name)}")
            return None
        errors = len(self.errors)
        params, overrides = repo.get("params") or {}, definition.get("parameters") or {}
        for value, where in ((params, f"{path}.repository.params"), (overrides, f"{path}.parameters")):
            if not isinstance(value, dict):
                self.error(where, f"must be a mapping of NAME: value, got {kind_of(value)}")
                return None
        for value, where in ((params, f"{path}.repository.params"), (overrides, f"{path}.parameters")):
            for key, item in value.items():
                if not ENV_NAME_RE.fullmatch(str(key)):
                    self.error(join_path(where, key), "not a shell variable name (letters, digits and '_', "
                                                      "not starting with a digit)")
                elif isinstance(item, (dict, list)):
                    self.error(join_path(where, key), f"must be a single value, got {kind_of(item)}")
        self.install(repo.get("install"), f"{path}.repository.install")
        run = repo.get("run")
        steps = run.get("steps") if isinstance(run, dict) else None
        if not isinstance(steps, list):
            self.error(f"{path}.repository.run.steps", "required: the list of shell steps to run" if steps is None
                       else f"must be a list of shell commands, got {kind_of(steps)}")
            return None
        self.commands(steps, f"{path}.repository.run.steps")
        if len(self.errors) > errors:
            return None
        found: dict[str, Any] = {"name": name, "from": "inline", "repository": repo}
        if isinstance(definition.get("path"), str):
            found["path"] = definition["path"]
        if overrides:
            found["parameters"] = {str(k): _text(v) for k, v in overrides.items()}
        skip = self.skip_install(definition, path)
        if skip is not None:
            found["skip_install"] = skip
        return found

    def fetched_definition(self, definition: dict[str, Any], path: str, source: str) -> dict[str, Any] | None:
        """A definition the worker fetches (``from: git``/``url``): its source checked here, its YAML at run time."""
        errors = len(self.errors)
        repo = definition.get("repository")
        if not isinstance(repo, str) or not repo.strip() or any(c.isspace() for c in repo):
            self.error(f"{path}.repository", f"must be the {'git repository' if source == 'git' else 'URL'} "
                                             f"of the test definition, got {shown(repo)}")
        elif source == "url" and not repo.lower().startswith(("http://", "https://", "file://")):
            self.error(f"{path}.repository", f"must be an http, https or file URL, got {shown(repo)}")
        name = definition.get("name")
        if not isinstance(name, str) or not DEFINITION_NAME_RE.fullmatch(name):
            self.error(f"{path}.name", "required: a test definition name (letters, digits, '-', '_', '.')"
                       if name is None else f"must be a test definition name (letters, digits, '-', '_', '.'), "
                                            f"got {shown(name)}")
        where = definition.get("path")
        if source == "git" and (not isinstance(where, str) or not where.strip()):
            self.error(f"{path}.path", "required: the definition's YAML file in the repository" if where is None
                       else f"must be a file's path in the repository, got {shown(where)}")
        elif where is not None and not isinstance(where, str):
            self.error(f"{path}.path", f"must be a string, got {kind_of(where)}")
        found: dict[str, Any] = {"name": name, "from": source, "repository": repo}
        if isinstance(where, str):
            found["path"] = where
        allowed = {"git": ("revision", "branch", "history"), "url": ()}[source]
        for key in ("revision", "branch", "history"):
            if key not in definition:
                continue
            value = definition[key]
            if key not in allowed:
                self.error(f"{path}.{key}", "only for from: git")
            elif key == "history" and not isinstance(value, bool):
                self.error(f"{path}.history", f"must be true or false, got {shown(value)}")
            elif key != "history" and (not isinstance(value, (str, int)) or isinstance(value, bool)
                                       or not str(value) or str(value).startswith("-")
                                       or any(c.isspace() or not c.isprintable() for c in str(value))):
                what = "revision (a commit or tag)" if key == "revision" else "branch name"
                self.error(f"{path}.{key}", f"must be a git {what}, got {shown(value)}")
            else:
                found[key] = value if key == "history" else str(value)
        if "revision" in found and "branch" in found:
            self.error(f"{path}.branch", "give a revision or a branch, not both")
        overrides = definition.get("parameters", definition.get("params")) or {}
        where_params = f"{path}.{'parameters' if 'parameters' in definition else 'params'}"
        if not isinstance(overrides, dict):
            self.error(where_params, f"must be a mapping of NAME: value, got {kind_of(overrides)}")
        else:
            for key, item in overrides.items():
                if not ENV_NAME_RE.fullmatch(str(key)):
                    self.error(join_path(where_params, key), "not a shell variable name (letters, digits and '_', "
                                                             "not starting with a digit)")
                elif isinstance(item, (dict, list)):
                    self.error(join_path(where_params, key), f"must be a single value, got {kind_of(item)}")
            if overrides:
                found["parameters"] = {str(k): _text(v) for k, v in overrides.items()}
        skip = self.skip_install(definition, path)
        if skip is not None:
            found["skip_install"] = skip
        return found if len(self.errors) == errors else None

    def skip_install(self, definition: dict[str, Any], path: str) -> bool | list[str] | None:
        """LAVA's ``skip_install``: true, or a list of the install parts skipped (deps, steps, all ...)."""
        if "skip_install" not in definition:
            return None
        value = definition["skip_install"]
        items = [value] if isinstance(value, str) else value
        if isinstance(value, bool):
            return value
        if not isinstance(items, list) or not all(isinstance(i, str) and i in _SKIP_INSTALL for i in items):
            self.error(f"{path}.skip_install", f"must be true or a list of {', '.join(_SKIP_INSTALL)}, "
                                               f"got {shown(value)}")
            return None
        return list(items)

    def commands(self, steps: list[Any], path: str) -> None:
        """Shell steps are strings; YAML turns an unquoted ``a: b`` step into a mapping, which is reported."""
        for j, step in enumerate(steps):
            if isinstance(step, (dict, list)) or step is None:
                hint = " (quote a step that contains ': ')" if isinstance(step, dict) else ""
                self.error(f"{path}[{j}]", f"must be a shell command (a string), got {kind_of(step)}{hint}")

    def install(self, install: Any, path: str) -> None:
        """An ``install:`` block: ``deps`` (names) and ``steps``; changing software sources is refused."""
        if install is None:
            return
        if not isinstance(install, dict):
            self.error(path, f"must be a mapping (deps, steps), got {kind_of(install)}")
            return
        for key in install:
            if key in _INSTALL_REJECTED:
                self.error(join_path(path, key), "convoy does not change the device's software sources; "
                                                 "provide it in the image")
        deps = install.get("deps") or []
        if not isinstance(deps, list) or not all(isinstance(d, str) and d and d.isprintable() and " " not in d
                                                 for d in deps):
            self.error(f"{path}.deps", "must be a list of package names")
        steps = install.get("steps") or []
        if not isinstance(steps, list):
            self.error(f"{path}.steps", f"must be a list of shell commands, got {kind_of(steps)}")
            return
        self.commands(steps, f"{path}.steps")

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
        """One MultiNode request as the command line of the same API call.

        LAVA's forms: ``{request, messageID, message, timeout}`` (``role`` for ``lava-wait-all``;
        ``action`` names the pipeline action that makes the call and is ignored), the older
        ``{api, id, key, timeout}``, and ``{request: lava-start, expect_role: R}``: wait until every
        member of R has sent ``lava_start``.
        """
        if not isinstance(request, dict):
            self.error(path, f"must be a mapping (request, messageID, message), got {kind_of(request)}")
            return None
        kind_key = "request" if "request" in request or "api" not in request else "api"
        mid_key = "messageID" if "messageID" in request or "id" not in request else "id"
        kind, mid = request.get(kind_key), request.get(mid_key)
        if not isinstance(kind, str) or kind not in _API_REQUESTS:
            self.error(f"{path}.{kind_key}", f"must be one of {', '.join(sorted(_API_REQUESTS))} (got {shown(kind)})")
            return None
        if kind == LAVA_START:
            return self.start_request(request, path)
        if mid is None:
            self.error(f"{path}.messageID", "required: the message id")
            return None
        problem = message_id_problem(mid) if isinstance(mid, str) else f"must be a string, got {kind_of(mid)}"
        if problem:
            self.error(f"{path}.{mid_key}", problem)
            return None
        words = [kind]
        if "timeout" in request and kind != "lava-send":
            seconds = self.seconds(request["timeout"], f"{path}.timeout")
            if seconds is not None:
                words += ["--timeout", str(seconds)]
        words.append(mid)
        if kind == "lava-send":
            words += self.message(request.get("message"), f"{path}.message")
        if kind == "lava-wait-all" and "role" in request:
            role = request["role"]
            if not isinstance(role, str) or not ROLE_RE.fullmatch(role):
                self.error(f"{path}.role", f"must be a role name, got {shown(role)}")
            else:
                words.append(role)
        return " ".join(shlex.quote(word) for word in words)

    def start_request(self, request: dict[str, Any], path: str) -> str | None:
        """``request: lava-start`` in an action: wait for ``lava_start`` from every member of ``expect_role``."""
        role = request.get("expect_role")
        if not isinstance(role, str) or not ROLE_RE.fullmatch(role):
            self.error(f"{path}.expect_role", "required (with request: lava-start): the role whose lava_start "
                                              "this action waits for" if role is None
                       else f"must be a role name, got {shown(role)}")
            return None
        words = ["lava-wait-all"]
        if "timeout" in request:
            seconds = self.seconds(request["timeout"], f"{path}.timeout")
            if seconds is not None:
                words += ["--timeout", str(seconds)]
        words += [_START_MESSAGE, role]
        return " ".join(shlex.quote(word) for word in words)

    def message(self, message: Any, path: str) -> list[str]:
        """``lava-send``'s ``message`` as ``key=value`` words, by the rules ``lava-send`` applies."""
        if message is None:
            return []
        if not isinstance(message, dict):
            self.error(path, f"must be a mapping of key: value, got {kind_of(message)}")
            return []
        words = []
        for key, value in message.items():
            where = join_path(path, key)
            if not key or "=" in key or any(c.isspace() or not c.isprintable() for c in key):
                self.error(where, "a message key must be printable, without spaces or '='")
            elif isinstance(value, (dict, list)):
                self.error(where, f"must be a single value (string or number), got {kind_of(value)}")
            elif any(c in _text(value) for c in "\r\n\0"):
                self.error(where, "message values are one line")
            else:
                words.append(f"{key}={_text(value)}")
        return words

    def v1_action(self, action: dict[str, Any], path: str, roles: list[Role], multinode: bool) -> None:
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
            before = len(self.errors)
            for key, kind in (("testdef_repos", "git-repo"), ("testdef_urls", "url")):
                given = params.get(key) or []
                if not isinstance(given, list):
                    self.error(f"{path}.parameters.{key}", f"must be a list of test definitions, got {kind_of(given)}")
                    continue
                for j, _ in enumerate(given):
                    self.error(f"{path}.parameters.{key}[{j}]",
                               f"only inline test definitions can be translated (got {kind})")
            if len(self.errors) == before:
                self.error(f"{path}.parameters", "lava_test_shell without testdef_repos or testdef_urls")
        elif not command.startswith(("boot_", "submit_results")):
            self.error(f"{path}.command", f"LAVA V1 command {shown(command)} cannot be translated "
                                          "(deploy_*, boot_*, submit_results* can)")

    # --- values -------------------------------------------------------------------
    def seconds(self, value: Any, path: str) -> int | float | None:
        """A duration checked here (it goes into a command line, not through convoy's validator), or None."""
        before = len(self.errors)
        value = self.duration(value, path)
        if len(self.errors) > before:
            return None
        try:
            return as_seconds(parse_duration(value, field=path))
        except DurationError as exc:
            self.error(path, exc.reason)
            return None

    def duration(self, value: Any, path: str) -> Any:
        """LAVA's ``{minutes: 10}`` as seconds; any other value is left for convoy to check."""
        if not isinstance(value, dict):
            return value
        total = 0
        for unit, amount in value.items():
            where = join_path(path, unit)
            if unit not in _DURATION_UNITS:
                self.error(where, f"unknown unit (use {', '.join(_DURATION_UNITS)})")
                return value
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not amount >= 0:
                self.error(where, f"must be a non-negative number, got {shown(amount)}")
                return value
            if amount > MAX_DURATION:  # exact comparison: 10**300 minutes would overflow a float
                self.error(where, f"must be at most {MAX_DURATION} seconds (365 days) in all, got {shown(amount)}")
                return value
            total += amount * _DURATION_UNITS[unit]
        if total <= 0:
            self.error(path, "must be a positive duration ({minutes: 10}, {seconds: 30}, ...)")
        elif total > MAX_DURATION:
            self.error(path, f"must be at most {MAX_DURATION} seconds (365 days) in all")
            return value
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
