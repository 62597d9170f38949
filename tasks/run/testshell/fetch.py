"""Test definitions ``from: git`` and ``from: url``, fetched on the device's host (the worker), never on the device.

``from: git``: one bare mirror per repository URL under the worker's state
dir (``<cache>/git/<sha256 of url>/mirror``), created by ``git clone
--mirror`` and refreshed by ``git fetch``; the asked ``revision`` (commit or
tag) or ``branch`` (default: the remote's HEAD) resolved to a commit, whose
files are kept once per commit (``trees/<commit>/``): a second job at the same
commit copies them without touching the network.  A ``revision`` already in
the mirror is not fetched again.  ``history: false`` leaves ``.git`` out of
the overlay; LAVA's default (``history: true``) keeps it (a local clone of the
mirror checked out at the commit).  The real ``git`` runs with the worker's
environment, so a lab's ``url.<base>.insteadOf`` mirrors (``~/.gitconfig``,
``GIT_CONFIG_GLOBAL``) apply as they would for anyone.  Never hangs: git's
low-speed limit, no prompts, and an overall timeout per command.

``from: url``: the YAML downloaded (http, https, file; a size cap and a
timeout).  Either way the definition goes through convoy's safe YAML loader
and the checks an inline definition gets, and is then run like one, its
repository's files (``scripts/`` ...) in its directory.  A definition that
cannot be fetched or loaded fails one test case (``fetch-definition``, in its
own suite) and nothing else, as a missing script would.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from convoy.config.yamlsafe import load_yaml
from convoy.errors import ConvoyError

__all__ = ["FETCHED", "UNFETCHED_CASE", "FetchError", "GitCache", "fetch_url", "resolve_definition",
           "resolve_definitions",
           "unfetched_definition", "uses_peer_definitions"]

#: the definition sources fetched by the worker ("peer" definitions: not written in the job itself)
FETCHED = frozenset({"git", "url"})
GIT_TIMEOUT_SECONDS = 300.0
LOCK_TIMEOUT_SECONDS = 600.0
URL_TIMEOUT_SECONDS = 30.0
MAX_DEFINITION_BYTES = 1 << 20
URL_SCHEMES = ("http", "https", "file")
#: the test case a definition that could not be fetched fails (in its own suite)
UNFETCHED_CASE = "fetch-definition"
_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
#: git never waits for a user and gives up on a connection that stalls (a lab's own settings win)
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_HTTP_LOW_SPEED_LIMIT": "1000", "GIT_HTTP_LOW_SPEED_TIME": "30",
            "GIT_ASKPASS": "true", "SSH_ASKPASS": "true",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o ConnectTimeout=30"}


class FetchError(ConvoyError):
    """A definition could not be fetched or loaded; the message names the definition, its source and why."""


def uses_peer_definitions(lava_tests: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any test action runs a definition fetched from git or a URL."""
    return any(d.get("from") in FETCHED for action in lava_tests for d in action.get("definitions") or [])


def _said(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return " / ".join(lines[-2:]) or "no message"


class GitCache:
    """The worker's git mirrors and per-commit trees, under ``root`` (``<state_dir>/cache/git``)."""

    def __init__(self, root: Path, *, timeout: float = GIT_TIMEOUT_SECONDS) -> None:
        self.root = root
        self.timeout = timeout
        #: git commands that went to the network (clone, fetch): what a test of the cache counts
        self.network_calls = 0

    def repo_dir(self, url: str) -> Path:
        return self.root / hashlib.sha256(url.encode("utf-8")).hexdigest()

    def git(self, *args: str, cwd: Path | None = None) -> str:
        """Run the real ``git`` with the worker's environment (its insteadOf mirrors); stdout, or FetchError."""
        try:
            env = {**_GIT_ENV, **os.environ, "GIT_TERMINAL_PROMPT": "0"}
            done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=self.timeout, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise FetchError(f"git {args[0]} took longer than {self.timeout:g}s") from None
        except OSError as exc:
            raise FetchError(f"cannot run git: {exc}") from None
        if done.returncode != 0:
            raise FetchError(f"git {args[0]} failed: {_said(done.stderr)}")
        return done.stdout.strip()

    @contextmanager
    def locked(self, url: str) -> Iterator[Path]:
        """The repository's cache directory, held by this worker process alone (jobs on one host share it)."""
        base = self.repo_dir(url)
        base.mkdir(parents=True, exist_ok=True)
        with (base / "lock").open("w") as lock:
            deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise FetchError(f"the cache of {url} stayed locked {LOCK_TIMEOUT_SECONDS:g}s") from None
                    time.sleep(0.1)
            try:
                yield base
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _commit(self, mirror: Path, ref: str) -> str | None:
        try:
            return self.git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=mirror)
        except FetchError:
            return None

    def resolve(self, url: str, *, revision: str | None = None, branch: str | None = None) -> tuple[Path, str]:
        """The mirror of ``url`` and the commit asked for, fetching only when the mirror cannot answer."""
        with self.locked(url) as base:
            mirror = base / "mirror"
            if revision and mirror.is_dir():
                known = self._commit(mirror, revision)
                if known and (_SHA_RE.fullmatch(revision) or known.startswith(revision.lower())
                              or self._commit(mirror, f"refs/tags/{revision}")):
                    return mirror, known  # a commit (or tag) the mirror holds: no network
            if mirror.is_dir():
                self.network_calls += 1
                self.git("fetch", "--quiet", "--prune", "--tags", "origin", cwd=mirror)
            else:
                partial = base / "mirror.partial"
                shutil.rmtree(partial, ignore_errors=True)
                self.network_calls += 1
                try:
                    self.git("clone", "--quiet", "--mirror", "--", url, str(partial))
                except FetchError:
                    shutil.rmtree(partial, ignore_errors=True)
                    raise
                partial.rename(mirror)
            ref = revision or (f"refs/heads/{branch}" if branch else "HEAD")
            commit = self._commit(mirror, ref)
            if commit is None:
                what = f"revision {revision}" if revision else f"branch {branch}" if branch else "HEAD"
                raise FetchError(f"{what} is not in the repository")
            return mirror, commit

    def tree(self, url: str, mirror: Path, commit: str) -> Path:
        """The files of ``commit``, extracted once (``git archive``) and kept for later jobs."""
        with self.locked(url) as base:
            tree = base / "trees" / commit
            if tree.is_dir():
                return tree
            tree.parent.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(dir=tree.parent, prefix=".partial-"))
            archive = partial / ".archive.tar"
            self.git("archive", "--format=tar", f"--output={archive}", commit, cwd=mirror)
            try:
                import tarfile

                with tarfile.open(archive) as tar:
                    tar.extractall(partial, filter="tar")
            except (OSError, tarfile.TarError) as exc:
                shutil.rmtree(partial, ignore_errors=True)
                raise FetchError(f"cannot unpack commit {commit[:12]}: {exc}") from None
            archive.unlink()
            partial.rename(tree)
            return tree

    def checkout(self, url: str, dest: Path, *, revision: str | None = None, branch: str | None = None,
                 history: bool = True) -> str:
        """The definition's repository at the asked commit in ``dest`` (``.git`` only with ``history``)."""
        mirror, commit = self.resolve(url, revision=revision, branch=branch)
        shutil.rmtree(dest, ignore_errors=True)
        if history:
            with self.locked(url):
                self.git("clone", "--quiet", "--no-checkout", "--", str(mirror), str(dest))
            self.git("checkout", "--quiet", "--detach", commit, cwd=dest)
            self.git("remote", "set-url", "origin", url, cwd=dest)
        else:
            shutil.copytree(self.tree(url, mirror, commit), dest, symlinks=True)
        return commit


def fetch_url(url: str, *, timeout: float = URL_TIMEOUT_SECONDS, limit: int = MAX_DEFINITION_BYTES,
              file_dirs: Sequence[Path] = ()) -> bytes:
    """The document at ``url`` (http, https, or file under one of ``file_dirs``), at most ``limit`` bytes;
    FetchError saying why not.  A ``file`` URL elsewhere is refused: the worker's own files (its keys,
    other jobs' directories) are no job's to read."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise FetchError(f"scheme {scheme or 'none'!r} is not fetched (use {', '.join(URL_SCHEMES)})")
    if scheme == "file":
        path = Path(urllib.parse.unquote(parts.path)).resolve()
        if not any(path.is_relative_to(Path(d).resolve()) for d in file_dirs):
            raise FetchError("a file: URL is read only under this host's CONVOY_DEFINITION_DIRS "
                             f"({':'.join(map(str, file_dirs)) or 'none set'})")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # schemes checked above
            data: bytes = response.read(limit + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise FetchError(f"cannot download it: {reason}") from None
    if len(data) > limit:
        raise FetchError(f"larger than {limit} bytes")
    return data


def _load(text: bytes, source: str, name: str) -> dict[str, Any]:
    """The definition's YAML through the safe loader, checked as an inline definition is."""
    from convoy.config.lava.actions import ActionTranslator

    document = load_yaml(text, source=source)
    if not isinstance(document, dict):
        raise FetchError(f"{source} is not a test definition (a mapping with metadata and run)")
    checker = ActionTranslator()
    checker.definition({"from": "inline", "name": name, "repository": document}, "definition")
    if checker.errors:
        raise FetchError("; ".join(f"{e.path.removeprefix('definition.repository.')}: {e.message}"
                                   for e in checker.errors))
    return document


def resolve_definition(definition: Mapping[str, Any], testrun: str, *, cache: GitCache, dest: Path,
                       file_dirs: Sequence[Path] = ()) -> dict[str, Any]:
    """A git/url definition as an inline one: ``repository`` the loaded YAML, ``files`` its directory."""
    source, url = definition.get("from"), str(definition.get("repository"))
    try:
        if source == "git":
            path = str(definition.get("path") or "")
            commit = cache.checkout(url, dest, revision=definition.get("revision"), branch=definition.get("branch"),
                                    history=definition.get("history", True) is not False)
            target = (dest / path).resolve()
            if not path or not target.is_relative_to(dest.resolve()) or not target.is_file():
                raise FetchError(f"path {path!r} is not a file of the repository at {commit[:12]}")
            text = target.read_bytes()
            if len(text) > MAX_DEFINITION_BYTES:
                raise FetchError(f"{path} is larger than {MAX_DEFINITION_BYTES} bytes")
            where = f"{path}@{commit[:12]}"
        else:
            text = fetch_url(url, file_dirs=file_dirs)
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            name = Path(urllib.parse.urlsplit(url).path).name or "definition.yaml"
            (dest / name).write_bytes(text)
            where, commit = name, ""
        repository = _load(text, where, str(definition.get("name")))
    except ConvoyError as exc:
        raise FetchError(f"test definition {testrun} (from: {source} {url}): {exc}") from None
    resolved = {**definition, "repository": repository, "files": str(dest), "source": url}
    if commit:
        resolved["commit"] = commit
    return resolved


def unfetched_definition(definition: Mapping[str, Any], error: FetchError) -> dict[str, Any]:
    """What runs in place of a definition that could not be fetched: it prints why and fails one test case
    (``fetch-definition``), so the rest of the action (and its MultiNode calls) still runs."""
    repository = {"metadata": {"format": "Lava-Test Test Definition 1.0", "name": str(definition.get("name")),
                               "description": "a definition convoy could not fetch"},
                  "run": {"steps": [f"echo {shlex.quote(f'*** {error} ***')}",
                                    f"lava-test-case {UNFETCHED_CASE} --result fail"]}}
    return {"from": "inline", "name": definition.get("name"), "repository": repository,
            "source": str(definition.get("repository")), "fetch_error": str(error)}


def resolve_definitions(lava_tests: Sequence[Mapping[str, Any]], *, cache_dir: Path, work_dir: Path,
                        file_dirs: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """``lava_tests`` with every git/url definition fetched into ``work_dir`` and given as data; one that
    cannot be fetched (a missing path, an unreachable repository) fails as a test case of its own."""
    cache = GitCache(cache_dir / "git")
    resolved, index = [], 0
    for action in lava_tests:
        definitions = []
        for definition in action.get("definitions") or []:
            testrun = f"{index}_{definition.get('name')}"
            if definition.get("from") in FETCHED:
                try:
                    definition = resolve_definition(definition, testrun, cache=cache, dest=work_dir / testrun,
                                                    file_dirs=file_dirs)
                except FetchError as exc:
                    definition = unfetched_definition(definition, exc)
            definitions.append(dict(definition))
            index += 1
        resolved.append({**action, "definitions": definitions})
    return resolved
