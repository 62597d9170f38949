"""Test definitions from git and url, fetched on the worker: the cache, its errors, and LAVA's parse: pattern.

Real ``git`` on a local bare repository reached through a ``url.<base>.insteadOf`` mapping (as a lab's mirror
is), real files; no network.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from convoy.errors import ConvoyError
from convoy.tasks.run.testshell.fetch import (
    UNFETCHED_CASE,
    FetchError,
    GitCache,
    fetch_url,
    resolve_definition,
    resolve_definitions,
)
from convoy.tasks.run.testshell.markers import TestCase
from convoy.tasks.run.testshell.overlay import build_overlay, definition_script
from convoy.tasks.run.testshell.parse import parser_of

UPSTREAM = "https://git.example.invalid/"
SMOKE = """metadata:
  format: Lava-Test Test Definition 1.0
  name: smoke
params:
  GREETING: hello
run:
  steps:
    - ./scripts/greet.sh
"""


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A bare repository at https://git.example.invalid/tests.git (an insteadOf mirror): two commits, a tag,
    a branch; the commits' ids by name."""
    work, bare = tmp_path / "work", tmp_path / "mirror" / "tests.git"
    config = tmp_path / "gitconfig"
    config.write_text(f'[url "{tmp_path / "mirror"}/"]\n\tinsteadOf = {UPSTREAM}\n'
                      "[user]\n\tname = t\n\temail = t@example.invalid\n[init]\n\tdefaultBranch = main\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    (work / "scripts").mkdir(parents=True)
    git("init", "-q", str(work))
    (work / "smoke.yaml").write_text(SMOKE)
    (work / "scripts" / "greet.sh").write_text('#!/bin/sh\necho "$GREETING v1"\n')
    git("add", "-A", cwd=work)
    git("commit", "-qm", "one", cwd=work)
    git("tag", "v1", cwd=work)
    first = git("rev-parse", "HEAD", cwd=work)
    git("checkout", "-qb", "stable", cwd=work)
    (work / "scripts" / "greet.sh").write_text('#!/bin/sh\necho "$GREETING stable"\n')
    git("commit", "-qam", "stable", cwd=work)
    stable = git("rev-parse", "HEAD", cwd=work)
    git("checkout", "-q", "main", cwd=work)
    (work / "scripts" / "greet.sh").write_text('#!/bin/sh\necho "$GREETING v2"\n')
    git("commit", "-qam", "two", cwd=work)
    second = git("rev-parse", "HEAD", cwd=work)
    git("clone", "-q", "--bare", str(work), str(bare))
    return {"v1": first, "stable": stable, "main": second, "work": str(work)}


def test_checkout_of_a_revision_a_tag_a_branch_and_head(upstream, tmp_path):
    cache = GitCache(tmp_path / "cache")
    url = UPSTREAM + "tests.git"
    dest = tmp_path / "out"
    assert cache.checkout(url, dest, revision="v1", history=False) == upstream["v1"]
    assert "v1" in (dest / "scripts" / "greet.sh").read_text() and not (dest / ".git").exists()
    assert cache.checkout(url, dest, branch="stable", history=False) == upstream["stable"]
    assert cache.checkout(url, dest) == upstream["main"]  # LAVA's default keeps the history
    assert git("rev-parse", "HEAD", cwd=dest) == upstream["main"]
    assert git("config", "remote.origin.url", cwd=dest) == url  # the device sees the upstream's address
    assert cache.checkout(url, dest, revision=upstream["v1"][:10], history=False) == upstream["v1"]


def test_a_known_commit_is_reused_without_the_network(upstream, tmp_path):
    url = UPSTREAM + "tests.git"
    GitCache(tmp_path / "cache").checkout(url, tmp_path / "a", revision=upstream["v1"], history=False)
    cache = GitCache(tmp_path / "cache")
    (Path(os.environ["GIT_CONFIG_GLOBAL"])).write_text(  # the upstream is gone: only the cache can answer
        f'[url "{tmp_path}/nowhere/"]\n\tinsteadOf = {UPSTREAM}\n')
    assert cache.checkout(url, tmp_path / "b", revision=upstream["v1"], history=False) == upstream["v1"]
    assert cache.checkout(url, tmp_path / "c", revision="v1") == upstream["v1"]
    assert cache.network_calls == 0
    greet = Path("scripts", "greet.sh")
    assert (tmp_path / "b" / greet).read_text() == (tmp_path / "a" / greet).read_text()
    with pytest.raises(FetchError, match="git fetch failed"):  # a branch moves: it is always fetched
        cache.checkout(url, tmp_path / "d", branch="stable")


def test_a_new_commit_upstream_is_fetched_into_the_mirror(upstream, tmp_path):
    url = UPSTREAM + "tests.git"
    cache = GitCache(tmp_path / "cache")
    cache.checkout(url, tmp_path / "a", history=False)
    work = Path(upstream["work"])
    (work / "new.txt").write_text("new\n")
    git("add", "new.txt", cwd=work)
    git("commit", "-qm", "three", cwd=work)
    git("push", "-q", str(tmp_path / "mirror" / "tests.git"), "main", cwd=work)
    third = git("rev-parse", "HEAD", cwd=work)
    assert cache.checkout(url, tmp_path / "b", history=False) == third and (tmp_path / "b" / "new.txt").exists()


@pytest.mark.parametrize("kwargs, url, text", [
    ({"revision": "v9"}, "tests.git", "revision v9 is not in the repository"),
    ({"branch": "nope"}, "tests.git", "branch nope is not in the repository"),
    ({}, "absent.git", "git clone failed"),
])
def test_git_errors_say_what_went_wrong(upstream, tmp_path, kwargs, url, text):
    with pytest.raises(FetchError, match=re.escape(text)):
        GitCache(tmp_path / "cache").checkout(UPSTREAM + url, tmp_path / "out", **kwargs)


def test_resolved_definitions_name_definition_repository_and_problem(upstream, tmp_path):
    url = UPSTREAM + "tests.git"
    tests = [{"definitions": [{"from": "inline", "name": "first", "repository": {"run": {"steps": ["true"]}}},
                              {"from": "git", "name": "smoke", "repository": url, "path": "smoke.yaml",
                               "revision": "v1", "parameters": {"GREETING": "hi"}}]}]
    (action,) = resolve_definitions(tests, cache_dir=tmp_path / "cache", work_dir=tmp_path / "defs")
    inline, fetched = action["definitions"]
    assert inline == tests[0]["definitions"][0]
    assert fetched["repository"]["params"] == {"GREETING": "hello"} and fetched["commit"] == upstream["v1"]
    assert fetched["files"] == str(tmp_path / "defs" / "1_smoke")
    assert 'export GREETING=hi' in definition_script("1_smoke", fetched)
    for path, text in (("missing.yaml", "path 'missing.yaml' is not a file of the repository"),
                       ("../../gitconfig", "is not a file of the repository"),
                       ("scripts/greet.sh", "is not a test definition")):
        tests[0]["definitions"][1]["path"] = path
        with pytest.raises(FetchError) as info:
            resolve_definition(tests[0]["definitions"][1], "1_smoke", cache=GitCache(tmp_path / "cache"),
                               dest=tmp_path / "defs" / "1_smoke")
        assert str(info.value).startswith(f"test definition 1_smoke (from: git {url}): ") and text in str(info.value)
        # in a job, it fails one test case of its own and the rest of the action runs
        (action,) = resolve_definitions(tests, cache_dir=tmp_path / "cache", work_dir=tmp_path / "defs")
        first, failing = action["definitions"]
        assert first == tests[0]["definitions"][0] and failing["fetch_error"] == str(info.value)
        script = definition_script("1_smoke", failing)
        assert shlex.quote(f"*** {info.value} ***") in script
        assert f"lava-test-case {UNFETCHED_CASE} --result fail" in script


def test_a_definition_with_bad_yaml_or_no_steps_is_refused(tmp_path):
    (tmp_path / "bad.yaml").write_text("run: {steps: [unclosed\n")
    (tmp_path / "nosteps.yaml").write_text("metadata: {name: x}\nrun: {}\n")
    for name, text in (("bad.yaml", "invalid YAML"), ("nosteps.yaml", "run.steps: required")):
        definition = {"from": "url", "name": "d", "repository": (tmp_path / name).as_uri()}
        with pytest.raises(FetchError, match=re.escape(text)):
            resolve_definition(definition, "0_d", cache=GitCache(tmp_path / "cache"), dest=tmp_path / "defs" / "0_d",
                               file_dirs=[tmp_path])


def test_url_definitions_are_downloaded_with_a_size_cap(tmp_path):
    (tmp_path / "smoke.yaml").write_text(SMOKE)
    tests = [{"definitions": [{"from": "url", "name": "smoke", "repository": (tmp_path / "smoke.yaml").as_uri()}]}]
    (action,) = resolve_definitions(tests, cache_dir=tmp_path / "cache", work_dir=tmp_path / "defs",
                                    file_dirs=[tmp_path])
    assert action["definitions"][0]["repository"]["run"]["steps"] == ["./scripts/greet.sh"]
    assert (tmp_path / "defs" / "0_smoke" / "smoke.yaml").read_text() == SMOKE
    with pytest.raises(FetchError, match="larger than 10 bytes"):
        fetch_url((tmp_path / "smoke.yaml").as_uri(), limit=10, file_dirs=[tmp_path])
    with pytest.raises(FetchError, match="scheme 'ftp' is not fetched"):
        fetch_url("ftp://x.invalid/a.yaml")
    with pytest.raises(FetchError, match="cannot download it"):
        fetch_url((tmp_path / "absent.yaml").as_uri(), file_dirs=[tmp_path])


def test_a_file_url_outside_the_definition_dirs_is_refused_and_shows_nothing_of_the_file(tmp_path):
    secret = tmp_path / "keys" / "agent_ed25519"
    secret.parent.mkdir()
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0: [x\n")
    (tmp_path / "defs").mkdir()
    for url in (secret.as_uri(), (tmp_path / "defs" / ".." / "keys" / "agent_ed25519").as_uri()):
        with pytest.raises(FetchError, match="read only under this host's CONVOY_DEFINITION_DIRS") as info:
            fetch_url(url, file_dirs=[tmp_path / "defs"])
        assert "c2VjcmV0" not in str(info.value)
    tests = [{"definitions": [{"from": "url", "name": "steal", "repository": secret.as_uri()}]}]
    (action,) = resolve_definitions(tests, cache_dir=tmp_path / "cache", work_dir=tmp_path / "work")
    assert "c2VjcmV0" not in json.dumps(action)  # it fails as a case of its own, naming the rule only


def test_the_overlay_carries_the_repository_files_and_skips_install_parts(upstream, tmp_path):
    tests = [{"definitions": [{"from": "git", "name": "smoke", "repository": UPSTREAM + "tests.git",
                               "path": "smoke.yaml", "branch": "stable", "skip_install": ["deps"]}]}]
    resolved = resolve_definitions(tests, cache_dir=tmp_path / "cache", work_dir=tmp_path / "defs")
    resolved[0]["definitions"][0]["repository"]["install"] = {"deps": ["curl"], "steps": ["echo installing"]}
    overlay = build_overlay(tmp_path / "overlay", "j1", resolved, {})
    test_dir = tmp_path / "overlay" / "0" / "tests" / "0_smoke"
    assert "stable" in (test_dir / "scripts" / "greet.sh").read_text() and (test_dir / ".git").is_dir()
    script = (test_dir / "run.sh").read_text()
    assert "lava-install-packages" not in script and "echo installing" in script
    assert overlay.parsers == {}
    for skip in (True, ["all"], "all"):
        resolved[0]["definitions"][0]["skip_install"] = skip
        assert "installing" not in definition_script("0_smoke", resolved[0]["definitions"][0])


# ------------------------------------------------------------------ parse: pattern with fixupdict
PATTERN = r"^(?P<test_case_id>[\w ]+?):\s+(?P<result>PASS|FAIL|SKIP|ok)(\s+(?P<measurement>[\d.]+)\s*(?P<units>\w+)?)?$"


def test_parse_pattern_turns_lines_into_cases_mapped_by_fixupdict():
    parser = parser_of({"parse": {"pattern": PATTERN,
                                  "fixupdict": {"PASS": "pass", "FAIL": "fail", "SKIP": "skip"}}}, "d")
    assert parser is not None
    assert parser.match("boot time: PASS 3.5 s\n") == TestCase("boot_time", "pass", "3.5", "s")
    assert parser.match("disk: FAIL\n") == TestCase("disk", "fail")
    assert parser.match("net: SKIP\n") == TestCase("net", "skip")
    assert parser.match("just output\n") is None
    assert "result 'ok' is not one of pass, fail, skip, unknown" in str(parser.match("x: ok\n"))
    assert parser_of({"run": {}}, "d") is None


@pytest.mark.parametrize("parse, text", [
    ({"pattern": "(?P<test_case_id>"}, "parse.pattern is not a regular expression"),
    ({"pattern": "(?P<result>x)"}, "parse.pattern needs the named groups test_case_id and result"),
    ({"pattern": "(?P<test_case_id>a)(?P<result>b)", "fixupdict": ["PASS"]}, "parse.fixupdict must be a mapping"),
    ("x", "parse must be a mapping with a pattern"),
])
def test_a_bad_parse_block_names_the_definition(parse, text):
    with pytest.raises(ConvoyError, match=re.escape(f"test definition 0_x: {text}")):
        parser_of({"parse": parse}, "test definition 0_x")


def test_peer_definitions_refuse_to_run_on_a_device_that_is_not_a_sandbox(tmp_path):
    import threading

    from convoy.tasks.run.testshell.runner import run_lava_tests

    said: list[str] = []
    tests = [{"definitions": [{"from": "git", "name": "smoke", "repository": UPSTREAM + "tests.git",
                               "path": "smoke.yaml"}]}]
    status = run_lava_tests(tests, job_id="j1", work_dir=tmp_path, ssh=tmp_path / "no-ssh", host="device",
                            environment={}, out=said.append, record=lambda case: None, relay=None,
                            cancel=threading.Event(), deadline=None, sandboxed=False, cache_dir=tmp_path / "cache")
    assert status == 1 and "device device is not a sandbox: test definitions from git or url" in "".join(said)
    assert not (tmp_path / "cache").exists()  # nothing fetched
