"""The overlay: what the worker copies to the device before it runs a job's LAVA test actions.

LAVA's layout, under the device's home (``~/lava-<job id>/``)::

    bin/                     lava-test-runner and the helpers (lava-test-case, lava-send, ...)
    environment              sourced by the runner: the job's variables on the device
    <action>/                one per test action (0, 1, ...)
      requests.sh            the action's MultiNode requests, run first
      lava-test-runner.conf  the definitions' directories, in order
      tests/<n>_<name>/      one per definition, n counted across the job (LAVA's suite name)
        run.sh               parameters exported, cd here, STARTRUN, install, steps, ENDRUN
        uuid
        testdef.json         the definition as given (from: inline: the YAML as data)
        ...                  from: git / url: the repository's files (scripts/ ...), fetched by the worker

Definitions ``from: git``/``url`` arrive here already fetched
(:mod:`convoy.tasks.run.testshell.fetch`): ``repository`` the loaded YAML,
``files`` the directory whose files become the definition's directory.
A definition's ``skip_install`` (``true``/``all`` or a list of ``deps``,
``steps`` ...) leaves those install parts out, as in LAVA.

Building it is pure file writing on the worker (:func:`build_overlay`);
:func:`overlay_tar` packs it for ``tar -x`` on the device.
"""
from __future__ import annotations

import io
import json
import shlex
import shutil
import tarfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from convoy.config.schemas import DEFINITION_NAME_RE, ENV_NAME_RE
from convoy.errors import ConvoyError
from convoy.tasks.run.testshell.parse import Parser, parser_of

__all__ = ["HELPERS", "Overlay", "build_overlay", "definition_script", "overlay_tar", "remote_dir"]

#: the helper files shipped as package data (tasks/run/testshell/helpers/)
HELPERS = ("lava-test-runner", "lava-multi-node.lib", "lava-test-case", "lava-test-set", "lava-test-raise",
           "lava-test-reference", "lava-background-process-start", "lava-background-process-stop",
           "lava-send", "lava-wait", "lava-wait-all", "lava-sync", "lava-group", "lava-role", "lava-self",
           "lava-network", "lava-echo-ipv4", "lava-install-packages")


@dataclass
class Overlay:
    """An overlay built on the worker: where it is, and each action's suites (``0_smoke`` ...)."""

    root: Path
    name: str                                  #: its directory under the device's home
    suites: list[list[str]] = field(default_factory=list)
    #: LAVA's ``parse: pattern`` of each definition that has one, by suite: applied to its output lines
    parsers: dict[str, Parser] = field(default_factory=dict)


def remote_dir(job_id: str) -> str:
    """The overlay's directory under the device's home."""
    return f"lava-{job_id}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _exports(params: Mapping[str, Any], where: str) -> list[str]:
    lines = []
    for key, value in params.items():
        if not ENV_NAME_RE.fullmatch(str(key)):
            raise ConvoyError(f"{where}: {key!r} is not a shell variable name")
        lines.append(f"export {key}={shlex.quote(_text(value))}")
    return lines


def _steps(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(step, (str, int, float)) for step in value):
        raise ConvoyError(f"{where} must be a list of shell commands")
    return [_text(step).rstrip("\n") for step in value]


#: the install parts ``skip_install`` may name (LAVA's); ``all`` (or ``true``) skips every one
SKIP_INSTALL = ("keys", "sources", "deps", "steps", "git-repos", "all")


def skipped_install(value: Any, where: str) -> set[str]:
    """The install parts a definition's ``skip_install`` skips."""
    if value is None or value is False:
        return set()
    if value is True:
        return {"all"}
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i in SKIP_INSTALL for i in items):
        raise ConvoyError(f"{where}: skip_install must be true or a list of {', '.join(SKIP_INSTALL)}")
    return set(items)


def definition_script(testrun: str, definition: Mapping[str, Any]) -> str:
    """A definition's ``run.sh`` (LAVA's): parameters, ``set -e``, its directory, STARTRUN, install, steps, ENDRUN.

    Raises ConvoyError naming what is wrong with a definition given as data.
    """
    repo = definition.get("repository")
    if not isinstance(repo, dict):
        raise ConvoyError(f"test definition {testrun}: repository must be the definition (metadata, run)")
    install = repo.get("install") or {}
    if not isinstance(install, dict):
        raise ConvoyError(f"test definition {testrun}: install must be a mapping (deps, steps)")
    deps = install.get("deps") or []
    if not isinstance(deps, list) or not all(isinstance(d, str) and d.isprintable() for d in deps):
        raise ConvoyError(f"test definition {testrun}: install.deps must be a list of package names")
    skip = skipped_install(definition.get("skip_install"), f"test definition {testrun}")
    run = repo.get("run")
    steps = _steps(run.get("steps") if isinstance(run, dict) else None, f"test definition {testrun}: run.steps")
    lines = ["#!/bin/sh", "###default parameters from test definition###"]
    lines += _exports(repo.get("params") or {}, f"test definition {testrun}: params")
    lines += ["###test parameters from job submission###"]
    lines += _exports(definition.get("parameters") or {}, f"test definition {testrun}: parameters")
    lines += ["######", "set -e", f"export TESTRUN_ID={testrun}", 'cd "$(dirname "$0")"', "UUID=$(cat uuid)",
              'export LAVA_RESULT_DIR="$(pwd)/results"', 'mkdir -p "$LAVA_RESULT_DIR"',
              'echo "<LAVA_SIGNAL_STARTRUN $TESTRUN_ID $UUID>"']
    if deps and not skip & {"deps", "all"}:
        lines.append("lava-install-packages " + " ".join(shlex.quote(d) for d in deps))
    install_steps = _steps(install.get("steps"), f"test definition {testrun}: install.steps")
    if not skip & {"steps", "all"}:
        lines += install_steps
    lines += steps
    lines += ['echo "<LAVA_SIGNAL_ENDRUN $TESTRUN_ID $UUID>"', ""]
    return "\n".join(lines)


def build_overlay(dest: Path, job_id: str, lava_tests: Sequence[Mapping[str, Any]],
                  environment: Mapping[str, str]) -> Overlay:
    """Write the overlay for ``lava_tests`` under ``dest`` (replacing what was there)."""
    shutil.rmtree(dest, ignore_errors=True)
    bin_dir = dest / "bin"
    bin_dir.mkdir(parents=True)
    helpers = resources.files("convoy.tasks.run.testshell") / "helpers"
    for name in HELPERS:
        target = bin_dir / name
        target.write_bytes((helpers / name).read_bytes())
        target.chmod(0o755)
    env_lines = ["# the job's variables on the device (sourced by lava-test-runner)"]
    for key, value in environment.items():
        if not ENV_NAME_RE.fullmatch(key):
            raise ConvoyError(f"test shell environment: {key!r} is not a variable name")
        env_lines.append(f"export {key}={shlex.quote(value)}")
    (dest / "environment").write_text("\n".join(env_lines) + "\n")
    overlay = Overlay(dest, remote_dir(job_id))
    index = 0
    for a, action in enumerate(lava_tests):
        action_dir = dest / str(a)
        (action_dir / "tests").mkdir(parents=True)
        requests = action.get("requests") or []
        (action_dir / "requests.sh").write_text("\n".join(["set -e", *map(str, requests), ""]))
        suites = []
        for definition in action.get("definitions") or []:
            name = str(definition.get("name", ""))
            if not DEFINITION_NAME_RE.fullmatch(name):
                raise ConvoyError(f"test definition name {name[:64]!r}: letters, digits, '-', '_', '.' only")
            testrun = f"{index}_{name}"
            index += 1
            test_dir = action_dir / "tests" / testrun
            if definition.get("files"):  # fetched: the repository's files are the definition's directory
                shutil.copytree(str(definition["files"]), test_dir, symlinks=True)
            else:
                test_dir.mkdir()
            repo = definition.get("repository")
            parser = parser_of(repo, f"test definition {testrun}") if isinstance(repo, dict) else None
            if parser is not None:
                overlay.parsers[testrun] = parser
            (test_dir / "run.sh").write_text(definition_script(testrun, definition))
            (test_dir / "uuid").write_text(f"{uuid.uuid4()}\n")
            (test_dir / "testdef.json").write_text(json.dumps(dict(definition), indent=1, default=str))
            suites.append(testrun)
        (action_dir / "lava-test-runner.conf").write_text("".join(f"{s}\n" for s in suites))
        overlay.suites.append(suites)
    return overlay


def overlay_tar(overlay: Overlay) -> bytes:
    """The overlay as an uncompressed tar, its members under ``overlay.name/``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(overlay.root, arcname=overlay.name)
    return buffer.getvalue()
