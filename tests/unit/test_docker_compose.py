"""docker-compose.yml describes Redis, coordinator, an agent and Flower with real convoy commands.

No Docker engine runs here, so the test checks what compose would run:
every command exists (``--help`` succeeds), the agent file validates, and
every convoy service finds Redis through CONVOY_REDIS_URL.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_services_are_redis_coordinator_agent_and_flower():
    assert set(compose()["services"]) == {"redis", "coordinator", "agent", "flower"}


def test_every_convoy_service_runs_a_real_command_with_redis_configured():
    services = compose()["services"]
    for name in ("coordinator", "agent", "flower"):
        service = services[name]
        command = service["command"]
        assert command[0] in ("convoy", "celery"), name
        assert service["environment"]["CONVOY_REDIS_URL"] == "redis://redis:6379/0"
        if command[0] == "convoy":
            args = [a for a in command[1:] if not a.startswith("/")]
            subcommand = args[0]
            help_run = subprocess.run([str(BIN / "convoy"), subcommand, "--help"], capture_output=True, text=True)
            assert help_run.returncode == 0, f"{name}: convoy {subcommand} does not exist"
            for option in (a for a in args[1:] if a.startswith("--")):
                assert option in help_run.stdout, f"{name}: convoy {subcommand} has no {option}"


def test_flower_loads_convoys_celery_app():
    command = compose()["services"]["flower"]["command"]
    app = command[command.index("-A") + 1]
    module = __import__(app, fromlist=["app"])
    assert module.app.main == "convoy"
    assert "flower" in command


def test_the_agent_file_it_names_exists_and_validates():
    from convoy.config.agents import load_agent
    from convoy.connectors.registry import config_schemas

    command = compose()["services"]["agent"]["command"]
    path = command[command.index("--config") + 1]
    assert path.startswith("/app/")
    agent = load_agent(REPO / path[len("/app/"):], config_schemas())
    assert agent.devices and all(d.connector == "emulated" for d in agent.devices)


def test_the_image_installs_convoy_from_this_repository():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY . /app" in dockerfile and "pip install" in dockerfile
    assert compose()["x-convoy"]["build"] == "."


def test_redis_keeps_its_data_across_restarts():
    """DESIGN: Redis runs with append-only persistence in every documented deployment."""
    redis = compose()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
