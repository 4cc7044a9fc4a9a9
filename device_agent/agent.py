"""The agent, wired in one visible place.

    AgentClock ─┬─▶ ObdSource (ELM327: PID scheduler, DTCs, VIN, power policy) ─┐
                ├─▶ GpsSource (gpsd or NMEA; disciplines the clock)            ├─▶ Recorder ─▶ Outbox (SQLite WAL)
                └─▶ ReplaySource (a recorded drive, instead of the two above) ─┘                 │
                                                                                  Publisher ◀───┘ (deletes on PUBACK)
                                              RemoteConfig ◀── cmd/<device>/config (retained) ──┘

Each source runs in its own thread and knows nothing of batching or MQTT. The main loop closes
sample intervals on time; the publisher thread sends what is due; SIGTERM/SIGINT flush the open
interval to disk and give the publisher a few seconds to deliver before exiting. Nothing that was
recorded is lost at exit: what is not acknowledged stays in the outbox for the next start.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from vinsight import __version__
from vinsight.contract import AgentConfig, DeviceHealth, EventKind

from .clock import AgentClock
from .outbox import Outbox
from .publisher import Publisher, PublisherConfig
from .recorder import Recorder
from .remote_config import RemoteConfig
from .replay import ReplaySource
from .settings import AgentSettings

log = logging.getLogger(__name__)


class Source(Protocol):
    def run(self, stop: threading.Event) -> None: ...

    def status(self) -> dict[str, Any]: ...


class Agent:
    def __init__(self, settings: AgentSettings, *, replay_file: Path | None = None) -> None:
        self.settings = settings
        self.boot_id = uuid.uuid4()
        self.stop_event = threading.Event()
        self.clock = AgentClock(max_drift_s=settings.clock_max_drift_s, set_system_clock=settings.set_system_clock,
                                on_correction=self._clock_corrected)
        self.outbox = Outbox(Path(settings.state_dir) / "outbox.sqlite3", settings.outbox_max_bytes)
        self.recorder = Recorder(self.outbox, self.boot_id, self.clock.now_ms, settings.sample_interval_s)
        self.remote_config = RemoteConfig(self.outbox, self.apply_config, self.clock.now_ms)
        self.publisher = Publisher(
            PublisherConfig(
                device_id=settings.device_id, host=settings.mqtt_host, port=settings.mqtt_port,
                username=settings.mqtt_username, password=settings.mqtt_password, tls=settings.mqtt_tls,
                ca_file=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None,
                cert_file=str(settings.mqtt_cert_file) if settings.mqtt_cert_file else None,
                key_file=str(settings.mqtt_key_file) if settings.mqtt_key_file else None,
                keepalive_s=settings.mqtt_keepalive_s, json_payloads=settings.mqtt_json,
                batch_max_samples=settings.batch_max_samples, batch_max_age_s=settings.batch_max_age_s,
                agent_version=__version__, config_version=self.remote_config.version,
            ),
            self.outbox, self.boot_id, self.clock.now_ms, on_config=self.remote_config.handle,
            health=self.health, health_interval_s=settings.health_interval_s,
        )
        self.obd: Any = None
        self.gps: Any = None
        self.replay: ReplaySource | None = None
        replay_file = replay_file or settings.replay_file
        if replay_file is not None:
            self.replay = ReplaySource(Path(replay_file), self.recorder, speed=settings.replay_speed,
                                       clock_ms=self.clock.now_ms)
        else:
            if settings.obd_enabled:
                from .obd_source import ObdSource

                self.obd = ObdSource(settings, self.recorder, clock_ms=self.clock.now_ms)
            if settings.gps_mode != "none":
                from .gps import make_gps_source

                self.gps = make_gps_source(settings, self.recorder, self.clock)
        self.remote_config.restore()
        self._threads: list[threading.Thread] = []

    @property
    def sources(self) -> list[Source]:
        return [s for s in (self.obd, self.gps, self.replay) if s is not None]

    # --- configuration ------------------------------------------------------------------------------

    def apply_config(self, config: AgentConfig) -> None:
        """Apply a validated remote configuration to the running parts."""
        p = self.publisher.config
        if config.batch_max_samples is not None:
            p.batch_max_samples = config.batch_max_samples
        if config.batch_max_age_s is not None:
            p.batch_max_age_s = config.batch_max_age_s
        p.config_version = config.version
        if self.obd is not None:
            if config.signals:
                self.obd.apply_plan(config.signals)
            self.obd.set_power_limits(config.low_voltage_cutoff_v, config.heartbeat_interval_s)

    def _clock_corrected(self, offset_s: float) -> None:
        self.recorder.event(EventKind.CLOCK_SET, {"offset_s": round(offset_s, 3)})

    # --- status --------------------------------------------------------------------------------------------

    def health(self) -> DeviceHealth:
        obd = self.obd.status() if self.obd is not None else {}
        return DeviceHealth(
            ts_ms=self.clock.now_ms(), boot_id=self.boot_id,
            adapter=obd.get("adapter", self.replay.status() if self.replay else {}),
            rates_hz=obd.get("rates_hz", {}),
            outbox={**self.outbox.stats(), **self.publisher.status(), **self.recorder.status()},
            power=obd.get("power", {}),
            gps={**(self.gps.status() if self.gps is not None else {}), "clock": self.clock.status()},
        )

    # --- running -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.publisher.start()
        for name, target in [("publisher", self.publisher.run)] + [
            (type(s).__name__, s.run) for s in self.sources
        ]:
            t = threading.Thread(target=self._guard(target), name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("agent %s started (boot %s)", self.settings.device_id, self.boot_id)

    def _guard(self, target: Any) -> Any:
        def run() -> None:
            try:
                target(self.stop_event)
            except Exception:
                log.exception("%s stopped with an error", threading.current_thread().name)

        return run

    def run(self, *, exit_when_replayed: bool = False, drain_timeout_s: float = 30.0) -> None:
        """Run until stopped (or, for a replay, until the drive is delivered)."""
        self.start()
        try:
            while not self.stop_event.is_set():
                if self.replay is None:  # a replay closes intervals by its own timeline
                    self.recorder.flush_due()
                if exit_when_replayed and self.replay is not None and self.replay.finished.is_set():
                    self.recorder.flush()
                    deadline = time.monotonic() + drain_timeout_s
                    while len(self.outbox) and time.monotonic() < deadline and not self.stop_event.is_set():
                        time.sleep(0.1)
                    break
                self.stop_event.wait(0.1)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        self.stop_event.set()
        for t in self._threads:
            if t.name != "publisher":
                t.join(timeout=5)
        self.recorder.flush()
        for t in self._threads:
            t.join(timeout=5)
        self.publisher.stop(timeout_s=3.0)
        self.outbox.close()
        log.info("agent stopped; %d records wait in the outbox", self.outbox._count)
