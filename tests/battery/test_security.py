"""The security battery: Redis ACL users and passwords, TLS, workspace-scoped server
tokens, and secrets kept out of logs and reprs.

Everything runs against redis-server processes started here: one with a password and
ACL users (an admin, a full user, a collector, a producer that may only XADD to one
workspace's ingest streams, an operator whose password the last test rotates), and one
that speaks only TLS.  Where logs are the point, the collector, the server and the
producers are separate processes whose output is captured whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import redis
import structlog
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError

from runstream import Experiment, Run, Settings, Workspace
from runstream.collector import CollectorSettings
from runstream.connection import connect
from runstream.consumer.server import ServerSettings, create_app
from runstream.consumer.settings import load_tokens, parse_token
from runstream.errors import ConfigError
from runstream.keys import DEFAULT_PREFIX, Keys
from runstream.redis_server import RedisServer, free_port
from tests.battery.conftest import Process
from tests.battery.tls import TlsRedisServer, find_redis_server, make_certificates
from tests.conftest import CollectorThread, RunScript, wait_until
from tests.test_server import collect_sse

pytestmark = [
    pytest.mark.battery,
    pytest.mark.skipif(find_redis_server() is None, reason="needs redis-server 7 (ACL key permissions, TLS)"),
]

# Secrets of this module's run: random, so a hit in a log cannot be a coincidence.
ADMIN_PASSWORD = f"adm-{secrets.token_hex(8)}"
ALICE_PASSWORD = f"alice-{secrets.token_hex(8)}"
COLLECTOR_PASSWORD = f"coll-{secrets.token_hex(8)}"
PRODUCER_PASSWORD = f"prod-{secrets.token_hex(8)}"
OPS_PASSWORD = f"ops-{secrets.token_hex(8)}"
#: The one workspace whose ingest streams the producer-only user may append to.
PRODUCER_WORKSPACE = f"acl{secrets.token_hex(5)}"
SUBPROCESS_TIMEOUT = 60.0


def ingest_pattern(keys: Keys) -> str:
    """An ACL key pattern matching every ingest stream of the workspace, and nothing else."""
    return keys.ingest(0).replace(f"{{{keys.workspace}:s0}}", f"{{{keys.workspace}:s*}}")


class AclRedisServer(RedisServer):
    """A redis-server whose default user has a password and which knows a few ACL users."""

    def __init__(self, folder: Path, executable: str | None) -> None:
        producer_rules = (
            "resetkeys", f"%W~{ingest_pattern(Keys(PRODUCER_WORKSPACE))}",  # append to its ingest streams only
            "resetchannels", "-@all", "+xadd", "+ping",  # PING: redis-py's health check after 30 s idle
        )  # fmt: skip
        users = (
            ("alice", ALICE_PASSWORD, ("~*", "&*", "+@all")),
            ("collector", COLLECTOR_PASSWORD, (f"~{DEFAULT_PREFIX}:*", "&*", "+@all")),
            ("producer", PRODUCER_PASSWORD, producer_rules),
            ("ops", OPS_PASSWORD, ("~*", "&*", "+@all")),
        )
        args = ["--requirepass", ADMIN_PASSWORD]
        for name, password, rules in users:
            args += ["--user", name, "on", f">{password}", *rules]
        super().__init__(folder, args=tuple(args), executable=executable)

    def url_for(self, user: str, password: str, port: int | None = None) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{port or self.port}/0"

    @property
    def admin_url(self) -> str:
        return f"redis://:{ADMIN_PASSWORD}@127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        """Whether the server answers PING (after AUTH as the admin) now."""
        auth = f"*2\r\n$4\r\nAUTH\r\n${len(ADMIN_PASSWORD)}\r\n{ADMIN_PASSWORD}\r\nPING\r\n".encode()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(auth)
                reply = b""
                while reply.count(b"\r\n") < 2 and (chunk := sock.recv(64)):
                    reply += chunk
                return reply == b"+OK\r\n+PONG\r\n"
        except OSError:
            return False


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedisServer]:
    with AclRedisServer(tmp_path_factory.mktemp("acl-redis"), find_redis_server()) as server:
        yield server


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedisServer]:
    certificates = make_certificates(tmp_path_factory.mktemp("certs"))
    with TlsRedisServer(certificates, tmp_path_factory.mktemp("tls-redis"), find_redis_server()) as server:
        yield server


def workspace_at(url: str, data_dir: Path, name: str | None = None, **settings: Any) -> Workspace:
    """A workspace (a fresh name unless given) logging to ``url``."""
    name = name or f"t{uuid.uuid4().hex[:12]}"
    return Workspace.from_settings(Settings(redis_url=url, workspace=name, data_dir=data_dir, **settings))


def log_a_run(workspace: Workspace) -> Run:
    """A run with a short series, a tag and a row, completed (returns once the record shows it)."""
    run = Experiment(workspace, "security").start_logging()
    for value in (0.5, 0.25, 0.125):
        run.log("loss", value)
    run.tag("team", "vision")
    run.log_row("curve", x=1, y=0.4)
    run.complete(timeout=30)
    return run


async def served_values(client: TestClient[Any, Any], run_id: str) -> tuple[str, list[Any]]:
    """The run's status and its loss values, as the server serves them."""
    details = await client.get(f"/api/v1/runs/{run_id}")
    series = await client.get(f"/api/v1/runs/{run_id}/metrics/loss")
    assert (200, 200) == (details.status, series.status), await details.text()
    return (await details.json())["status"], (await series.json())["values"]


EXPECTED_METRICS = {"loss": [0.5, 0.25, 0.125], "curve": {"x": [1], "y": [0.4]}}


class TestAclUser:
    """A ``redis://user:password@`` URL of an ACL user works end to end: producer, collector, reader, server."""

    async def test_user_password_url_end_to_end(
        self,
        acl_redis: AclRedisServer,
        tmp_path: Path,
        start_collector: Callable[..., CollectorThread],
        aiohttp_client: AiohttpClient,
    ) -> None:
        workspace = workspace_at(acl_redis.url_for("alice", ALICE_PASSWORD), tmp_path / ".runstream")
        start_collector(workspace)
        client = await aiohttp_client(create_app(ServerSettings(workspace=workspace.settings)))

        run = await asyncio.to_thread(log_a_run, workspace)
        metrics = await asyncio.to_thread(run.get_metrics)
        served = await served_values(client, run.id)

        assert EXPECTED_METRICS == metrics
        assert ("Completed", [0.5, 0.25, 0.125]) == served


class TestProducerOnlyUser:
    """A user that may only XADD to one workspace's ingest streams logs and completes runs (a collector
    with its own user applies them), but reads nothing: records, ingest entries, other workspaces."""

    def test_logs_and_completes_but_cannot_read(
        self, acl_redis: AclRedisServer, tmp_path: Path, start_collector: Callable[..., CollectorThread]
    ) -> None:
        data_dir = tmp_path / ".runstream"
        producer = workspace_at(acl_redis.url_for("producer", PRODUCER_PASSWORD), data_dir, PRODUCER_WORKSPACE)
        collector = workspace_at(acl_redis.url_for("collector", COLLECTOR_PASSWORD), data_dir, PRODUCER_WORKSPACE)
        admin = redis.Redis.from_url(acl_redis.admin_url)
        start_collector(collector)
        admin.acl_log_reset()

        with structlog.testing.capture_logs() as logs:
            run = log_a_run(producer)
        refused = {
            (entry["reason"], entry["object"])
            for entry in cast("list[dict[str, Any]]", admin.acl_log())
            # redis-py names itself with CLIENT SETINFO on connect (Redis 7.2+) and ignores a refusal
            if entry["username"] == "producer" and entry["object"] != "client|setinfo"
        }
        admin.close()
        record = Run(Experiment(collector, "security"), run.id)
        details = record.wait_for_completion(timeout=30)
        applied = record.get_metrics()

        # Logging sent XADDs, after two questions it may not ask and does without: INFO (is
        # this a cluster? then it is taken for one server) and EVAL (raise the workspace's
        # shard count: the collectors' setting decides); its first send, a MULTI, was refused
        # once and sent again as a plain pipeline.  complete() tried one read (are collectors
        # alive?), was refused, and returned: the status is delivered, its application not
        # confirmed.
        expected = {("command", c) for c in ("info", "eval", "hgetall", "multi", "exec")}
        assert expected == refused
        assert {"record_not_readable", "redis_multi_refused"} <= {entry["event"] for entry in logs}
        assert "Completed" == details["status"]
        assert EXPECTED_METRICS == applied

    def test_reads_are_refused(self, acl_redis: AclRedisServer, tmp_path: Path) -> None:
        producer = workspace_at(
            acl_redis.url_for("producer", PRODUCER_PASSWORD), tmp_path / ".runstream", PRODUCER_WORKSPACE
        )
        keys, other = producer.keys, Keys("elsewhere")
        run_id = f"security_{int(time.time())}_{secrets.token_hex(4)}"
        client = redis.Redis.from_url(producer.settings.redis_url)
        attempts: dict[str, Callable[[], object]] = {
            "HGETALL meta": lambda: client.hgetall(keys.meta(run_id)),
            "XRANGE live": lambda: client.xrange(keys.live(run_id)),
            "LRANGE series": lambda: client.lrange(keys.metric_series(run_id, "loss"), 0, -1),
            "XRANGE ingest": lambda: client.xrange(keys.ingest(0)),
            "XADD another workspace": lambda: client.xadd(other.ingest(0), {"v": "1"}),
            "XADD a run's live stream": lambda: client.xadd(keys.live(run_id), {"v": "1"}),
            "DEL ingest": lambda: client.delete(keys.ingest(0)),
            "SDK get_metrics": lambda: Run(Experiment(producer, "security"), run_id).get_metrics(),
        }

        outcomes = {}
        for what, attempt in attempts.items():
            try:
                attempt()
                outcomes[what] = "allowed"
            except NoPermissionError as exc:
                outcomes[what] = "NOPERM" if "no permissions" in str(exc) else str(exc)
        client.close()

        assert {what: "NOPERM" for what in attempts} == outcomes


class TestWrongPassword:
    """A wrong password fails at once rather than being waited on: the reader, the collector and the
    producer name the cause (the producer keeps its events spooled); the server answers 503, as JSON."""

    async def test_reader_is_refused_at_once(self, acl_redis: AclRedisServer) -> None:
        started = time.monotonic()

        with pytest.raises(AuthenticationError, match="invalid username-password pair"):
            async with connect(acl_redis.url_for("alice", "wrong-password")) as client:
                await client.ping()
        assert time.monotonic() - started < 10

    def test_collector_exits_naming_the_cause(self, acl_redis: AclRedisServer, tmp_path: Path) -> None:
        started = time.monotonic()

        done = run_collector_process(acl_redis.url_for("collector", "wrong-password"), tmp_path)

        assert 0 != done.returncode
        assert "AuthenticationError: invalid username-password pair" in done.stderr.strip().splitlines()[-1]
        assert "Traceback" not in done.stdout + done.stderr  # one line a person can act on
        assert "wrong-password" not in done.stdout + done.stderr
        assert time.monotonic() - started < SUBPROCESS_TIMEOUT

    def test_producer_says_so_and_flush_names_it(
        self, acl_redis: AclRedisServer, tmp_path: Path, run_script: RunScript
    ) -> None:
        workspace = workspace_at(acl_redis.url_for("producer", "wrong-password"), tmp_path / ".runstream")
        body = """
        run.log("loss", 0.5)
        try:
            run.flush(timeout=3)
        except Exception as exc:
            print("flush:", type(exc).__name__, exc)
        """

        done = run_script(workspace, body, exit_flush_timeout=0.5)
        warnings = [line for line in done.stderr.splitlines() if "redis_refused" in line]

        assert 0 == done.returncode, done.stderr
        assert "flush: FlushTimeoutError" in done.stdout
        assert "invalid username-password pair" in done.stdout.split("flush:", 1)[1]
        assert 1 == len(warnings), done.stderr
        assert "invalid username-password pair" in warnings[0]
        assert "check the user and password" in warnings[0]
        assert "redis_unreachable" not in done.stderr  # refused, not an outage
        assert "wrong-password" not in done.stdout + done.stderr

    async def test_server_answers_503_at_once(
        self, acl_redis: AclRedisServer, tmp_path: Path, aiohttp_client: AiohttpClient
    ) -> None:
        workspace = workspace_at(acl_redis.url_for("alice", "wrong-password"), tmp_path / ".runstream")
        client = await aiohttp_client(create_app(ServerSettings(workspace=workspace.settings)))
        started = time.monotonic()

        response = await client.get("/api/v1/runs")
        body = await response.json()

        assert 503 == response.status
        assert "Redis is unavailable (AuthenticationError)" in body["error"]["message"]
        assert time.monotonic() - started < 10


class TestTls:
    """A ``rediss://`` URL with ``ssl_ca_certs`` works end to end; a client without TLS, or
    without the CA, fails at once with an error naming the cause."""

    async def test_rediss_url_end_to_end(
        self,
        tls_redis: TlsRedisServer,
        tmp_path: Path,
        start_collector: Callable[..., CollectorThread],
        aiohttp_client: AiohttpClient,
    ) -> None:
        workspace = workspace_at(tls_redis.url, tmp_path / ".runstream")
        start_collector(workspace)
        client = await aiohttp_client(create_app(ServerSettings(workspace=workspace.settings)))

        run = await asyncio.to_thread(log_a_run, workspace)
        metrics = await asyncio.to_thread(run.get_metrics)
        served = await served_values(client, run.id)

        assert EXPECTED_METRICS == metrics
        assert ("Completed", [0.5, 0.25, 0.125]) == served

    async def test_plain_url_to_the_tls_port_fails_fast(self, tls_redis: TlsRedisServer) -> None:
        started = time.monotonic()

        with pytest.raises(RedisConnectionError) as refused:
            async with connect(tls_redis.plain_url) as client:
                await client.ping()

        assert time.monotonic() - started < 15
        # As redis-py words it: "Connection closed by the server before write" since 8.2.
        closed = "Connection reset by peer|Connection closed by (the )?server|Connection lost"
        assert re.search(closed, str(refused.value)), refused.value

    async def test_an_untrusted_certificate_is_refused(self, tls_redis: TlsRedisServer) -> None:
        with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            async with connect(f"rediss://127.0.0.1:{tls_redis.port}/0") as client:
                await client.ping()


class TestScopedTokens:
    """A token file line ``WORKSPACE:TOKEN`` opens that workspace's server only; another
    workspace's server refuses it (403, REST and SSE); a bare ``TOKEN`` opens any."""

    def test_entries_are_parsed_and_checked(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("RUNSTREAM_TOKEN", raising=False)
        good = tmp_path / "tokens"
        good.write_text("ws-a:tok-1\n\n  tok-2  \nws.b:tok:3\n")
        bad = {
            "scope with a space:sekrit-1": "not a workspace name",
            "ws-a:": "nothing after",
            "bad!:sekrit-2": "scope",
        }

        loaded = load_tokens(None, good)
        errors = {}
        for entry in bad:
            with pytest.raises(ConfigError) as refused:
                parse_token(entry)
            errors[entry] = str(refused.value)

        assert {("ws-a", "tok-1"), (None, "tok-2"), ("ws.b", "tok:3")} == {parse_token(e) for e in loaded}
        assert all(expected in errors[entry] for entry, expected in bad.items()), errors
        assert all("sekrit" not in message for message in errors.values())

    async def test_one_workspace_token_cannot_read_another(
        self,
        redis_url: str,
        tmp_path: Path,
        start_collector: Callable[..., CollectorThread],
        aiohttp_client: AiohttpClient,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.delenv("RUNSTREAM_TOKEN", raising=False)
        a = workspace_at(redis_url, tmp_path / "a")
        b = workspace_at(redis_url, tmp_path / "b")
        token_a, token_b, token_any = (f"tok-{secrets.token_hex(6)}" for _ in range(3))
        token_file = tmp_path / "tokens"
        token_file.write_text(f"{a.name}:{token_a}\n{b.name}:{token_b}\n{token_any}\n")
        tokens = load_tokens(None, token_file)
        for workspace in (a, b):
            start_collector(workspace)
        runs = {"A": await asyncio.to_thread(log_a_run, a), "B": await asyncio.to_thread(log_a_run, b)}
        servers = {
            "A": await aiohttp_client(create_app(ServerSettings(workspace=a.settings, tokens=tokens))),
            "B": await aiohttp_client(create_app(ServerSettings(workspace=b.settings, tokens=tokens))),
        }
        given = {"A's": token_a, "B's": token_b, "any": token_any, "unknown": "tok-unknown", "none": None}

        rest, sse = {}, {}
        for server, client in servers.items():
            run_id = runs[server].id
            for name, token in given.items():
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with client.get(f"/api/v1/runs/{run_id}", headers=headers) as response:
                    rest[server, name] = response.status
                async with client.get(f"/api/v1/runs/{run_id}/events?from=0-0", headers=headers) as response:
                    ended = response.status == 200 and (await collect_sse(response))[-1].event == "end"
                    sse[server, name] = (response.status, ended)
        cross = await servers["A"].get(f"/api/v1/runs/{runs['B'].id}", headers={"Authorization": f"Bearer {token_a}"})
        by_query = await servers["A"].get("/", params={"token": token_b})

        assert {
            ("A", "A's"): 200, ("A", "B's"): 403, ("A", "any"): 200, ("A", "unknown"): 401, ("A", "none"): 401,
            ("B", "A's"): 403, ("B", "B's"): 200, ("B", "any"): 200, ("B", "unknown"): 401, ("B", "none"): 401,
        } == rest  # fmt: skip
        assert {key: (status, status == 200) for key, status in rest.items()} == sse
        assert 404 == cross.status  # A's server holds only A's runs, whatever the id
        assert 403 == by_query.status
        assert 0 == len(servers["A"].session.cookie_jar)

    async def test_tokens_of_other_workspaces_still_require_one(
        self, redis_url: str, tmp_path: Path, aiohttp_client: AiohttpClient
    ) -> None:
        a = workspace_at(redis_url, tmp_path / "a")
        client = await aiohttp_client(
            create_app(ServerSettings(workspace=a.settings, tokens=frozenset({"other-ws:tok-other"})))
        )

        anonymous = await client.get("/api/v1/runs")
        other = await client.get("/api/v1/runs", headers={"Authorization": "Bearer tok-other"})

        assert (401, 403) == (anonymous.status, other.status)


# ------------------------------------------------------------------------------- secrets


def clean_env(**variables: str) -> dict[str, str]:
    """The environment without any RUNSTREAM_ setting, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    return env | variables


def run_collector_process(
    url: str, folder: Path, timeout: float = SUBPROCESS_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """``python -m runstream.collector --json`` for ``url``, run to its end."""
    env = clean_env(RUNSTREAM_REDIS_URL=url, RUNSTREAM_WORKSPACE="secrets", RUNSTREAM_DATA_DIR=str(folder))
    return subprocess.run(
        [sys.executable, "-m", "runstream.collector", "--json", "--lease-ttl", "2"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        cwd=folder,
    )


def output_of(service: Process) -> str:
    return service.log.read_text(errors="replace")


async def wait_for_text(service: Process, text: str, bound: float = 30.0) -> None:
    """Until ``text`` shows in the service's output (a read of its log file, not a sleep)."""
    deadline = time.monotonic() + bound
    while text not in output_of(service):
        if time.monotonic() > deadline or (service.process.poll() is not None and text not in output_of(service)):
            raise AssertionError(f"{service.name} did not log {text!r}: {output_of(service)[-3000:]}")
        await asyncio.sleep(0.05)


class TestSecretsNotLogged:
    """Passwords and tokens appear in no repr and in no log line, including the error paths."""

    def test_reprs_hide_secrets(self, tmp_path: Path) -> None:
        url = f"rediss://ops:{OPS_PASSWORD}@127.0.0.1:6380/0?ssl_ca_certs=/ca.pem"
        query_url = f"redis://127.0.0.1:6379/0?password={OPS_PASSWORD}"
        token = f"tok-{secrets.token_hex(6)}"
        settings = Settings(redis_url=url, token=token, data_dir=tmp_path)

        shown = [
            repr(settings),
            str(settings),
            repr(Settings(redis_url=query_url, data_dir=tmp_path)),
            repr(Workspace.from_settings(settings)),
            repr(ServerSettings(workspace=settings, tokens=frozenset({token, f"default:{token}x"}))),
            repr(CollectorSettings(workspace=settings)),
        ]

        assert [] == [s for s in shown if OPS_PASSWORD in s or token in s]
        assert "ops:***@127.0.0.1:6380" in shown[0]

    async def test_logs_hold_no_secret(self, acl_redis: AclRedisServer, tmp_path: Path, run_script: RunScript) -> None:
        token_scoped, token_bare = f"tok-{secrets.token_hex(6)}", f"tok-{secrets.token_hex(6)}"
        url = acl_redis.url_for("ops", OPS_PASSWORD)
        workspace = workspace_at(url, tmp_path / ".runstream", "secrets")
        (tmp_path / "tokens").write_text(f"secrets:{token_scoped}\n{token_bare}\n")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = clean_env(RUNSTREAM_REDIS_URL=url, RUNSTREAM_WORKSPACE="secrets", RUNSTREAM_DATA_DIR=str(tmp_path))
        serve = [sys.executable, "-c", "from runstream.consumer.cli import main; main()", "serve", "--json"]
        services = [
            Process(
                [sys.executable, "-m", "runstream.collector", "--json"], env, tmp_path / "collector.log", "collector"
            ),
            Process([*serve, "--port", str(port), "--token-file", "tokens"], env, tmp_path / "server.log", "server"),
        ]
        collector, server = services
        admin = redis.Redis.from_url(acl_redis.admin_url)
        try:
            await wait_for_text(collector, "collector_started")
            await wait_for_text(server, "server_ready")
            bearer = {"Authorization": f"Bearer {token_scoped}"}
            # The happy path: a producer process logs a run; the server serves it by header and query token.
            logged = await asyncio.to_thread(run_script, workspace, "run.log('loss', 0.5)\nrun.complete(timeout=30)")
            async with aiohttp.ClientSession(base) as http:
                ok = await http.get(f"/api/v1/runs/{logged.run_id}", headers=bearer)
                by_query = await http.get(f"/runs/{logged.run_id}", params={"token": token_bare})
                refused = await http.get("/api/v1/runs", headers={"Authorization": f"Bearer {token_scoped}x"})
                assert (0, 200, 200, 401) == (logged.returncode, ok.status, by_query.status, refused.status)
            # Error path: a producer whose Redis refuses connections spools and says so at exit.
            dead = workspace_at(acl_redis.url_for("ops", OPS_PASSWORD, free_port()), tmp_path / ".runstream", "secrets")
            unreachable = await asyncio.to_thread(run_script, dead, "run.log('loss', 1.0)", exit_flush_timeout=0.5)
            # Error path: the password is rotated while the server follows a live run and the
            # collector reads; both lose their connections and cannot log in again.
            admin_workspace = workspace_at(acl_redis.admin_url, tmp_path / "admin", "secrets")
            follow = await asyncio.to_thread(Experiment(admin_workspace, "live").start_logging)
            follow.log("loss", 2.0)
            await asyncio.to_thread(follow.flush)
            await asyncio.to_thread(wait_until, lambda: bool(admin.exists(workspace.keys.meta(follow.id))))
            async with aiohttp.ClientSession(base) as http:
                events = await http.get(f"/api/v1/runs/{follow.id}/events?from=0-0", headers=bearer)
                assert 200 == events.status
                async with asyncio.timeout(30):  # history comes once the run's feed is made
                    while not (await events.content.readline()).startswith(b"data:"):
                        pass
                admin.acl_setuser("ops", enabled=True, reset_passwords=True, passwords=[f"+{OPS_PASSWORD}-rotated"])
                admin.client_kill_filter(user="ops")
                await wait_for_text(server, "sse_feed_failed")
                failing = await http.get("/api/v1/runs", headers=bearer)
                assert 503 == failing.status
            rotated_out = await asyncio.to_thread(run_collector_process, url, tmp_path)
            refused_collector = await asyncio.to_thread(run_collector_process, dead.settings.redis_url, tmp_path)
            follow.complete(timeout=None)  # its collector is gone: deliver the status, wait for nothing more
            await asyncio.to_thread(follow.flush, 10)
        finally:
            for service in services:
                with contextlib.suppress(subprocess.TimeoutExpired):  # then killed
                    service.terminate(15)
                service.end()
            admin.close()
        outputs = {service.name: output_of(service) for service in services}
        outputs |= {
            "producer": logged.stdout + logged.stderr,
            "unreachable producer": unreachable.stdout + unreachable.stderr,
            "rotated-out collector": rotated_out.stdout + rotated_out.stderr,
            "refused collector": refused_collector.stdout + refused_collector.stderr,
        }

        leaks = {
            name: [secret for secret in (OPS_PASSWORD, token_scoped, token_bare) if secret in text]
            for name, text in outputs.items()
        }
        assert {name: [] for name in outputs} == leaks
        # ...and the error paths were taken (the assertion above is not vacuous):
        assert "redis_unreachable" in outputs["unreachable producer"]
        assert "events_not_delivered" in outputs["unreachable producer"]
        assert "AuthenticationError" in outputs["rotated-out collector"]
        assert "ConnectionError: Error 111 connecting" in outputs["refused collector"]
        assert "sse_feed_failed" in outputs["server"]
