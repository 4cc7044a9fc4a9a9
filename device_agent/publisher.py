"""The MQTT publisher: outbox batches out, PUBACKs back, state and health beside them.

* Batches: oldest outbox records first, one boot and one kind per batch (a binary batch carries one
  boot id), sent when ``batch_max_samples`` are waiting or the oldest has waited ``batch_max_age_s``,
  and at once while a backlog drains. QoS 1, MQTT v5 content-type set from the contract.
* Nothing is deleted until the broker's PUBACK for that batch arrives with a success reason code.
  After a reconnect everything unacknowledged is sent again; the cloud de-duplicates on
  ``(device, boot, seq)``, so at-least-once delivery is safe.
* Presence: a retained ``online`` state on connect and a retained ``offline`` last will.
* Remote configuration arrives retained on the device's command topic and is passed to a handler;
  the handler's verdict is acknowledged on the status tree.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from vinsight.contract import (
    ConfigAck,
    ConnectionState,
    DeviceHealth,
    DeviceState,
    EventBatch,
    SampleBatch,
    codec,
    topics,
)

from .outbox import KIND_EVENT, KIND_SAMPLE, Outbox, OutboxRecord

log = logging.getLogger(__name__)


@dataclass
class PublisherConfig:
    device_id: str
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30
    json_payloads: bool = False
    batch_max_samples: int = 60
    batch_max_age_s: float = 30.0
    max_inflight_batches: int = 8
    agent_version: str = ""
    config_version: int = 0


@dataclass
class _InFlight:
    info: mqtt.MQTTMessageInfo
    ids: list[int]
    sent_at: float


@dataclass
class PublisherStats:
    batches_sent: int = 0
    batches_acked: int = 0
    records_acked: int = 0
    publish_failures: int = 0
    connects: int = 0
    disconnects: int = 0
    last_error: str = ""
    connected: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _publish_props(content_type: str) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = content_type
    return props


class Publisher:
    def __init__(self, config: PublisherConfig, outbox: Outbox, boot_id: uuid.UUID,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 on_config: Callable[[bytes], ConfigAck] | None = None,
                 health: Callable[[], DeviceHealth] | None = None, health_interval_s: float = 30.0) -> None:
        self.config = config
        self.outbox = outbox
        self.boot_id = boot_id
        self.clock_ms = clock_ms
        self.on_config = on_config
        self.health = health
        self.health_interval_s = health_interval_s
        self.stats = PublisherStats()
        # Batches on their way, in send order. Only the publishing thread touches this list; the
        # network thread reports through the MQTTMessageInfo handles and ``_refused`` (paho calls
        # on_publish under its own mutex, so the callback must never wait on a lock of ours).
        self._inflight: list[_InFlight] = []
        self._refused: dict[int, str] = {}
        self._wake = threading.Event()
        self._connected = threading.Event()
        self._reset_inflight = threading.Event()
        self.client = self._make_client()

    # --- connection -------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        c = self.config
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"agent-{c.device_id}",
                             protocol=mqtt.MQTTv5)
        if c.password is not None:
            client.username_pw_set(c.username or c.device_id, c.password)
        if c.tls or c.ca_file or c.cert_file:
            client.tls_set(ca_certs=c.ca_file, certfile=c.cert_file, keyfile=c.key_file,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        offline = DeviceState(ConnectionState.OFFLINE, 0, self.boot_id, c.agent_version, c.config_version)
        client.will_set(topics.state(c.device_id), codec.encode_state(offline), qos=1, retain=True,
                        properties=_publish_props(codec.CT_STATUS_JSON))
        client.max_inflight_messages_set(max(20, c.max_inflight_batches * 2))
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        c = self.config
        self.client.connect_async(c.host, c.port, keepalive=c.keepalive_s)
        self.client.loop_start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Flush what can be flushed within ``timeout_s``, then disconnect cleanly."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._connected.is_set() and (len(self.outbox) or self._inflight):
            self.publish_due(force=True)
            self._wake.wait(0.05)
            self._wake.clear()
        self._collect_acks()
        if self._connected.is_set():
            offline = DeviceState(ConnectionState.OFFLINE, self.clock_ms(), self.boot_id,
                                  self.config.agent_version, self.config.config_version)
            info = self.client.publish(topics.state(self.config.device_id), codec.encode_state(offline), qos=1,
                                       retain=True, properties=_publish_props(codec.CT_STATUS_JSON))
            info.wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any,
                    _props: Any) -> None:
        if reason_code.is_failure:
            self.stats.last_error = f"connect refused: {reason_code}"
            log.error("broker refused the connection: %s", reason_code)
            return
        self._reset_inflight.set()  # everything unacknowledged goes again
        self.stats.connects += 1
        self.stats.connected = True
        c = self.config
        online = DeviceState(ConnectionState.ONLINE, self.clock_ms(), self.boot_id, c.agent_version, c.config_version)
        client.publish(topics.state(c.device_id), codec.encode_state(online), qos=1, retain=True,
                       properties=_publish_props(codec.CT_STATUS_JSON))
        client.subscribe(topics.config_command(c.device_id), qos=1)
        self._connected.set()
        self._wake.set()
        log.info("connected to %s:%s", c.host, c.port)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any,
                       _props: Any) -> None:
        self._connected.clear()
        self.stats.connected = False
        self.stats.disconnects += 1
        log.warning("disconnected from the broker: %s", reason_code)

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            self._refused[mid] = str(reason_code)
        self._wake.set()

    def _collect_acks(self) -> None:
        """Move acknowledged batches out of the outbox (publishing thread only)."""
        if self._reset_inflight.is_set():
            self._reset_inflight.clear()
            self._inflight = []
            self._refused.clear()
            return
        still: list[_InFlight] = []
        for flight in self._inflight:
            if not flight.info.is_published():
                still.append(flight)
                continue
            refused = self._refused.pop(flight.info.mid, None)
            if refused is not None:
                # Kept: a refused batch is retried later rather than lost.
                self.stats.publish_failures += 1
                self.stats.last_error = f"publish refused: {refused}"
                log.error("broker refused a batch (%s); it stays in the outbox", refused)
                continue
            self.outbox.acknowledge(flight.ids)
            self.stats.batches_acked += 1
            self.stats.records_acked += len(flight.ids)
        self._inflight = still

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic != topics.config_command(self.config.device_id) or self.on_config is None:
            return
        if not message.payload:
            return  # a cleared retained command
        try:
            ack = self.on_config(message.payload)
        except Exception as exc:  # the handler must not kill the network thread
            log.exception("configuration handler failed")
            ack = ConfigAck(-1, "rejected", [f"internal error: {exc}"], self.clock_ms())
        client.publish(topics.config_ack(self.config.device_id), codec.encode_config_ack(ack), qos=1,
                       properties=_publish_props(codec.CT_CONFIG_JSON))

    # --- batching -------------------------------------------------------------------------------------

    def publish_due(self, force: bool = False) -> int:
        """Send every batch that is due now; return how many were sent."""
        if not self._connected.is_set():
            return 0
        self._collect_acks()
        sent = 0
        c = self.config
        while len(self._inflight) < c.max_inflight_batches:
            busy = {i for f in self._inflight for i in f.ids}
            records = self.outbox.pending(c.batch_max_samples, busy)
            if not records:
                break
            group = self._first_group(records)
            backlog = len(self.outbox) - len(busy) > c.batch_max_samples
            age_s = time.time() - group[0].created_ms / 1000
            if not (force or backlog or len(group) >= c.batch_max_samples or age_s >= c.batch_max_age_s
                    or group[0].kind == KIND_EVENT):
                break
            if not self._send(group):
                break
            sent += 1
        return sent

    @staticmethod
    def _first_group(records: list[OutboxRecord]) -> list[OutboxRecord]:
        first = records[0]
        group = [first]
        for r in records[1:]:
            if r.kind != first.kind or r.boot_id != first.boot_id:
                break
            group.append(r)
        return group

    def _send(self, group: list[OutboxRecord]) -> bool:
        c = self.config
        first = group[0]
        if first.kind == KIND_SAMPLE:
            batch = SampleBatch.from_samples(c.device_id, first.boot_id, [r.as_sample() for r in group])
            ct = codec.CT_SAMPLES_JSON if c.json_payloads else codec.CT_SAMPLES_BINARY
            payload = codec.encode_samples(batch, ct)
            topic = topics.samples(c.device_id)
        else:
            payload = codec.encode_events(EventBatch(c.device_id, first.boot_id, [r.as_event() for r in group]))
            ct, topic = codec.CT_EVENTS_JSON, topics.events(c.device_id)
        info = self.client.publish(topic, payload, qos=1, properties=_publish_props(ct))
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.stats.last_error = f"publish failed: {mqtt.error_string(info.rc)}"
            return False
        self._inflight.append(_InFlight(info, [r.id for r in group], time.monotonic()))
        self.stats.batches_sent += 1
        self.stats.extra["last_batch_bytes"] = len(payload)
        return True

    def publish_health(self) -> None:
        if self.health is None or not self._connected.is_set():
            return
        payload = codec.encode_health(self.health())
        self.client.publish(topics.health(self.config.device_id), payload, qos=0,
                            properties=_publish_props(codec.CT_STATUS_JSON))

    def run(self, stop: threading.Event) -> None:
        """Publishing loop: wakes on PUBACKs, new connections, or every 200 ms."""
        next_health = time.monotonic() + min(5.0, self.health_interval_s)
        while not stop.is_set():
            try:
                self.publish_due()
                if time.monotonic() >= next_health:
                    self.publish_health()
                    next_health = time.monotonic() + self.health_interval_s
            except Exception:  # keep publishing whatever one batch did
                log.exception("publishing loop error")
            self._wake.wait(0.2)
            self._wake.clear()

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {"connected": s.connected, "batches_sent": s.batches_sent, "batches_acked": s.batches_acked,
                "records_acked": s.records_acked, "inflight_batches": len(self._inflight),
                "connects": s.connects, "disconnects": s.disconnects, "publish_failures": s.publish_failures,
                "last_error": s.last_error}
