#!/usr/bin/env bash
# Make sure the real services the tests talk to are installed and running on this machine:
# PostgreSQL on 127.0.0.1:5432 (trust auth for local tests), Mosquitto on 127.0.0.1:1883, the
# gpsd tools (gpsfake) the GPS tests replay NMEA logs through, and Debian's Chromium that the web
# portal tests drive headless through Playwright (never a downloaded browser). Safe to run again:
# it only installs what is missing and only starts what is not listening.
set -euo pipefail

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
command -v gpsfake >/dev/null 2>&1 || missing+=(gpsd gpsd-clients)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "services: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# gpsd from Debian starts a system daemon on install; the tests run their own through gpsfake.

if ! listening 5432; then
  version=$(ls /etc/postgresql | sort -n | tail -1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  if ! grep -q '^# vinsight-ci' "$hba"; then
    echo "services: PostgreSQL $version: trust auth on loopback for the local test cluster"
    as_root sh -c "printf '# vinsight-ci\nlocal all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' | cat - '$hba' > '$hba.new' && mv '$hba.new' '$hba'"
  fi
  echo "services: starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
for _ in $(seq 1 30); do listening 5432 && break; sleep 1; done
listening 5432 || { echo "services: PostgreSQL did not come up on 5432" >&2; exit 1; }

if ! listening 1883; then
  echo "services: starting Mosquitto"
  as_root mosquitto -d -c /etc/mosquitto/mosquitto.conf
fi
for _ in $(seq 1 30); do listening 1883 && break; sleep 1; done
listening 1883 || { echo "services: Mosquitto did not come up on 1883" >&2; exit 1; }
echo "services: PostgreSQL 127.0.0.1:5432 and Mosquitto 127.0.0.1:1883 are up"
