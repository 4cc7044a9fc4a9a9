#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing (Mosquitto from the OS packages, the
# project with every extra in .venv), then run `vinsight demo` until Ctrl-C.
# Extra arguments go to `vinsight demo` (e.g. --duration 60, --reset, --replays 5).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "demo: installing Mosquitto (MQTT v5 broker) from the OS packages"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[all]'
exec .venv/bin/vinsight demo "$@"
