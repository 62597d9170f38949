"""examples/lava-git-definition.yaml: a LAVA MultiNode job whose definitions come ``from: git``.

The example creates its own definition repository
(``examples/lava-git-definition/create-repository.sh``, at the fixed path the
job names), then ``convoy run`` fetches it on each device's worker with real
git: the server's pinned to a tag (``revision: v1.0``), the client's to a branch
(``branch: stable``).  The assertions read what a user reads: the exit code,
``results.json`` and each device's output.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import REPO
from test_lava_examples import convoy_run

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "lava-git-definition.yaml"
CREATE = REPO / "examples" / "lava-git-definition" / "create-repository.sh"
REPOSITORY = Path("/tmp/convoy-example-definitions.git")  # the job's repository: file:///tmp/convoy-example-definitions.git


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


@pytest.fixture
def definitions_repository(tmp_path: Path) -> Iterator[Path]:
    """The example's repository, made by its own script with no git user configured; removed afterwards."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    env.pop("GIT_CONFIG", None)
    try:
        created = subprocess.run(["sh", str(CREATE)], capture_output=True, text=True, timeout=60, env=env,
                                 check=False)
        assert created.returncode == 0, created.stdout + created.stderr
        yield REPOSITORY
    finally:
        shutil.rmtree(REPOSITORY, ignore_errors=True)


def test_git_definitions_run_from_the_examples_own_repository_pinned_by_tag_and_branch(
        definitions_repository: Path, tmp_path: Path) -> None:
    pinned = git("rev-parse", "v1.0^{commit}", cwd=definitions_repository)
    assert git("rev-parse", "stable", cwd=definitions_repository) == pinned
    assert git("ls-tree", "-r", "--name-only", pinned, cwd=definitions_repository).split() == [
        "definitions/greeting.yaml", "scripts/greet.sh"]
    # a later commit on main (the repository's HEAD) that would fail: the tag and the branch keep the job on v1.0
    clone = tmp_path / "clone"
    git("clone", "--quiet", str(definitions_repository), str(clone))
    (clone / "scripts" / "greet.sh").write_text("#!/bin/sh\necho 'unpinned main'\nexit 1\n")
    git("commit", "--quiet", "-am", "break main", cwd=clone)
    git("push", "--quiet", "origin", "main", cwd=clone)
    assert git("rev-parse", "main", cwd=definitions_repository) != pinned

    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    results = convoy_run(EXAMPLE.name, artifacts)  # complete, pass, every child and MultiNode call too

    children = {child["role"]: child for child in results["children"]}
    assert sorted(children) == ["client", "server"] and len(results["children"]) == 2
    for role, child in children.items():
        assert child["outcome"] == "pass" and child.get("test_status") == 0, child
        suites = {suite["name"]: suite["cases"] for suite in child["test_results"]}
        # role-from-job passes only when the job's parameters replaced the definition's ROLE default;
        # script-ran is reported by scripts/greet.sh, a file of the definition's repository
        assert [(c["case"], c["result"]) for c in suites["0_greeting"]] == [
            ("role-from-job", "pass"), ("script-ran", "pass"), ("met-the-others", "pass")]
        assert ("multinode-sync-greeted", "pass") in [(c["case"], c["result"]) for c in suites["lava"]]
        out = child["test_output"]
        assert f"hello from the {role}, run by scripts/greet.sh in " in out, out
        assert "unpinned main" not in out
    synced = [c for c in results["multinode"] if c["name"] == "multinode-sync-greeted"]
    assert sorted(c["job_id"] for c in synced) == sorted(c["job_id"] for c in children.values())
    assert all(c["result"] == "pass" for c in synced)
