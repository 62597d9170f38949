"""LAVA's job form: translated into convoy jobs, or rejected with the LAVA field that cannot be.

The documents in tests/data/lava_jobs are LAVA's own examples from
/work/shared/reference (the secondary-connections job and its roles, the
device_group example); examples/lava-*.yaml are the documented API examples
written as LAVA jobs.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from convoy.config.jobs import job_queues, load_job, validate_job
from convoy.config.lava.translate import looks_like_lava, translate
from convoy.errors import JobValidationError

ROOT = Path(__file__).resolve().parents[2]
LAVA = ROOT / "tests" / "data" / "lava_jobs"
EXAMPLES = sorted((ROOT / "examples").glob("lava-*.yaml"))


def problems(source) -> list[tuple[str, str]]:
    with pytest.raises(JobValidationError) as info:
        load_job(source)
    return [(e.path, e.message) for e in info.value.errors]


def the_problem(source) -> tuple[str, str]:
    found = problems(source)
    assert len(found) == 1, found
    return found[0]


def children(job: dict) -> list[dict]:
    return job["provision_data"]["jobs"]


def lava_steps(job: dict) -> list[str]:
    """Every run step of a job's test actions, in order (what its test shell runs on the device)."""
    return [step for action in job["test_data"]["lava_tests"] for d in action["definitions"]
            for step in d["repository"]["run"]["steps"]]


def lava_requests(job: dict) -> list[list[str]]:
    """Each test action's MultiNode requests (run before its definitions)."""
    return [action["requests"] for action in job["test_data"]["lava_tests"]]


def lava_job(roles: dict, actions: list | None = None, **top) -> dict:
    doc = {"job_name": "t", "protocols": {"lava-multinode": {"roles": roles}}, **top}
    if actions is not None:
        doc["actions"] = actions
    return doc


def inline(*steps: str, name: str = "t", **extra) -> dict:
    return {"from": "inline", "name": name, "path": f"inline/{name}.yaml",
            "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0", "name": name},
                           "run": {"steps": list(steps)}, **extra}}


def lava_test(*definitions: dict, role: list[str] | None = None) -> dict:
    body: dict = {"definitions": list(definitions)}
    if role is not None:
        body["role"] = role
    return {"test": body}


TWO_ROLES = {"server": {"device_type": "qemu", "count": 1}, "client": {"device_type": "qemu", "count": 2}}


# ----------------------------------------------------------- LAVA's documents
def test_secondary_connection_roles_become_a_host_and_three_delayed_guests():
    job = load_job(LAVA / "secondary-connection-roles.yaml")
    host, *guests = children(job)
    assert job["job_queue"] == "multi"
    assert host["role"] == "host" and host["job_queue"] == "beaglebone-black"
    assert host["timeouts"]["multinode"] == 600 and host["allocate_data"] == {"allocate": True}
    assert len(guests) == 3
    for guest in guests:
        assert guest["role"] == "guest" and guest["connection"] == "ssh" and guest["host_role"] == "host"
        assert "job_queue" not in guest and "allocate_data" not in guest  # a guest holds no device
        assert guest["multinode"] == {"request": "lava-start", "expect_role": "host", "timeout": 900}
    assert job_queues(job) == {"beaglebone-black": 1}


def test_the_translation_normalises_exactly_like_the_same_job_written_for_convoy():
    convoy_form = {
        "job_queue": "multi",
        "provision_data": {"jobs": [
            {"role": "host", "job_queue": "beaglebone-black", "device_type": "beaglebone-black", "count": 1,
             "timeouts": {"multinode": "10m"}},
            {"role": "guest", "connection": "ssh", "host_role": "host", "count": 3, "timeouts": {"multinode": "15m"},
             "multinode": {"request": "lava-start", "expect_role": "host", "timeout": "15m"}},
        ]},
    }
    assert load_job(LAVA / "secondary-connection-roles.yaml") == validate_job(convoy_form)


def test_device_group_form_gives_roles_counts_queues_tags_and_the_v1_timeout():
    job = load_job(LAVA / "device-group.json")
    assert job["name"] == "simple multinode job" and job["global_timeout"] == 18000
    assert [(c["role"], c["job_queue"], c["tags"]) for c in children(job)] == [
        ("omap4", "panda", ["mytag1"]), ("omap4", "panda", ["mytag1"]), ("omap3", "beaglexm", ["mytag2"])]
    assert all(c["global_timeout"] == 18000 for c in children(job))
    assert job_queues(job) == {"panda": 2, "beaglexm": 1}


def test_device_group_v1_deploys_record_the_image_per_role():
    doc = json.loads((LAVA / "device-group-actions.json").read_text())
    doc["actions"] = doc["actions"][:2]  # without the git test definition
    job = validate_job(doc)
    images = {c["role"]: c["provision_data"]["image"] for c in children(job)}
    assert images["omap4"].endswith("panda-raring_developer_20130529-347.img.gz")
    assert images["omap3"].endswith("beagle-ubuntu-desktop.img.gz")


def test_device_group_v1_test_shell_from_git_is_rejected():
    assert the_problem(LAVA / "device-group-actions.json") == (
        "actions[2].parameters.testdef_repos[0]", "only inline test definitions can be translated (got git-repo)")


def test_complete_secondary_connections_job_keeps_its_git_definitions_for_the_worker_to_fetch():
    job = validate_job(yaml.safe_load((LAVA / "bbb-ssh-guest.yaml").read_text()))
    fetched = [d for c in children(job) for t in c["test_data"].get("lava_tests", []) for d in t["definitions"]
               if d["from"] == "git"]
    assert fetched and all(d == {"name": "smoke-tests", "from": "git", "path": "ubuntu/smoke-tests-basic.yaml",
                                 "repository": "git://git.linaro.org/qa/test-definitions.git"} for d in fetched)


def test_complete_secondary_connections_job_without_git_translates_every_part():
    doc = yaml.safe_load((LAVA / "bbb-ssh-guest.yaml").read_text())
    doc["actions"][4]["test"]["definitions"].pop(1)
    doc["actions"][5]["test"]["definitions"].pop(0)
    job = validate_job(doc)
    host, *guests = children(job)
    assert job["name"] == "bbb-guest-ssh" and job["global_timeout"] == 1800  # timeouts.job: 30 minutes
    assert host["provision_data"] == {
        "deploy": "tftp", "os": "debian", "boot": "u-boot", "authorize": "ssh",
        "images": {"kernel": "https://images.validation.linaro.org/functional-test-images/bbb/zImage",
                   "nfsrootfs": "https://images.validation.linaro.org/debian-jessie-rootfs.tar.gz",
                   "dtb": "https://images.validation.linaro.org/functional-test-images/bbb/am335x-bone.dtb"}}
    assert lava_steps(host) == [
        "ntpdate-debian", "lava-network broadcast eth0", "lava-send ipv4 ipaddr=$(lava-echo-ipv4 eth0)",
        "lava-send lava_start", "lava-sync clients"]
    (action,) = host["test_data"]["lava_tests"]
    assert action["definitions"][0]["repository"]["install"]["deps"] == ["openssh-server", "ntpdate"]
    assert action["definitions"][0]["name"] == "ssh-inline" and action["timeout"] == 1800
    assert len(guests) == 3
    for guest in guests:
        # the deploy's protocol request (lava-wait ipv4, 5 minutes) runs first, then the test steps
        assert lava_requests(guest) == [["lava-wait --timeout 300 ipv4"]]
        assert lava_steps(guest) == ["df -h", "free", "lava-sync clients"]
        assert guest["provision_data"] == {}  # no device to provision


# --------------------------------------------------------- examples/lava-*.yaml
def test_every_lava_example_is_a_lava_job_that_translates():
    assert len(EXAMPLES) >= 6
    for path in EXAMPLES:
        assert looks_like_lava(yaml.safe_load(path.read_text())), path
        job = load_job(path)
        assert job["job_queue"] == "multi" and all(c.get("test_data", {}).get("lava_tests") for c in children(job))
        assert not any("test_cmds" in c.get("test_data", {}) for c in children(job)), "LAVA tests run on the device"


def test_client_server_example_steps_become_each_roles_test_cmds():
    job = load_job(ROOT / "examples" / "lava-client-server.yaml")
    server, client = children(job)
    assert (server["role"], client["role"]) == ("server", "client")
    assert lava_steps(server) == [
        "SPACE=`df -h | grep \"/$\" | awk '{print $4}'`", "echo $SPACE", "lava-send server-ready free-space=$SPACE"]
    assert lava_steps(client)[0] == "lava-wait server-ready"
    assert job["timeouts"]["multinode"] == 120 and server["provision_data"]["os"] == "debian"


# -------------------------------------------------------------- translation
def test_actions_without_a_role_apply_to_all_roles_in_order_across_actions_and_definitions():
    job = validate_job(lava_job(TWO_ROLES, [
        lava_test(inline("echo all-1"), inline("echo all-2")),
        lava_test(inline("echo server-only"), role=["server"]),
        lava_test(inline("echo client-only", "echo client-again"), role=["client"]),
        lava_test(inline("echo all-3")),
    ]))
    server, client, _ = children(job)

    steps = lava_steps
    assert [len(a["definitions"]) for a in server["test_data"]["lava_tests"]] == [2, 1, 1]
    assert steps(server) == ["echo all-1", "echo all-2", "echo server-only", "echo all-3"]
    assert steps(client) == ["echo all-1", "echo all-2", "echo client-only", "echo client-again", "echo all-3"]
    assert children(job)[2] == client


def test_params_and_parameters_are_exported_before_the_steps():
    definition = inline("echo $SPEED $NAME", params={"SPEED": 10, "NAME": "default"})
    definition["parameters"] = {"NAME": "it's mine"}
    job = validate_job(lava_job({"peer": {"device_type": "qemu"}}, [lava_test(definition)]))
    (action,) = children(job)[0]["test_data"]["lava_tests"]
    (kept,) = action["definitions"]
    assert kept["repository"]["params"] == {"SPEED": 10, "NAME": "default"}  # the test shell exports both,
    assert kept["parameters"] == {"NAME": "it's mine"}                       # the job's parameters last


def test_role_timeouts_group_timeout_job_timeout_and_ignored_fields():
    doc = lava_job({"a": {"device_type": "qemu", "timeout": {"minutes": 1, "seconds": 30}, "essential": True},
                    "b": {"device_type": "x86", "request": "lava-start", "expect_role": "a",
                          "timeout": {"hours": 1}, "context": {"arch": "amd64"}, "tags": ["fast"]}},
                   timeouts={"job": {"minutes": 20}, "action": {"minutes": 1}, "connection": {"minutes": 2}},
                   visibility="public", priority="high", metadata={"k": "v"}, notify={"criteria": {}},
                   secrets={"TOKEN": "x"})
    doc["protocols"]["lava-multinode"]["timeout"] = {"minutes": 6}
    job = validate_job(doc)
    a, b = children(job)
    assert job["global_timeout"] == 1200 and job["timeouts"]["multinode"] == 360
    assert a["timeouts"]["multinode"] == 90 and "multinode" not in a
    assert b["multinode"] == {"request": "lava-start", "expect_role": "a", "timeout": 3600}
    assert b["provision_data"] == {"context": {"arch": "amd64"}} and b["tags"] == ["fast"]
    assert job_queues(job) == {"qemu": 1, "x86": 1}


def test_convoy_fields_pass_through_a_lava_job():
    job = validate_job(lava_job(TWO_ROLES, allocation_timeout="5m", job_priority=3,
                                multinode={"cache_file": "/tmp/my_cache.txt"}))
    assert job["allocation_timeout"] == 300 and job["job_priority"] == 3
    assert all(c["multinode"]["cache_file"] == "/tmp/my_cache.txt" for c in children(job))


def test_a_job_without_roles_becomes_a_single_device_job():
    job = load_job("""
device_type: qemu
job_name: single
timeouts: {job: {minutes: 5}}
actions:
- deploy: {to: tmpfs, os: debian}
- boot: {method: qemu}
- test:
    definitions:
    - from: inline
      name: smoke
      path: inline/smoke.yaml
      repository:
        metadata: {format: Lava-Test Test Definition 1.0, name: smoke}
        run: {steps: [uname -a]}
""")
    assert job["job_queue"] == "qemu" and job["name"] == "single" and job["global_timeout"] == 300
    assert job["provision_data"] == {"deploy": "tmpfs", "os": "debian", "boot": "qemu"}
    assert lava_steps(job) == ["uname -a"] and "test_cmds" not in job["test_data"]
    assert job_queues(job) == {"qemu": 1}


def test_translate_reports_where_each_convoy_field_came_from():
    job, origins = translate(yaml.safe_load((LAVA / "secondary-connection-roles.yaml").read_text()))
    assert origins["provision_data.jobs[1].multinode.expect_role"] == "protocols.lava-multinode.roles.guest.expect_role"
    assert origins["provision_data.jobs[0].job_queue"] == "protocols.lava-multinode.roles.host.device_type"
    assert job["provision_data"]["jobs"][1]["count"] == 3  # not expanded yet: convoy does that


def test_input_is_not_modified():
    doc = yaml.safe_load((LAVA / "bbb-ssh-guest.yaml").read_text())
    before = copy.deepcopy(doc)
    validate_job(doc)
    assert doc == before
    doc["actions"][4]["test"]["definitions"][1]["from"] = "bzr"  # refused: the input is still as it was
    before = copy.deepcopy(doc)
    with pytest.raises(JobValidationError):
        validate_job(doc)
    assert doc == before


def test_convoy_jobs_are_not_mistaken_for_lava_jobs():
    assert not looks_like_lava({"job_queue": "multi", "provision_data": {"jobs": [{"job_queue": "q"}]}})
    assert looks_like_lava({"device_group": []}) and looks_like_lava({"protocols": {}})


# -------------------------------------------------------------- rejections
@pytest.mark.parametrize("source, path, text", [
    ("bzr", "actions[0].test.definitions[0].from", "must be inline, git or url (got 'bzr')"),
    ("tar", "actions[0].test.definitions[0].from", "must be inline, git or url (got 'tar')"),
    (None, "actions[0].test.definitions[0].from", "required"),
])
def test_other_test_definition_sources_are_rejected(source, path, text):
    definition = {"name": "smoke", "path": "x.yaml", "repository": "https://example.org/tests.git"}
    if source:
        definition["from"] = source
    found = the_problem(lava_job(TWO_ROLES, [lava_test(definition)]))
    assert found[0] == path and text in found[1]


@pytest.mark.parametrize("action, path, text", [
    ({"deploy": {"to": "lxc", "os": "debian"}}, "actions[0].deploy.to", "lava-lxc"),
    ({"deploy": {"to": "docker", "image": "debian"}}, "actions[0].deploy.to", "docker"),
    ({"deploy": {"to": "two words"}}, "actions[0].deploy.to", "must be the deploy method's name"),
    ({"boot": {"method": ""}}, "actions[0].boot.method", "must be the boot method's name"),
    ({"deploy": {"os": "debian"}}, "actions[0].deploy.to", "required"),
    ({"boot": {"method": "lxc"}}, "actions[0].boot.method", "lava-lxc"),
    ({"test": {"interactive": [{"name": "uboot"}]}}, "actions[0].test.interactive", "interactive"),
    ({"test": {"monitors": [{"name": "m"}]}}, "actions[0].test.monitors", "monitors"),
    ({"test": {"timeout": {"minutes": 1}}}, "actions[0].test.definitions", "required"),
    ({"command": {"name": "pre_power"}}, "actions[0].command", "deploy, boot and test actions only"),
    ({"deploy": {"to": "tftp"}, "boot": {"method": "u-boot"}}, "actions[0]", "one key"),
    ({"reboot": {}}, "actions[0].reboot", "deploy, boot and test actions only"),
    ({"test": {"definitions": [inline("echo", "")], "role": ["nobody"]}}, "actions[0].test.role[0]",
     "no role 'nobody' (roles: server, client)"),
    ({"deploy": {"to": "ssh", "protocols": {"lava-vland": [{}]}}}, "actions[0].deploy.protocols.lava-vland",
     "only the lava-multinode protocol"),
    ({"deploy": {"to": "ssh", "protocols": {"lava-multinode": [{"request": "lava-start", "messageID": "x"}]}}},
     "actions[0].deploy.protocols.lava-multinode[0].expect_role", "required (with request: lava-start)"),
    ({"deploy": {"to": "ssh", "protocols": {"lava-multinode": [{"request": "lava-stop", "messageID": "x"}]}}},
     "actions[0].deploy.protocols.lava-multinode[0].request", "must be one of"),
    ({"deploy": {"to": "ssh", "protocols": {"lava-multinode": {"api": "lava-wait"}}}},
     "actions[0].deploy.protocols.lava-multinode.messageID", "required: the message id"),
    ({"deploy": {"to": "ssh", "protocols": {"lava-multinode": {"api": "lava-wait", "id": "a b"}}}},
     "actions[0].deploy.protocols.lava-multinode.id", "invalid message id"),
])
def test_actions_convoy_cannot_translate_are_rejected_with_their_path(action, path, text):
    found = the_problem(lava_job(TWO_ROLES, [action]))
    assert found[0] == path and text in found[1], found


def test_test_definition_details_are_checked():
    bad_step = inline("echo ok", "x")
    bad_step["repository"]["run"]["steps"][1] = {"echo client got": "x"}
    git_install = inline("true", install={"git-repos": ["https://example.org/x.git"], "deps": ["curl"]})
    no_steps = inline()
    del no_steps["repository"]["run"]
    found = problems(lava_job(TWO_ROLES, [lava_test(bad_step, git_install, no_steps)]))
    assert found == [
        ("actions[0].test.definitions[0].repository.run.steps[1]",
         "must be a shell command (a string), got mapping (quote a step that contains ': ')"),
        ("actions[0].test.definitions[1].repository.install.git-repos",
         "convoy does not change the device's software sources; provide it in the image"),
        ("actions[0].test.definitions[2].repository.run.steps", "required: the list of shell steps to run"),
    ]


def test_a_role_is_deployed_once():
    found = the_problem(lava_job(TWO_ROLES, [{"deploy": {"to": "tftp", "os": "a"}},
                                             {"deploy": {"to": "nfs", "os": "b", "role": ["client"]}}]))
    assert found == ("actions[1].deploy",
                     "role client is already deployed by actions[0].deploy; convoy provisions a device once per job")


@pytest.mark.parametrize("roles, path, text", [
    ({"server": {"count": 1}}, "protocols.lava-multinode.roles.server.device_type", "required field"),
    ({"server": {"device_type": "qemu", "connection": "adb"}}, "protocols.lava-multinode.roles.server.connection",
     "only connection: ssh"),
    ({"server": {"device_type": "bad queue!"}}, "protocols.lava-multinode.roles.server.device_type",
     "invalid queue name"),
    ({"server": {"device_type": "multi"}}, "protocols.lava-multinode.roles.server.device_type",
     "cannot be a multi job"),
    ({"server": {"device_type": "qemu", "count": 0}}, "protocols.lava-multinode.roles.server.count", "min value is 1"),
    ({"bad role": {"device_type": "qemu"}}, "protocols.lava-multinode.roles.bad role", "invalid role"),
    ({"server": {"device_type": "qemu", "timeout": {"minuts": 5}}},
     "protocols.lava-multinode.roles.server.timeout.minuts", "unknown unit"),
    ({"server": {"device_type": "qemu", "timeout": "soon"}}, "protocols.lava-multinode.roles.server.timeout",
     "not a duration"),
    ({"server": {"device_type": "qemu", "flavour": "x"}}, "protocols.lava-multinode.roles.server.flavour",
     "unknown field of a role"),
    ({"server": {"device_type": "qemu"}, "guest": {"connection": "ssh"}},
     "protocols.lava-multinode.roles.guest.host_role", "required field (with connection: ssh)"),
    ({"server": {"device_type": "qemu"}, "guest": {"connection": "ssh", "host_role": "nobody"}},
     "protocols.lava-multinode.roles.guest.host_role", "no child job has role 'nobody'"),
    ({"server": {"device_type": "qemu"}, "g": {"connection": "ssh", "host_role": "server", "request": "lava-start"}},
     "protocols.lava-multinode.roles.g.expect_role", "required field (with request: lava-start)"),
    ({"server": {"device_type": "qemu", "request": "lava-stop", "expect_role": "server"}},
     "protocols.lava-multinode.roles.server.request", "unallowed value lava-stop"),
])
def test_roles_convoy_cannot_accept_are_rejected_at_the_lava_field(roles, path, text):
    found = the_problem(lava_job(roles))
    assert found[0] == path and text in found[1], found


@pytest.mark.parametrize("doc, path, text", [
    ({"protocols": {"lava-lxc": {"name": "c"}}, "device_type": "x"}, "protocols.lava-lxc",
     "only the lava-multinode protocol"),
    ({"protocols": {"lava-multinode": {"roles": {}}}}, "protocols.lava-multinode.roles", "non-empty mapping"),
    ({"protocols": {"lava-multinode": {"roles": {"a": {"device_type": "q"}}, "timeouts": 5}}},
     "protocols.lava-multinode.timeouts", "unknown field"),
    ({"device_group": [{"role": "a", "device_type": "q"}], "protocols": {"lava-multinode": {"roles": {}}}},
     "device_group", "give the roles once"),
    ({"device_group": [{"role": "a", "device_type": "q"}, {"role": "a", "device_type": "q"}]},
     "device_group[1].role", "given twice"),
    ({"device_group": [{"device_type": "q"}]}, "device_group[0].role", "required"),
    ({"device_group": [{"role": "a", "device_type": "q", "count": "two"}]}, "device_group[0].count",
     "must be of integer type"),
    ({"actions": []}, "device_type", "required"),
    ({"device_type": "q", "actions": [{"test": {"definitions": [inline("true")], "role": ["a"]}}]},
     "actions[0].test.role", "only used in MultiNode jobs"),
    ({"device_group": [{"role": "a", "device_type": "q"}], "job_queue": "q"}, "job_queue", "not a field of a LAVA job"),
    ({"device_group": [{"role": "a", "device_type": "q"}], "timeouts": {"job": {"minutes": 0}}}, "timeouts.job",
     "positive duration"),
    ({"device_group": [{"role": "a", "device_type": "q"}], "job_name": 5}, "job_name", "must be of string type"),
    ({"device_group": [{"role": "a", "device_type": "q"}],
      "actions": [{"command": "lava_command_run", "parameters": {"commands": ["ls"]}}]},
     "actions[0].command", "LAVA V1 command 'lava_command_run' cannot be translated"),
])
def test_job_level_problems_are_rejected_at_the_lava_field(doc, path, text):
    found = the_problem(doc)
    assert found[0] == path and text in found[1], found


def test_every_problem_is_reported_at_once():
    found = problems(lava_job(
        {"server": {"device_type": "bad queue!"}, "client": {"device_type": "qemu", "count": 0}},
        [{"deploy": {"to": "lxc"}}, lava_test({"from": "bzr", "repository": "x", "name": "n", "path": "p"})],
        flavour=1))
    assert [path for path, _ in found] == [
        "actions[0].deploy.to", "actions[1].test.definitions[0].from", "flavour",
        "protocols.lava-multinode.roles.client.count", "protocols.lava-multinode.roles.server.device_type"]


def test_convoy_adds_nothing_about_a_role_the_translation_already_rejected():
    assert problems(lava_job({"server": {"connection": "adb"}, "client": {"device_type": "qemu", "count": 0}})) == [
        ("protocols.lava-multinode.roles.client.count", "min value is 1"),
        ("protocols.lava-multinode.roles.server.connection", "only connection: ssh can be translated (got 'adb')")]


# ------------------------------------------------ crash classes found by fuzzing
@pytest.mark.parametrize("doc, path, text", [
    (lava_job(TWO_ROLES, metadata=["source"]), "metadata", "must be a mapping of name: value, got list"),
    (lava_job(TWO_ROLES, [lava_test(inline("true") | {"repository": {"metadata": 5, "run": {"steps": ["true"]}}})]),
     "actions[0].test.definitions[0].repository.metadata", "must be a mapping (format, name, description, ...)"),
    ({"device_group": [{"role": "a", "device_type": "q"}],
      "actions": [{"command": "lava_test_shell", "parameters": {"testdef_repos": 5}}]},
     "actions[0].parameters.testdef_repos", "must be a list of test definitions, got integer"),
    (lava_job(TWO_ROLES, timeouts={"job": {"minutes": 10**300}}), "timeouts.job.minutes",
     "must be at most 31536000 seconds (365 days) in all, got a number of 301 digits"),
    (lava_job(TWO_ROLES, timeouts={"job": {"days": 10**400}}), "timeouts.job.days", "must be at most 31536000"),
    (lava_job(TWO_ROLES, timeouts={"job": {"minutes": 1e308, "days": 1e308}}), "timeouts.job.minutes",
     "must be at most 31536000"),
    (lava_job(TWO_ROLES, timeouts={"job": {"seconds": float("nan")}}), "timeouts.job.seconds",
     "must be a finite number, got nan"),
    (lava_job(TWO_ROLES, [{"deploy": {"to": ["tftp"]}}]), "actions[0].deploy.to",
     "must be the deploy method's name (tftp, nfs, ...), got list"),
    (lava_job(TWO_ROLES, [{"deploy": {"to": {"tftp": 1}}}]), "actions[0].deploy.to", "got mapping"),
    (lava_job(TWO_ROLES, [{"boot": {"method": {"u-boot": 1}}}]), "actions[0].boot.method",
     "must be the boot method's name (u-boot, qemu, ...), got mapping"),
    (lava_job(TWO_ROLES, [{"boot": {"method": ["qemu"]}}]), "actions[0].boot.method", "got list"),
    (lava_job(TWO_ROLES, [{"deploy": {"to": "ssh", "protocols": {"lava-multinode": [{"request": ["lava-send"]}]}}}]),
     "actions[0].deploy.protocols.lava-multinode[0].request", "must be one of"),
    (lava_job(TWO_ROLES, [{"deploy": {"to": "ssh", "protocols": {"lava-multinode": {"request": {"a": 1}}}}}]),
     "actions[0].deploy.protocols.lava-multinode.request", "must be one of"),
    ({"job_name": "x", "device_type": "q", "actions": [], "": 1}, '""', "not a field of a LAVA job"),
])
def test_values_that_crashed_the_translator_are_rejected_at_their_field(doc, path, text):
    found = the_problem(doc)
    assert found[0] == path and text in found[1], found


def test_a_problem_with_a_value_every_child_inherits_is_reported_once():
    """timeouts.job becomes each child's global_timeout too; its problem is still one line."""
    assert problems(lava_job(TWO_ROLES, timeouts={"job": "soon"})) == [
        ("timeouts.job", "not a duration: 'soon'; give seconds (3600) or a duration such as '90s', '45m', "
                         "'2h30m', '1h 30m', '1d'")]


@pytest.mark.parametrize("request_, path, text", [
    ({"request": "lava-wait", "messageID": "two words"}, "messageID", "invalid message id 'two words'"),
    ({"request": "lava-wait", "messageID": "k=v"}, "messageID", "no '='"),
    ({"request": "lava-wait", "messageID": 5}, "messageID", "must be a string, got integer"),
    ({"request": "lava-wait", "messageID": "ready", "timeout": "soon"}, "timeout", "not a duration: 'soon'"),
    ({"request": "lava-wait", "messageID": "ready", "timeout": -5}, "timeout", "must not be negative"),
    ({"request": "lava-wait", "messageID": "ready", "timeout": {"minutes": 10**300}}, "timeout.minutes",
     "must be at most"),
    ({"request": "lava-send", "messageID": "ready", "message": ["ip"]}, "message", "must be a mapping"),
    ({"request": "lava-send", "messageID": "ready", "message": {"a b": "x"}}, "message.a b",
     "a message key must be printable, without spaces or '='"),
    ({"request": "lava-send", "messageID": "ready", "message": {"ip": "1\n2"}}, "message.ip",
     "message values are one line"),
    ({"request": "lava-send", "messageID": "ready", "message": {"ip": [1]}}, "message.ip", "must be a single value"),
    ({"request": "lava-wait-all", "messageID": "ready", "role": "-rf"}, "role", "must be a role name"),
])
def test_multinode_requests_are_checked_as_the_lava_commands_check_them(request_, path, text):
    action = {"deploy": {"to": "ssh", "protocols": {"lava-multinode": [request_]}}}
    found = the_problem(lava_job(TWO_ROLES, [action]))
    assert found[0] == f"actions[0].deploy.protocols.lava-multinode[0].{path}" and text in found[1], found


def test_multinode_request_timeouts_become_seconds_on_the_command_line():
    action = {"deploy": {"to": "ssh", "protocols": {"lava-multinode": [
        {"request": "lava-wait", "messageID": "ready", "timeout": {"minutes": 2}},
        {"request": "lava-wait-all", "messageID": "done", "timeout": "1h", "role": "client"},
        {"request": "lava-send", "messageID": "ip", "message": {"addr": "10.0.0.1", "up": True}}]}}}
    server = children(validate_job(lava_job(TWO_ROLES, [action])))[0]
    assert server["test_data"]["lava_tests"] == [{"definitions": [], "requests": [
        "lava-wait --timeout 120 ready", "lava-wait-all --timeout 3600 done client",
        "lava-send ip addr=10.0.0.1 up=true"]}]


def test_a_definition_name_or_dependency_that_could_inject_commands_is_refused():
    """A definition's name names a directory and a suite, install.deps go to a command line: one word each."""
    definition = inline("true", name="smoke\nrm -rf /tmp/x", install={"deps": ["curl\ntouch /tmp/pwned"]})
    found = problems(lava_job({"peer": {"device_type": "qemu"}}, [lava_test(definition)]))
    assert [path for path, _ in found] == ["actions[0].test.definitions[0].name"]
    definition = inline("true", install={"deps": ["curl\ntouch /tmp/pwned"]})
    found = problems(lava_job({"peer": {"device_type": "qemu"}}, [lava_test(definition)]))
    assert found == [("actions[0].test.definitions[0].repository.install.deps", "must be a list of package names")]


@pytest.mark.parametrize("name", ["é", "1ST", "A-B", "A\n"])
def test_definition_parameters_must_be_shell_variable_names(name):
    definition = inline("true", params={name: 1})
    found = the_problem(lava_job({"peer": {"device_type": "qemu"}}, [lava_test(definition)]))
    assert found[0].startswith("actions[0].test.definitions[0].repository.params.")
    assert "not a shell variable name" in found[1]


def test_a_test_action_keeps_its_timeout_and_its_own_requests_before_its_definitions():
    action = lava_test(inline("echo hi", params={"N": 1}))
    action["test"]["timeout"] = {"minutes": 2}
    action["test"]["protocols"] = {"lava-multinode": [{"request": "lava-sync", "messageID": "go"}]}
    job = validate_job(lava_job({"peer": {"device_type": "qemu"}}, [action]))
    (test,) = children(job)[0]["test_data"]["lava_tests"]
    assert test["timeout"] == 120 and test["requests"] == ["lava-sync go"]
    assert [d["name"] for d in test["definitions"]] == ["t"]


def test_lava_tests_given_directly_are_validated_with_their_field_paths():
    job = {"job_queue": "qemu", "test_data": {"lava_tests": [
        {"definitions": [{"name": "../x", "from": "bzr", "repository": {}}], "timeout": -1}]}}
    with pytest.raises(JobValidationError) as info:
        validate_job(job)
    paths = sorted(e.path for e in info.value.errors)
    assert paths == ["test_data.lava_tests[0].definitions[0].from", "test_data.lava_tests[0].definitions[0].name",
                     "test_data.lava_tests[0].timeout"], info.value.errors


# -------------------------------------------------------------- definitions from git and url
def test_git_and_url_definitions_are_kept_for_the_worker_with_their_source_and_parameters():
    job = validate_job(lava_job({"peer": {"device_type": "qemu"}}, [lava_test(
        {"from": "git", "repository": "https://git.example.invalid/tests.git", "path": "smoke.yaml",
         "name": "smoke", "revision": "v1.0", "history": False, "parameters": {"SPEED": 10},
         "skip_install": ["deps"]},
        {"from": "git", "repository": "https://git.example.invalid/tests.git", "path": "smoke.yaml",
         "name": "on-branch", "branch": "stable", "params": {"MODE": "fast"}},
        {"from": "url", "repository": "https://defs.example.invalid/smoke.yaml", "name": "by-url"})]))
    (test,) = children(job)[0]["test_data"]["lava_tests"]
    assert test["definitions"] == [
        {"name": "smoke", "from": "git", "repository": "https://git.example.invalid/tests.git",
         "path": "smoke.yaml", "revision": "v1.0", "history": False, "parameters": {"SPEED": "10"},
         "skip_install": ["deps"]},
        {"name": "on-branch", "from": "git", "repository": "https://git.example.invalid/tests.git",
         "path": "smoke.yaml", "branch": "stable", "parameters": {"MODE": "fast"}},
        {"name": "by-url", "from": "url", "repository": "https://defs.example.invalid/smoke.yaml"}]


@pytest.mark.parametrize("definition, path, text", [
    ({"from": "git", "name": "n", "path": "p.yaml"}, "repository", "must be the git repository"),
    ({"from": "git", "repository": "https://x.invalid/r.git", "name": "n"}, "path", "required"),
    ({"from": "git", "repository": "https://x.invalid/r.git", "path": "p", "name": "n", "revision": "--upload-pack=x"},
     "revision", "must be a git revision"),
    ({"from": "git", "repository": "https://x.invalid/r.git", "path": "p", "name": "n", "branch": "a b"},
     "branch", "must be a git branch name"),
    ({"from": "git", "repository": "https://x.invalid/r.git", "path": "p", "name": "n", "history": "no"},
     "history", "true or false"),
    ({"from": "git", "repository": "https://x.invalid/r.git", "path": "p", "name": "n", "revision": "v1",
      "branch": "main"}, "branch", "not both"),
    ({"from": "url", "repository": "ftp://x.invalid/d.yaml", "name": "n"}, "repository", "http, https or file"),
    ({"from": "url", "repository": "https://x.invalid/d.yaml", "name": "n", "revision": "v1"}, "revision",
     "only for from: git"),
    ({"from": "url", "repository": "https://x.invalid/d.yaml"}, "name", "required"),
    ({"from": "git", "repository": "https://x.invalid/r.git", "path": "p", "name": "n", "parameters": {"1X": 1}},
     "parameters.1X", "not a shell variable name"),
    ({"from": "git", "repository": "https://x.invalid/r.git", "path": "p", "name": "n", "skip_install": ["nope"]},
     "skip_install", "must be true or a list of"),
])
def test_git_and_url_definitions_are_checked_naming_the_field(definition, path, text):
    found = the_problem(lava_job({"peer": {"device_type": "qemu"}}, [lava_test(definition)]))
    assert found[0] == f"actions[0].test.definitions[0].{path}" and text in found[1], found


@pytest.mark.parametrize("method", ["usbg-ms", "jlink", "minimal", "grub-efi", "some-new-method"])
def test_every_lava_deploy_and_boot_method_but_containers_is_provisioning_with_the_method_recorded(method):
    job = validate_job(lava_job(TWO_ROLES, [{"deploy": {"to": method, "os": "debian"}}, {"boot": {"method": method}}]))
    for child in children(job):
        assert child["provision_data"]["deploy"] == method and child["provision_data"]["boot"] == method


def test_a_deploys_authorize_is_kept_for_the_connector():
    job = validate_job(lava_job(TWO_ROLES, [{"deploy": {"to": "tftp", "authorize": "ssh", "role": ["server"]}}]))
    assert children(job)[0]["provision_data"]["authorize"] == "ssh"
    assert "authorize" not in children(job)[1].get("provision_data", {})


def test_every_documented_request_form_of_an_action_becomes_its_api_call():
    action = {"deploy": {"to": "ssh", "role": ["client"], "protocols": {"lava-multinode": [
        # the secondary-connections page: the pipeline action named, a message template on a wait
        {"action": "prepare-scp-overlay", "request": "lava-wait", "messageID": "ipv4",
         "message": {"ipaddr": "$ipaddr"}, "timeout": {"minutes": 5}},
        # delayed start from an action
        {"request": "lava-start", "expect_role": "server", "timeout": {"minutes": 1}},
        {"request": "lava-start", "expect_role": "server"}]}}}
    older = {"boot": {"method": "ssh", "role": ["client"], "protocols": {"lava-multinode": {
        "api": "lava-wait", "id": "ready", "key": "ipaddr", "timeout": {"minutes": 10}}}}}
    client = children(validate_job(lava_job(TWO_ROLES, [action, older])))[1]
    assert lava_requests(client) == [["lava-wait --timeout 300 ipv4", "lava-wait-all --timeout 60 lava_start server",
                                      "lava-wait-all lava_start server", "lava-wait --timeout 600 ready"]]


def test_expect_role_without_lava_start_delays_nothing_as_in_lava():
    roles = {"host": {"device_type": "qemu"}, "guest": {"connection": "ssh", "host_role": "host",
                                                        "expect_role": "host", "count": 2}}
    guest = children(validate_job(lava_job(roles)))[1]
    assert "multinode" not in guest or "request" not in guest["multinode"]


def test_target_group_is_accepted_and_convoy_makes_its_own_group():
    doc = lava_job(TWO_ROLES)
    doc["protocols"]["lava-multinode"]["target_group"] = "arbitrary-group-id"
    assert [c["role"] for c in children(validate_job(doc))] == ["server", "client", "client"]


PEER = ROOT / "tests" / "data" / "peer_jobs" / "lava"


@pytest.mark.parametrize("name", ["first-multinode-job", "second-multinode-job", "kvm-multinode", "bbb-bbb-group",
                                  "mustang-ssh-guest", "multinode-iperf-api", "qemu-ssh-guest"])
def test_the_peer_corpus_validates(name):
    assert children(load_job(PEER / f"{name}.yaml"))


@pytest.mark.parametrize("name", ["docker-test-multinode", "jlink-multiple-flash-multinode"])
def test_the_peer_corpus_docker_jobs_are_refused_naming_docker_only(name):
    found = problems(PEER / f"{name}.yaml")
    assert found and all("docker" in message for _, message in found), found
