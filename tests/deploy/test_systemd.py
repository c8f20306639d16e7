"""deploy/systemd/: the collector and server units and their environment file."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from runstream.consumer.server import REDIS_CONNECTIONS
from runstream.consumer.settings import MAX_CONNECTIONS
from tests.deploy.files import SYSTEMD, UNITS, env_file, service_setting, unit

ENV_FILE = "/etc/runstream/runstream.env"


class TestSystemd:
    """The units: the real commands, the shared environment file, restart, SIGTERM and hardening."""

    @pytest.mark.parametrize("name", UNITS)
    def test_service_settings(self, name: str) -> None:
        service = unit(name)["Service"]

        assert [ENV_FILE] == service["EnvironmentFile"]
        assert ["on-failure"] == service["Restart"]
        assert ["SIGTERM"] == service["KillSignal"]
        assert ["yes"] == service["NoNewPrivileges"]
        assert ["strict"] == service["ProtectSystem"]
        assert service["User"][0] not in {"root", "0"}
        assert re.fullmatch(r"\d+s?", service["TimeoutStopSec"][0])

    @pytest.mark.parametrize("name", UNITS)
    def test_exec_start_is_absolute(self, name: str) -> None:
        argv = shlex.split(service_setting(name, "ExecStart"))

        assert Path(argv[0]).is_absolute()

    @pytest.mark.parametrize("name", UNITS)
    def test_installed_for_boot(self, name: str) -> None:
        assert ["multi-user.target"] == unit(name)["Install"]["WantedBy"]

    def test_server_writes_only_its_data_dir(self) -> None:
        data_dir = env_file(SYSTEMD / "runstream.env.example")["RUNSTREAM_DATA_DIR"]

        assert data_dir == service_setting("runstream-server.service", "ReadWritePaths")

    @pytest.mark.parametrize("name", UNITS)
    def test_file_descriptors_are_bounded(self, name: str) -> None:
        assert int(service_setting(name, "LimitNOFILE")) >= 1024

    def test_server_has_descriptors_for_its_connection_limit(self) -> None:
        limit = int(service_setting("runstream-server.service", "LimitNOFILE"))

        assert limit >= 2 * (MAX_CONNECTIONS + REDIS_CONNECTIONS)  # and files served, logs, the spool
