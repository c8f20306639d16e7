"""Submitted scripts: ScriptRunConfig + exp.submit, captured output, outputs, failures, cancel."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from runstream import Environment, Experiment, Run, ScriptRunConfig, Workspace
from runstream.consumer.cli import main
from runstream.consumer.wait import RunFailedError
from runstream.submit import SnapshotTooLargeError, snapshot
from tests.conftest import CollectorThread, wait_until

MYLIB = """
def get_alphas():
    return [round(0.05 * i, 2) for i in range(20)]


def mse_for(alpha):
    # a ridge-like toy: error grows with the penalty
    return round(2500.0 + 120.0 * alpha ** 2, 4)
"""

TRAIN = """
import os
import pickle

import mylib
from runstream import Run

run = Run.get_context()
os.makedirs("outputs", exist_ok=True)
for alpha in mylib.get_alphas():
    mse = mylib.mse_for(alpha)
    run.log("alpha", alpha)
    run.log("mse", mse)
    with open(f"outputs/model_alpha_{alpha}.pkl", "wb") as file:
        pickle.dump({"alpha": alpha}, file)
    print(f"alpha is {alpha:.2f}, and mse is {mse:.2f}")
"""


@pytest.fixture
def collected(experiment: Experiment, start_collector: Callable[..., CollectorThread]) -> Experiment:
    start_collector(experiment.workspace)
    return experiment


def source(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


class TestAlphaSweep:
    """The original documentation's example: 20 alphas, logged, printed, saved."""

    @pytest.mark.slow
    def test_submit_and_wait(self, collected: Experiment, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        folder = source(tmp_path, {"mylib.py": MYLIB, "train.py": TRAIN})
        config = ScriptRunConfig(
            source_directory=folder, script="train.py", environment=Environment("user-managed-env")
        )

        run = collected.submit(config)
        details = run.wait_for_completion(show_output=True, timeout=120)

        alphas = [round(0.05 * i, 2) for i in range(20)]
        printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("alpha is")]
        metrics = run.get_metrics()
        files = run.get_file_names()
        assert "Completed" == details["status"]
        assert [f"alpha is {a:.2f}, and mse is {2500.0 + 120.0 * a**2:.2f}" for a in alphas] == printed
        assert alphas == metrics["alpha"]
        assert 20 == len(metrics["mse"])  # type: ignore[arg-type]
        assert {f"outputs/model_alpha_{a}.pkl" for a in alphas} <= set(files)
        assert "snapshot.zip" in files
        assert "0" == run.get_properties()["exit_code"]


class TestFailures:
    """A script that raises fails its run with the traceback's last line."""

    @pytest.mark.slow
    def test_raising_script(self, collected: Experiment, tmp_path: Path) -> None:
        folder = source(tmp_path, {"train.py": "print('starting')\nraise ValueError('diverged at step 7')\n"})

        run = collected.submit(ScriptRunConfig(folder, "train.py"))
        with pytest.raises(RunFailedError, match="ValueError: diverged at step 7"):
            run.wait_for_completion(timeout=120)

        assert "Failed" == run.get_status()
        assert "ValueError: diverged at step 7" == run.get_details()["error"]

    def test_missing_script(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="no script"):
            ScriptRunConfig(tmp_path, "absent.py")


class TestCancel:
    """Canceling a submitted run stops its script."""

    @pytest.mark.slow
    def test_cancel_mid_run(self, collected: Experiment, tmp_path: Path) -> None:
        script = (
            "import os, time\nfrom runstream import Run\nRun.get_context()\n"
            "open('pid', 'w').write(str(os.getpid()))\nprint('up')\ntime.sleep(120)\n"
        )
        folder = source(tmp_path, {"train.py": script})
        run = collected.submit(ScriptRunConfig(folder, "train.py"))
        pid_file = collected.workspace.settings.data_dir / "runs" / run.id / "work" / "pid"
        wait_until(pid_file.exists, 60, "the script to start")
        pid = int(pid_file.read_text())
        # No flush in the script: the SDK flushes a submitted script's output while it runs.
        wait_until(lambda: "up" in _output(collected, run.id), 30, "the script's output, live")

        Run(collected, run.id).cancel()

        wait_until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 20, "the script to be stopped")
        assert "Canceled" == run.get_status()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


class TestSnapshot:
    """The snapshot honours ignore patterns and the size limit."""

    def test_ignores_and_limit(self, tmp_path: Path) -> None:
        folder = source(tmp_path, {"train.py": "pass\n", "data.csv": "x" * 1000, ".runstreamignore": "*.csv\n"})
        (folder / "outputs").mkdir()
        (folder / "outputs" / "old.pkl").write_text("old")

        import io
        import zipfile

        names = zipfile.ZipFile(io.BytesIO(snapshot(folder))).namelist()

        assert [".runstreamignore", "train.py"] == sorted(names)
        with pytest.raises(SnapshotTooLargeError, match="runstreamignore"):
            snapshot(folder, limit=3)
        assert os.path.exists(folder / "data.csv")


class TestSubmitCommand:
    """``runstream submit SCRIPT ARGS --experiment NAME --wait`` runs it and exits as the run ended."""

    @pytest.mark.slow
    def test_submit_and_wait(self, collected: Experiment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        folder = source(tmp_path, {"train.py": "import sys\nprint('args', sys.argv[1:])\n"})
        settings = collected.workspace.settings
        monkeypatch.setenv("RUNSTREAM_REDIS_URL", settings.redis_url)
        monkeypatch.setenv("RUNSTREAM_WORKSPACE", settings.workspace)
        monkeypatch.setenv("RUNSTREAM_DATA_DIR", str(settings.data_dir))

        result = CliRunner().invoke(
            main, ["submit", "train.py", "--lr", "0.1", "--experiment", "tests", "--source", str(folder), "--wait"]
        )

        assert 0 == result.exit_code, result.output
        assert "args ['--lr', '0.1']" in result.output


def _output(experiment: Experiment, run_id: str) -> list[str]:
    client = redis.Redis.from_url(experiment.workspace.settings.redis_url)
    try:
        entries = client.xrange(experiment.workspace.keys.output(run_id))
    finally:
        client.close()
    return [line for _, fields in entries for line in fields[b"l"].decode().split("\n")]  # type: ignore[union-attr,index]


class TestTheScriptsWorkspace:
    """A submitted script logs to the submitter's workspace as configured: its server, its store."""

    @pytest.mark.slow
    def test_portal_url_and_one_context(self, collected: Experiment, tmp_path: Path) -> None:
        settings = dataclasses.replace(collected.workspace.settings, server_url="http://tracker.example:8080/")
        experiment = Experiment(Workspace.from_settings(settings), collected.name)
        script = """
            from runstream import Run
            run = Run.get_context()
            run.tag("url", run.get_portal_url())
            run.tag("same", str(Run.get_context() is run))
        """
        folder = source(tmp_path, {"train.py": script})

        run = experiment.submit(ScriptRunConfig(folder, "train.py"))
        run.wait_for_completion(timeout=120)

        tags = run.get_tags()
        assert f"http://tracker.example:8080/runs/{run.id}" == tags["url"]
        assert "True" == tags["same"]
