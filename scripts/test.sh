#!/usr/bin/env bash
# The test command: installs what it needs (redis-server, chromium, a venv, the project with its
# dev extras), then runs ruff, mypy and pytest with coverage. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# Tests start their own redis-server processes; only the binary is needed.
command -v redis-server >/dev/null || apt_install redis-server
# The browser test drives Debian's chromium through playwright (no browser download).
[ -x /usr/bin/chromium ] || apt_install chromium

python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv 2>/dev/null || { apt_install python3-venv && "$python" -m venv .venv; }
fi
.venv/bin/python -m pip install -q --upgrade pip
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
