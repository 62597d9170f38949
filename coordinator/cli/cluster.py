"""CLI commands that start processes: ``run``, ``worker``, ``coordinator``, ``devices``."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from convoy.coordinator.cli.main import EXIT_CANCELLED, EXIT_FAIL, _existing, _read_with_warnings, cli, exit_code
from convoy.errors import ConvoyError

#: how long an interrupted ``convoy run`` waits for its cancelled job's cleanup
CANCEL_CLEANUP_SECONDS = 120.0


def _agent_devices(agent_file: str) -> list:
    """The devices of an agent file, checked against each connector's own schema; every emulated one
    without an ``address`` gets a free loopback address (a sandboxing farm replaces it by one on its lab)."""
    from convoy.config.agents import load_agent
    from convoy.connectors.emulated.addresses import assign_addresses
    from convoy.connectors.registry import config_schemas

    return assign_addresses(load_agent(Path(_existing(agent_file)), config_schemas()).devices)


def _where(device: Any) -> str:
    """``name (address)`` of a device as it is served, or ``name (connector)`` without an address."""
    return f"{device.name} ({device.config.get('address') or device.connector})"


class Interrupted(Exception):
    """SIGTERM or SIGINT reached ``convoy run`` (a CI timeout, Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class InterruptGuard:
    """Turns SIGTERM and SIGINT into :class:`Interrupted` in the main thread while armed.

    While a job runs (``patient``) the first signal only is recorded, so
    the live view goes on showing the job's cancel and cleanup; a second
    one raises.  Teardown disarms it: no signal cuts the stopping of Redis,
    the workers and the device farm short.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.armed = True
        self.patient = False
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: object) -> None:
        self.received.append(signum)
        if self.armed and not (self.patient and len(self.received) == 1):
            raise Interrupted(signum)

    @property
    def interrupted(self) -> bool:
        return bool(self.received)

    def __enter__(self) -> "InterruptGuard":
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def disarm(self) -> None:
        self.armed = False

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@cli.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@click.option("--agent", "agent_file", type=click.Path(dir_okay=False),
              help="Use exactly the devices this agent file declares.")
@click.option("--artifacts", type=click.Path(file_okay=False),
              help="Leave DIR/<job_id>/ with results.json, phase output, job_list.json and artifacts/.")
@click.option("--state-dir", type=click.Path(file_okay=False), help="Keep the cluster's files here.")
@click.option("--quiet", is_flag=True, help="Do not show the job's output live.")
def run(job_file: str, agent_file: str | None, artifacts: str | None, state_dir: str | None, quiet: bool) -> None:
    """Run a job on an embedded cluster: private Redis, emulated devices, workers, teardown.

    The exit code is the job's outcome: 0 passed, 1 failed, 3 cancelled.
    SIGTERM or SIGINT cancels the job (its cleanup runs on the devices),
    stops everything this command started and exits 3.
    """
    from convoy.config.jobs import job_queues, job_tags, load_job
    from convoy.workers.embedded.cluster import EmbeddedCluster, emulated_devices

    job = load_job(_read_with_warnings(job_file))
    devices = _agent_devices(agent_file) if agent_file else emulated_devices(job_queues(job), tags=job_tags(job))
    own_dir = state_dir is None
    base = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="convoy-run-"))
    click.echo(f"convoy run: starting {len(devices)} device(s)")
    code = EXIT_FAIL
    cluster = EmbeddedCluster(base, devices, redis_url=os.environ.get("CONVOY_REDIS_URL"),
                              log=lambda m: click.echo(f"convoy run: {m}", err=True))
    with InterruptGuard() as guard:
        try:
            cluster.start()
            click.echo("convoy run: devices " + ", ".join(_where(d) for d in cluster.devices))
            code = _run_job(job, artifacts, quiet, guard)
        except Interrupted as exc:  # before the job was submitted, or a second signal
            click.echo(f"convoy run: {exc}; stopping", err=True)
            code = EXIT_CANCELLED
        finally:
            guard.disarm()
            click.echo("convoy run: stopping the cluster", err=True)
            cluster.stop()
            if own_dir:
                shutil.rmtree(base, ignore_errors=True)
    sys.exit(code)


def _run_job(job: dict[str, Any], artifacts: str | None, quiet: bool, guard: InterruptGuard) -> int:
    """Submit the job and show it live; a signal cancels it and the view follows its cleanup."""
    from convoy.coordinator.api import cancel_job, job_results, submit_job
    from convoy.coordinator.state.connection import get_store
    from convoy.coordinator.cli.live import LiveView
    from convoy.coordinator.follow import StoreSource
    from convoy.errors import JobStateError

    guard.patient = True  # from here on a signal cancels the job, once it is submitted
    job_id = submit_job(job)
    click.echo(f"convoy run: job {job_id} submitted")
    view = LiveView(StoreSource(get_store()), job_id, show_output=not quiet)
    cleanup_deadline: float | None = None

    def cancel_on_signal() -> None:
        nonlocal cleanup_deadline
        if guard.interrupted and cleanup_deadline is None:
            name = signal.Signals(guard.received[0]).name
            click.echo(f"convoy run: {name}; cancelling job {job_id} and cleaning up", err=True)
            try:
                cancel_job(job_id)
            except JobStateError:
                pass  # it ended meanwhile
            cleanup_deadline = time.monotonic() + CANCEL_CLEANUP_SECONDS
        elif cleanup_deadline is not None and time.monotonic() > cleanup_deadline:
            raise Interrupted(guard.received[0])  # stop waiting; the cluster stops anyway

    if guard.interrupted:  # a signal while submitting
        cancel_on_signal()
    view.follow(on_tick=cancel_on_signal)
    guard.patient = False
    results = job_results(job_id)
    if artifacts:
        write_artifacts(Path(artifacts), job_id, results, report=lambda line: click.echo(f"convoy run: {line}"))
        click.echo(f"convoy run: artifacts in {Path(artifacts) / job_id}")
    click.echo(f"convoy run: job {job_id} {results['job_state']} ({results['outcome']})"
               + (f": {results['message']}" if results.get("message") else ""))
    return EXIT_CANCELLED if guard.interrupted else exit_code(results)


def write_artifacts(root: Path, job_id: str, results: dict[str, Any],
                    report: Callable[[str], None] | None = None) -> Path:
    """DIR/<job_id>/: results.json (parent and children), <phase>.log, job_list.json, and what the
    job's test commands left in ``artifacts/``: the job's own in DIR/<job_id>/artifacts/, each child's in
    DIR/<job_id>/children/<child id>/artifacts/.  ``report`` hears one line per job about its artifacts."""
    from convoy.config.settings import load_settings
    from convoy.coordinator.api import job_results

    target = root / job_id
    target.mkdir(parents=True, exist_ok=True)
    full = dict(results)
    if "children" in results:
        full["children"] = [job_results(child["job_id"]) for child in results["children"]]
    (target / "results.json").write_text(json.dumps(full, indent=2) + "\n")
    _write_phase_logs(target, results)
    _write_job_artifacts(target, job_id, report)
    for child in full.get("children", []):
        _write_phase_logs(target / "children" / child["job_id"], child)
        _write_job_artifacts(target / "children" / child["job_id"], child["job_id"], report)
    job_list = load_settings().jobs_dir / job_id / "job_list.json"
    if job_list.is_file():
        shutil.copy(job_list, target / "job_list.json")
    return target


def _write_job_artifacts(target: Path, job_id: str, report: Callable[[str], None] | None) -> None:
    """One job's stored ``artifacts/`` unpacked into ``target`` (safely: tarfile's ``data`` filter)."""
    import tarfile

    from convoy.coordinator.api import job_artifacts, show_job
    from convoy.tasks.run.artifacts import unpack_artifacts

    data = job_artifacts(job_id)
    if data is None:
        note = show_job(job_id).get("artifacts") or "none: its test commands have not ended"
        if report is not None:
            report(f"job {job_id}: no artifacts ({note})")
        return
    try:
        names = unpack_artifacts(data, target)
    except (tarfile.TarError, OSError) as exc:
        raise ConvoyError(f"job {job_id}: its artifacts cannot be unpacked safely into {target}: {exc}") from None
    if report is not None:
        report(f"job {job_id}: {len(names)} entries in {target / 'artifacts'}")


def _write_phase_logs(target: Path, results: dict[str, Any]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for key, value in results.items():
        if key.endswith("_output"):
            (target / f"{key[:-len('_output')]}.log").write_text(value)


@cli.command("artifacts")
@click.argument("job_id")
@click.argument("directory", type=click.Path(file_okay=False))
def artifacts_command(job_id: str, directory: str) -> None:
    """Write DIRECTORY/<job_id>/: the artifacts/ the job's test commands left (a multi job's parent's, and
    each child's in children/<child id>/artifacts/), results.json and each phase's log."""
    from convoy.coordinator.api import job_results

    target = write_artifacts(Path(directory), job_id, job_results(job_id), report=click.echo)
    click.echo(f"job {job_id}: written to {target}")


@cli.command()
@click.option("--config", "agent_file", required=True, type=click.Path(dir_okay=False),
              help="Agent file: the devices of this host.")
@click.option("--no-devices", is_flag=True, help="Do not serve the emulated devices here (they run elsewhere).")
def worker(agent_file: str, no_devices: bool) -> None:
    """Start one Celery worker per device of the agent file and keep them running."""
    from convoy.config.settings import load_settings
    from convoy.workers.supervisor import Supervisor

    devices = _agent_devices(agent_file)
    settings = load_settings()
    supervisor = Supervisor(log=lambda m: click.echo(f"convoy worker: {m}", err=True))
    emulated = [d for d in devices if d.connector == "emulated"]
    farm = None
    if emulated and not no_devices:
        from convoy.connectors.emulated.farm import DeviceFarm

        farm = DeviceFarm(emulated, settings.state_dir)
        farm.__enter__()
        served = {d.name: d for d in farm.devices}  # sandboxed: addresses on the farm's lab
        devices = [served.get(d.name, d) for d in devices]
    for device in devices:
        supervisor.add_device(device, settings.state_dir / "logs")
    for device in devices:
        click.echo(f"convoy worker: device {device.name} serves {', '.join(device.queues)}"
                   + (f" at {device.config['address']}" if device.config.get("address") else ""))
    click.echo(f"convoy worker: logs in {settings.state_dir / 'logs'}")
    try:
        supervisor.run_forever()
    finally:
        if farm is not None:
            farm.__exit__(None, None, None)


@cli.command()
@click.option("--concurrency", default=32, show_default=True, help="Parent tasks run at once.")
def coordinator(concurrency: int) -> None:
    """Start the coordinator worker: the parent tasks of multi jobs."""
    from convoy.config.settings import load_settings
    from convoy.workers.supervisor import Supervisor, coordinator_command

    settings = load_settings()
    log_dir = settings.state_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(log=lambda m: click.echo(f"convoy coordinator: {m}", err=True))
    supervisor.add("coordinator", coordinator_command(settings.coordinator_queue, log_dir / "coordinator.log",
                                                      concurrency), dict(os.environ), output=log_dir / "coordinator.out")
    click.echo(f"convoy coordinator: serving {settings.coordinator_queue}; log in {log_dir / 'coordinator.log'}")
    supervisor.run_forever()


@cli.command()
@click.option("--config", "agent_file", required=True, type=click.Path(dir_okay=False),
              help="Agent file whose emulated devices to serve.")
def devices(agent_file: str) -> None:
    """Serve the agent file's emulated devices (sandboxed SSH servers on a lab network where the
    platform allows, else on loopback) until stopped."""
    from convoy.config.settings import load_settings
    from convoy.connectors.emulated import labnet
    from convoy.connectors.emulated.farm import claim_lab, serve_devices, use_sandbox

    emulated = [d for d in _agent_devices(agent_file) if d.connector == "emulated"]
    if not emulated:
        raise ConvoyError(f"{agent_file} declares no emulated devices")
    lab = None
    if use_sandbox():
        lab, emulated = claim_lab(emulated, os.getpid())
    try:
        for device in emulated:
            click.echo(f"convoy devices: {device.name} at {device.config['address']}:{device.config.get('port', 22)}"
                       + (f" on lab {lab}" if lab else ""))
        serve_devices(emulated, load_settings().state_dir, lab=lab, sandbox=lab is not None)
    finally:
        if lab is not None:
            labnet.release(lab)
