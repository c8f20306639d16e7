"""The sending in a process of its own (``RUNSTREAM_SENDER=process``): nothing lost, failures said.

The training process copies its buffer into a ring of shared memory when the sender
process asks; these scripts check what a user would notice: every point arrives in order,
the training process has no sender thread, a training process killed outright still
delivers what it had put in the ring, a sender process that stalls loses nothing, and one
that dies is said at the next call.
"""

from __future__ import annotations

import pytest

from runstream import Workspace
from runstream.events import MetricsLogged, StatusChanged
from tests.conftest import RunScript, read_batches, wait_until


@pytest.fixture(autouse=True)
def _sender_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNSTREAM_SENDER", "process")


def _values(workspace: Workspace, run_id: str, name: str = "loss") -> list[object]:
    return [
        v
        for b in read_batches(workspace, run_id)
        for e in b.events
        if isinstance(e, MetricsLogged) and e.name == name
        for v in e.values
    ]


def _statuses(workspace: Workspace, run_id: str) -> list[str]:
    return [e.status for b in read_batches(workspace, run_id) for e in b.events if isinstance(e, StatusChanged)]


_THREADS = """
import threading
from runstream.logger import get_logger
print(type(get_logger()).__name__, sorted(t.name for t in threading.enumerate()), flush=True)
"""


class TestSenderProcess:
    def test_every_point_arrives_in_order_and_the_run_completes(
        self, workspace: Workspace, run_script: RunScript
    ) -> None:
        result = run_script(workspace, "for i in range(50_000):\n    run.log('loss', i * 0.5)\n" + _THREADS)

        assert result.returncode == 0, result.stderr
        assert _values(workspace, result.run_id) == [i * 0.5 for i in range(50_000)]
        assert _statuses(workspace, result.run_id) == ["Completed"]
        assert "FeedingLogger" in result.stdout
        assert "runstream-sender" not in result.stdout, "no sender thread takes the GIL from the loop"

    def test_a_training_process_killed_outright_delivers_what_it_had_put(
        self, workspace: Workspace, run_script: RunScript
    ) -> None:
        body = """
        import os, signal
        from runstream.logger import get_logger
        for i in range(10_000):
            run.log('loss', float(i))
        get_logger().drain()  # into the ring, as the next log after the sender's request would
        os.kill(os.getpid(), signal.SIGKILL)
        """
        result = run_script(workspace, body)

        assert result.returncode == -9
        wait_until(lambda: len(_values(workspace, result.run_id)) == 10_000, what="the ring's points in Redis")
        assert _values(workspace, result.run_id) == [float(i) for i in range(10_000)]
        assert _statuses(workspace, result.run_id) == [], "the run is not ended for the dead process"

    def test_a_stalled_sender_process_loses_nothing(self, workspace: Workspace, run_script: RunScript) -> None:
        # 1,500,000 points pickle to some 30 MB, twice the ring: the training process keeps
        # what does not fit, in order, until the sender process takes more.
        body = """
        import os, signal, time
        from runstream.logger import get_logger
        run.log('loss', -1.0)
        run.flush()
        sender = get_logger().sender_pid
        os.kill(sender, signal.SIGSTOP)
        for i in range(1_500_000):
            run.log('loss', float(i))
        get_logger().drain()
        time.sleep(0.2)
        os.kill(sender, signal.SIGCONT)
        run.complete(timeout=60)
        """
        result = run_script(workspace, body)

        assert result.returncode == 0, result.stderr
        assert _values(workspace, result.run_id) == [-1.0] + [float(i) for i in range(1_500_000)]
        assert _statuses(workspace, result.run_id) == ["Completed"]

    def test_a_sender_process_that_died_is_said_at_the_next_call(
        self, workspace: Workspace, run_script: RunScript
    ) -> None:
        body = """
        import os, signal
        from runstream.errors import LoggerError
        from runstream.logger import get_logger
        run.log('loss', 1.0)
        run.flush()
        process = get_logger()._process
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        try:
            run.log('loss', 2.0)
            run.flush()
        except LoggerError as exc:
            print('raised:', exc, flush=True)
        """
        result = run_script(workspace, body)

        assert "raised: the runstream sender process exited with code -9" in result.stdout, result.stderr
        assert _values(workspace, result.run_id) == [1.0]
