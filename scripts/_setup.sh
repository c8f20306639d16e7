# Sourced by test.sh and demo.sh: installs redis-server where missing and makes the venv (.venv).
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# Tests and `runstream up` start their own redis-server processes; only the binary is needed.
command -v redis-server >/dev/null || apt_install redis-server
# redis-cli joins the nodes of the tests' Redis Clusters (redis-tools, which redis-server pulls in).
command -v redis-cli >/dev/null || apt_install redis-tools

python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv 2>/dev/null || { apt_install python3-venv && "$python" -m venv .venv; }
fi
.venv/bin/python -m pip install -q --upgrade pip
