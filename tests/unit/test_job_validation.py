"""Job loading and validation: every bad file names its problems and their paths.

Each file in tests/data/bad_jobs says what it expects in ``# expect: PATH ::
TEXT`` lines (``<document>`` for the document itself); the test asserts
exactly those problems are reported, each message containing TEXT.
"""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from convoy.config.jobs import is_multi, job_queues, load_job, validate_job
from convoy.errors import FieldError, JobValidationError

DATA = Path(__file__).resolve().parent.parent / "data"
BAD = sorted((DATA / "bad_jobs").glob("*.yaml"))
GOOD = sorted((DATA / "good_jobs").glob("*.yaml"))


def expectations(path: Path) -> list[tuple[str, str]]:
    found = []
    for line in path.read_text().splitlines():
        if line.startswith("# expect: "):
            where, _, text = line[len("# expect: "):].partition(" :: ")
            found.append(("" if where == "<document>" else where, text))
    return found


def errors_of(source) -> list[FieldError]:
    with pytest.raises(JobValidationError) as info:
        load_job(source)
    return info.value.errors


# ------------------------------------------------------------------ bad files
def test_there_are_plenty_of_bad_files():
    assert len(BAD) >= 12
    assert all(expectations(p) for p in BAD), "every bad file states what it expects"


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_job_file_reports_every_problem(path: Path):
    expected = expectations(path)
    errors = errors_of(path)
    for where, text in expected:
        matching = [e for e in errors if e.path == where and text in e.message]
        assert matching, f"no error at {where!r} containing {text!r}; got:\n" + "\n".join(map(str, errors))
    assert len(errors) == len(expected), "unexpected extra errors:\n" + "\n".join(map(str, errors))


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_job_fails_the_same_as_text_and_as_str_path(path: Path):
    as_path = [(e.path, e.message) for e in errors_of(path)]
    as_str_path = [(e.path, e.message) for e in errors_of(str(path))]
    assert as_path == as_str_path
    as_text = [(e.path, e.message.replace(f"{path}: ", "")) for e in errors_of(path.read_text())]
    assert as_text == [(p, m.replace(f"{path}: ", "")) for p, m in as_path]


def test_several_errors_are_reported_in_one_exception_message():
    with pytest.raises(JobValidationError) as info:
        load_job(DATA / "bad_jobs" / "several_errors.yaml")
    text = str(info.value)
    assert text.startswith("invalid job: 10 problem(s)")
    assert "  - provision_data.jobs[3].role: invalid role 'a b'" in text
    assert info.value.exit_code == 2


def test_python_tag_is_never_executed(tmp_path: Path):
    marker = tmp_path / "pwned"
    errors_of(f"job_queue: x\nprovision_data: !!python/object/apply:os.system ['touch {marker}']\n")
    assert not marker.exists()


def test_huge_file_fails_fast_with_the_size(tmp_path: Path):
    huge = tmp_path / "huge.yaml"
    line = "# " + "x" * 98 + "\n"
    huge.write_text("job_queue: rpi4b\n" + line * (5 * 1024 * 1024 // len(line)))
    size = huge.stat().st_size
    errors = errors_of(huge)
    assert [(e.path, e.message) for e in errors] == [
        ("", f"{huge}: document too large ({size} bytes, limit 1048576)")]
    text_errors = errors_of(huge.read_text())
    assert text_errors[0].message == f"document too large ({size} bytes, limit 1048576)"


def test_many_bad_items_fail_fast_and_are_capped():
    doc = {"job_queue": "multi", "provision_data": {"jobs": [
        {"job_queue": 1, "tags": list(range(300)), "typo": 1} for _ in range(512)]}}
    with pytest.raises(JobValidationError) as info:
        validate_job(doc)
    errors = info.value.errors
    assert len(errors) <= 202
    assert errors[-1].message.endswith("more problem(s) not shown")


@pytest.mark.parametrize("source, message", [
    ("missing.yaml", "file not found: missing.yaml"),
    (Path("/nonexistent/job.yaml"), "file not found: /nonexistent/job.yaml"),
    (DATA, f"not a file: {DATA}"),
])
def test_unreadable_sources(source, message):
    assert [e.message for e in errors_of(source)] == [message]


def test_json_file(tmp_path: Path):
    good = tmp_path / "job.json"
    good.write_text(json.dumps({"job_queue": "rpi4b", "global_timeout": "1h"}))
    assert load_job(good)["global_timeout"] == 3600
    bad = tmp_path / "bad.json"
    bad.write_text('{"job_queue": "rpi4b",\n "job_queue": "x"}')
    assert errors_of(bad)[0].message == f"{bad}: duplicate key 'job_queue'"
    bad.write_text('{"job_queue": "rpi4b",\n "tags": [}')
    assert errors_of(bad)[0].message.startswith(f"{bad}: invalid JSON at line 2, column 11")


@pytest.mark.parametrize("doc, path, message", [
    ({"job_queue": "x", "provision_data": {1: "a"}}, "provision_data.1", "keys must be strings"),
    ({"job_queue": "x", True: 1}, "True", "keys must be strings, got boolean True (quote it)"),
    ({"job_queue": "x", "provision_data": {"when": object()}}, "provision_data.when", "must be plain data"),
    ({"job_queue": "x", "tags": ("a", {1.5: 2})}, "tags[1].1.5", "keys must be strings"),
])
def test_python_dicts_must_hold_plain_data(doc, path, message):
    errors = errors_of(doc)
    assert [e.path for e in errors] == [path] and message in errors[0].message


def test_cyclic_dict_is_reported_not_crashed():
    doc: dict = {"job_queue": "x", "provision_data": {}}
    doc["provision_data"]["self"] = doc
    errors = errors_of(doc)
    assert errors and "nested too deeply" in errors[0].message


@pytest.mark.parametrize("value, kind", [
    ([], "list"), ("", "nothing (empty document)"), (None, "nothing (empty document)"),
    (3, "integer"), (b"- a\n", "list"), ("job_queue", "string"),
])
def test_document_must_be_a_mapping(value, kind):
    assert [e.message for e in errors_of(value)] == [f"job must be a mapping, got {kind}"]


def test_yaml_text_that_mentions_a_yaml_file_is_yaml():
    assert load_job("job_queue: rpi4b.yaml")["job_queue"] == "rpi4b.yaml"


# ----------------------------------------------------------------- good files
@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_good_job_validates_and_is_idempotent(path: Path):
    job = load_job(path)
    assert json.loads(json.dumps(job)) == job, "a normalised job is plain JSON"
    assert validate_job(copy.deepcopy(job)) == job
    assert "count" not in job and "parent_job_id" not in job


def test_reference_examples_are_all_present():
    names = {p.stem for p in GOOD}
    assert {"tf_basic_structure", "tf_simple_two_device", "tf_multi_with_reservation",
            "tf_coordinated_testing"} <= names


def test_normalised_basic_structure():
    job = load_job(DATA / "good_jobs" / "tf_basic_structure.yaml")
    child = {"provision_data": {}, "global_timeout": 14400,
             "allocate_data": {"allocate": True}, "timeouts": {"multinode": 600}}
    assert job == {
        "job_queue": "multi",
        "allocation_timeout": 7200,
        "global_timeout": 14400,
        "timeouts": {"multinode": 600},
        "provision_data": {"jobs": [{"job_queue": "device-queue-1", **child},
                                    {"job_queue": "device-queue-2", **child}]},
        "reserve_data": {"ssh_keys": ["gh:your-github-username", "lp:your-launchpad-username"],
                         "timeout": 3600},
        "test_data": {"test_cmds": "# Commands to run across all devices\n", "test_username": "ubuntu"},
    }
    assert job_queues(job) == {"device-queue-1": 1, "device-queue-2": 1}


def test_normalised_reservation_example():
    job = load_job(DATA / "good_jobs" / "tf_multi_with_reservation.yaml")
    assert job["reserve_data"] == {"ssh_keys": ["gh:github-username", "lp:launchpad-username"], "timeout": 7200}
    assert isinstance(job["reserve_data"]["timeout"], int)
    assert job["test_data"] == {"test_username": "ubuntu"}
    assert [c["job_queue"] for c in job["provision_data"]["jobs"]] == [
        "device-queue-1", "device-queue-2", "device-queue-3"]
    assert all(c["provision_data"] == {"distro": "jammy"} for c in job["provision_data"]["jobs"])


def test_normalised_coordinated_testing_keeps_the_script():
    path = DATA / "good_jobs" / "tf_coordinated_testing.yaml"
    job = load_job(path)
    script = job["test_data"]["test_cmds"]
    assert script.startswith("# Parse job_list.json to get device IPs\nSERVER_IP=")
    assert script.endswith("wait\n") and "\n\n# Start server\n" in script
    assert "test_data" not in job["provision_data"]["jobs"][0]
    assert job_queues(job) == {"server-queue": 1, "client-queue-1": 1, "client-queue-2": 1}


def test_normalised_single_device_job():
    job = load_job(DATA / "good_jobs" / "single_device.yaml")
    assert not is_multi(job)
    assert job["global_timeout"] == 7200 and job["output_timeout"] == 900
    assert job["reserve_data"] == {"ssh_keys": ["lp:someone"], "timeout": 5400}
    assert job["test_data"] == {"test_cmds": "uname -a\ncat /etc/os-release", "test_username": "admin",
                                "env": {"RETRIES": "3", "MODE": "fast"}}
    assert job["timeouts"] == {"multinode": 600}
    assert job_queues(job) == {"rpi4b": 1}


def test_count_expands_in_order_and_children_inherit_multinode_settings():
    job = load_job(DATA / "good_jobs" / "multinode_roles.yaml")
    children = job["provision_data"]["jobs"]
    assert [(c["job_queue"], c["role"]) for c in children] == [
        ("emulated", "server"), ("emulated", "client"), ("emulated", "client")]
    assert job["allocation_timeout"] == 1800 and job["timeouts"] == {"multinode": 300}
    assert children[0]["timeouts"] == {"multinode": 300}
    assert children[1]["timeouts"] == children[2]["timeouts"] == {"multinode": 90}
    assert all(c["multinode"] == {"cache_file": "/tmp/convoy_cache.txt"} for c in children)
    assert all(c["allocate_data"] == {"allocate": True} and "count" not in c for c in children)
    assert children[1]["test_data"]["test_cmds"] == "lava-wait server-ready\nlava-send done"
    assert children[1] == children[2] and children[1] is not children[2]
    children[1]["test_data"]["env"] = {}
    assert "env" not in children[2]["test_data"], "expanded children share nothing"
    assert job_queues(job) == {"emulated": 3}


def test_validate_job_does_not_touch_its_input():
    doc = {"job_queue": "multi", "provision_data": {"jobs": [{"job_queue": "a", "count": 2}]},
           "test_data": {"test_cmds": ["a", "b"]}}
    before = copy.deepcopy(doc)
    validate_job(doc)
    assert doc == before


@pytest.mark.parametrize("value, seconds", [
    (3600, 3600), ("3600", 3600), ("2h30m", 9000), ("1h 30m", 5400), ("90s", 90), ("1d", 86400),
    (1.5, 1.5), ("0.5m", 30),
])
def test_durations_become_seconds(value, seconds):
    job = validate_job({"job_queue": "q", "global_timeout": value})
    assert job["global_timeout"] == seconds and type(job["global_timeout"]) is type(seconds)


def test_user_allocate_data_on_a_child_is_overridden():
    job = validate_job({"job_queue": "multi", "provision_data": {"jobs": [
        {"job_queue": "a", "allocate_data": {"allocate": False}}]}})
    assert job["provision_data"]["jobs"][0]["allocate_data"] == {"allocate": True}


def test_is_multi():
    assert is_multi({"job_queue": "multi"})
    assert not is_multi({"job_queue": "rpi4b"}) and not is_multi([]) and not is_multi(None)


# ---------------------------------------------------------------- robustness
def _mutations(rng: random.Random):
    return [None, True, 0, -1, 1e400, "", "x y", "1h", [], [None], {}, {"a": None}, "multi",
            ["gh:x"], rng.random(), "\x00", "9" * 400]


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _paths(sub, prefix + (key,))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            yield from _paths(sub, prefix + (index,))


def test_random_mutations_of_good_jobs_never_crash():
    """Replace any value of a good job by a random one: only JobValidationError or success."""
    rng = random.Random(1234)
    documents = [load_job(p) for p in GOOD] + [
        __import__("yaml").safe_load(p.read_text()) for p in GOOD]
    for _ in range(250):
        doc = copy.deepcopy(rng.choice(documents))
        paths = [p for p in _paths(doc) if p]
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(paths)
            target = doc
            try:
                for key in path[:-1]:
                    target = target[key]
                target[path[-1]] = rng.choice(_mutations(rng))
            except (KeyError, IndexError, TypeError):
                continue
        try:
            job = validate_job(doc)
        except JobValidationError as exc:
            assert exc.errors and all(isinstance(e, FieldError) for e in exc.errors)
        else:
            json.dumps(job)


@pytest.mark.parametrize("doc, expected", [
    ({"job_queue": "a", "test_data": {"test_cmds": 5}},
     [("test_data.test_cmds", "must be a string or a list of strings, got integer")]),
    ({"job_queue": "a", "test_data": {"test_cmds": {"run": "x"}}},
     [("test_data.test_cmds", "must be a string or a list of strings, got mapping")]),
    ({"job_queue": "multi", "provision_data": {"jobs": {"a": 1}}},
     [("provision_data.jobs", "must be a list of child jobs, got mapping")]),
    ({"job_queue": "multi", "provision_data": {"jobs": [{"job_queue": "a"}] * 513}},
     [("provision_data.jobs", "too many child jobs (513, limit 512)")]),
    ({"job_queue": "multi", "provision_data": None}, [("provision_data", "null value not allowed")]),
    ({"job_queue": "multi"}, [("provision_data", "required field")]),
    ({"job_queue": None}, [("job_queue", "null value not allowed")]),
    ({"job_queue": "a", "reserve_data": {"ssh_keys": []}},
     [("reserve_data.ssh_keys", "must list at least one SSH key id (gh:<user> or lp:<user>)")]),
    ({"job_queue": "a", "global_timeout": "inf", "output_timeout": "1e3"},
     [("global_timeout", "not a duration: 'inf'"), ("output_timeout", "unknown unit 'e' in '1e3'")]),
    ({"job_queue": "a", "global_timeout": float("nan"), "provision_data": {"x": [float("-inf")]}},
     [("global_timeout", "must be a finite number, got nan"), ("provision_data.x[0]", "must be a finite number")]),
    ({"job_queue": "x" * 129}, [("job_queue", "invalid queue name")]),
    ({"job_queue": "multi", "allocate_data": {"allocate": True}, "provision_data": {"jobs": [{"job_queue": "a"}]}},
     [("allocate_data", "set by convoy on child jobs; not allowed on a multi job")]),
    # Testflinger phases convoy does not run: refused, naming the field, never silently skipped
    ({"job_queue": "a", "setup_data": {"setup_cmds": "true"}},
     [("setup_data", "convoy does not run Testflinger's setup phase; remove setup_data "
                     "(put the commands in test_data.test_cmds)")]),
    ({"job_queue": "a", "firmware_update_data": {"version": "latest"}},
     [("firmware_update_data", "convoy does not run Testflinger's firmware_update phase; "
                               "remove firmware_update_data")]),
    ({"job_queue": "multi", "provision_data": {"jobs": [{"job_queue": "a", "firmware_update_data": {}}]}},
     [("provision_data.jobs[0].firmware_update_data", "convoy does not run Testflinger's firmware_update phase; "
                                                      "remove firmware_update_data")]),
])
def test_bad_documents(doc, expected):
    errors = [(e.path, e.message) for e in errors_of(doc)]
    assert len(errors) == len(expected), errors
    for (path, message), (want_path, want_text) in zip(errors, expected):
        assert path == want_path and want_text in message


def test_null_means_the_default():
    """``global_timeout:`` with nothing after it is YAML null: the default applies, as for a missing key."""
    job = load_job("job_queue: a\nglobal_timeout:\nprovision_data:\n")
    assert job["global_timeout"] == 14400 and job["provision_data"] == {}


def test_secondary_connection_holds_no_device():
    job = load_job(DATA / "good_jobs" / "secondary_connection.yaml")
    host, guest1, guest2 = job["provision_data"]["jobs"]
    assert host["allocate_data"] == {"allocate": True}
    assert guest1 == guest2 and "allocate_data" not in guest1 and "job_queue" not in guest1
    assert guest1["multinode"] == {"request": "lava-start", "expect_role": "host", "timeout": 120}
    assert job_queues(job) == {"emulated": 1}


# ------------------------------------------------ crash classes found by fuzzing
@pytest.mark.parametrize("doc, expected", [
    ({"job_queue": "q", "global_timeout": 10**300},
     [("global_timeout", "must be at most 31536000 seconds (365 days), got a number of 301 digits")]),
    ({"job_queue": "q", "global_timeout": 1e300}, [("global_timeout", "must be at most 31536000 seconds")]),
    ({"job_queue": "q", "reserve_data": {"ssh_keys": ["gh:x"], "timeout": -10**300}},
     [("reserve_data.timeout", "must not be negative, got a negative number of 301 digits")]),
    ({"job_queue": "q", "global_timeout": 10**5000}, [("global_timeout", "number too long")]),
    ({"job_queue": "q", "provision_data": {"seed": 10**5000}}, [("provision_data.seed", "number too long")]),
    ({"job_queue": "q", "provision_data": {"ratio": float("inf")}},
     [("provision_data.ratio", "must be a finite number, got inf (JSON has no NaN or Infinity)")]),
    ({"job_queue": "q", "name": "a\x00b"}, [("name", "contains a NUL character")]),
    ({"job_queue": "q", "tags": ["ok", "\ud800"]}, [("tags[1]", "is not valid Unicode text")]),
    ({"job_queue": "q", "provision_data": {"\udcff": 1}},
     [("provision_data.\\udcff", "this key is not valid Unicode")]),
    ({"job_queue": "q", "": 1}, [('""', "unknown field")]),
])
def test_values_that_crashed_or_could_not_travel_are_rejected_at_their_field(doc, expected):
    found = [(e.path, e.message) for e in errors_of(doc)]
    assert len(found) == len(expected), found
    for (path, message), (want_path, want_text) in zip(found, expected):
        assert path == want_path and want_text in message, found


@pytest.mark.parametrize("field, doc", [
    ("job_queue", {"job_queue": "emu\n"}),
    ("job_queue", {"job_queue": "emu\r\n"}),
    ("role", {"job_queue": "q", "role": "server\n"}),
    ("role", {"job_queue": "q", "role": "-server"}),
    ("role", {"job_queue": "q", "role": "r" * 129}),
    ("reserve_data.ssh_keys[0]", {"job_queue": "q", "reserve_data": {"ssh_keys": ["lp:me\n"]}}),
    ("test_data.env.PATH\\n", {"job_queue": "q", "test_data": {"env": {"PATH\n": "/bin"}}}),
    ("test_data.env.é", {"job_queue": "q", "test_data": {"env": {"é": "x"}}}),
    ("test_data.test_username", {"job_queue": "q", "test_data": {"test_username": "ubuntu\n"}}),
    ("test_data.test_username", {"job_queue": "q", "test_data": {"test_username": "ubuntu\nProxyCommand sh -c x"}}),
    ("test_data.test_username", {"job_queue": "q", "test_data": {"test_username": "-oProxyCommand=x"}}),
    ("test_data.test_username", {"job_queue": "q", "test_data": {"test_username": "a b"}}),
    ("test_data.test_username", {"job_queue": "q", "test_data": {"test_username": "Ubuntu"}}),
    ("test_data.test_username", {"job_queue": "q", "test_data": {"test_username": "u" * 33}}),
    ("multinode.cache_file", {"job_queue": "q", "multinode": {"cache_file": "/tmp/cache\n"}}),
])
def test_names_that_reach_files_and_command_lines_are_matched_whole(field, doc):
    """``$`` let a trailing newline through; every name is now matched whole against a strict pattern."""
    assert [e.path for e in errors_of(doc)] == [field]


@pytest.mark.parametrize("username", ["ubuntu", "admin", "_svc", "build-1", "machine$", "u" * 32])
def test_login_names_are_accepted(username):
    assert validate_job({"job_queue": "q", "test_data": {"test_username": username}})["test_data"][
        "test_username"] == username


def test_every_path_is_one_printable_line():
    """A path is one line of the CLI's message: a key's newline is shown escaped, never printed."""
    errors = errors_of({"job_queue": "q", "provision_data": {"jobs": 1}, "setup\nProxyCommand x": 1})
    assert [e.path for e in errors] == ["setup\\nProxyCommand x"]
    assert all(e.path.isprintable() for e in errors)


def test_ssh_client_config_refuses_what_would_add_directives(tmp_path: Path):
    """Defence in depth: even a user name that got past validation cannot add lines to the job's SSH config."""
    from convoy.connectors.base import SSHTarget
    from convoy.errors import ConvoyError
    from convoy.tasks.run.ssh import write_ssh_setup

    for bad in [SSHTarget("10.0.0.1", 22, "ubuntu\nProxyCommand touch /tmp/pwned"),
                SSHTarget("10.0.0.1", 22, "a b"), SSHTarget("10.0.0.1 *", 22, "ubuntu"),
                SSHTarget("10.0.0.1", 22, "${HOME}"), SSHTarget("10.0.0.1", 22, "")]:
        with pytest.raises(ConvoyError, match="refusing to write"):
            write_ssh_setup(tmp_path / "job", tmp_path / "key", [bad])
        assert not (tmp_path / "job" / ".convoy-ssh" / "config").exists()


def test_ssh_client_config_is_read_by_ssh_as_written(tmp_path: Path):
    """``ssh -G`` (OpenSSH's own reading of the config) sees the user, port and key convoy wrote, nothing else."""
    import shutil
    import subprocess

    from convoy.connectors.base import SSHTarget
    from convoy.tasks.run.ssh import write_ssh_setup

    if shutil.which("ssh") is None:
        pytest.skip("no OpenSSH client")
    key = tmp_path / "keys dir" / "agent%key"
    write_ssh_setup(tmp_path / "job", key, [SSHTarget("127.0.0.2", 2222, "build$")])
    config = tmp_path / "job" / ".convoy-ssh" / "config"
    shown = subprocess.run(["ssh", "-G", "-F", str(config), "127.0.0.2"], capture_output=True, text=True,
                           timeout=30, check=True).stdout.splitlines()
    assert "user build$" in shown and "port 2222" in shown
    assert f"identityfile {str(key).replace('%', '%%')}" in shown  # -G shows %-tokens unexpanded: %% is "%"
    assert not any(line.startswith("proxycommand") for line in shown)
