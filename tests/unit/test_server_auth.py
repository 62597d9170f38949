"""convoy server's credentials and permission rules: secret hashing, Authorization headers, limits per queue,
who sees what (pure functions; the token store runs on a fake clock-free Redis stand-in)."""
from __future__ import annotations

import base64

import pytest

from convoy.config.jobs import load_job
from convoy.coordinator.server.auth import (
    Identity,
    basic_credentials,
    bearer_token,
    limit_for,
    may_change,
    may_see,
    permission_errors,
    reservation_cap,
)
from convoy.coordinator.state.clients import Client, check_client_id, hash_secret, verify_secret
from convoy.errors import ConvoyError

CAP = 6 * 3600


def test_secret_hash_is_salted_and_verifies_only_the_secret() -> None:
    first, second = hash_secret("s3cret"), hash_secret("s3cret")
    assert first != second  # a fresh salt each time
    assert "s3cret" not in first
    assert verify_secret("s3cret", first) and verify_secret("s3cret", second)
    assert not verify_secret("s3cret!", first)
    assert not verify_secret("", first)


@pytest.mark.parametrize("stored", ["", "plain", "md5$1$2$3$00$00", "scrypt$x$8$1$00$00", "scrypt$16384$8$1$zz$00"])
def test_a_malformed_stored_hash_never_verifies(stored: str) -> None:
    assert not verify_secret("anything", stored)


@pytest.mark.parametrize("client_id, ok", [("ci-bot", True), ("team.a@lab", True), ("", False),
                                           ("has space", False), ("a:b", False), ("anonymous", False),
                                           ("x" * 101, False)])
def test_client_ids(client_id: str, ok: bool) -> None:
    if ok:
        assert check_client_id(client_id) == client_id
    else:
        with pytest.raises(ConvoyError):
            check_client_id(client_id)


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("header, expected", [
    (_basic("ci:pw"), ("ci", "pw")),
    (_basic("ci:p:w"), ("ci", "p:w")),       # the secret may hold a colon
    ("basic " + base64.b64encode(b"a:b").decode(), ("a", "b")),
    (_basic("no-colon"), None),
    ("Basic !!notbase64", None),
    ("Bearer abc", None),
    (None, None),
])
def test_basic_credentials(header: str | None, expected: tuple[str, str] | None) -> None:
    assert basic_credentials(header) == expected


@pytest.mark.parametrize("header, expected", [
    ("Bearer tok", "tok"), ("bearer tok", "tok"), ("tok", "tok"),  # Testflinger's client sends the bare token
    ("Bearer ", None), (_basic("a:b"), None), ("Digest x", None), (None, None),
])
def test_bearer_token(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


@pytest.mark.parametrize("table, queue, expected", [
    ({}, "q", 7), ({"q": 3}, "q", 3), ({"*": 5}, "q", 5), ({"q": 0, "*": 5}, "q", 0), ({"other": 9}, "q", 7),
])
def test_limit_for(table: dict, queue: str, expected: float) -> None:
    assert limit_for(table, queue, 7) == expected


ALICE = Identity(Client("alice", max_priority={"gpu": 10, "*": 2}, max_reservation_time={"gpu": 7200}))
ADMIN = Identity(Client("root", admin=True))
ANON = Identity()


def single(queue: str = "gpu", priority: int | None = None, reserve: int | None = None) -> dict:
    job: dict = {"job_queue": queue, "test_data": {"test_cmds": "true"}}
    if priority is not None:
        job["job_priority"] = priority
    if reserve is not None:
        job["reserve_data"] = {"ssh_keys": ["lp:someone"], "timeout": reserve}
    return load_job(job)


def multi(*queues: str, priority: int | None = None, child_priority: int | None = None,
          reserve: int | None = None) -> dict:
    children = [{"job_queue": q, **({"job_priority": child_priority} if child_priority is not None else {})}
                for q in queues]
    job: dict = {"job_queue": "multi", "provision_data": {"jobs": children}}
    if priority is not None:
        job["job_priority"] = priority
    if reserve is not None:
        job["reserve_data"] = {"ssh_keys": ["lp:someone"], "timeout": reserve}
    return load_job(job)


@pytest.mark.parametrize("who, job, fields", [
    (ALICE, single("gpu", priority=10), []),
    (ALICE, single("gpu", priority=11), ["job_priority"]),
    (ALICE, single("cpu", priority=2), []),                    # "*" applies
    (ALICE, single("cpu", priority=3), ["job_priority"]),
    (ANON, single("gpu", priority=0), []),
    (ANON, single("gpu", priority=1), ["job_priority"]),       # anonymous: no priority
    (ADMIN, single("gpu", priority=1000), []),
    (ALICE, single("gpu", reserve=7200), []),
    (ALICE, single("gpu", reserve=7201), ["reserve_data.timeout"]),
    (ALICE, single("cpu", reserve=CAP), []),                   # unnamed queue: the deployment's cap
    (ALICE, single("cpu", reserve=CAP + 1), ["reserve_data.timeout"]),
    (ANON, single("gpu", reserve=CAP + 1), ["reserve_data.timeout"]),
    (ALICE, multi("gpu", "gpu", priority=10), []),
    (ALICE, multi("gpu", "cpu", priority=10), ["job_priority"]),  # the strictest child queue holds
    (ALICE, multi("gpu", "cpu", child_priority=3), ["provision_data.jobs[1].job_priority"]),
    (ALICE, multi("gpu", "cpu", reserve=7200), []),
    (ALICE, multi("gpu", "gpu", reserve=CAP), ["reserve_data.timeout"]),
    (ALICE, multi("gpu", "cpu", priority=5, reserve=CAP),  ["job_priority", "reserve_data.timeout"]),
])
def test_permission_rules(who: Identity, job: dict, fields: list[str]) -> None:
    errors = permission_errors(who, job, CAP)
    assert [e.path for e in errors] == fields
    for error in errors:  # each names the limit and whose it is
        assert ("max_priority" in error.message or "max_reservation_time" in error.message)
        assert who.name in error.message or "anonymous" in error.message


#: a restricted queue, "lab-only", that only CARL may use
RESTRICTED = frozenset({"lab-only"})
CARL = Identity(Client("carl", allowed_queues=["lab-only"]))


def lava_group(*device_types: str) -> dict:
    roles = {f"r{i}": {"device_type": t, "count": 1} for i, t in enumerate(device_types)}
    return load_job({"job_name": "g", "visibility": "public", "timeouts": {"job": {"minutes": 5}},
                     "protocols": {"lava-multinode": {"roles": roles, "timeout": {"minutes": 5}}},
                     "actions": [{"deploy": {"to": "tmpfs", "role": list(roles)}}]})


@pytest.mark.parametrize("who, job, fields", [
    (ALICE, single("lab-only"), ["job_queue"]),
    (ANON, single("lab-only"), ["job_queue"]),
    (CARL, single("lab-only"), []),
    (ADMIN, single("lab-only"), []),
    (ALICE, single("gpu"), []),
    # a child may never use what its parent's submitter may not: refused at the child's own path
    (ALICE, multi("gpu", "lab-only"), ["provision_data.jobs[1].job_queue"]),
    (ALICE, multi("lab-only", "gpu", "lab-only"), ["provision_data.jobs[0].job_queue",
                                                   "provision_data.jobs[2].job_queue"]),
    (CARL, multi("gpu", "lab-only"), []),
    (ALICE, lava_group("qemu", "lab-only"), ["provision_data.jobs[1].device_type"]),
    (CARL, lava_group("qemu", "lab-only"), []),
])
def test_restricted_queues(who: Identity, job: dict, fields: list[str]) -> None:
    errors = permission_errors(who, job, CAP, RESTRICTED)
    assert [e.path for e in errors] == fields
    for error in errors:
        assert "'lab-only'" in error.message and "is restricted" in error.message and (who.name in error.message
                                                                or "anonymous" in error.message)


def test_reservation_cap_for_extend() -> None:
    assert reservation_cap(ALICE, single("gpu"), CAP) == 7200
    assert reservation_cap(ALICE, multi("gpu", "cpu"), CAP) == 7200
    assert reservation_cap(ALICE, single("cpu"), CAP) == CAP
    assert reservation_cap(ADMIN, single("gpu"), CAP) == CAP


@pytest.mark.parametrize("who, submitter, see, change", [
    (ALICE, "alice", True, True),
    (ALICE, "bob", False, False),
    (ALICE, None, False, False),          # stored without the server: admins only
    (ALICE, "anonymous", False, False),
    (ADMIN, "bob", True, True),
    (ADMIN, None, True, True),
    (ANON, "anonymous", True, False),     # by its id, read-only
    (ANON, "alice", False, False),
    (ANON, None, False, False),
])
def test_who_sees_and_changes_what(who: Identity, submitter: str | None, see: bool, change: bool) -> None:
    assert may_see(who, submitter) is see
    assert may_change(who, submitter) is change
