"""Loading, validating and normalising jobs (single-device and ``multi``).

A job is checked whole before anything is queued: the parent and every child,
all errors at once, each with its dotted path.  The result is normalised so
that the rest of convoy reads one shape: defaults filled, durations in
seconds, ``test_cmds`` one script, ``count`` expanded into one child entry per
device, every child that holds a device marked ``allocate_data: {allocate:
true}`` (secondary connections, ``connection: ssh``, hold none), and the
MultiNode settings (``timeouts.multinode``, ``multinode.cache_file``) given on
the parent inherited by children that do not set their own.
"""
from __future__ import annotations

import copy
import os
from collections import Counter
from typing import Any

from convoy.config.lava import translate as lava
from convoy.config.schemas import (
    CHILD_JOB,
    DEFAULT_MULTINODE_TIMEOUT,
    MAX_CHILDREN,
    MULTI_JOB,
    MULTI_QUEUE,
    LAVA_START,
    SINGLE_JOB,
    SSH_CONNECTION,
    kind_of,
    path_key,
    run,
)
from convoy.config.lava.errors import under
from convoy.config.plain_data import plain_data_problems
from convoy.config.shown import shown
from convoy.config.yamlsafe import read_document
from convoy.errors import FieldError, JobValidationError

__all__ = ["check_plain_data", "is_guest", "is_multi", "job_queues", "kind_of", "load_job", "validate_job"]

#: most problems listed in one JobValidationError (the rest are counted)
MAX_REPORTED = 200


def check_plain_data(value: Any, prefix: str = "") -> list[FieldError]:
    """Errors for anything that is not plain JSON-like data a job can carry (see convoy.config.plain_data)."""
    return plain_data_problems(value, prefix).all()


def _capped(errors: list[FieldError]) -> list[FieldError]:
    if len(errors) <= MAX_REPORTED:
        return errors
    rest = errors[MAX_REPORTED:]
    return errors[:MAX_REPORTED] + [FieldError(rest[0].path, f"... and {len(rest)} more problem(s) not shown")]


def is_multi(job: Any) -> bool:
    """True for a multi-device job (``job_queue: multi``)."""
    return isinstance(job, dict) and job.get("job_queue") == MULTI_QUEUE


def load_job(source: dict | str | os.PathLike) -> dict:
    """Load (dict, YAML text, or a .yaml/.yml/.json path) and validate a job; see :func:`validate_job`."""
    return validate_job(read_document(source))


def validate_job(doc: Any) -> dict:
    """Validate a whole job and return it normalised; raise JobValidationError listing every problem."""
    if not isinstance(doc, dict):
        raise JobValidationError([FieldError("", f"job must be a mapping, got {kind_of(doc)}")])
    if lava.looks_like_lava(doc):  # LAVA's job form: translated, then validated as a convoy job
        return lava.validate_lava_job(doc)
    plain = plain_data_problems(doc)
    if plain.structure:  # the schemas cannot run on what is not plain data
        raise JobValidationError(plain.all())
    doc = copy.deepcopy(doc)
    job, errors = _validate_multi(doc) if is_multi(doc) else _validate_single(doc)
    # a value no job can carry is reported once, as that (not also as, say, a bad duration)
    errors = plain.values + [e for e in errors if not any(under(e.path, bad.path) for bad in plain.values)]
    if errors:
        raise JobValidationError(_capped(errors))
    return job


def _validate_single(doc: dict) -> tuple[dict, list[FieldError]]:
    job, errors = run(SINGLE_JOB, doc, context="single")
    if not errors:
        job.pop("count", None)
        job.setdefault("timeouts", {}).setdefault("multinode", DEFAULT_MULTINODE_TIMEOUT)
    return job, errors


def _validate_multi(doc: dict) -> tuple[dict, list[FieldError]]:
    parent, errors = run(MULTI_JOB, doc, context="parent")
    provision = doc.get("provision_data")
    jobs = provision.get("jobs") if isinstance(provision, dict) else None
    children: list[dict] = []
    if isinstance(jobs, list) and 0 < len(jobs) <= MAX_CHILDREN:
        child_errors: list[FieldError] = []
        for index, child in enumerate(jobs):
            path = f"provision_data.jobs[{index}]"
            if len(errors) + len(child_errors) >= MAX_REPORTED:
                child_errors.append(FieldError(f"provision_data.jobs[{index}:]",
                                               "not checked: too many problems above"))
                break
            if not isinstance(child, dict):
                child_errors.append(FieldError(path, f"a child job must be a mapping, got {kind_of(child)}"))
                continue
            normalised, problems = run(CHILD_JOB, child, prefix=path, context="child")
            child_errors.extend(problems)
            normalised["_path"] = path
            children.append(normalised)
        child_errors.extend(_check_links(children))
        errors.extend(sorted(child_errors, key=path_key))
        total = sum(c.get("count", 1) for c in children if isinstance(c.get("count", 1), int))
        if not errors and total > MAX_CHILDREN:
            errors.append(FieldError("provision_data.jobs",
                                     f"too many devices once count is expanded ({total}, limit {MAX_CHILDREN})"))
    if errors:
        return parent, errors
    parent.setdefault("timeouts", {}).setdefault("multinode", DEFAULT_MULTINODE_TIMEOUT)
    parent["provision_data"]["jobs"] = _expand(children, parent)
    return parent, errors


#: the queue name a secondary-connection guest (no device of its own) is recorded under
GUEST_QUEUE = "secondary-connection"


def is_guest(child: dict) -> bool:
    """True for a secondary connection (``connection: ssh``): a role that holds no device."""
    return child.get("connection") == SSH_CONNECTION


def _check_links(children: list[dict]) -> list[FieldError]:
    """Checks across fields and children: queues of device roles, guests' hosts, delayed starts."""
    errors: list[FieldError] = []
    roles = {c["role"] for c in children if isinstance(c.get("role"), str)}
    for child in children:
        path, multinode = child["_path"], child.get("multinode")
        if is_guest(child):
            if "host_role" not in child:
                errors.append(FieldError(f"{path}.host_role", "required field (with connection: ssh)"))
        elif "job_queue" not in child:
            errors.append(FieldError(f"{path}.job_queue", "required field"))
        elif "host_role" in child:
            errors.append(FieldError(f"{path}.host_role", "only allowed with connection: ssh"))
        named = [("host_role", child.get("host_role"))]
        if isinstance(multinode, dict):
            if multinode.get("request") == LAVA_START and "expect_role" not in multinode:
                errors.append(FieldError(f"{path}.multinode.expect_role", "required field (with request: lava-start)"))
            if "expect_role" in multinode and "request" not in multinode:
                errors.append(FieldError(f"{path}.multinode.request", "required field (with expect_role)"))
            named.append(("multinode.expect_role", multinode.get("expect_role")))
        for field, role in named:
            if isinstance(role, str) and role not in roles:
                errors.append(FieldError(f"{path}.{field}", f"no child job has role {shown(role)} "
                                                            f"(roles: {', '.join(sorted(roles)) or 'none'})"))
    return errors


def _expand(children: list[dict], parent: dict) -> list[dict]:
    """One entry per device, in the order written; each inherits the parent's MultiNode settings."""
    expanded: list[dict] = []
    cache_file = parent.get("multinode", {}).get("cache_file")
    for child in children:
        count = child.pop("count", 1)
        child.pop("_path", None)
        if is_guest(child):
            child.pop("allocate_data", None)  # a guest holds no device
        else:
            child["allocate_data"] = {"allocate": True}
        child.setdefault("timeouts", {}).setdefault("multinode", parent["timeouts"]["multinode"])
        if cache_file is not None:
            child.setdefault("multinode", {}).setdefault("cache_file", cache_file)
        expanded.extend(copy.deepcopy(child) for _ in range(count))
    return expanded


def job_queues(job: dict) -> dict[str, int]:
    """The queues a (normalised) job needs devices from, and how many devices of each at once."""
    if not is_multi(job):
        return {job["job_queue"]: 1}
    counts: Counter[str] = Counter()
    for child in job["provision_data"]["jobs"]:
        if not is_guest(child):
            counts[child["job_queue"]] += int(child.get("count", 1))
    return dict(counts)


def job_tags(job: dict) -> dict[str, set[str]]:
    """The tags the job's LAVA roles ask of devices, per queue (device type): what an embedded lab gives them."""
    entries = job["provision_data"]["jobs"] if is_multi(job) else [job]
    tags: dict[str, set[str]] = {}
    for entry in entries:
        if entry.get("device_type") and not is_guest(entry):
            tags.setdefault(entry["job_queue"], set()).update(entry.get("tags") or ())
    return tags
