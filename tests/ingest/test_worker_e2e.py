"""End to end through the real broker and PostgreSQL: publish, ingest, count, checksum."""

from __future__ import annotations

import time
import uuid

import psycopg

from vinsight.contract import EventBatch, codec, topics
from vinsight.contract.messages import Event, EventKind

from .helpers import (
    ReliablePublisher,
    ThreadedWorker,
    expected_checksum,
    make_batches,
    stored_checksum,
    wait_for,
    worker_settings,
)


def test_every_published_sample_is_stored_once(db, mqtt_broker, unique_id):
    host, port = mqtt_broker
    batches = [b for d in range(3) for b in make_batches(f"{unique_id}-{d}", 10, 60)]
    expected = expected_checksum(batches)
    with ThreadedWorker(worker_settings(db, host, port, unique_id, flush_rows=500)) as worker:
        pub = ReliablePublisher(host, port, f"pub-{unique_id}")
        pub.publish_batches(batches)
        pub.publish_batches(batches[:5])  # a device re-sending after a lost PUBACK: must not duplicate
        pub.settle()
        assert wait_for(lambda: stored_checksum(db, unique_id)[0] >= expected[0])
        time.sleep(0.5)
        pub.close()
        assert worker.health()["healthy"]
    assert stored_checksum(db, unique_id) == expected
    with psycopg.connect(db) as conn:
        devices = conn.execute("SELECT count(*) FROM devices WHERE device_id LIKE %s AND status = 'auto'",
                               (unique_id + "%",)).fetchone()
        assert devices == (3,)
        status = conn.execute(
            "SELECT min(last_sample_ts), max(last_seen) FROM device_status JOIN devices USING (device_key)"
            " WHERE device_id LIKE %s", (unique_id + "%",)).fetchone()
        assert status[0] is not None and status[1] is not None
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)


def test_events_open_and_close_trouble_code_episodes(db, mqtt_broker, unique_id):
    host, port = mqtt_broker
    device = f"{unique_id}-car"
    boot = uuid.uuid4()
    now = int(time.time() * 1000)
    events = [
        Event(1, now - 5000, EventKind.VEHICLE_IDENTIFIED, {"vin": "1FA0ZZZ99ZTS39002", "supported": ["speed"]}),
        Event(2, now - 4000, EventKind.MIL_ON, {"dtc_count": 1}),
        Event(3, now - 4000, EventKind.DTC_NEW, {"code": "P0301", "dtc_type": "stored",
                                                 "description": "Cylinder 1 Misfire Detected"}),
        Event(4, now - 3000, EventKind.DTC_NEW, {"code": "P0171", "dtc_type": "pending"}),
        Event(5, now - 1000, EventKind.DTC_CLEARED, {"code": "P0171", "dtc_type": "pending"}),
    ]
    payload = codec.encode_events(EventBatch(device, boot, events))
    with ThreadedWorker(worker_settings(db, host, port, unique_id)):
        pub = ReliablePublisher(host, port, f"pub-{unique_id}")
        pub.publish(topics.events(device), payload, codec.CT_EVENTS_JSON)
        pub.publish(topics.events(device), payload, codec.CT_EVENTS_JSON)  # redelivery: no second episode
        pub.settle()

        def episodes():
            with psycopg.connect(db) as conn:
                return conn.execute(
                    "SELECT code, dtc_type, description, mil_on, cleared_at IS NOT NULL FROM dtc_episodes"
                    " ORDER BY code").fetchall()

        assert wait_for(lambda: len(episodes()) == 2 and episodes()[0][4])
        pub.close()
    assert episodes() == [("P0171", "pending", "", True, True),
                          ("P0301", "stored", "Cylinder 1 Misfire Detected", True, False)]
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM device_events").fetchone() == (5,)
        vin = conn.execute("SELECT v.vin FROM devices d JOIN vehicles v USING (vehicle_id) WHERE d.device_id = %s",
                           (device,)).fetchone()
        assert vin == ("1FA0ZZZ99ZTS39002",)
