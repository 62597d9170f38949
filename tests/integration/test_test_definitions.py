"""LAVA test definitions ``from: git`` and ``from: url``, fetched by the device's worker and run on the device.

The upstream is a real bare repository made here (``scripts/``, two commits on ``main``, a ``stable``
branch, a ``v1`` tag), reached as ``https://git.example.invalid/tests.git`` through git's standard
``url.<base>.insteadOf`` mapping (``GIT_CONFIG_GLOBAL``, inherited by the cluster's workers), as a lab's
mirror would be; a ``from: url`` definition is served by a local ``http.server``.  No network.
"""
from __future__ import annotations

import functools
import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.coordinator.state.connection import get_store
from convoy.coordinator.state.testcases import cases
from helpers import unique_queue

pytestmark = pytest.mark.integration

UPSTREAM = "https://git.example.invalid/"
SMOKE = """metadata:
  format: Lava-Test Test Definition 1.0
  name: smoke
params:
  GREETING: hello
  TARGET: world
install:
  deps: [iperf3]
  steps:
    - echo install-step-ran
run:
  steps:
    - ./scripts/greet.sh
    - echo "history=$(test -d .git && echo kept || echo none)"
    - lava-test-case greeted --result pass
"""
PARSED = r"""metadata:
  format: Lava-Test Test Definition 1.0
  name: parsed
run:
  steps:
    - 'echo "boot-time: PASS 3.5 s"'
    - 'echo "disk: FAIL"'
    - 'echo "network: SKIP"'
    - echo "not a result line"
parse:
  pattern: '^(?P<test_case_id>[\w-]+):\s+(?P<result>PASS|FAIL|SKIP)(\s+(?P<measurement>[\d.]+)\s+(?P<units>\w+))?$'
  fixupdict:
    PASS: pass
    FAIL: fail
    SKIP: skip
"""
BY_URL = """metadata:
  format: Lava-Test Test Definition 1.0
  name: by-url
params:
  WHAT: default
run:
  steps:
    - echo "from-url says $WHAT"
"""


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The bare repository behind https://git.example.invalid/tests.git; the commits by name."""
    work, mirrors = tmp_path / "upstream-work", tmp_path / "mirrors"
    config = tmp_path / "gitconfig"
    config.write_text(f'[url "{mirrors}/"]\n\tinsteadOf = {UPSTREAM}\n'
                      "[user]\n\tname = t\n\temail = t@example.invalid\n[init]\n\tdefaultBranch = main\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))  # before the cluster starts: its workers inherit it
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    (work / "scripts").mkdir(parents=True)
    git("init", "-q", str(work))
    (work / "smoke.yaml").write_text(SMOKE)
    (work / "parsed.yaml").write_text(PARSED)
    greet = work / "scripts" / "greet.sh"
    greet.write_text('#!/bin/sh\necho "$GREETING $TARGET from v1"\n')
    greet.chmod(0o755)
    git("add", "-A", cwd=work)
    git("commit", "-qm", "one", cwd=work)
    git("tag", "v1", cwd=work)
    first = git("rev-parse", "HEAD", cwd=work)
    git("checkout", "-qb", "stable", cwd=work)
    greet.write_text('#!/bin/sh\necho "$GREETING $TARGET from stable"\n')
    git("commit", "-qam", "stable", cwd=work)
    git("checkout", "-q", "main", cwd=work)
    greet.write_text('#!/bin/sh\necho "$GREETING $TARGET from v2"\n')
    git("commit", "-qam", "two", cwd=work)
    git("clone", "-q", "--bare", str(work), str(mirrors / "tests.git"))
    return {"v1": first, "mirrors": str(mirrors)}


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    """A tiny HTTP server on the loopback serving ``tmp_path/www``; its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "by-url.yaml").write_text(BY_URL)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def single_job(device_type: str, *definitions: dict, timeout: int = 120) -> dict:
    return {"job_name": "test definitions", "device_type": device_type, "timeouts": {"job": {"seconds": timeout}},
            "actions": [{"deploy": {"to": "tmpfs", "os": "debian"}}, {"boot": {"method": "qemu"}},
                        {"test": {"definitions": list(definitions)}}]}


def from_git(name: str, path: str, **extra: object) -> dict:
    return {"from": "git", "repository": UPSTREAM + "tests.git", "path": path, "name": name, **extra}


def output(job_id: str) -> str:
    return get_store().output(job_id, "test")


def test_git_definitions_at_a_revision_and_a_branch_with_params_and_a_url_definition(start_cluster, upstream, web):
    qemu = unique_queue("qemu")
    cluster = start_cluster({qemu: 1})
    job_id = submit_job(single_job(
        qemu,
        from_git("at-tag", "smoke.yaml", revision="v1", history=False, parameters={"GREETING": "hi"}),
        from_git("on-branch", "smoke.yaml", branch="stable", skip_install=["deps"]),
        from_git("at-head", "smoke.yaml", params={"TARGET": "lab"}, skip_install=True),
        {"from": "url", "repository": web + "by-url.yaml", "name": "by-url", "parameters": {"WHAT": "hello"}}))
    assert wait_for_job(job_id, timeout=120) == "complete"
    results, out = job_results(job_id), output(job_id)
    if not results["device_info"].get("sandboxed"):  # a peer's definitions never run on the host's own files
        assert results["outcome"] == "fail" and "is not a sandbox: test definitions from git or url" in out, out
        return
    assert results["outcome"] == "pass", out
    assert "hi world from v1\n" in out  # the tag, the job's parameter over the definition's default
    assert "hello world from stable\n" in out and "hello lab from v2\n" in out  # the branch; HEAD
    assert "from-url says hello\n" in out
    assert out.count("install-step-ran\n") == 2  # skip_install: true skipped HEAD's install steps
    assert out.count("history=none\n") == 1 and out.count("history=kept\n") == 2  # LAVA keeps .git by default
    found = {(c["suite"], c["case"]): c["result"] for c in cases(get_store().client, job_id)}
    assert all(found[(suite, "greeted")] == "pass" for suite in ("0_at-tag", "1_on-branch", "2_at-head"))
    assert all(found[("lava", s)] == "pass" for s in ("0_at-tag", "1_on-branch", "2_at-head", "3_by-url"))
    mirror = list(cluster.state_dir.glob("cache/git/*/mirror"))
    assert len(mirror) == 1  # one mirror per repository URL, on the worker's side
    assert list(cluster.state_dir.glob(f"cache/git/*/trees/{upstream['v1']}"))  # the tag's files, kept

    # a second job at the same commit is served from the cache, even with the upstream gone
    (Path(upstream["mirrors"]) / "tests.git").rename(Path(upstream["mirrors"]) / "gone.git")
    again = submit_job(single_job(qemu, from_git("again", "smoke.yaml", revision=upstream["v1"], history=False)))
    assert wait_for_job(again, timeout=120) == "complete"
    assert job_results(again)["outcome"] == "pass", output(again)
    assert "hello world from v1\n" in output(again)


def test_parse_pattern_with_fixupdict_records_test_cases(start_cluster, upstream):
    qemu = unique_queue("qemu")
    start_cluster({qemu: 1})
    job_id = submit_job(single_job(qemu, from_git("parsed", "parsed.yaml")))
    assert wait_for_job(job_id, timeout=120) == "complete"
    results, out = job_results(job_id), output(job_id)
    if not results["device_info"].get("sandboxed"):
        assert "is not a sandbox" in out, out
        return
    assert results["outcome"] == "pass", out  # failed cases do not fail the job
    found = {c["case"]: c for c in cases(get_store().client, job_id) if c["suite"] == "0_parsed"}
    assert found == {
        "boot-time": {"suite": "0_parsed", "case": "boot-time", "result": "pass", "measurement": "3.5",
                      "units": "s", "definition": "0_parsed"},
        "disk": {"suite": "0_parsed", "case": "disk", "result": "fail", "definition": "0_parsed"},
        "network": {"suite": "0_parsed", "case": "network", "result": "skip", "definition": "0_parsed"}}
    assert "not a result line\n" in out and "boot-time: PASS 3.5 s\n" in out  # the lines are shown too


def test_an_unreachable_repository_fails_one_case_of_its_own_saying_why(start_cluster, upstream):
    qemu = unique_queue("qemu")
    start_cluster({qemu: 1})
    after = {"from": "inline", "name": "after", "repository": {
        "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "after"},
        "run": {"steps": ["lava-test-case still-runs --result pass"]}}}
    job_id = submit_job(single_job(qemu, {"from": "git", "repository": UPSTREAM + "absent.git", "path": "x.yaml",
                                          "name": "absent"}, after))
    assert wait_for_job(job_id, timeout=120) == "complete"
    results, out = job_results(job_id), output(job_id)
    if not results["device_info"].get("sandboxed"):  # a peer definition runs on no unsandboxed device
        assert results["outcome"] == "fail" and "is not a sandbox" in out, out
        return
    assert f"*** test definition 0_absent (from: git {UPSTREAM}absent.git): git clone failed" in out, out
    found = {(c["suite"], c["case"]): c["result"] for c in cases(get_store().client, job_id)}
    assert found[("0_absent", "fetch-definition")] == "fail"  # the definition fails as a test case ...
    assert found[("1_after", "still-runs")] == "pass", found  # ... and the rest of the action runs
    assert results["outcome"] == "pass", out  # as in LAVA, a failed case does not fail the job
