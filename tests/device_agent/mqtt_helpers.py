"""Test helpers: a private Mosquitto that tests may stop and restart, and a decoding subscriber."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from vinsight.contract import codec, topics
from vinsight.embedded import MosquittoBroker


class PrivateBroker(MosquittoBroker):
    """A Mosquitto of the test's own (the system broker is shared: never restart that one)."""

    def __init__(self, work: Path, extra_conf: str = "") -> None:
        super().__init__(work, auth_conf=extra_conf or "allow_anonymous true")

    def start(self) -> PrivateBroker:  # type: ignore[override]
        super().start()
        return self


@dataclass
class Collector:
    """Subscribes to a device's data and status trees and decodes everything with the contract."""

    host: str
    port: int
    device_id: str
    samples: list[tuple[str, int, int, dict]] = field(default_factory=list)  # (boot, seq, ts, values)
    events: list[tuple[str, int, str, dict]] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    health: list = field(default_factory=list)
    acks: list[codec.ConfigAck] = field(default_factory=list)  # type: ignore[name-defined]
    content_types: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"collector-{self.device_id}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(
            [(f"vinsight/v1/data/{self.device_id}/#", 1), (f"vinsight/v1/status/{self.device_id}/#", 1)])

    def _on_message(self, _c, _u, m) -> None:
        ct = getattr(m.properties, "ContentType", None)
        try:
            parsed = topics.parse(m.topic)
            with self._lock:
                if parsed.kind == topics.SAMPLES:
                    self.content_types.add(ct)
                    batch = codec.decode_samples(m.payload, ct)
                    for s in batch.samples():
                        self.samples.append((str(batch.boot_id), s.seq, s.ts_ms, s.values))
                elif parsed.kind == topics.EVENTS:
                    batch = codec.decode_events(m.payload)
                    for e in batch.events:
                        self.events.append((str(batch.boot_id), e.seq, e.kind.value, e.data))
                elif parsed.kind == topics.HEALTH:
                    self.health.append(codec.decode_health(m.payload))
                elif parsed.kind == topics.STATE and m.payload:
                    self.states.append(codec.decode_state(m.payload).state.value)
                elif parsed.kind == topics.CONFIG and parsed.tree == topics.STATUS:
                    self.acks.append(codec.decode_config_ack(m.payload))
        except Exception as exc:  # a test must see decoding failures, not lose them
            self.errors.append(f"{m.topic}: {exc}")

    def start(self) -> Collector:
        """Persistent session: the broker queues what arrives while this subscriber is away."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect(self.host, self.port, clean_start=False, properties=props)
        self.client.loop_start()
        time.sleep(0.3)
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def unique_samples(self) -> dict[tuple[str, int], tuple[int, dict]]:
        with self._lock:
            return {(b, s): (ts, v) for b, s, ts, v in self.samples}

    def wait_for(self, predicate, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if predicate(self):
                    return True
            time.sleep(0.1)
        return False
