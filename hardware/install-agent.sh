#!/usr/bin/env bash
# Install the VINsight agent on a Raspberry Pi (Raspberry Pi OS Lite 64-bit, Bookworm or newer).
# Run as root from a checkout or an unpacked release:  sudo bash hardware/install-agent.sh
# Idempotent: running it again upgrades the package and keeps /etc/vinsight/agent.env.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "run as root (sudo)" >&2; exit 1; }

apt-get update -qq
# gpsd for the GNSS receiver, bluez for Bluetooth adapters, python3-venv for an isolated install.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv gpsd gpsd-clients bluez >/dev/null

id vinsight >/dev/null 2>&1 || useradd --system --home-dir /var/lib/vinsight-agent --shell /usr/sbin/nologin vinsight
usermod -a -G dialout vinsight

install -d -m 0755 /opt/vinsight
python3 -m venv /opt/vinsight/venv
/opt/vinsight/venv/bin/pip install -q --upgrade pip
# Only the device extra: python-obd, paho-mqtt, pyserial. No numpy/numba/geopandas on the car.
/opt/vinsight/venv/bin/pip install -q "$src[device]"
install -d -m 0755 /opt/vinsight/hardware
install -m 0644 "$here/README.md" /opt/vinsight/hardware/README.md

install -d -m 0750 -g vinsight /etc/vinsight
if [ ! -f /etc/vinsight/agent.env ]; then
  install -m 0640 -g vinsight "$here/agent.env.example" /etc/vinsight/agent.env
  echo "edit /etc/vinsight/agent.env (device id, broker, password from 'vinsight device add')"
fi
install -m 0644 "$here/udev/99-vinsight.rules" /etc/udev/rules.d/99-vinsight.rules
udevadm control --reload-rules && udevadm trigger --subsystem-match=tty || true
install -m 0644 "$here/systemd/vinsight-agent.service" /etc/systemd/system/vinsight-agent.service
systemctl daemon-reload
systemctl enable vinsight-agent.service
echo "installed; start with: systemctl start vinsight-agent && journalctl -fu vinsight-agent"
