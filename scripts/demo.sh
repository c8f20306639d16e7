#!/usr/bin/env bash
# The demo command: installs what it needs (redis-server, a venv, runstream with its server),
# then runs `runstream demo`: a training sweep logged live, its run page's URL and a summary.
# The stack it starts keeps running for the page; `.venv/bin/runstream down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/_setup.sh
.venv/bin/python -m pip install -q -e '.[server]' --config-settings editable_mode=strict

.venv/bin/runstream demo "$@"
echo "the stack keeps running for the page: stop it with .venv/bin/runstream down"
