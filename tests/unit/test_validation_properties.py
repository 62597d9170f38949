"""Property: validating a job never crashes, whatever the document.

Every input -- generated jobs in Testflinger form (single device and
``job_queue: multi``) and LAVA form (``protocols: lava-multinode`` roles,
``device_group``, deploy/boot/test actions with inline definitions), valid
jobs with random subtrees replaced, deleted or added, and YAML text with
hostile bytes -- gives either a normalised job (plain JSON data) or a
:class:`JobValidationError` whose every error names the field it is about.
Only a document that is not a mapping at all (bad YAML, a list) may be
reported at the document itself (an empty path).

The examples are fixed (``derandomize``, no example database), so CI runs the
same 2,400 documents every time; there is no deadline and no timing assertion.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from convoy.config.jobs import load_job, validate_job
from convoy.config.lava.translate import DEPLOY_METHODS
from convoy.config.yamlsafe import read_document
from convoy.errors import FieldError, JobValidationError

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SEED_FILES = sorted([
    *(DATA / "good_jobs").glob("*.yaml"), *(DATA / "lava_jobs").glob("*.*"),
    *(DATA / "peer_jobs").glob("*/*.yaml"), *(ROOT / "examples").glob("*.yaml"),
])


def _seed(path: Path) -> Any:
    """A seed as plain data; PyYAML's own loader keeps the last of duplicate keys (as LAVA's does)."""
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


SEEDS = [_seed(p) for p in SEED_FILES]

CHECKED = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                          HealthCheck.large_base_example, HealthCheck.filter_too_much])


# ------------------------------------------------------------------ the property
def _parsed(source: Any) -> Any:
    """What the loader makes of ``source`` before validation (None if it cannot read it)."""
    if isinstance(source, dict):
        return source
    try:
        return read_document(source)
    except JobValidationError:
        return None


def check(source: Any) -> None:
    """A normalised job or a JobValidationError with a field path on every error; nothing else."""
    try:
        job = load_job(source)
    except JobValidationError as exc:
        event("rejected")  # hypothesis's statistics (--hypothesis-show-statistics) show the mix
        assert exc.errors and exc.exit_code == 2
        assert str(exc).startswith("invalid job: ")
        whole_document = not isinstance(_parsed(source), dict)
        for error in exc.errors:
            assert isinstance(error, FieldError) and isinstance(error.path, str)
            assert isinstance(error.message, str) and error.message
            assert error.path or whole_document, f"an error without a field path: {error}"
    else:
        event("accepted")
        assert isinstance(job, dict)
        assert json.loads(json.dumps(job)) == job, "a normalised job is plain JSON"
        assert validate_job(copy.deepcopy(job)) == job, "a normalised job validates to itself"


def as_yaml(doc: Any, unicode: bool) -> str | None:
    """``doc`` as YAML text (None if PyYAML cannot write it)."""
    try:
        return yaml.safe_dump(doc, allow_unicode=unicode, sort_keys=False)
    except (yaml.YAMLError, ValueError):
        return None


def check_every_form(doc: Any, unicode: bool) -> None:
    """The document as a dict and as YAML text (bytes: see test_hostile_yaml_bytes_and_text)."""
    check(copy.deepcopy(doc))
    text = as_yaml(doc, unicode)
    if text is not None:
        check(text)


# ------------------------------------------------------------- hostile values
HOSTILE_TEXT = [
    "", " ", "emu\n", "emu\r", "multi", "lava-start", "ssh", "inline", "git", "tftp", "lxc", "docker", "u-boot",
    "lava-send", "lava-wait", "lava-wait-all", "lava-sync", "1h", "2h30m", "-1", "0", "1e400", "nan", "inf",
    "10**300", "a\nProxyCommand touch /tmp/pwned", "\x00", "a\x00b", "\ud800", "\udcff", "\u2028", "\ufeff",
    "gh:x", "lp:y", "$", "${HOME}", "root$", "-rf", "../../etc/passwd", "/tmp/x\n", "/tmp/cache", "9" * 400,
    "é", "a=b", "\x1b[31m", "%d", "*", "&a", "!!python/object:os.system", "CONVOY_X", "PATH", "1ST", "a b",
]
NAMES = [
    "job_queue", "provision_data", "jobs", "test_data", "test_cmds", "test_username", "env", "reserve_data",
    "ssh_keys", "timeout", "global_timeout", "output_timeout", "allocation_timeout", "timeouts", "multinode",
    "cache_file", "request", "expect_role", "role", "count", "connection", "host_role", "tags", "name",
    "job_priority", "allocate_data", "allocate", "parent_job_id", "protocols", "lava-multinode", "roles",
    "device_type", "device_group", "actions", "deploy", "boot", "test", "to", "method", "definitions", "from",
    "repository", "metadata", "run", "steps", "install", "deps", "params", "parameters", "messageID", "message",
    "job", "minutes", "seconds", "hours", "days", "command", "testdef_repos", "testdef_urls", "context",
    "essential", "job_name", "notify", "visibility", "priority", "secrets", "images", "url", "os", "path",
]
HUGE_NUMBERS = [10**300, -10**300, 10**1000, 2**63, 2**64 + 1, 10**20, 31536001, 1e300, -1e300, float("inf"),
                float("-inf"), float("nan"), 1e-300]

# Each named strategy sits behind st.deferred so that hypothesis's description of it stays short.
#: any text: mostly printable, sometimes hostile (NUL, lone surrogates, line breaks, huge)
texts = st.deferred(lambda: st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=12),
    st.text(st.sampled_from("\x00\n\r\t =$%:./-_aZ9é\u2028\ud800\udfff"), max_size=8),
))
numbers = st.deferred(lambda: st.one_of(st.integers(-1000, 10**6), st.integers(), st.floats(),
                                        st.sampled_from(HUGE_NUMBERS), st.builds(lambda: 10**5000)))
words = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
#: mapping keys: mostly names convoy or LAVA use, sometimes anything hashable
keys = st.deferred(lambda: st.one_of(
    st.sampled_from(NAMES), st.sampled_from(NAMES), words, texts,
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([10**300, 1.5]))))


@st.composite
def either(draw: st.DrawFn, valid: st.SearchStrategy, hostile: st.SearchStrategy | None = None) -> Any:
    """Mostly (9 in 10) a valid value, sometimes any value at all: enough generated jobs
    are valid that normalisation is exercised as well as every kind of error."""
    return draw(values if hostile is None else hostile) if draw(st.integers(0, 9)) == 9 else draw(valid)


#: any value: scalars of every kind, and lists and mappings of them
values = st.deferred(lambda: st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts, words),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(words, words, st.sampled_from(NAMES), keys), inner, max_size=4)),
    max_leaves=8))


def either_key(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a valid mapping key, sometimes any key at all."""
    return either(valid, keys)


#: free text (names, tags, commands, message values): mostly harmless, sometimes hostile
plain = either(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10), texts)
#: free-form mappings (provision_data, setup_data, context): any plain data under simple names
free_mapping = either(st.dictionaries(words, st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), plain),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(words, inner, max_size=3)),
    max_leaves=6), max_size=3))

# ------------------------------------------------------- generated: Testflinger
queues = either(words)
roles = either(st.sampled_from(["server", "client", "host", "guest", "a.b", "_x"]))
durations = either(st.one_of(st.sampled_from(["1h", "30m", "2h30m", "90s", "1d", "1h 30m"]),
                             st.integers(1, 10**5), st.floats(0.5, 1e5)), st.one_of(numbers, values))
users = either(st.sampled_from(["ubuntu", "admin", "pi", "_svc", "build$"]), st.one_of(texts, values))
env_names = either_key(st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True))
test_data = either(st.fixed_dictionaries({}, optional={
    "test_cmds": either(st.one_of(plain, st.lists(plain, max_size=3))), "test_username": users,
    "env": either(st.dictionaries(env_names, either(st.one_of(plain, st.integers())), max_size=3)),
}))
reserve_data = either(st.fixed_dictionaries({"ssh_keys": either(st.lists(
    either(st.sampled_from(["gh:someone", "lp:someone"])), min_size=1, max_size=2))}, optional={"timeout": durations}))
common = {
    "name": plain, "tags": either(st.lists(plain, max_size=2)), "global_timeout": durations,
    "output_timeout": durations, "job_priority": either(st.integers(0, 1000)), "test_data": test_data,
    "timeouts": either(st.fixed_dictionaries({}, optional={"multinode": durations})),
    "setup_data": free_mapping, "provision_data": free_mapping,
}
delayed_start = either(st.fixed_dictionaries(
    {"request": either(st.just("lava-start")), "expect_role": roles}, optional={"timeout": durations}))
cache_files = either(st.sampled_from(["/tmp/cache", "relative", "/tmp/a\nb"]))
device_child = st.fixed_dictionaries({"job_queue": queues}, optional={
    **common, "role": roles, "count": either(st.integers(1, 4)),
    "multinode": either(st.fixed_dictionaries({}, optional={"cache_file": cache_files}))})
guest_child = st.fixed_dictionaries({"connection": either(st.just("ssh")), "host_role": roles}, optional={
    **common, "role": roles, "count": either(st.integers(1, 3)), "multinode": delayed_start})
testflinger_single = st.fixed_dictionaries({"job_queue": queues}, optional={
    **common, "reserve_data": reserve_data, "role": roles, "count": either(st.just(1))})
testflinger_multi = st.fixed_dictionaries(
    {"job_queue": st.just("multi"), "provision_data": either(st.fixed_dictionaries({"jobs": either(
        st.lists(either(st.one_of(device_child, device_child, guest_child)), min_size=1, max_size=4))}))},
    optional={**{k: v for k, v in common.items() if k != "provision_data"}, "reserve_data": reserve_data,
              "allocation_timeout": durations,
              "multinode": either(st.fixed_dictionaries({"cache_file": either(st.just("/tmp/c"))}))})

# -------------------------------------------------------------- generated: LAVA
lava_durations = either(st.one_of(
    st.dictionaries(either_key(st.sampled_from(["days", "hours", "minutes", "seconds"])),
                    either(st.integers(1, 100), numbers), min_size=1, max_size=2),
    durations))
role_lists = either(st.lists(roles, min_size=1, max_size=2))
requests = either(st.fixed_dictionaries(
    {"request": either(st.sampled_from(["lava-send", "lava-wait", "lava-wait-all", "lava-sync", "lava-start"])),
     "messageID": either(st.sampled_from(["ipv4", "ready", "done"]),
                         st.one_of(st.sampled_from(["a b", "k=v", "x" * 300, "-x"]), texts, values))},
    optional={"message": either(st.dictionaries(either_key(st.sampled_from(["ipaddr", "a b", "k=v"])),
                                                plain, max_size=2)),
              "timeout": lava_durations, "role": roles}))
action_protocols = either(st.fixed_dictionaries({"lava-multinode": either(st.one_of(
    requests, st.lists(requests, max_size=2)))}))
steps = either(st.lists(plain, max_size=3))
definitions = either(st.fixed_dictionaries(
    {"from": either(st.just("inline"), st.one_of(st.sampled_from(["git", "url"]), values)),
     "repository": either(st.fixed_dictionaries(
         {"run": either(st.fixed_dictionaries({"steps": steps}))},
         optional={"metadata": either(st.fixed_dictionaries({"name": plain, "format": plain})),
                   "install": either(st.fixed_dictionaries({}, optional={
                       "deps": either(st.lists(plain, max_size=2)), "steps": steps,
                       "git-repos": values})),
                   "params": either(st.dictionaries(env_names, plain, max_size=2))}))},
    optional={"name": plain, "path": plain, "parameters": either(st.dictionaries(env_names, plain, max_size=2))}))
deploys = st.fixed_dictionaries({"deploy": either(st.fixed_dictionaries(
    {"to": either(st.sampled_from(sorted(DEPLOY_METHODS | {"lxc", "docker", "usbg-ms"})))},
    optional={"role": role_lists, "os": plain, "protocols": action_protocols, "timeout": lava_durations,
              "kernel": either(st.fixed_dictionaries({"url": plain})),
              "images": either(st.dictionaries(words, either(st.fixed_dictionaries({"url": plain})), max_size=2))}))})
boots = st.fixed_dictionaries({"boot": either(st.fixed_dictionaries({}, optional={
    "method": either(st.sampled_from(["u-boot", "qemu", "lxc", "docker"])), "role": role_lists,
    "protocols": action_protocols, "timeout": lava_durations}))})
tests = st.fixed_dictionaries({"test": either(st.fixed_dictionaries(
    {"definitions": either(st.lists(definitions, min_size=1, max_size=2))},
    optional={"role": role_lists, "protocols": action_protocols, "timeout": lava_durations,
              "interactive": values}))})
v1_actions = st.fixed_dictionaries(
    {"command": st.sampled_from(["deploy_linaro_image", "lava_test_shell", "boot_linaro_image", "submit_results",
                                 "dummy_deploy", "other"])},
    optional={"parameters": either(st.fixed_dictionaries({}, optional={
        "testdef_repos": either(st.lists(values, max_size=2)), "testdef_urls": either(st.lists(plain, max_size=2)),
        "image": plain, "role": roles}))})
actions = either(st.lists(either(st.one_of(deploys, boots, tests, tests, v1_actions)), max_size=5))
device_role = st.fixed_dictionaries({"device_type": queues}, optional={
    "count": either(st.integers(1, 3)), "tags": either(st.lists(plain, max_size=2)), "timeout": lava_durations,
    "essential": either(st.booleans()), "context": free_mapping})
guest_role = st.fixed_dictionaries({"connection": either(st.just("ssh")), "host_role": roles}, optional={
    "count": either(st.integers(1, 3)), "timeout": lava_durations, "request": either(st.just("lava-start")),
    "expect_role": roles})
lava_top = {
    "timeouts": either(st.dictionaries(either_key(st.sampled_from(["job", "action", "connection"])),
                                       lava_durations, max_size=2)),
    "actions": actions, "metadata": either(st.dictionaries(words, plain, max_size=2)),
    "visibility": either(st.just("public")), "priority": either(st.sampled_from(["high", "medium", 50])),
    "tags": either(st.lists(plain, max_size=2)), "notify": free_mapping,
}
lava_multinode = st.fixed_dictionaries(
    {"job_name": plain, "protocols": either(st.fixed_dictionaries(
        {"lava-multinode": either(st.fixed_dictionaries(
            {"roles": either(st.dictionaries(either_key(st.sampled_from(["server", "client", "host", "guest"])),
                                             either(st.one_of(device_role, device_role, guest_role)),
                                             min_size=1, max_size=3))},
            optional={"timeout": lava_durations}))},
        ))},
    optional=lava_top)
lava_device_group = st.fixed_dictionaries(
    {"job_name": plain, "device_group": either(st.lists(either(st.fixed_dictionaries(
        {"role": roles, "count": either(st.integers(1, 3)), "device_type": queues},
        optional={"tags": either(st.lists(plain, max_size=2))})), min_size=1, max_size=3))},
    optional={**lava_top, "timeout": durations})
lava_single = st.fixed_dictionaries({"device_type": queues, "actions": actions},
                                    optional={k: v for k, v in lava_top.items() if k != "actions"})


# ------------------------------------------------------------------- mutation
def _slots(doc: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in ``doc``: the places a mutation can touch."""
    slots, stack = [], [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            slots += [(node, key) for key in node]
            stack += list(node.values())
        elif isinstance(node, list):
            slots += [(node, i) for i in range(len(node))]
            stack += node
    return slots


def _pick(draw: st.DrawFn, items: list) -> Any:
    """One of ``items`` by index: hypothesis would otherwise describe the whole list (a document per slot)."""
    return items[draw(st.integers(0, len(items) - 1))]


@st.composite
def mutated(draw: st.DrawFn, seeds: st.SearchStrategy) -> Any:
    """A seed with 1-4 of its subtrees replaced, deleted, wrapped, or keys added."""
    doc = copy.deepcopy(draw(seeds))
    for _ in range(draw(st.integers(1, 4))):
        slots = _slots(doc)
        operation = draw(st.sampled_from(["replace", "replace", "delete", "add", "wrap"]))
        if not slots or operation == "add":
            mappings = [doc] + [c[k] for c, k in slots if isinstance(c[k], dict)]
            if isinstance(doc, dict):
                _pick(draw, mappings)[draw(keys)] = draw(values)
            continue
        container, key = _pick(draw, slots)
        if operation == "replace":
            container[key] = draw(values)
        elif operation == "wrap":
            container[key] = [container[key]] if draw(st.booleans()) else {"x": container[key]}
        else:
            del container[key]
    return doc


seed_documents = st.integers(0, len(SEEDS) - 1).map(lambda i: SEEDS[i])
generated = st.one_of(testflinger_single, testflinger_multi, lava_multinode, lava_device_group, lava_single)


# ---------------------------------------------------------------------- tests
def test_there_are_seeds_of_every_form():
    assert len(SEEDS) >= 30
    assert any(isinstance(s, dict) and s.get("job_queue") == "multi" for s in SEEDS)
    assert any(isinstance(s, dict) and "device_group" in s for s in SEEDS)
    assert any(isinstance(s, dict) and "protocols" in s for s in SEEDS)
    assert any(isinstance(s, dict) and s.get("job_queue") not in (None, "multi") for s in SEEDS)


@settings(CHECKED, max_examples=500)
@given(doc=st.one_of(testflinger_single, testflinger_multi), unicode=st.booleans())
def test_generated_testflinger_jobs(doc, unicode):
    check_every_form(doc, unicode)


@settings(CHECKED, max_examples=600)
@given(doc=st.one_of(lava_multinode, lava_device_group, lava_single), unicode=st.booleans())
def test_generated_lava_jobs(doc, unicode):
    check_every_form(doc, unicode)


@settings(CHECKED, max_examples=900)
@given(doc=mutated(st.one_of(seed_documents, seed_documents, generated)), unicode=st.booleans())
def test_mutated_jobs(doc, unicode):
    check_every_form(doc, unicode)


HOSTILE_BYTES = [b"\x00", b"\xff", b"\xef\xbb\xbf", b"\xfe\xff", b"\n", b"\t", b": ", b"- ", b"[", b"{", b"]",
                 b"&a ", b"*a", b"!!python/object/apply:os.system ['true'] ", b"<<: ", b"? ", b"---\n", b"%YAML 1.1\n",
                 b"'", b'"', b"#", b"|\n", b">-\n", b"\xed\xa0\x80", b"\xc3", b"\r", b"\x85", b"\xe2\x80\xa8"]


@st.composite
def hostile_text(draw: st.DrawFn) -> bytes:
    """A job's YAML with bytes inserted, overwritten or cut off."""
    data = bytearray((as_yaml(draw(st.one_of(seed_documents, generated)), draw(st.booleans())) or "")
                     .encode("utf-8", "surrogatepass"))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        junk = draw(st.one_of(st.sampled_from(HOSTILE_BYTES), st.binary(min_size=1, max_size=6)))
        operation = draw(st.sampled_from(["insert", "overwrite", "cut"]))
        if operation == "insert":
            data[at:at] = junk
        elif operation == "overwrite":
            data[at:at + len(junk)] = junk
        else:
            del data[at:]
    return bytes(data)


@settings(CHECKED, max_examples=400)
@given(data=hostile_text())
def test_hostile_yaml_bytes_and_text(data):
    check(data)
    check(data.decode("utf-8", "surrogateescape"))  # undecodable bytes as lone surrogates in a str
