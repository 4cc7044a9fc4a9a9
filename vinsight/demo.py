"""The demo's process supervisor: a private broker, a fleet of agents, and a console that decodes.

Each agent runs as its own ``vinsight agent`` process, exactly as on a car: several replay real
recorded drives, and one reads an emulated car (the ELM327-emulator, in its own process, with a
trouble code set) through python-obd. The console subscribes to the whole fleet, decodes every
message with the wire contract, and prints what arrived: samples per vehicle, the latest speed,
trouble codes, engine and connection states.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .embedded import MosquittoBroker, free_port, wait_for_port

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
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


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
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-console", protocol=mqtt.MQTTv5)
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

    def report(self) -> str:
        with self._lock:
            rows = [f"{dev}: {n} samples, {self.state.get(dev, '?')}"
                    + (f", {self.speed[dev]:.0f} km/h" if dev in self.speed else "")
                    for dev, n in sorted(self.samples.items())]
            new_events, self.events = self.events, []
        return "\n".join(["  " + r for r in rows] + ["  event " + e for e in new_events])

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Demo:
    home: Path
    replays: int = 3
    replay_speed: float = 10.0
    emulator: bool = True
    children: list[Child] = field(default_factory=list)
    console: FleetConsole | None = None
    _broker: MosquittoBroker | None = None
    _started: float = 0.0

    def _vinsight(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "vinsight.cli", "--log-json", *args]

    def _agent_env(self, device: str, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"VINSIGHT_AGENT_DEVICE_ID": device, "VINSIGHT_AGENT_STATE_DIR": str(self.home / "agents" / device),
                    "VINSIGHT_AGENT_MQTT_HOST": "127.0.0.1", "VINSIGHT_AGENT_MQTT_PORT": str(self._broker.port),
                    "VINSIGHT_AGENT_BATCH_MAX_AGE_S": "2", "VINSIGHT_AGENT_GPS_MODE": "none"})
        env.update(extra)
        return env

    def start(self) -> None:
        self._started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        logs = self.home / "logs"
        self._broker = MosquittoBroker(self.home / "mqtt")
        port = self._broker.start()
        print(f"demo: Mosquitto (MQTT v5) on 127.0.0.1:{port}, persistence in {self.home / 'mqtt'}")
        self.console = FleetConsole(port)
        self.console.start()
        available = recorded_drives()
        # More agents than recordings: they share drives (each agent is still its own car and boot).
        drives = [available[i % len(available)] for i in range(self.replays)] if available else []
        for i, drive in enumerate(drives):
            device = f"demo-replay-{i + 1}"
            self.children.append(Child(device, self._vinsight("agent", "replay", str(drive), "--speed",
                                                              str(self.replay_speed)),
                                       self._agent_env(device), logs / f"{device}.log"))
        if self.emulator:
            car_port = free_port()
            car = Child("emulated-car", [sys.executable, "-c", EMULATED_CAR.format(port=car_port)], dict(os.environ),
                        logs / "emulated-car.log")
            car.start()
            wait_for_port("127.0.0.1", car_port, 20)
            self.children.append(car)
            self.children.append(Child("demo-car-1", self._vinsight("agent", "run"), self._agent_env(
                "demo-car-1", VINSIGHT_AGENT_OBD_PORT=f"socket://127.0.0.1:{car_port}",
                VINSIGHT_AGENT_OBD_BAUDRATE="38400", VINSIGHT_AGENT_HEALTH_INTERVAL_S="10"),
                logs / "demo-car-1.log"))
        for child in self.children:
            if child.proc is None:
                print(f"demo: starting {child.name} (log: {child.log})")
                child.start()
        print(f"demo: {len(drives)} agents replay real drives at {self.replay_speed}x; "
              f"{'one agent reads an emulated car with trouble codes P0301/P0171' if self.emulator else ''}")

    def report_progress(self) -> None:
        elapsed = time.monotonic() - self._started
        failed = [c.name for c in self.children if c.proc is not None and c.proc.poll() not in (None, 0)]
        print(f"demo: {elapsed:5.0f} s" + (f"  (exited with an error: {', '.join(failed)})" if failed else ""))
        if self.console is not None:
            text = self.console.report()
            if text:
                print(text, flush=True)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        if self.console is not None:
            time.sleep(0.5)
            self.console.stop()
        if self._broker:
            self._broker.stop()
        print("demo: stopped; agents' outboxes and the broker's persistence are kept in", self.home)
