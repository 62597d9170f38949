"""Importing SSH keys: key ids, URLs, key line checks, retries (a real loopback server), the install script."""
from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from convoy.connectors.ssh import authorized_keys_script, remove_authorized_keys_script
from convoy.connectors.sshkeys import key_blob
from convoy.errors import KeyImportError
from convoy.tasks.run.keyimport import (KeyId, PublicKey, RetryPolicy, fetch, import_keys, key_url, parse_key_id,
                                        parse_key_list, parse_public_key, retryable_status)
from keyserver import KeyServer

FAST = RetryPolicy(attempts=3, timeout=5.0, backoff=0.01, max_delay=0.05)


def keygen(tmp_path: Path, name: str, kind: str = "ed25519", comment: str | None = None) -> str:
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment or f"{name}@test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return (tmp_path / f"{name}.pub").read_text().strip()


@pytest.fixture(scope="module")
def real_keys(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("keys")
    return {kind: keygen(tmp, kind, kind) for kind in ("ed25519", "rsa", "ecdsa")}


@pytest.fixture
def server():
    with KeyServer() as running:
        yield running


# --- key ids and URLs ------------------------------------------------------------------------------

def test_key_ids_name_a_service_and_a_user():
    assert parse_key_id("gh:alice") == KeyId("gh", "alice")
    assert parse_key_id(" lp:bob.smith ") == KeyId("lp", "bob.smith")
    assert str(KeyId("gh", "alice")) == "gh:alice"
    for bad in ("alice", "gh:", "xx:alice", "gh:-alice", "gh:al/ice", "gh:a b", ""):
        with pytest.raises(KeyImportError) as info:
            parse_key_id(bad)
        assert info.value.key_id == bad


def test_urls_fill_the_service_template():
    gh, lp = "https://github.com/{user}.keys", "https://launchpad.net/~{user}/+sshkeys"
    assert key_url(KeyId("gh", "alice"), gh, lp) == "https://github.com/alice.keys"
    assert key_url(KeyId("lp", "bob"), gh, lp) == "https://launchpad.net/~bob/+sshkeys"
    assert key_url(KeyId("gh", "a.b_c-d"), "http://127.0.0.1:9/gh/{user}.keys", lp) == \
        "http://127.0.0.1:9/gh/a.b_c-d.keys"


def test_a_template_without_user_or_not_http_is_refused():
    with pytest.raises(KeyImportError, match="no {user}"):
        key_url(KeyId("gh", "alice"), "https://github.com/keys", "x")
    with pytest.raises(KeyImportError, match="not http"):
        key_url(KeyId("lp", "alice"), "x", "file:///etc/{user}")


# --- key lines ----------------------------------------------------------------------------------------

def test_real_keys_of_every_type_parse(real_keys):
    for kind, line in real_keys.items():
        key = parse_public_key(line)
        assert key is not None, kind
        assert key.line == line
        assert key.comment == f"{kind}@test"


def test_a_key_without_comment_parses_and_comments_are_normalised(real_keys):
    key_type, blob, _ = real_keys["ed25519"].split(" ", 2)
    assert parse_public_key(f"{key_type} {blob}") == PublicKey(key_type, blob, "")
    assert parse_public_key(f"  {key_type}   {blob}   me  at\thome ") == PublicKey(key_type, blob, "me at home")


def test_lines_that_are_not_public_keys_are_refused(real_keys):
    key_type, blob, _ = real_keys["ed25519"].split(" ", 2)
    rsa_blob = real_keys["rsa"].split()[1]
    for bad in (
        "",
        "<html><body>Not found</body></html>",
        f"{key_type}",
        f"{key_type} not-base64!",
        f"{key_type} {blob[:-4]}",           # truncated base64
        f"ssh-rsa {blob}",                   # the blob is an ed25519 key
        f"{key_type} {rsa_blob}",
        f'command="rm -rf ~" {key_type} {blob}',  # options are never imported
        f"{key_type} {blob} evil\x1b[2J",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",  # only the type, no key material
    ):
        assert parse_public_key(bad) is None, bad


def test_a_key_list_skips_blanks_comments_and_repeats(real_keys):
    body = f"\n# my keys\n{real_keys['ed25519']}\n\n{real_keys['rsa']}\n{real_keys['ed25519']} again\n"
    keys = parse_key_list("gh:alice", body)
    assert [k.line for k in keys] == [real_keys["ed25519"], real_keys["rsa"]]


def test_an_empty_or_keyless_answer_fails_naming_the_key_id():
    with pytest.raises(KeyImportError) as info:
        parse_key_list("gh:alice", "\n  \n")
    assert info.value.key_id == "gh:alice" and "no SSH keys" in info.value.reason
    with pytest.raises(KeyImportError) as info:
        parse_key_list("lp:bob", "<!DOCTYPE html>\n<html>login</html>\n")
    assert "gh:alice" not in str(info.value) and "lp:bob" in str(info.value)
    assert "no SSH public key" in info.value.reason and "DOCTYPE" in info.value.reason


def test_tagged_keys_carry_the_ssh_import_id_marker(real_keys):
    key = parse_public_key(real_keys["ed25519"])
    assert key.tagged("gh:alice").line == f"{real_keys['ed25519']} # ssh-import-id gh:alice"
    bare = PublicKey(key.type, key.blob)
    assert bare.tagged("lp:bob").line == f"{key.identity} # ssh-import-id lp:bob"


# --- fetching and retries (a real HTTP server on loopback) -----------------------------------------

def test_retry_policy_backs_off_exponentially_up_to_a_cap():
    assert RetryPolicy(attempts=5, backoff=0.5, factor=2, max_delay=3).delays() == [0.5, 1.0, 2.0, 3.0]
    assert RetryPolicy(attempts=1).delays() == []
    assert [s for s in (500, 502, 503, 408, 429) if retryable_status(s)] == [500, 502, 503, 408, 429]
    assert not any(retryable_status(s) for s in (400, 401, 403, 404, 410))


def test_fetch_gets_the_keys(server, real_keys):
    server.set_keys("gh", "alice", real_keys["ed25519"] + "\n")
    assert fetch(f"{server.url}/gh/alice.keys", KeyId("gh", "alice"), FAST) == real_keys["ed25519"] + "\n"


def test_server_errors_are_retried_then_succeed(server, real_keys):
    server.set_keys("lp", "bob", real_keys["rsa"])
    server.fail("lp", "bob", times=2, status=503)
    lines: list[str] = []
    keys = import_keys(["lp:bob"], server.github_template, server.launchpad_template, FAST, log=lines.append)
    assert [k.line for k in keys] == [f"{real_keys['rsa']} # ssh-import-id lp:bob"]
    assert server.hits[("lp", "bob")] == 3
    assert sum("HTTP 503" in line and "retrying" in line for line in lines) == 2


def test_dropped_connections_are_retried(server, real_keys):
    server.set_keys("gh", "alice", real_keys["ed25519"])
    server.fail("gh", "alice", times=1, status=0)
    assert import_keys(["gh:alice"], server.github_template, server.launchpad_template, FAST)
    assert server.hits[("gh", "alice")] == 2


def test_persistent_server_errors_fail_after_every_attempt(server):
    server.fail("gh", "alice", times=10, status=500)
    with pytest.raises(KeyImportError) as info:
        import_keys(["gh:alice"], server.github_template, server.launchpad_template, FAST)
    assert info.value.key_id == "gh:alice"
    assert "HTTP 500" in info.value.reason and "after 3 attempts" in info.value.reason
    assert server.hits[("gh", "alice")] == 3


def test_an_unknown_user_fails_at_once_naming_the_key_id(server):
    with pytest.raises(KeyImportError) as info:
        import_keys(["gh:nobody"], server.github_template, server.launchpad_template, FAST)
    assert str(info.value).startswith("cannot import SSH key gh:nobody: no such GitHub user (HTTP 404")
    assert server.hits[("gh", "nobody")] == 1


def test_other_client_errors_are_not_retried(server):
    server.fail("lp", "carol", times=5, status=403)
    with pytest.raises(KeyImportError, match="HTTP 403"):
        import_keys(["lp:carol"], server.github_template, server.launchpad_template, FAST)
    assert server.hits[("lp", "carol")] == 1


def test_an_unreachable_server_fails_after_retries():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(KeyImportError) as info:
        import_keys(["gh:alice"], f"http://127.0.0.1:{port}/{{user}}", "http://x/{user}", FAST)
    assert "cannot reach" in info.value.reason and "after 3 attempts" in info.value.reason


def test_cancel_stops_the_retries(server):
    server.fail("gh", "alice", times=10, status=500)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(KeyImportError, match="cancelled"):
        import_keys(["gh:alice"], server.github_template, server.launchpad_template,
                    RetryPolicy(attempts=5, backoff=60), cancel=cancel)


def test_every_id_is_imported_once_and_every_key_kept_once(server, real_keys):
    server.set_keys("gh", "alice", f"{real_keys['ed25519']}\n{real_keys['ecdsa']}\n")
    server.set_keys("lp", "alice", f"{real_keys['ed25519']}\n")  # the same key on both services
    server.set_keys("lp", "bob", f"{real_keys['rsa']}\n")
    keys = import_keys(["gh:alice", "lp:alice", "gh:alice", "lp:bob"], server.github_template,
                       server.launchpad_template, FAST)
    assert [k.line for k in keys] == [f"{real_keys['ed25519']} # ssh-import-id gh:alice",
                                      f"{real_keys['ecdsa']} # ssh-import-id gh:alice",
                                      f"{real_keys['rsa']} # ssh-import-id lp:bob"]
    assert server.hits[("gh", "alice")] == 1 and server.hits[("lp", "alice")] == 1


def test_the_first_failing_id_is_named(server, real_keys):
    server.set_keys("gh", "alice", real_keys["ed25519"])
    server.set_keys("gh", "empty", "")
    with pytest.raises(KeyImportError) as info:
        import_keys(["gh:alice", "gh:empty", "gh:nobody"], server.github_template, server.launchpad_template, FAST)
    assert info.value.key_id == "gh:empty" and "no SSH keys" in info.value.reason


# --- the install script (run here with sh, as the device runs it) --------------------------------------

def install(home: Path, keys: list[PublicKey]) -> int:
    result = subprocess.run(["sh", "-c", authorized_keys_script(k.line for k in keys)],
                            env={**os.environ, "HOME": str(home)},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def test_the_script_creates_ssh_dir_and_file_privately_and_is_idempotent(tmp_path, real_keys):
    keys = [parse_public_key(real_keys[k]).tagged("gh:alice") for k in ("ed25519", "rsa")]
    assert install(tmp_path, keys) == 2
    ssh_dir, file = tmp_path / ".ssh", tmp_path / ".ssh" / "authorized_keys"
    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert file.read_text() == "".join(k.line + "\n" for k in keys)
    assert install(tmp_path, keys) == 0
    assert file.read_text() == "".join(k.line + "\n" for k in keys)
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(file)], capture_output=True, text=True, check=True)
    assert len(listed.stdout.splitlines()) == 2


def test_the_script_keeps_existing_lines_and_recognises_keys_by_type_and_blob(tmp_path, real_keys):
    ed, rsa = parse_public_key(real_keys["ed25519"]), parse_public_key(real_keys["rsa"])
    (tmp_path / ".ssh").mkdir(mode=0o755)
    file = tmp_path / ".ssh" / "authorized_keys"
    existing = f'# agent\nno-pty {ed.identity} other comment\nssh-ed25519 AAAAagent'  # no final newline
    file.write_text(existing)
    file.chmod(0o644)
    assert install(tmp_path, [ed.tagged("gh:a"), rsa.tagged("gh:a")]) == 1
    assert file.read_text() == existing + "\n" + rsa.tagged("gh:a").line + "\n"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / ".ssh").stat().st_mode) == 0o700


def test_the_script_quotes_comments_safely(tmp_path, real_keys):
    key = parse_public_key(real_keys["ed25519"])
    nasty = PublicKey(key.type, key.blob, "it's $(touch pwned) `id` \"x\" ; rm -rf /")
    assert install(tmp_path, [nasty]) == 1
    assert not (tmp_path / "pwned").exists()
    assert (tmp_path / ".ssh" / "authorized_keys").read_text() == nasty.line + "\n"


def test_the_script_fails_when_the_file_cannot_be_written(tmp_path, real_keys):
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "authorized_keys").mkdir()  # a directory where the file should be
    result = subprocess.run(["sh", "-c", authorized_keys_script([parse_public_key(real_keys["rsa"]).line])],
                            env={**os.environ, "HOME": str(tmp_path)}, capture_output=True, text=True)
    assert result.returncode != 0


def remove(home: Path, blobs: list[str]) -> int:
    result = subprocess.run(["sh", "-c", remove_authorized_keys_script(blobs)], env={**os.environ, "HOME": str(home)},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def test_the_removal_script_drops_exactly_the_keys_named_whatever_their_options_or_comment(tmp_path, real_keys):
    ed, rsa, ecdsa = (real_keys[k] for k in ("ed25519", "rsa", "ecdsa"))
    (tmp_path / ".ssh").mkdir()
    file = tmp_path / ".ssh" / "authorized_keys"
    file.write_text(f"# a comment\n{ed}\nfrom=\"10.0.0.1\" {rsa} reserved # ssh-import-id gh:alice\n{ecdsa}\n")
    assert remove(tmp_path, [key_blob(rsa), key_blob(ed), "ssh-ed25519 AAAAnotthere"]) == 2
    assert file.read_text() == f"# a comment\n{ecdsa}\n"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert remove(tmp_path, [key_blob(ed)]) == 0  # gone already: nothing more
    assert remove(tmp_path / "nowhere", [key_blob(ed)]) == 0  # no file: nothing to remove
