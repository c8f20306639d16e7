#!/usr/bin/env bash
# The test command: installs what it needs (redis-server, chromium, a venv, the project with its
# dev extras), then runs ruff, mypy and pytest with coverage. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/_setup.sh
# The browser test drives Debian's chromium through playwright (no browser download).
[ -x /usr/bin/chromium ] || apt_install chromium
# strict: a tree of links that mypy can read (producer/ is the package `runstream`)
.venv/bin/python -m pip install -q -e '.[dev]' --config-settings editable_mode=strict

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
MYPYPATH=$(ls -d build/__editable__.runstream-*/) .venv/bin/mypy -p runstream
MYPYPATH=$(ls -d build/__editable__.runstream-*/) .venv/bin/mypy tests bench
echo "== pytest"
.venv/bin/python -m pytest --cov --cov-report=term "$@"
