"""The lab's Redis ACL (coordinator/state/acl.py): rendered from plain data, checked by small tables."""
from __future__ import annotations

import hashlib

import pytest

from convoy.coordinator.state import acl

PASSWORDS = {"worker": "w-pw", "coordinator": "c-pw", "submitter": "s/pw@:", "server": "srv-pw"}


def _user_words(text: str, name: str) -> list[str]:
    (line,) = [line for line in text.splitlines() if line.split()[1] == name]
    return line.split()


def test_the_default_user_is_off_and_every_role_has_a_user_with_its_password_hashed():
    text = acl.render_acl(PASSWORDS)
    assert text.splitlines()[0].startswith("user default off")
    for role, password in PASSWORDS.items():
        words = _user_words(text, acl.USERS[role])
        assert "on" in words and f"#{hashlib.sha256(password.encode()).hexdigest()}" in words
        assert password not in text
    assert "#" not in "".join(line.split()[0] for line in text.splitlines())  # Redis refuses comments


@pytest.mark.parametrize(("role", "word", "present"), [
    ("submitter", "%R~convoy:*", True),          # reads every record
    ("submitter", "~convoy:*", False),           # ... but writes only its own kinds of keys
    ("submitter", "~convoy:job:*", True),
    ("submitter", "~convoy.device.*", False),    # no device queue, read or written
    ("submitter", "%W~convoy.coordinator*", True),  # pushes (only) to the coordinator's queue
    ("submitter", "~unacked", False),
    ("submitter", "%W~convoy.secret:*", True),   # writes its jobs' secrets, reads none back
    ("worker", "~convoy.secret:*", True),
    ("submitter", "+@pubsub", False),
    ("worker", "~convoy:*", True),
    ("worker", "~convoy.device.*", True),
    ("worker", "~unacked", True),
    ("coordinator", "~_kombu.*", True),
    ("worker", "&/0.celery.pidbox", True),       # kombu's PSUBSCRIBE pattern, literally
    ("worker", "+client|unblock", True),
    ("server", "%R~convoy:*", True),             # the server reads records as a submitter does ...
    ("server", "~convoy:client:*", True),        # ... and owns clients, tokens, submissions, LAVA numbers
    ("server", "~convoy:token:*", True),
    ("server", "~convoy:lava:ids:*", True),
    ("server", "~convoy:*", False),              # not the rest of convoy's state
    ("server", "~convoy.secret:*", False),       # jobs' secrets: written, never read
    ("server", "%W~convoy.secret:*", True),
    ("submitter", "~convoy:client:*", False),    # a submitter cannot touch clients or tokens
    ("submitter", "~convoy:token:*", False),
])
def test_key_channel_and_command_rules(role: str, word: str, present: bool):
    assert (word in _user_words(acl.render_acl(PASSWORDS), acl.USERS[role])) is present


@pytest.mark.parametrize("role", acl.ROLES)
def test_admin_and_dangerous_commands_are_removed_last(role: str):
    words = _user_words(acl.render_acl(PASSWORDS), acl.USERS[role])
    grants = [w for w in words if w.startswith(("+@", "-@"))]
    last_dangerous = max(i for i, w in enumerate(grants) if w == "-@dangerous")
    assert all(not w.startswith("+@") for w in grants[last_dangerous:]), grants  # no category re-adds KEYS & co.
    assert "-@admin" in grants[last_dangerous - 1:]


@pytest.mark.parametrize(("base", "db", "expected_submitter"), [
    ("redis://10.0.0.1:6379/0", 0, "redis://convoy-submitter:s%2Fpw%40%3A@10.0.0.1:6379/0"),
    ("rediss://old:pw@redis.lab:6380/2", 2, "rediss://convoy-submitter:s%2Fpw%40%3A@redis.lab:6380/2"),
    ("redis://h:1", 0, "redis://convoy-submitter:s%2Fpw%40%3A@h:1"),
])
def test_role_urls_carry_each_role_user_and_the_db(base: str, db: int, expected_submitter: str):
    urls = acl.role_urls(base, PASSWORDS)
    assert urls["submitter"] == expected_submitter
    assert acl.url_db(base) == db
    assert f"&/{db}.celery.pidbox" in _user_words(acl.render_acl(PASSWORDS, db=db), acl.USERS["worker"])


def test_the_urls_file_round_trips_its_passwords():
    urls = acl.role_urls("redis://h:6379/0", PASSWORDS)
    assert acl.parse_env_lines(acl.env_lines(urls)) == PASSWORDS


@pytest.mark.parametrize(("passwords", "error"), [
    ({"worker": "a", "coordinator": "b"}, "no password for submitter, server"),
    ({"worker": "a", "coordinator": "", "submitter": "c", "server": "d"}, "no password for coordinator"),
])
def test_every_role_needs_a_password(passwords: dict, error: str):
    with pytest.raises(ValueError, match=error):
        acl.render_acl(passwords)


def test_a_url_that_is_not_redis_is_refused():
    with pytest.raises(ValueError, match="not a redis"):
        acl.role_urls("amqp://h/", PASSWORDS)
