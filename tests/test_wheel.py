"""The wheel (DESIGN §1): built from the repo, installed into a fresh venv, it imports as `runstream`.

The repo's files (tracked, or new and not ignored) are copied to a temporary folder
first, so the build neither reads stale output in ``build/`` nor writes into the
checkout.  The build is isolated: pip fetches the build backend from the index.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
METADATA = f"runstream-{VERSION}.dist-info"

# Runs in the fresh venv with -I (no cwd, PYTHONPATH or user site on sys.path): reports
# what got installed, so the assertions stay in the test.
PROBE = """
import importlib.metadata, importlib.resources, importlib.util, json, pathlib, sys, sysconfig
import runstream, runstream.collector, runstream.consumer

GENERIC = ("producer", "collector", "consumer")

files = importlib.metadata.distribution("runstream").files or []
print(json.dumps({
    "purelib": sysconfig.get_path("purelib"),
    "module_files": [sys.modules[name].__file__ for name in ("runstream", "runstream.collector", "runstream.consumer")],
    "exports": {name: hasattr(runstream, name) for name in ("Run", "Experiment", "Workspace")},
    "py_typed": importlib.resources.files("runstream").joinpath("py.typed").is_file(),
    "recorded": [str(path) for path in files],
    "top_level_specs": {name: importlib.util.find_spec(name) is not None for name in GENERIC},
    "site_packages": sorted(p.name for p in pathlib.Path(sysconfig.get_path("purelib")).iterdir()),
}))
"""


@dataclass(frozen=True, slots=True)
class Installed:
    """What the fresh venv reports after installing the wheel."""

    wheel: Path
    purelib: Path
    module_files: list[Path]
    exports: dict[str, bool]
    py_typed: bool
    recorded: list[str]
    top_level_specs: dict[str, bool]
    site_packages: list[str]


def run(args: list[str | Path], cwd: Path, timeout: float) -> str:
    """Run a command; fail the test with its output if it fails."""
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def copy_repo(destination: Path) -> Path:
    """Copy the files git knows of (tracked, or untracked and not ignored) to ``destination``."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT, timeout=30)
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel, install it into a new venv, and probe that venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = copy_repo(tmp / "src")
    run([sys.executable, "-m", "build", "--wheel", "--outdir", tmp / "dist", source], tmp, timeout=180)
    (wheel,) = (tmp / "dist").glob("runstream-*.whl")
    run([sys.executable, "-m", "venv", tmp / "venv"], tmp, timeout=120)
    python = tmp / "venv" / "bin" / "python"
    run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel], tmp, timeout=180)
    report = json.loads(run([python, "-I", "-c", PROBE], tmp, timeout=60))
    return Installed(
        wheel=wheel,
        purelib=Path(report["purelib"]),
        module_files=[Path(name) for name in report["module_files"]],
        exports=report["exports"],
        py_typed=report["py_typed"],
        recorded=report["recorded"],
        top_level_specs=report["top_level_specs"],
        site_packages=report["site_packages"],
    )


@pytest.mark.slow
class TestWheel:
    """A wheel built from the repo installs into a fresh venv as `runstream` and nothing else."""

    def test_imports_the_three_packages_from_the_venv(self, installed: Installed) -> None:
        expected = [
            installed.purelib / "runstream" / "__init__.py",
            installed.purelib / "runstream" / "collector" / "__init__.py",
            installed.purelib / "runstream" / "consumer" / "__init__.py",
        ]

        assert expected == installed.module_files

    def test_exports_the_public_api(self, installed: Installed) -> None:
        assert {"Run": True, "Experiment": True, "Workspace": True} == installed.exports

    def test_ships_py_typed(self, installed: Installed) -> None:
        assert installed.py_typed
        assert "runstream/py.typed" in installed.recorded

    def test_installs_no_generic_top_level_package(self, installed: Installed) -> None:
        generic = {"producer", "collector", "consumer"}

        assert {"producer": False, "collector": False, "consumer": False} == installed.top_level_specs
        assert set() == generic & set(installed.site_packages)

    def test_installs_only_runstream_and_its_metadata(self, installed: Installed) -> None:
        tops = {path.split("/")[0] for path in installed.recorded if not path.startswith("..")}

        assert {"runstream", METADATA} == tops

    def test_wheel_holds_only_runstream_and_its_metadata(self, installed: Installed) -> None:
        with zipfile.ZipFile(installed.wheel) as wheel:
            tops = {name.split("/")[0] for name in wheel.namelist()}

        assert {"runstream", METADATA} == tops
