"""Helpers for ingest tests: deterministic batches, a QoS 1 publisher that waits for every PUBACK,
a worker running in a thread, and the database-side count and checksum of what was stored."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.settings import IngestSettings
from ingest.worker import IngestWorker
from vinsight.contract import SampleBatch, codec, topics
from vinsight.contract.messages import Sample


def make_samples(start_seq: int, n: int, t0_ms: int) -> list[Sample]:
    """Samples whose values follow from seq: integer speed, rpm in quarter steps (exact in float4)."""
    out = []
    for seq in range(start_seq, start_seq + n):
        out.append(Sample(seq, t0_ms + seq * 1000, {
            "speed": float(seq % 120), "rpm": 800 + (seq % 400) * 7.25, "coolant_temp": 85.0,
            "latitude": 45.07 + seq * 1e-5, "longitude": 7.69 + seq * 1e-5,
        }))
    return out


def make_batches(device_id: str, batches: int, size: int, t0_ms: int | None = None,
                 boot_id: uuid.UUID | None = None) -> list[SampleBatch]:
    boot_id = boot_id or uuid.uuid4()
    t0 = t0_ms if t0_ms is not None else int(time.time() * 1000) - batches * size * 1000
    return [SampleBatch.from_samples(device_id, boot_id, make_samples(i * size, size, t0)) for i in range(batches)]


def expected_checksum(batches: Iterable[SampleBatch]) -> tuple[int, str]:
    parts = []
    for b in batches:
        for s in b.samples():
            parts.append((b.device_id, str(b.boot_id), s.seq, int(s.values["speed"]), int(s.values["rpm"] * 4)))
    parts.sort()
    text = ",".join(f"{d}:{s}:{v}:{r}" for d, _b, s, v, r in parts)
    return len(parts), hashlib.md5(text.encode()).hexdigest()


def stored_checksum(db_url: str, device_prefix: str) -> tuple[int, str]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(*), md5(coalesce(string_agg(format('%%s:%%s:%%s:%%s', d.device_id, s.seq, s.speed::int,"
            " (s.rpm * 4)::int), ',' ORDER BY d.device_id, s.boot_id::text, s.seq), ''))"
            " FROM samples s JOIN devices d USING (device_key) WHERE d.device_id LIKE %s",
            (device_prefix + "%",),
        ).fetchone()
    assert row is not None
    return int(row[0]), row[1]


def props(content_type: str | None, sent_ms: int | None = None) -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    if content_type is not None:
        p.ContentType = content_type
    if sent_ms is not None:
        p.UserProperty = ("sent_ms", str(sent_ms))
    return p


@dataclass
class ReliablePublisher:
    """QoS 1 publisher that re-sends anything not acknowledged (as the device agent's outbox does),
    so broker restarts in fault tests lose nothing on the publishing side."""

    host: str
    port: int
    client_id: str

    def __post_init__(self) -> None:
        self._infos: list[tuple[mqtt.MQTTMessageInfo, tuple[str, bytes, str]]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 30)  # as the device agent's publisher
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)

    def publish(self, topic: str, payload: bytes, content_type: str | None) -> None:
        item = (topic, payload, content_type)
        info = self.client.publish(topic, payload, qos=1, properties=props(content_type, int(time.time() * 1000)))
        self._infos.append((info, item))

    def publish_batches(self, batches: Iterable[SampleBatch]) -> None:
        for b in batches:
            self.publish(topics.samples(b.device_id), codec.encode_samples_binary(b), codec.CT_SAMPLES_BINARY)

    def settle(self, timeout_s: float = 60.0) -> None:
        """Wait until every message is acknowledged. paho re-sends unacknowledged QoS 1 messages
        after a reconnect (also across a broker restart), so waiting is enough."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(_acked(i) for i, _ in self._infos):
                return
            time.sleep(0.1)
        missing = sum(1 for i, _ in self._infos if not _acked(i))
        raise AssertionError(f"{missing} messages never acknowledged")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _acked(info: mqtt.MQTTMessageInfo) -> bool:
    # is_published() raises for a message first queued while disconnected, even after paho sent it
    # on reconnect and the broker acknowledged it; the flag itself is the truth.
    return bool(info._published)


class ThreadedWorker:
    """An ingest worker in a thread of the test process."""

    def __init__(self, settings: IngestSettings, index: int = 0) -> None:
        self.worker = IngestWorker(settings, index)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop_event,), daemon=True)

    def __enter__(self) -> IngestWorker:
        self.thread.start()
        assert self.worker.wait_connected(120), "worker did not subscribe (kernels compile on a fresh checkout)"
        return self.worker

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "worker did not stop"


def wait_for(predicate: Callable[[], bool], timeout_s: float = 30.0, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def worker_settings(db_url: str, host: str, port: int, group: str, **overrides: object) -> IngestSettings:
    values: dict[str, object] = {"db_url": db_url, "mqtt_host": host, "mqtt_port": port, "share_group": group,
                                 "client_id_prefix": f"ingest-{group}", "metrics_port": 0, "session_expiry_s": 120}
    values.update(overrides)
    return IngestSettings(**values)
