"""Test helpers: a private Mosquitto that tests may stop and restart, and a decoding subscriber."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from vinsight.contract import codec, topics
from vinsight.embedded import free_port, wait_for_port


class PrivateBroker:
    """A Mosquitto of the test's own on a free port (the system broker is shared; never restart it)."""

    def __init__(self, work: Path, extra_conf: str = "", port: int | None = None) -> None:
        self.work = work
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen | None = None
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.exe = exe

    def start(self) -> PrivateBroker:
        self.work.mkdir(parents=True, exist_ok=True)
        conf = self.work / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\npersistence true\npersistence_location {self.work}/\n"
            f"max_queued_messages 0\n{self.extra_conf or 'allow_anonymous true'}\n"
            # Started as root, Mosquitto would drop to its own user and lose access to the test's files.
            + (f"user {pwd.getpwuid(os.geteuid()).pw_name}\n" if os.geteuid() == 0 else "")
        )
        self.proc = subprocess.Popen([self.exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.work / "log.txt", "ab"))  # noqa: SIM115
        wait_for_port("127.0.0.1", self.port, 10)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@dataclass
class Collector:
    """Subscribes to a device's data and status trees and decodes everything with the contract."""

    host: str
    port: int
    device_id: str
    samples: list[tuple[str, int, int, dict]] = field(default_factory=list)  # (boot, seq, ts, values)
    events: list[tuple[str, int, str, dict]] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
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
