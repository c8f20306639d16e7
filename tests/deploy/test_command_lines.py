"""Every ``runstream ...`` command line in deploy/ (image, compose, Kubernetes, systemd) is one the CLI accepts."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from tests.deploy.files import (
    COMPOSE_FILES,
    MANIFEST_SETS,
    UNITS,
    compose_command,
    exec_form,
    parse_command_line,
    runstream_containers,
    runstream_services,
    service_setting,
)

ALL_INTERFACES = "0.0.0.0"  # noqa: S104  # what a server in a container must listen on


def runstream_command_lines() -> Iterator[tuple[str, list[str]]]:
    """(where, argv) for every process deploy/ starts from the runstream image or install."""
    entrypoint = exec_form("ENTRYPOINT")
    yield "Dockerfile CMD", [*entrypoint, *exec_form("CMD")]
    for where, service in runstream_services():
        yield where, [*service.get("entrypoint", entrypoint), *compose_command(service)]
    for variant in MANIFEST_SETS:
        for workload, container in runstream_containers(variant):
            yield f"{variant} {workload}", [*container.get("command", entrypoint), *container.get("args", [])]
    for name in UNITS:
        yield f"{name} ExecStart", shlex.split(service_setting(name, "ExecStart"))


COMMAND_LINES = list(runstream_command_lines())


class TestCommandLineChecker:
    """The checker parses with the real commands: it refuses what the CLI would refuse."""

    @pytest.mark.parametrize(
        "args",
        [
            ["collecter"],
            ["collector", "--lease-ttl", "soon"],
            ["serve", "--prot", "8080"],
            ["serve", "--port"],
        ],
    )
    def test_refuses_bad_command_lines(self, args: list[str]) -> None:
        with pytest.raises(click.UsageError):
            parse_command_line(args)

    def test_reads_parameters(self) -> None:
        name, params = parse_command_line(["serve", "--host", "10.1.2.3", "--port", "9000"])

        assert "serve" == name
        assert ("10.1.2.3", 9000) == (params["host"], params["port"])

    def test_finds_command_lines_everywhere(self) -> None:
        """Every kind of file contributes its command lines: none is skipped unnoticed."""
        wheres = [where for where, _ in COMMAND_LINES]

        assert {"Dockerfile CMD", *(f"{name} ExecStart" for name in UNITS)} <= set(wheres)
        for prefix in [*COMPOSE_FILES, *MANIFEST_SETS]:
            assert 2 <= sum(w.startswith(f"{prefix} ") for w in wheres), prefix


class TestCommandLines:
    """Every ``runstream ...`` command line in deploy/ is one the CLI accepts."""

    @pytest.mark.parametrize(("where", "argv"), COMMAND_LINES, ids=[where for where, _ in COMMAND_LINES])
    def test_accepted_by_the_cli(self, where: str, argv: list[str]) -> None:
        name, _ = parse_command_line(argv[1:])

        assert "runstream" == Path(argv[0]).name, where
        assert name in {"collector", "serve"}, where

    def test_containers_serve_on_every_interface(self) -> None:
        """In a container the default, 127.0.0.1, is unreachable from outside it."""
        parsed = [(where, *parse_command_line(argv[1:])) for where, argv in COMMAND_LINES if "ExecStart" not in where]
        hosts = {where: params["host"] for where, name, params in parsed if "serve" == name}

        assert 1 + len(COMPOSE_FILES) + len(MANIFEST_SETS) == len(hosts)
        assert dict.fromkeys(hosts, ALL_INTERFACES) == hosts
