"""Child processes of a training script: what they log arrives, and they never end the parent's run.

Each test runs a training script in a process of its own (``run_script``) with a
collector running, and reads the run's record once the parent has ended it: all the
points the children logged are there once each, and the status is the one the parent
set.  Scripts that start children through multiprocessing run as their own
``__main__`` with a main guard (see :func:`as_main`), as a user's script would.
"""

from __future__ import annotations

import pickle
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from runstream import Experiment, OfflineRun, Run, Workspace
from runstream.consumer.reader import MetricValue
from runstream.events import TERMINAL_STATUSES
from tests.conftest import CollectorThread, RunScript, wait_until

StartCollector = Callable[..., CollectorThread]

#: Each test runs with the sender in a process of its own, then in a thread.
pytestmark = pytest.mark.usefixtures("each_sender")


def as_main(folder: Path, script: str) -> str:
    """A ``run_script`` body that runs ``script`` as the process's ``__main__``, ``run`` in its globals.

    The forkserver and spawn start methods import the main module again in each child:
    they then import ``script`` (whose main guard keeps the parent's part out of the
    children), not the body's header, which would start a run in every child.
    """
    path = folder / f"main_{uuid.uuid4().hex[:6]}.py"
    path.write_text(textwrap.dedent(script))
    return f"import runpy\nrunpy.run_path({str(path)!r}, init_globals={{'run': run}}, run_name='__main__')\n"


def ended(workspace: Workspace, run_id: str, name: str) -> tuple[str, str | None, MetricValue | None]:
    """The run's (status, error, values of ``name``) once its record shows a final status.

    The parent ends its run after its children exited, so its status is the last entry
    of the run's stream: once it is applied, all the children sent is applied too.
    """
    run = Run(Experiment(workspace, "scripts"), run_id)
    wait_until(lambda: run.get_status() in TERMINAL_STATUSES, 60, f"run {run_id} to end")
    details = run.get_details()
    return details["status"], details["error"], run.get_metrics(name).get(name)


#: A child's part of the 40,000 points: values and steps part * 10,000 + 0..9,999.
PART = 10_000
ALL_POINTS = [float(i) for i in range(4 * PART)]

LOG_PART = f"""
from runstream import Run  # at the top, as a training script imports it


def log_part(run: Run, part: int) -> int:
    for i in range(part * {PART}, (part + 1) * {PART}):
        run.log("loss", float(i), step=i)
    return part
"""


class TestForkedChild:
    """A child of ``os.fork()`` that exits normally delivers what it logged and leaves the run to the parent."""

    def test_parent_fails_its_run_after_the_child_exits(
        self, workspace: Workspace, run_script: RunScript, start_collector: StartCollector
    ) -> None:
        start_collector(workspace)
        body = LOG_PART + textwrap.dedent("""
            import os, sys
            pid = os.fork()
            if pid == 0:
                log_part(run, 0)
                sys.exit(0)  # a normal exit: atexit runs in the child
            _, status = os.waitpid(pid, 0)
            print("child exit code", os.waitstatus_to_exitcode(status))
            run.fail("the parent failed")
        """)

        result = run_script(workspace, body)
        status, error, values = ended(workspace, result.run_id, "loss")

        assert result.returncode == 0, result.stderr
        assert "child exit code 0" in result.stdout
        assert ("Failed", "the parent failed") == (status, error)
        assert ALL_POINTS[:PART] == values

    def test_child_leaving_the_parents_with_block_does_not_end_the_run(
        self, workspace: Workspace, run_script: RunScript, start_collector: StartCollector
    ) -> None:
        start_collector(workspace)
        body = """
            import os, sys
            with run:
                if os.fork() == 0:
                    run.log("loss", 1.0)
                    sys.exit(0)  # SystemExit leaves the with block in the child
                os.wait()
                run.fail("the parent failed")
        """

        result = run_script(workspace, body)
        status, error, values = ended(workspace, result.run_id, "loss")

        assert result.returncode == 0, result.stderr
        assert ("Failed", "the parent failed") == (status, error)
        assert values == 1.0


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
class TestMultiprocessingProcess:
    """``multiprocessing.Process`` children (they leave through ``os._exit``) deliver all they log."""

    def test_children_points_arrive_once_and_the_parent_completes(
        self, method: str, workspace: Workspace, run_script: RunScript, start_collector: StartCollector, tmp_path: Path
    ) -> None:
        start_collector(workspace)
        script = LOG_PART + textwrap.dedent(f"""
            import multiprocessing
            if __name__ == "__main__":
                context = multiprocessing.get_context({method!r})
                children = [context.Process(target=log_part, args=(run, part)) for part in range(4)]
                for child in children:
                    child.start()
                for child in children:
                    child.join()
                print("exit codes", [child.exitcode for child in children])
                run.log("joined", 1)  # read back after this: the children's entries are before it
                print("status after the children:", run.get_status())
                run.complete()
        """)

        result = run_script(workspace, as_main(tmp_path, script))
        status, error, values = ended(workspace, result.run_id, "loss")

        assert result.returncode == 0, result.stderr
        assert "exit codes [0, 0, 0, 0]" in result.stdout
        assert "status after the children: Running" in result.stdout
        assert ("Completed", None) == (status, error)
        assert isinstance(values, list)
        assert ALL_POINTS == sorted(values)


@pytest.mark.parametrize("method", ["fork", "forkserver"])
class TestPool:
    """A ``multiprocessing.Pool`` ended by its ``with`` block (which terminates the workers)
    delivers what each task logged before it returned."""

    def test_every_task_points_arrive_once(
        self, method: str, workspace: Workspace, run_script: RunScript, start_collector: StartCollector, tmp_path: Path
    ) -> None:
        start_collector(workspace)
        script = LOG_PART + textwrap.dedent(f"""
            import multiprocessing
            if __name__ == "__main__":
                with multiprocessing.get_context({method!r}).Pool(2) as pool:
                    print("returned", pool.starmap(log_part, [(run, part) for part in range(4)]))
                run.complete()
        """)

        result = run_script(workspace, as_main(tmp_path, script))
        status, _, values = ended(workspace, result.run_id, "loss")

        assert result.returncode == 0, result.stderr
        assert "returned [0, 1, 2, 3]" in result.stdout
        assert status == "Completed"
        assert isinstance(values, list)
        assert ALL_POINTS == sorted(values)


class TestPoolImportingRunstreamLate:
    """The README's limit: a pool worker that first imports runstream inside a task (here,
    when the run argument is unpickled) cannot flush by itself; it says so, and a task
    that flushes before it returns delivers all."""

    def test_task_flushing_itself_delivers(
        self, workspace: Workspace, run_script: RunScript, start_collector: StartCollector, tmp_path: Path
    ) -> None:
        start_collector(workspace)
        script = textwrap.dedent(f"""
            import multiprocessing

            def log_part(run, part):
                for i in range(part * {PART}, (part + 1) * {PART}):
                    run.log("loss", float(i), step=i)
                run.flush()
                return part

            if __name__ == "__main__":
                with multiprocessing.get_context("forkserver").Pool(2) as pool:
                    print("returned", pool.starmap(log_part, [(run, part) for part in range(4)]))
                run.complete()
        """)

        result = run_script(workspace, as_main(tmp_path, script))
        status, _, values = ended(workspace, result.run_id, "loss")

        assert result.returncode == 0, result.stderr
        assert "pool_worker_not_flushed" in result.stderr
        assert status == "Completed"
        assert isinstance(values, list)
        assert ALL_POINTS == sorted(values)


class TestPickledOfflineRun:
    """An offline run sent to another process arrives as an offline run of that process."""

    def test_offline_run_pickles_to_a_new_offline_run(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("RUNSTREAM_RUN_ID", raising=False)
        run = Run.get_context()
        run.log("loss", 1.0)

        copy = pickle.loads(pickle.dumps(run))  # noqa: S301  # our own object, as multiprocessing sends it
        copy.log("loss", 2.0)

        assert isinstance(copy, OfflineRun)
        assert {"loss": 2.0} == copy.get_metrics()
        assert {"loss": 1.0} == run.get_metrics()
