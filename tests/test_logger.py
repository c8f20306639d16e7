"""The logger's own behaviour: heartbeats, counters, bounded memory, forks, offline runs."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path
from typing import cast

import pytest
import redis
import structlog
from structlog.testing import capture_logs

from runstream import ConfigError, Experiment, OfflineRun, Run, Workspace, logger_stats
from runstream.codec import decode_entry
from runstream.events import HeartbeatSent, MetricsLogged
from runstream.logconfig import configure_logging
from runstream.redis_server import RedisServer
from tests.conftest import RunScript, first_of_each_seq, make_workspace, read_batches


def wait_for_heartbeat(workspace: Workspace, run_id: str, timeout: float = 10.0) -> bool:
    """Block on the run's ingest stream (XREAD BLOCK) until a heartbeat of the run arrives."""
    client = redis.Redis.from_url(workspace.settings.redis_url)
    stream = workspace.keys.ingest_for(run_id)
    last = "0-0"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            reply = cast(
                "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]", client.xread({stream: last}, block=500)
            )
            for _, entries in reply or []:
                last = entries[-1][0].decode()
                for _, fields in entries:
                    batch = decode_entry(fields)
                    if batch.run_id == run_id and any(isinstance(e, HeartbeatSent) for e in batch.events):
                        return True
        return False
    finally:
        client.close()


class TestHeartbeats:
    """A live run sends heartbeats; a finished one stops."""

    def test_live_run_beats(self, redis_url: str, tmp_path: Path) -> None:
        workspace = make_workspace(redis_url, tmp_path / ".runstream", heartbeat_interval=0.05)
        run = Experiment(workspace, "beats").start_logging()

        beating = wait_for_heartbeat(workspace, run.id)
        run.complete()

        assert beating


class TestCounters:
    """``logger_stats`` counts what was logged, sent and still pending."""

    def test_counts_follow_logging(self, experiment: Experiment) -> None:
        before = logger_stats()
        with experiment.start_logging() as run:
            for i in range(10_000):
                run.log("loss", i)

        after = logger_stats()

        assert after.events_logged - before.events_logged >= 10_002  # points, start, status
        assert after.events_sent - before.events_sent >= 10_002
        assert after.batches_sent > before.batches_sent
        assert after.bytes_sent > before.bytes_sent
        assert after.pending_batches == 0


class TestBoundedMemory:
    """With Redis frozen, the buffer keeps being drained to the spool: memory stays bounded."""

    @pytest.mark.slow
    def test_buffer_drains_to_disk_while_redis_is_frozen(self, restartable_redis: RedisServer, tmp_path: Path) -> None:
        workspace = make_workspace(restartable_redis.url, tmp_path / ".runstream", max_memory_bytes=32 * 1024)
        run = Experiment(workspace, "bounded").start_logging()
        run.flush(timeout=10)
        assert restartable_redis.pid is not None
        depths = []
        spooled_before = logger_stats().batches_spooled

        os.kill(restartable_redis.pid, signal.SIGSTOP)  # frozen, like an overloaded server
        try:
            for i in range(600_000):
                run.log("loss", i)
                if i % 1_000 == 0:
                    depths.append(logger_stats().queue_depth)
            stats = logger_stats()
        finally:
            os.kill(restartable_redis.pid, signal.SIGCONT)
        run.complete(timeout=60)

        batches = first_of_each_seq(read_batches(workspace, run.id))
        values = [v for b in batches for e in b.events if isinstance(e, MetricsLogged) for v in e.values]
        # Drained at least every DRAIN_TICK: the depth is what one tick of logging adds
        # (~300,000 at worst, on a loaded 2-core machine where the drain thread waits for
        # the GIL), well below the 600,000 points it reaches if only sends drained it.
        assert max(depths) < 450_000, "the buffer must be drained while Redis is frozen"
        assert stats.batches_spooled > spooled_before
        assert list(range(600_000)) == values


class TestFork:
    """A forked child logs as a producer of its own; parent and child both deliver."""

    def test_child_process_logs(self, experiment: Experiment) -> None:
        run = experiment.start_logging()
        run.log("loss", 1.0)
        run.flush(timeout=10)

        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            code = 1
            try:
                run.log("child", 2.0)
                run.flush(timeout=10)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        run.log("loss", 3.0)
        run.complete()

        batches = read_batches(experiment.workspace, run.id)
        names = {(b.producer, e.name) for b in batches for e in b.events if isinstance(e, MetricsLogged)}
        assert os.waitstatus_to_exitcode(status) == 0
        assert len({p for p, _ in names}) == 2
        assert {"loss", "child"} == {n for _, n in names}


class TestSpoolFailure:
    """With Redis unreachable and no writable spool, ``log`` raises instead of dropping."""

    def test_log_raises_spool_error(self, redis_url: str, tmp_path: Path, run_script: RunScript) -> None:
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("a file where the data folder should be")
        workspace = make_workspace("redis://127.0.0.1:1/0", blocker)
        body = """
            from runstream import SpoolError
            try:
                for i in range(2_000_000):
                    run.log("loss", i)
            except SpoolError as exc:
                print("refused:", exc)
        """

        result = run_script(workspace, body, max_memory_bytes=1024, exit_flush_timeout=0.2)

        assert "refused:" in result.stdout, result.stderr
        assert "spool" in result.stdout


class TestOfflineRun:
    """Outside a submitted run, ``Run.get_context()`` is an offline run that keeps what is logged."""

    def test_offline_run_keeps_metrics(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("RUNSTREAM_RUN_ID", raising=False)
        run = Run.get_context()
        with capture_logs() as logs:
            run.log("alpha", 0.03)
            run.log("loss", 1.0)
            run.log("loss", 0.5)
            run.log_list("acc", [0.6, 0.7])
            run.log_row("Y over X", x=1, y=0.4)
            run.log_row("Y over X", x=2, y=0.5)
            run.log_table("T", {"a": [1, 2]})
            run.tag("k", "v")
            run.add_properties({"p": "1"})
            run.complete()

        assert isinstance(run, OfflineRun)
        assert run.get_metrics() == {
            "alpha": 0.03,
            "loss": [1.0, 0.5],
            "acc": [0.6, 0.7],
            "Y over X": {"x": [1, 2], "y": [0.4, 0.5]},
            "T": {"a": [1, 2]},
        }
        assert run.get_tags() == {"k": "v"}
        assert run.get_properties() == {"p": "1"}
        assert run.get_status() == "Completed"
        assert {k: logs[0][k] for k in ("name", "value")} == {"name": "alpha", "value": 0.03}

    def test_offline_run_refuses_bad_input_too(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("RUNSTREAM_RUN_ID", raising=False)
        run = Run.get_context()

        with pytest.raises(TypeError, match="'loss'"):
            run.log("loss", [1, 2])  # type: ignore[arg-type]  # the bad input under test


class TestSubmittedContext:
    """Inside a submitted script, ``Run.get_context()`` is the submitted run."""

    def test_context_from_environment(self, experiment: Experiment, monkeypatch: pytest.MonkeyPatch) -> None:
        run = experiment.start_logging()
        settings = experiment.workspace.settings
        monkeypatch.setenv("RUNSTREAM_RUN_ID", run.id)
        monkeypatch.setenv("RUNSTREAM_REDIS_URL", settings.redis_url)
        monkeypatch.setenv("RUNSTREAM_WORKSPACE", settings.workspace)
        monkeypatch.setenv("RUNSTREAM_DATA_DIR", str(settings.data_dir))

        context = Run.get_context()
        context.log("from_script", 42)
        run.complete()

        assert run.id == context.id
        assert context.experiment is not None
        assert context.experiment.name == "tests"
        assert [
            e.values
            for b in read_batches(experiment.workspace, run.id)
            for e in b.events
            if isinstance(e, MetricsLogged) and e.name == "from_script"
        ] == [[42]]


class TestAsyncCallers:
    """asyncio code flushes without blocking its loop."""

    async def test_aflush(self, experiment: Experiment) -> None:
        run = experiment.start_logging()
        run.log("loss", 0.5)

        await run.aflush(timeout=10)
        run.complete()

        assert [[0.5]] == [
            e.values
            for b in read_batches(experiment.workspace, run.id)
            for e in b.events
            if isinstance(e, MetricsLogged)
        ]


class TestPortalUrl:
    """``get_portal_url`` points at the run's page on the configured server."""

    def test_url_of_the_run_page(self, redis_url: str, tmp_path: Path) -> None:
        workspace = make_workspace(redis_url, tmp_path / ".runstream", server_url="http://tracker:8080/")
        run = Experiment(workspace, "urls").start_logging()
        run.complete()

        assert f"http://tracker:8080/runs/{run.id}" == run.get_portal_url()

    def test_the_server_runstream_up_runs_for_the_data_folder(self, redis_url: str, tmp_path: Path) -> None:
        data = tmp_path / ".runstream"
        data.mkdir()
        instance = {"redis_url": redis_url, "server_url": "http://127.0.0.1:8731", "pid": os.getpid()}
        (data / "instance.json").write_text(json.dumps(instance))
        run = Experiment(make_workspace(redis_url, data), "urls").start_logging()
        run.complete()

        assert f"http://127.0.0.1:8731/runs/{run.id}" == run.get_portal_url()

    def test_no_server_configured(self, experiment: Experiment) -> None:
        run = experiment.start_logging()
        run.complete()

        with pytest.raises(ConfigError, match="RUNSTREAM_URL"):
            run.get_portal_url()


class TestLoggingSetup:
    """Entry points log JSON lines off a terminal, readable lines on one."""

    def test_json_lines(self) -> None:
        out = io.StringIO()
        before = structlog.get_config()
        configure_logging(json=True, stream=out)
        try:
            structlog.get_logger("t").info("batch_flushed", events=3)
        finally:
            structlog.configure(**before)

        line = json.loads(out.getvalue())

        assert ("batch_flushed", 3, "info") == (line["event"], line["events"], line["level"])

    def test_one_write_per_record(self) -> None:
        """Each record reaches the stream in one write, newline included: two processes sharing
        a log file (or a pipe) can then never glue two records into one line."""
        out = _WriteRecorder()
        before = structlog.get_config()
        configure_logging(json=True, stream=out)
        try:
            structlog.get_logger("t").info("shard_released", shard=1)
            structlog.get_logger("t").info("collector_stopped")
        finally:
            structlog.configure(**before)

        records = [json.loads(w) for w in out.writes]

        assert 2 == len(out.writes)
        assert all(w.endswith("\n") and w.count("\n") == 1 for w in out.writes)
        assert ["shard_released", "collector_stopped"] == [r["event"] for r in records]

    def test_console_lines_and_level(self) -> None:
        out = io.StringIO()
        before = structlog.get_config()
        configure_logging(json=False, level="warning", stream=out)
        try:
            structlog.get_logger("t").info("hidden")
            structlog.get_logger("t").warning("shown", n=1)
        finally:
            structlog.configure(**before)

        text = out.getvalue()

        assert "hidden" not in text
        assert "shown" in text
        assert "n=1" in text


class _WriteRecorder(io.StringIO):
    """A text stream that keeps each ``write`` call's text apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)
