"""docker-compose.yml and Dockerfile cannot run here (no Docker engine), so check
their wiring statically: the Kafka service is a real KRaft single node, the worker
reaches it through env vars driftwire actually reads, and the image's entry point
is the console script."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from driftwire.streams.cli import app
from driftwire.streams.settings import ENV_VAR_NAMES, KafkaSettings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=VALUE" list form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _kafka_service(compose: dict) -> tuple[str, dict]:
    kafka = [(n, s) for n, s in compose["services"].items() if "apache/kafka" in s.get("image", "")]
    assert len(kafka) == 1, "expected exactly one apache/kafka service"
    return kafka[0]


def _driftwire_services(compose: dict) -> dict[str, dict]:
    return {n: s for n, s in compose["services"].items() if "build" in s}


def test_kafka_service_is_official_kraft_single_node(compose):
    name, kafka = _kafka_service(compose)
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka"
    assert tuple(int(x) for x in tag.split(".")[:2]) >= (4, 1)
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node_id == env["KAFKA_NODE_ID"]
    assert voter.split(":")[0] in (name, kafka.get("hostname"))
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", f"{key} must be 1 on a single node"
    listener_names = {
        entry.split(":")[0] for entry in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    }
    for entry in env["KAFKA_LISTENERS"].split(","):
        assert entry.split("://")[0] in listener_names
    assert "healthcheck" in kafka


def test_workers_reach_kafka_through_documented_env_vars(compose):
    kafka_name, kafka = _kafka_service(compose)
    advertised = {
        entry.split("://")[1] for entry in _env(kafka)["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    services = _driftwire_services(compose)
    assert services, "no driftwire service built from the repo"
    for name, service in services.items():
        env = _env(service)
        undocumented = {k for k in env if k.startswith("DRIFTWIRE_")} - ENV_VAR_NAMES
        assert not undocumented, f"{name}: {undocumented} not listed in streams/settings.py"
        settings = KafkaSettings.load(env=env)  # values must also be valid
        for server in settings.bootstrap_servers.split(","):
            assert server in advertised, f"{name}: {server} is not a Kafka advertised listener"
            assert server.split(":")[0] in (kafka_name, kafka.get("hostname"))
        condition = service["depends_on"][kafka_name]["condition"]
        assert condition == "service_healthy"


def test_image_entrypoint_is_the_console_script(compose):
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = pyproject["project"]["scripts"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]", dockerfile, re.M)
    entrypoint = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile, re.M)
    assert entrypoint, "Dockerfile needs an exec-form ENTRYPOINT"
    assert json.loads(entrypoint.group(1))[0] in scripts
    # Every package the console script imports from must be copied into the image.
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip().rstrip("/") for line in lines if not line.startswith("#")}
    for package_dir in pyproject["tool"]["setuptools"]["package-dir"].values():
        assert re.search(rf"^COPY {package_dir}/? ", dockerfile, re.M), package_dir
        assert package_dir not in ignored
    assert not {"pyproject.toml", "README.md"} & ignored
    for service in _driftwire_services(compose).values():
        build = service["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (ROOT / context / "Dockerfile").is_file()


def _resolve(command: list[str]) -> tuple[Any, list[str]]:
    """Walk the CLI's groups along ``command``; return the leaf and its remaining args."""
    # Typer >= 0.2x vendors click, so groups are recognised by their `commands` dict.
    node = typer.main.get_command(app)
    args = list(command)
    while hasattr(node, "commands") and args and not args[0].startswith("-"):
        name = args.pop(0)
        assert name in node.commands, f"`driftwire {' '.join(command)}`: no command {name!r}"
        node = node.commands[name]
    return node, args


def test_compose_commands_exist_in_the_cli(compose):
    for name, service in _driftwire_services(compose).items():
        command = service["command"]
        command = command.split() if isinstance(command, str) else command
        leaf, args = _resolve(command)
        assert not hasattr(leaf, "commands"), f"{name}: {command} names a group, not a command"
        known = {opt for p in leaf.params for opt in p.opts}
        given = {a.split("=")[0] for a in args if a.startswith("--")}
        assert given <= known, f"{name}: options {given - known} unknown to {leaf.name}"
