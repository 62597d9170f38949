"""The ``convoy`` command: submit and follow jobs, inspect queues and devices.

Commands that start processes (``run``, ``worker``, ``coordinator``,
``devices``) live in :mod:`convoy.coordinator.cli.cluster`.  Every error a
user can cause is a :class:`ConvoyError`, printed as one clear message with a
non-zero exit code — never a traceback.
"""
from __future__ import annotations

import json
import sys
from datetime import UTC
from typing import TYPE_CHECKING, Any

import click
import redis

from convoy.config.lifecycle import Outcome
from convoy.errors import ConvoyError

if TYPE_CHECKING:
    from convoy.coordinator.state.devices import DeviceSummary

EXIT_FAIL = 1
EXIT_CANCELLED = 3


def _reach() -> None:
    """A clear error now when the lab cannot be reached: Redis checked here, unless ``CONVOY_SERVER`` is set
    (then the server's own errors say it)."""
    from convoy.config.settings import load_settings
    from convoy.coordinator.state.connection import check_redis

    settings = load_settings()
    if not settings.server_url:
        check_redis(settings)


def _client() -> redis.Redis:
    """The configured Redis, for the device registry's summaries (a clear error when it is down)."""
    from convoy.coordinator.state.connection import check_redis, get_client

    check_redis()
    return get_client()


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="convoy")
def cli() -> None:
    """convoy: multi-device test jobs on Celery (Testflinger multi-device jobs, LAVA MultiNode)."""


@cli.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
def validate(job_file: str) -> None:
    """Check a job file without a server; print the normalised job."""
    from convoy.config.jobs import load_job

    job = load_job(_read_with_warnings(job_file))
    click.echo(f"{job_file}: valid")
    _print_json(job)


def _read_with_warnings(path: str) -> Any:
    """The job file's document, after printing the loader's warnings (e.g. duplicate keys) on stderr."""
    from pathlib import Path

    from convoy.config.yamlsafe import read_document_with_warnings

    doc, warnings = read_document_with_warnings(Path(_existing(path)))
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    return doc


def _existing(path: str) -> str:
    import pathlib

    if not pathlib.Path(path).is_file():
        raise ConvoyError(f"no such file: {path}")
    return str(pathlib.Path(path))


@cli.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@click.option("--poll", is_flag=True, help="Follow the job live until it ends.")
def submit(job_file: str, poll: bool) -> None:
    """Submit a job file; print its id."""
    from convoy.coordinator.api import submit_job

    job_id = submit_job(_read_with_warnings(job_file))
    click.echo(job_id)
    if poll:
        sys.exit(_follow(job_id))


def _follow(job_id: str) -> int:
    from convoy.coordinator.api import job_results, live_source
    from convoy.coordinator.cli.live import LiveView

    _reach()
    LiveView(live_source(), job_id).follow()
    results = job_results(job_id)
    click.echo(f"job {job_id}: {results['job_state']} ({results['outcome']})"
               + (f": {results['message']}" if results.get("message") else ""))
    return exit_code(results)


def exit_code(results: dict[str, Any]) -> int:
    """0 for a passing job, 3 cancelled, 1 any other outcome."""
    return {Outcome.PASS: 0, Outcome.CANCELLED: EXIT_CANCELLED}.get(results["outcome"], EXIT_FAIL)


@cli.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """Print the job's state."""
    from convoy.coordinator.api import job_status

    _reach()
    click.echo(job_status(job_id))


@cli.command()
@click.argument("job_id")
@click.option("--junit", "junit_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also write the results as JUnit XML to FILE ('-': print the XML instead of the JSON).")
def results(job_id: str, junit_file: str | None) -> None:
    """Print the job's results as JSON (per-phase exit codes and output, LAVA test_results)."""
    from convoy.config.testresults import junit_xml, write_junit
    from convoy.coordinator.api import job_results

    _reach()
    data = job_results(job_id)
    if junit_file == "-":
        click.echo(junit_xml(data))
        return
    _print_json(data)
    if junit_file:
        try:
            write_junit(data, junit_file)
        except OSError as exc:
            raise ConvoyError(f"cannot write the JUnit file {junit_file}: {exc.strerror or exc}") from None
        click.echo(f"JUnit XML written to {junit_file}", err=True)


@cli.command()
@click.argument("job_id")
def poll(job_id: str) -> None:
    """Follow a job live: every phase of the job and of each child, with output."""
    sys.exit(_follow(job_id))


@cli.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a job (a multi job cancels every child); cleanup still runs."""
    from convoy.coordinator.api import cancel_job

    _reach()
    cancel_job(job_id)
    click.echo(f"cancelling {job_id}")


def _expiry(epoch: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


@cli.group("reserve")
def reserve_group() -> None:
    """Change a multi job's reservation while it holds its devices."""


@reserve_group.command("extend")
@click.argument("job_id")
@click.argument("duration")
def reserve_extend(job_id: str, duration: str) -> None:
    """Hold JOB_ID's reserved devices DURATION longer (3600, 30m, 2h), within the deployment's limit."""
    from convoy.coordinator.api import extend_reservation

    _reach()
    click.echo(f"reservation of {job_id} now expires at {_expiry(extend_reservation(job_id, duration))}")


@cli.command()
@click.argument("job_id")
def release(job_id: str) -> None:
    """End JOB_ID's reservation now: the job goes on to its test phase and cleanup."""
    from convoy.coordinator.api import release_reservation

    _reach()
    release_reservation(job_id)
    click.echo(f"released the reservation of {job_id}")


@cli.command()
@click.argument("job_id")
def show(job_id: str) -> None:
    """Print the job's record: its document, state, device and children (and, waiting, its position and why)."""
    from convoy.coordinator.api import show_job

    _reach()
    _print_json(show_job(job_id))


@cli.command()
@click.option("--limit", default=20, show_default=True, help="How many of the newest jobs.")
def jobs(limit: int) -> None:
    """List the newest jobs (through convoy server: your own)."""
    from convoy.coordinator.api import list_jobs

    _reach()
    for job in list_jobs(limit):
        parent = f" (child of {job['parent_job_id']})" if job.get("parent_job_id") else ""
        click.echo(f"{job['job_id']}  {job['state']:<10} {job['job_queue']:<20} {job['created_at']}{parent}")


@cli.command("list-queues")
def list_queues() -> None:
    """List the queues devices serve, with online devices and waiting jobs."""
    from convoy.coordinator.api import queues

    _reach()
    for q in queues():
        click.echo(f"{q['queue']:<24} devices online {q['online']}/{q['total']}  "
                   f"busy {q['busy']}  waiting jobs {q['waiting']}")


@cli.command("queue-status")
@click.argument("queue")
def queue_status(queue: str) -> None:
    """Show a queue's devices (online, busy, offline) and waiting jobs."""
    from convoy.coordinator.api import queue_status as _queue_status

    _reach()
    status = _queue_status(queue)
    for device in status["devices"]:
        click.echo(f"{device['name']:<24} {device['health']:<11} {device.get('job_id') or ''}")
    # the jobs waiting for a device of this queue, in the scheduler's order, with why they wait
    click.echo(f"waiting jobs: {len(status['waiting'])}")
    for job in status["waiting"]:
        click.echo(f"  {job['job_id']}  priority {job['priority']}: {job['reason']}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the devices as a JSON list of objects.")
def agents(as_json: bool) -> None:
    """List devices: health, host, queues, device type, tags, the job each holds, why in maintenance."""
    from convoy.coordinator.api import devices
    from convoy.coordinator.state.devices import DeviceSummary

    _reach()
    listed = devices()
    if as_json:
        _print_json(listed)
        return
    for device in listed:
        click.echo(agent_line(DeviceSummary(**device)))


def agent_line(device: DeviceSummary) -> str:
    """One device of ``convoy agents``: its name first (scripts cut it), then ``key=value`` fields."""
    from convoy.config.devices import Health

    line = (f"{device.name:<24} {device.health:<11} host={device.host} queues={','.join(device.queues)}"
            f" type={device.device_type or '-'} tags={','.join(device.tags) or '-'}"
            + (f" job={device.job_id}" if device.job_id else ""))
    if device.maintenance and device.health == Health.MAINTENANCE:
        line += f"  reason: {device.maintenance}"
    elif device.maintenance:  # taken out of service while running a job: it finishes first
        line += f"  maintenance when its job ends: {device.maintenance}"
    return line


DEFAULT_MAINTENANCE_REASON = "maintenance by admin"


@cli.group("device")
def device_group() -> None:
    """Take a device out of service and back (a busy device finishes its job first)."""


@device_group.command("maintenance")
@click.argument("name")
@click.option("--reason", default=DEFAULT_MAINTENANCE_REASON, show_default=True,
              help="Why the device is out of service (shown by `convoy agents`).")
def device_maintenance(name: str, reason: str) -> None:
    """Take device NAME out of service: no job is assigned to it until `convoy device online NAME`."""
    from convoy.coordinator.state.devices import holder, set_maintenance

    reason = " ".join(reason.split()) or DEFAULT_MAINTENANCE_REASON  # one line in `convoy agents`
    client = _client()
    set_maintenance(client, name, reason)
    job_id = holder(client, name)
    click.echo(f"device {name}: maintenance ({reason})"
               + (f"; its current job {job_id} finishes first" if job_id else ""))


@device_group.command("online")
@click.argument("name")
def device_online(name: str) -> None:
    """Put device NAME back in service (its count of provisioning failures starts again)."""
    from convoy.coordinator.state.devices import set_online

    set_online(_client(), name)
    click.echo(f"device {name}: back in service")


def main() -> None:
    """Entry point: run the CLI, turning every convoy error into a message and exit code."""
    from convoy.coordinator.cli import cluster as cli_cluster  # noqa: F401  (registers run, worker, ...)
    from convoy.coordinator.cli import redis_acl as cli_redis_acl  # noqa: F401  (registers redis-acl)
    from convoy.coordinator.cli import server as cli_server  # noqa: F401  (registers server, clients)

    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConvoyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except redis.RedisError as exc:
        click.echo(f"error: Redis: {exc} (is CONVOY_REDIS_URL right?)", err=True)
        sys.exit(4)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
