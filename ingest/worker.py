"""An ingest worker: MQTT v5 shared subscription in, PostgreSQL out, acknowledged after commit.

Three threads, each with one job:

* paho's network thread receives messages and only queues them (it must stay responsive for
  keep-alives and acknowledgements);
* the processing thread runs each message through :mod:`ingest.pipeline` and gathers the results
  into a :class:`~ingest.store.Flush` until it holds ``flush_rows`` samples or is ``flush_age_s`` old;
* the writer thread commits a flush (:mod:`ingest.store`) and only then acknowledges its messages
  (paho ``manual_ack``). While it writes, the next flush fills, so decoding and writing overlap.

Nothing is acknowledged before it is committed, so a crash (kill -9, power loss) at any point leaves
the messages unacknowledged in the worker's persistent broker session, and the broker sends them
again when the worker reconnects with the same client id; the unique keys make the second write a
no-op. Backpressure is MQTT v5 flow control: the broker sends at most ``receive_maximum``
unacknowledged messages, so a slow or absent database stops the flow instead of growing memory.
A database that goes away is retried with backoff, forever, holding the flush. A message that the
database refuses for its content (not a connection problem) is isolated and dead-lettered alone.

Acknowledgements carry the connection generation they were received on: after a reconnect, packet
ids are reused for other messages, so acks for the previous connection are dropped (the broker
redelivers those messages anyway).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from vinsight.contract import topics
from vinsight.contract.validation import TimeWindow

from .fast_decode import warm_up
from .metrics import IngestMetrics, MetricsServer
from .pipeline import DeadLetter, Delivery, Outcome, PipelineConfig, clean_text, process_delivery
from .settings import IngestSettings
from .store import Flush, IngestStore, WriteResult

log = logging.getLogger(__name__)

_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, OSError)


def _now_ms() -> int:
    return int(time.time() * 1000)


class IngestWorker:
    def __init__(self, settings: IngestSettings, index: int = 0, metrics: IngestMetrics | None = None,
                 *, on_commit: Callable[[WriteResult, Flush], None] | None = None) -> None:
        self.settings = settings
        self.index = index
        self.client_id = f"{settings.client_id_prefix}-{index}"
        self.metrics = metrics or IngestMetrics()
        self.store = IngestStore(settings.db_url, require_provisioned=settings.require_provisioned)
        self.pipeline_config = PipelineConfig(TimeWindow(), settings.max_interval_ms,
                                              settings.dead_letter_payload_max)
        self.on_commit = on_commit
        self._inbox: queue.Queue[Delivery] = queue.Queue()
        self._to_writer: queue.Queue[Flush | None] = queue.Queue(maxsize=1)
        self._generation = 0
        self._gen_lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._subscribe_mid: int | None = None
        self._last_error: str | None = None
        self._last_commit = 0.0
        self._inflight = 0
        self._oldest_pending: float | None = None
        self.client = self._make_client()
        self._metrics_server: MetricsServer | None = None

    # --- MQTT ----------------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        if s.mqtt_username:
            client.username_pw_set(s.mqtt_username, s.mqtt_password)
        if s.mqtt_tls_ca:
            client.tls_set(ca_certs=str(s.mqtt_tls_ca))
        # Reconnect fast and often (a handful of workers cost the broker nothing). After a Mosquitto
        # restart its restored shared subscriptions do not receive messages until the worker
        # subscribes again (measured on 2.0.11; see docs/ingest.md), so workers must be back before
        # devices, which back off from 1 s (device_agent.publisher).
        client.reconnect_delay_set(min_delay=0.1, max_delay=1)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = self.settings.receive_maximum
        return props

    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        with self._gen_lock:
            self._generation += 1
        group = self.settings.share_group
        _rc, self._subscribe_mid = client.subscribe([(topics.shared(group, topics.data_filter()), 1),
                                                     (topics.shared(group, topics.status_filter()), 1)])
        self._connected.set()
        self.metrics.mqtt_connected.set(1)
        log.info("worker %s connected to %s:%s (share group %s)", self.client_id, self.settings.mqtt_host,
                 self.settings.mqtt_port, group)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, reason_codes: Any, _props: Any) -> None:
        if mid != self._subscribe_mid:
            return
        if any(rc.is_failure for rc in reason_codes):
            log.error("the broker refused the subscriptions: %s", reason_codes)
            return
        self._subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        self._connected.clear()
        self._subscribed.clear()
        self.metrics.mqtt_connected.set(0)
        if not self._stop.is_set():
            log.warning("worker %s lost the broker (%s); reconnecting", self.client_id, reason_code)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            props = getattr(message, "properties", None)
            content_type = getattr(props, "ContentType", None) if props is not None else None
            sent_ms = None
            for key, value in (getattr(props, "UserProperty", None) or []) if props is not None else []:
                if key == "sent_ms":
                    try:
                        sent_ms = int(value)
                    except ValueError:
                        sent_ms = None
            try:
                topic = message.topic
            except UnicodeDecodeError:
                topic = message._topic.decode("utf-8", "replace")
            self._inbox.put(Delivery(topic, bytes(message.payload), content_type, _now_ms(), sent_ms,
                                     message.mid, message.qos, self._generation))
        except Exception:
            log.exception("could not queue a message")

    # --- processing ----------------------------------------------------------------------------------

    def _process_loop(self) -> None:
        flush = Flush()
        s = self.settings
        while True:
            timeout = max(0.0, s.flush_age_s - (time.monotonic() - flush.started)) if flush.items else 0.2
            try:
                delivery = self._inbox.get(timeout=timeout)
            except queue.Empty:
                delivery = None
            if delivery is not None:
                if not flush.items:
                    flush.started = time.monotonic()
                kind = delivery.topic.rsplit("/", 1)[-1] if "/" in delivery.topic else "unknown"
                self.metrics.messages.labels(kind if kind in ("samples", "events", "state", "health", "config")
                                             else "other").inc()
                try:
                    outcome = process_delivery(delivery, _now_ms(), self.pipeline_config)
                except Exception as exc:
                    log.exception("pipeline failed on a message")
                    outcome = Outcome(dead_letters=[DeadLetter(clean_text(delivery.topic) or "", None,
                                                               clean_text(delivery.content_type), "ingest_error",
                                                               f"{type(exc).__name__}: {exc}", delivery.payload)])
                flush.add(delivery, outcome)
            due = flush.items and (flush.rows >= s.flush_rows or time.monotonic() - flush.started >= s.flush_age_s)
            stopping = self._stop.is_set() and self._inbox.empty()
            if due or (stopping and flush.items):
                self._to_writer.put(flush)  # blocks while the writer is busy with the previous flush
                flush = Flush()
            if stopping:
                self._to_writer.put(None)
                return

    # --- writing -------------------------------------------------------------------------------------

    def _writer_loop(self) -> None:
        while True:
            flush = self._to_writer.get()
            if flush is None:
                return
            started = time.monotonic()
            result = self._write(flush)
            committed_ms = _now_ms()
            self._last_commit = time.time()
            self._ack(flush)
            m = self.metrics
            m.flushes.inc()
            m.commit_seconds.observe(time.monotonic() - started)
            m.batch_rows.observe(flush.rows)
            m.samples.inc(result.samples_inserted)
            m.duplicates.inc(result.samples_offered - result.samples_inserted)
            m.events.inc(result.events_inserted)
            for reason, count in result.dead_letters.items():
                m.rejects.labels(reason).inc(count)
            for delivery, _ in flush.items:
                if delivery.sent_ms is not None:
                    m.publish_to_commit.observe(max(0.0, (committed_ms - delivery.sent_ms) / 1000))
            if result.newest_sample_ms is not None:
                m.newest_sample_age.set((committed_ms - result.newest_sample_ms) / 1000)
            oldest = min(d.received_ms for d, _ in flush.items)
            m.lag.set(max(0.0, (committed_ms - oldest) / 1000))
            if self.on_commit is not None:
                self.on_commit(result, flush)

    def _write(self, flush: Flush) -> WriteResult:
        """Commit ``flush``; connection trouble is retried forever, content trouble is isolated."""
        try:
            return self._write_retrying(flush)
        except psycopg.Error as exc:
            log.error("a flush of %d messages failed (%s); writing them one by one", len(flush), exc)
            self.metrics.flush_failures.labels(type(exc).__name__).inc()
            total = WriteResult()
            for delivery, outcome in flush.items:
                single = Flush()
                single.add(delivery, outcome)
                try:
                    r = self._write_retrying(single)
                except psycopg.Error as item_exc:
                    dead = Flush()
                    dead.add(delivery, Outcome(dead_letters=[DeadLetter(
                        clean_text(delivery.topic) or "", outcome.device_id, clean_text(delivery.content_type),
                        "store_error", clean_text(f"{type(item_exc).__name__}: {item_exc}")[:2000] or "",
                        delivery.payload)]))
                    r = self._write_retrying(dead)
                total.samples_offered += r.samples_offered
                total.samples_inserted += r.samples_inserted
                total.events_inserted += r.events_inserted
                for k, v in r.dead_letters.items():
                    total.dead_letters[k] += v
            return total

    def _write_retrying(self, flush: Flush) -> WriteResult:
        delay = 0.5
        while True:
            try:
                result = self.store.write(flush)
                self.metrics.db_connected.set(1)
                self._last_error = None
                return result
            except _CONNECTION_ERRORS as exc:
                self.metrics.db_connected.set(0)
                self.metrics.flush_failures.labels(type(exc).__name__).inc()
                self._last_error = f"database: {exc}".strip()
                log.warning("database unavailable (%s); retrying in %.1f s", str(exc).strip()[:200], delay)
                self.store.close()
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
            except psycopg.Error:
                self.store.close()  # the connection may be in an unknown state; start clean
                raise

    def _ack(self, flush: Flush) -> None:
        with self._gen_lock:
            generation = self._generation
        for delivery, _ in flush.items:
            if delivery.qos > 0 and delivery.generation == generation:
                self.client.ack(delivery.mid, delivery.qos)

    # --- life cycle ----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        mqtt_ok = self._connected.is_set()
        subscribed = self._subscribed.is_set()
        db_ok = self._last_error is None
        return {
            "healthy": mqtt_ok and subscribed and db_ok,
            "worker": self.client_id,
            "mqtt_connected": mqtt_ok,
            "subscribed": subscribed,
            "database_ok": db_ok,
            "last_error": self._last_error,
            "last_commit_age_s": round(time.time() - self._last_commit, 3) if self._last_commit else None,
            "queued_messages": self._inbox.qsize(),
        }

    def run(self, stop: threading.Event | None = None) -> None:
        """Consume until ``stop`` is set (or :meth:`stop`); then flush, acknowledge and disconnect."""
        s = self.settings
        warm_up()  # compiled kernels loaded before the first message, not during it
        if s.metrics_port:
            self._metrics_server = MetricsServer(self.metrics, self.health, s.metrics_host, s.metrics_port + self.index)
            self._metrics_server.start()
        self.client.connect_async(s.mqtt_host, s.mqtt_port, keepalive=s.keepalive_s, clean_start=False,
                                  properties=self._connect_properties())
        self.client.loop_start()
        processor = threading.Thread(target=self._process_loop, name="ingest-process", daemon=True)
        writer = threading.Thread(target=self._writer_loop, name="ingest-write", daemon=True)
        processor.start()
        writer.start()
        try:
            while not self._stop.is_set() and not (stop is not None and stop.is_set()):
                self._stop.wait(0.5)
                self.metrics.inflight.set(self._inbox.qsize())
        finally:
            # Drain what was received, commit and acknowledge it; anything arriving later stays
            # unacknowledged in the persistent session and comes back when this worker index restarts.
            self._stop.set()
            processor.join()
            writer.join()
            self.client.disconnect()
            self.client.loop_stop()
            self.store.close()
            if self._metrics_server is not None:
                self._metrics_server.stop()

    def stop(self) -> None:
        self._stop.set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Connected and subscribed: from then on every message for the share group reaches us."""
        return self._subscribed.wait(timeout_s)
