"""The faults ingest must survive, with real processes: kill -9 of a worker, a broker restart and a
PostgreSQL restart, each in the middle of a stream. Afterwards every sample published with QoS 1 is
in the database exactly once: same count, same checksum of values."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ingest.maintenance import apply_storage_policies
from ingest.migrate import migrate
from ingest.settings import IngestSettings
from vinsight.embedded import MosquittoBroker, free_port

from .helpers import ReliablePublisher, expected_checksum, make_batches, stored_checksum, wait_for
from .private_services import PrivatePostgres

ROOT = Path(__file__).resolve().parents[2]


def start_worker(db_url: str, host: str, port: int, group: str, index: int = 0) -> subprocess.Popen[bytes]:
    """A worker process, returned once it is subscribed (its /healthz says connected): on a fresh
    checkout it first compiles its kernels, and messages published before a shared subscription
    exists have no subscriber to go to."""
    env = dict(os.environ, VINSIGHT_INGEST_SESSION_EXPIRY_S="300", VINSIGHT_INGEST_FLUSH_ROWS="600")
    metrics_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest", "--log-level", "WARNING", "ingest", "worker", "--index", str(index),
         "--db-url", db_url, "--mqtt-host", host, "--mqtt-port", str(port), "--share-group", group,
         "--client-id-prefix", f"ingest-{group}", "--metrics-port", str(metrics_port)],
        cwd=ROOT, env=env)

    def subscribed() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=2) as resp:
                return bool(json.loads(resp.read())["subscribed"])
        except (OSError, ValueError):
            return False

    assert wait_for(subscribed, 120), "worker did not come up"
    return proc


def publish_stream(pub: ReliablePublisher, batches, seconds: float) -> threading.Thread:
    """Publish ``batches`` spread over ``seconds`` from a thread (a live fleet, not one burst)."""
    def run() -> None:
        pause = seconds / len(batches)
        for b in batches:
            pub.publish_batches([b])
            time.sleep(pause)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def fleet(prefix: str, devices: int = 4, per_device: int = 15, size: int = 60):
    by_device = [make_batches(f"{prefix}-{d}", per_device, size) for d in range(devices)]
    return [b for group in zip(*by_device, strict=True) for b in group]  # interleaved, like live traffic


def assert_stored_exactly_once(db_url: str, prefix: str, batches, sender: threading.Thread,
                               pub: ReliablePublisher, settle_s: float = 60.0) -> None:
    """After the fault: every published sample is in the database once (count and checksum)."""
    sender.join()
    pub.settle(settle_s)
    expected = expected_checksum(batches)
    assert wait_for(lambda: stored_checksum(db_url, prefix)[0] >= expected[0], 120)
    time.sleep(1.0)  # a late duplicate would show up now
    assert stored_checksum(db_url, prefix) == expected


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_kill_9_of_a_worker_mid_stream_loses_nothing(db, mqtt_broker, unique_id):
    host, port = mqtt_broker
    batches = fleet(unique_id)
    worker = start_worker(db, host, port, unique_id)
    pub = ReliablePublisher(host, port, f"pub-{unique_id}")
    try:
        sender = publish_stream(pub, batches, 4.0)
        assert wait_for(lambda: stored_checksum(db, unique_id)[0] > 0, 60)
        os.kill(worker.pid, signal.SIGKILL)  # mid-stream: some messages received, not committed or acked
        worker.wait(10)
        time.sleep(1.0)
        worker = start_worker(db, host, port, unique_id)  # same index = same session: redelivery
        assert_stored_exactly_once(db, unique_id, batches, sender, pub)
    finally:
        pub.close()
        stop(worker)


def test_broker_restart_mid_stream_loses_nothing(db, unique_id, tmp_path):
    broker = MosquittoBroker(tmp_path / "broker")
    host, port = "127.0.0.1", broker.start()
    batches = fleet(unique_id)
    worker = start_worker(db, host, port, unique_id)
    pub = ReliablePublisher(host, port, f"pub-{unique_id}")
    try:
        sender = publish_stream(pub, batches, 4.0)
        assert wait_for(lambda: stored_checksum(db, unique_id)[0] > 0, 60)
        broker.stop()  # persistence on: sessions and queued QoS 1 messages are saved
        time.sleep(1.0)
        broker.start()
        assert_stored_exactly_once(db, unique_id, batches, sender, pub, settle_s=90)
    finally:
        pub.close()
        stop(worker)
        broker.stop()


@pytest.mark.skipif(not PrivatePostgres.available(), reason="PostgreSQL server binaries not installed")
def test_postgres_restart_mid_stream_loses_nothing(mqtt_broker, unique_id):
    host, port = mqtt_broker
    pg = PrivatePostgres().start()
    worker = None
    pub = None
    try:
        migrate(pg.dsn)
        apply_storage_policies(pg.dsn, IngestSettings(db_url=pg.dsn))
        batches = fleet(unique_id)
        worker = start_worker(pg.dsn, host, port, unique_id)
        pub = ReliablePublisher(host, port, f"pub-{unique_id}")
        sender = publish_stream(pub, batches, 5.0)
        assert wait_for(lambda: stored_checksum(pg.dsn, unique_id)[0] > 0, 60)
        pg.stop("immediate")  # a crash, not a polite shutdown: in-flight transactions are lost
        time.sleep(2.0)
        pg.start()
        assert_stored_exactly_once(pg.dsn, unique_id, batches, sender, pub)
        assert worker.poll() is None, "the worker must ride out the outage, not exit"
    finally:
        if pub is not None:
            pub.close()
        if worker is not None:
            stop(worker)
        pg.destroy()
