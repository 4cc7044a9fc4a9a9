"""The demo's process supervisor: embedded services, then every room as its own process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .embedded import EmbeddedPostgres, MosquittoBroker, free_port

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("VINSIGHT_SHARED_DATA", REPO.parent / "shared" / "data"))
FIXTURE_DRIVES = REPO / "tests" / "fixtures" / "polidriving"


def recorded_drives() -> list[Path]:
    """Real recorded drives to replay: the shared POLIDriving sessions, else the shipped excerpt."""
    found = sorted(SHARED_DATA.glob("polidriving/*/*/*_col.csv.gz"))
    return found or sorted(FIXTURE_DRIVES.glob("*.csv*"))


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@dataclass
class Demo:
    home: Path
    replays: int = 3
    simulated: int = 6
    replay_speed: float = 10.0
    emulator: bool = True
    db_url: str = ""
    children: list[Child] = field(default_factory=list)
    _pg: EmbeddedPostgres | None = None
    _broker: MosquittoBroker | None = None
    _started: float = 0.0

    def _vinsight(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "vinsight.cli", *args]

    def _env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "VINSIGHT_DB_URL": self.db_url,
            "VINSIGHT_MQTT_HOST": "127.0.0.1",
            "VINSIGHT_MQTT_PORT": str(self._broker.port if self._broker else 1883),
            "VINSIGHT_AUTO_REGISTER_DEVICES": "true",
            "VINSIGHT_AGENT_MQTT_HOST": "127.0.0.1",
            "VINSIGHT_AGENT_MQTT_PORT": str(self._broker.port if self._broker else 1883),
        })
        env.update(extra)
        return env

    def start(self) -> None:
        self._started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        if os.environ.get("VINSIGHT_DB_URL"):
            self.db_url = os.environ["VINSIGHT_DB_URL"]
            print("demo: PostgreSQL from VINSIGHT_DB_URL")
        else:
            self._pg = EmbeddedPostgres(self.home / "pg")
            self.db_url = self._pg.start()
            print(f"demo: embedded PostgreSQL at {self.home / 'pg'}")
        self._broker = MosquittoBroker(self.home / "mqtt")
        port = self._broker.start()
        print(f"demo: Mosquitto on 127.0.0.1:{port}")
        print("demo: applying migrations")
        subprocess.run(self._vinsight("db", "migrate"), env=self._env(), check=True)
        logs = self.home / "logs"
        metrics_port = free_port(9108)
        self.children.append(Child("ingest", self._vinsight("ingest", "run"),
                                   self._env(VINSIGHT_METRICS_PORT=str(metrics_port)), logs / "ingest.log"))
        for i, drive in enumerate(recorded_drives()[: self.replays]):
            device = f"demo-replay-{i + 1}"
            env = self._env(VINSIGHT_AGENT_DEVICE_ID=device,
                            VINSIGHT_AGENT_STATE_DIR=str(self.home / "agents" / device))
            self.children.append(Child(device, self._vinsight("agent", "replay", str(drive), "--speed",
                                                              str(self.replay_speed)), env, logs / f"{device}.log"))
        if self.simulated:
            self.children.append(Child("simulator", self._vinsight(
                "simulate", "--vehicles", str(self.simulated), "--rate", "1", "--realtime",
                "--device-prefix", "demo-sim"), self._env(), logs / "simulator.log"))
        self.children.append(Child("analytics", self._vinsight("analytics", "run", "--interval", "20"),
                                   self._env(), logs / "analytics.log"))
        for child in self.children:
            print(f"demo: starting {child.name} (log: {child.log})")
            child.start()
        print(f"demo: ingest metrics on http://127.0.0.1:{metrics_port}/metrics")

    def report_progress(self) -> None:
        import psycopg

        counts: dict[str, int] = {}
        try:
            with psycopg.connect(self.db_url, connect_timeout=3) as conn:
                for table in ("samples", "device_events", "dead_letters", "trips", "trip_events"):
                    with contextlib.suppress(psycopg.Error):
                        counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                    conn.rollback()
        except psycopg.Error as exc:
            print(f"demo: database not reachable: {exc}")
            return
        dead = [c.name for c in self.children if c.proc is not None and c.proc.poll() not in (None, 0)]
        elapsed = time.monotonic() - self._started
        print(f"demo: {elapsed:6.0f} s  " + "  ".join(f"{k}={v}" for k, v in counts.items())
              + (f"  exited with error: {', '.join(dead)}" if dead else ""), flush=True)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        if self._broker:
            self._broker.stop()
        if self._pg:
            self._pg.stop()
        print("demo: stopped")
