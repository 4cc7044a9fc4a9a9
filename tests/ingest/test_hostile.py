"""Malformed and hostile payloads: the worker keeps running, each lands in dead letters with a
reason, and valid traffic interleaved with them is stored completely.

The pipeline is first held to "never raises, always accounts for the message" on arbitrary input
(pure logic, many examples); then hypothesis-generated floods go through a live worker, the real
broker and PostgreSQL.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.pipeline import Delivery, process_delivery
from vinsight.contract import codec, topics

from .helpers import (
    ReliablePublisher,
    ThreadedWorker,
    expected_checksum,
    make_batches,
    stored_checksum,
    wait_for,
    worker_settings,
)

NOW = int(time.time() * 1000)
CONTENT_TYPES = st.sampled_from([codec.CT_SAMPLES_BINARY, codec.CT_SAMPLES_JSON, codec.CT_EVENTS_JSON,
                                 codec.CT_STATUS_JSON, None, "text/plain",
                                 "application/vnd.vinsight.samples.v9+binary"])
SQLISH = st.sampled_from(["'; DROP TABLE samples; --", "\" OR 1=1 --", "\x00nul", "$$; DELETE FROM devices; $$",
                          "../../etc/passwd", "💥" * 40, "a" * 5000])


@given(topic=st.one_of(st.text(max_size=80), st.sampled_from([topics.samples("dev-1"), topics.events("dev-1"),
                                                             topics.state("dev-1"), topics.health("dev-1")])),
       payload=st.binary(max_size=3000), content_type=CONTENT_TYPES)
@settings(max_examples=400, deadline=None)
def test_pipeline_accounts_for_any_message(topic, payload, content_type):
    out = process_delivery(Delivery(topic, payload, content_type, NOW), NOW)
    stored = out.samples is not None or out.events is not None or out.status is not None
    assert stored or out.dead_letters, "a message must be stored or dead-lettered, never dropped"
    for d in out.dead_letters:
        assert d.reason and "\x00" not in (d.detail or "") and "\x00" not in (d.topic or "")


def _valid_binary(device_id: str) -> bytes:
    return codec.encode_samples_binary(make_batches(device_id, 1, 20, NOW - 60_000)[0])


def _json_samples(device_id: str, samples: list) -> bytes:
    return json.dumps({"v": 1, "device_id": device_id, "boot_id": str(uuid.uuid4()), "samples": samples}).encode()


KINDS = ["truncated", "wrong_version", "bitflip", "huge", "wrong_types", "non_finite", "sqlish_device",
         "wrong_device", "garbage", "bad_topic", "out_of_range", "bad_events"]

# What to break and how, drawn independently of ids and payload sizes (so hypothesis can replay it).
hostile_specs = st.fixed_dictionaries({
    "kind": st.sampled_from(KINDS),
    "fraction": st.floats(0, 0.999),
    "small": st.integers(2, 255),
    "bit": st.integers(0, 7),
    "blob": st.binary(min_size=16, max_size=500),
    "content_type": CONTENT_TYPES,
    "bad_value": st.sampled_from(["fast", None, [1, 2], {"x": 1}, True]),
    "non_finite": st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]),
    "sqlish": SQLISH,
    "suffix": st.sampled_from(["bogus", "samples2", "cmd"]),
    "out_of_range": st.sampled_from([("speed", 900), ("rpm", -5), ("latitude", 123.0), ("coolant_temp", 999)]),
    "ts_offset": st.sampled_from([0, -400 * 86_400_000, 86_400_000]),
    "event_kind": st.sampled_from(["nuke", "dtc_new", 7]),
})


def build_hostile(spec: dict, device_id: str) -> tuple[str, bytes, str | None, str]:
    """(topic, payload, content type, kind): each one a whole-message or every-sample reject."""
    kind = spec["kind"]
    good = _valid_binary(device_id)
    t = topics.samples(device_id)
    ct = codec.CT_SAMPLES_BINARY
    if kind == "truncated":
        return t, good[: int(spec["fraction"] * len(good))], ct, kind
    if kind == "wrong_version":
        return t, good[:2] + bytes([spec["small"]]) + good[3:], ct, kind
    if kind == "bitflip":
        i = 4 + int(spec["fraction"] * (len(good) - 8))
        return t, good[:i] + bytes([good[i] ^ (1 << spec["bit"])]) + good[i + 1:], ct, kind
    if kind == "huge":
        return t, b"VS\x01\x01" + spec["blob"] * (2_000_000 // len(spec["blob"])), ct, kind
    if kind == "wrong_types":
        samples = [{"seq": 1, "ts": NOW, "values": {"speed": spec["bad_value"]}}]
        return t, _json_samples(device_id, samples), codec.CT_SAMPLES_JSON, kind
    if kind == "non_finite":
        text = (f'{{"v":1,"device_id":"{device_id}","boot_id":"{uuid.uuid4()}",'
                f'"samples":[{{"seq":1,"ts":{NOW},"values":{{"rpm":{spec["non_finite"]}}}}}]}}')
        return t, text.encode(), codec.CT_SAMPLES_JSON, kind
    if kind == "sqlish_device":
        samples = [{"seq": 1, "ts": NOW, "values": {"speed": 3}}]
        return t, _json_samples(spec["sqlish"], samples), codec.CT_SAMPLES_JSON, kind
    if kind == "wrong_device":
        return t, _valid_binary("someone-else"), ct, kind
    if kind == "garbage":
        return t, spec["blob"], spec["content_type"], kind
    if kind == "bad_topic":
        return f"vinsight/v1/data/{device_id}/{spec['suffix']}", good, ct, kind
    if kind == "out_of_range":
        field, value = spec["out_of_range"]
        ts = NOW + spec["ts_offset"]
        samples = [{"seq": 1, "ts": ts, "values": {field: value}}]
        return t, _json_samples(device_id, samples), codec.CT_SAMPLES_JSON, kind
    events = {"v": 1, "device_id": device_id, "boot_id": str(uuid.uuid4()),
              "events": [{"seq": 1, "ts": NOW, "kind": spec["event_kind"], "data": {"note": spec["sqlish"]}}]}
    return topics.events(device_id), json.dumps(events).encode(), codec.CT_EVENTS_JSON, kind


_counter = itertools.count()


@given(specs=st.lists(hostile_specs, min_size=25, max_size=25))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])
def test_a_hostile_flood_is_dead_lettered_and_valid_traffic_survives(db, mqtt_broker, unique_id, specs):
    host, port = mqtt_broker
    run = f"{unique_id}-{next(_counter)}"
    hostile = [build_hostile(spec, f"{run}-h{i}") for i, spec in enumerate(specs)]
    valid = make_batches(f"{run}-ok", 12, 30, NOW - 600_000)
    expected = expected_checksum(valid)
    with ThreadedWorker(worker_settings(db, host, port, run, flush_rows=200)) as worker:
        pub = ReliablePublisher(host, port, f"pub-{run}")
        for i, batch in enumerate(valid):  # interleave: two hostile messages between valid ones
            for topic, payload, ct, _kind in hostile[2 * i: 2 * i + 2]:
                pub.publish(topic, payload, ct)
            pub.publish_batches([batch])
        for topic, payload, ct, _kind in hostile[2 * len(valid):]:
            pub.publish(topic, payload, ct)
        pub.settle()

        def dead_topics() -> set[str]:
            with psycopg.connect(db) as conn:
                return {r[0] for r in conn.execute("SELECT DISTINCT topic FROM dead_letters WHERE topic LIKE %s",
                                                   (f"%{run}-h%",)).fetchall()}

        expected_topics = {t for t, _p, _c, _k in hostile}
        assert wait_for(lambda: dead_topics() >= expected_topics and stored_checksum(db, f"{run}-ok")[0]
                        >= expected[0], 30), {k for t, _p, _c, k in hostile if t not in dead_topics()}
        assert worker.health()["healthy"]
        pub.close()
    assert stored_checksum(db, f"{run}-ok") == expected
    with psycopg.connect(db) as conn:
        reasons = conn.execute("SELECT reason, count(*) FROM dead_letters WHERE topic LIKE %s GROUP BY 1",
                               (f"%{run}-h%",)).fetchall()
        assert all(r and not r.isspace() for r, _ in reasons)
        # nothing hostile became a sample row, and the tables it named are all still there
        assert conn.execute("SELECT count(*) FROM samples s JOIN devices d USING (device_key)"
                            " WHERE d.device_id LIKE %s", (f"{run}-h%",)).fetchone() == (0,)
        assert conn.execute("SELECT to_regclass('samples') IS NOT NULL AND to_regclass('devices') IS NOT NULL"
                            ).fetchone() == (True,)
        huge = conn.execute("SELECT max(length(payload)) FROM dead_letters WHERE reason = 'too_large'").fetchone()
        assert huge[0] is None or huge[0] <= 1 << 20
