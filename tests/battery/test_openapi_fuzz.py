"""The REST API under schemathesis: requests generated from the served OpenAPI document.

The real ``runstream serve`` runs in a process of its own on the test's Redis, with a
collector and a run holding metrics, files and output, so that requests naming that run
reach deep into the handlers.  Whatever schemathesis sends, the server answers with a
status a client can act on: never a 5xx, never a hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.openapi import from_url

from runstream import Experiment, Workspace
from runstream.collector import CollectorSettings
from runstream.collector.background import BackgroundCollector
from runstream.consumer.api import ROUTES
from runstream.redis_server import free_port
from tests.conftest import make_workspace

pytestmark = pytest.mark.battery


@pytest.fixture(scope="module")
def served(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Workspace]]:
    """``runstream serve`` on a free port for a fresh workspace, until the module's tests end."""
    workspace = make_workspace(redis_url, tmp_path_factory.mktemp("served") / ".runstream")
    settings_ = workspace.settings
    port = free_port()
    env = os.environ | {
        "RUNSTREAM_REDIS_URL": settings_.redis_url,
        "RUNSTREAM_WORKSPACE": settings_.workspace,
        "RUNSTREAM_DATA_DIR": str(settings_.data_dir),
    }
    command = [sys.executable, "-c", "from runstream.consumer.cli import main; main()", "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base}/api/v1/health", timeout=2).ok:
                break
        except requests.ConnectionError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            errors = server.stderr.read().decode(errors="replace") if server.stderr else ""
            raise AssertionError(f"runstream serve did not start: {errors}")
        time.sleep(0.05)
    try:
        yield base, workspace
    finally:
        server.terminate()
        server.wait(30)
        if server.stderr is not None:
            server.stderr.close()


@pytest.fixture(scope="module")
def api_schema(served: tuple[str, Workspace]) -> schemathesis.BaseSchema:
    base, _ = served
    return from_url(f"{base}/api/v1/openapi.json")


@pytest.fixture(scope="module", autouse=True)
def a_run(served: tuple[str, Workspace], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A completed run with every kind of metric, a file and a tag, applied by a collector
    that runs through the module (uploads the fuzzer makes are applied too)."""
    _, workspace = served
    collector = BackgroundCollector(CollectorSettings(workspace=workspace.settings, lease_ttl=2.0)).start()
    model = tmp_path_factory.mktemp("files") / "model.json"
    model.write_text("{}")
    with Experiment(workspace, "fuzzed").start_logging() as run:
        for i in range(50):
            run.log("loss", 1 / (i + 1))
        run.log_row("curve", x=1, y=2)
        run.log_table("tbl", {"a": [1, 2]})
        run.tag("kind", "fuzzed")
        run.upload_file("outputs/model.json", model)
    run.get_status()
    try:
        yield run.id
    finally:
        collector.stop()


def test_no_request_gets_a_server_error(api_schema: schemathesis.BaseSchema) -> None:
    """Each operation of the document, with requests schemathesis generates (valid and not)."""
    checked = []
    for found in api_schema.get_all_operations():
        if isinstance(found, Err):  # the document must describe every operation it lists
            raise found.err()
        operation = found.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answers(case: Any) -> None:
            response = case.call(timeout=10)
            case.validate_response(response, checks=[not_a_server_error])

        answers()
        checked.append(operation.label)

    routes = {f"{route.method} {route.path.replace(':.+}', '}')}" for route in ROUTES}  # aiohttp's {name:.+}
    assert routes <= set(checked)  # every route was tried
