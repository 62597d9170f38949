"""Job secrets are never shown: ``test_data.secrets`` values are stored apart from the job's record (its
document names them, each ``***``), and the job's output masks them (``***``) even when a command prints
one in pieces; ``convoy show``, ``results``, ``poll``, the record in Redis and every log of the cluster
hold no secret value."""
from __future__ import annotations

import os
import subprocess

import pytest

from convoy.coordinator.api import job_results, submit_job, wait_for_job
from convoy.coordinator.state import keys
from convoy.coordinator.state.connection import get_store
from helpers import CONVOY, unique_queue

pytestmark = pytest.mark.integration
SECRET = "convoy-secret-4004zz"  # printed by the commands below, never written in them whole
PRINTS_IT = ('echo "whole: convoy-secret-$((4000+4))zz"\n'
             "printf 'split: convoy-sec'; sleep 0.5; printf 'ret-4004zz done\\n'\n"
             'echo "token=$API_TOKEN"')


def _cli(*args: str) -> str:
    done = subprocess.run([CONVOY, *args], capture_output=True, text=True, timeout=60, env=dict(os.environ))
    return done.stdout + done.stderr


def test_secrets_are_masked_in_output_and_shown_nowhere(start_cluster):
    q = unique_queue("secrets")
    cluster = start_cluster({q: 1})
    job = submit_job({"job_queue": q, "test_data": {"test_cmds": PRINTS_IT, "secrets": {"API_TOKEN": SECRET}}})
    assert wait_for_job(job, timeout=120) == "complete"
    output = job_results(job)["test_output"]
    assert "whole: ***" in output and "split: *** done" in output, output
    shown = {"show": _cli("show", job), "results": _cli("results", job), "poll": _cli("poll", job),
             "status": _cli("status", job)}
    assert '"API_TOKEN": "***"' in shown["show"] or "API_TOKEN: '***'" in shown["show"] \
        or "API_TOKEN" in shown["show"], shown["show"]  # the name is shown, not the value
    store = get_store()
    record = store.client.hgetall(keys.job(job))
    events = store.client.xrange(keys.job_events(job))
    logs = {str(p): p.read_text(errors="replace") for p in cluster.state_dir.rglob("*") if p.is_file()
            and p.suffix in (".log", ".out", ".txt", ".json", "")}
    places = {**shown, "record": str(record), "events": str(events), "results": str(job_results(job)), **logs}
    leaked = [where for where, text in places.items() if SECRET in text]
    assert not leaked, f"the secret is in {leaked}"
    assert store.get(job, with_secrets=True)["document"]["test_data"]["env"]["API_TOKEN"] == SECRET
    assert 0 < store.client.ttl(keys.job_secrets(job)) <= 3600  # the job is final: its secrets go soon


def test_a_secret_reaches_the_commands_environment(start_cluster):
    q = unique_queue("secrets-env")
    start_cluster({q: 1})
    job = submit_job({"job_queue": q, "test_data": {"test_cmds": 'echo "token=$API_TOKEN."',
                                                     "secrets": {"API_TOKEN": SECRET}}})
    assert wait_for_job(job, timeout=120) == "complete"
    assert "token=***." in job_results(job)["test_output"]
    # a multi job: the parent's commands (on the coordinator) and a child's (on its device's host) get theirs
    multi = submit_job({"job_queue": "multi",
                        "provision_data": {"jobs": [{"job_queue": q, "test_data": {
                            "test_cmds": f'test "${{#API_TOKEN}}" = {len(SECRET)} && echo child-has-it',
                            "secrets": {"API_TOKEN": SECRET}}}]},
                        "test_data": {"test_cmds": 'echo "parent=$API_TOKEN."', "secrets": {"API_TOKEN": SECRET}}})
    assert wait_for_job(multi, timeout=120) == "complete"
    assert "parent=***." in job_results(multi)["test_output"]
    (child,) = get_store().children(multi)
    assert "child-has-it" in get_store().output(child, "test")
