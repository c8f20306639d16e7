#!/usr/bin/env bash
# The demo command: installs what it needs (redis-server, a venv, runstream with its server),
# then runs `runstream demo`: a training sweep logged live, its run page's URL and a summary.
# The stack it starts keeps running for the page; `.venv/bin/runstream down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

command -v redis-server >/dev/null || apt_install redis-server

python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv 2>/dev/null || { apt_install python3-venv && "$python" -m venv .venv; }
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[server]' --config-settings editable_mode=strict

.venv/bin/runstream demo "$@"
echo "the stack keeps running for the page: stop it with .venv/bin/runstream down"
