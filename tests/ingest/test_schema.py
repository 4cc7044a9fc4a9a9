"""The schema: versioned migrations, one backend decision, native partitions and retention, and
rollups that match what the samples say (including late data)."""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import numpy as np
import psycopg
import pytest

from ingest.backend import Backend, BackendError, choose_backend
from ingest.maintenance import refresh_rollups, run_maintenance
from ingest.migrate import MIGRATIONS_DIR, MigrationError, available_migrations, migrate, schema_status
from ingest.partitions import drop_expired_partitions, ensure_partitions, existing_partitions, partition_start
from ingest.pipeline import Delivery, process_delivery
from ingest.store import SIGNAL_PG_TYPES, Flush, IngestStore
from vinsight.contract import SampleBatch, codec, topics
from vinsight.contract.messages import Sample
from vinsight.contract.signals import SIGNALS

HOUR = 3_600_000


def test_migrate_is_recorded_and_idempotent(pg_dsn):
    first = migrate(pg_dsn)
    assert first.backend is Backend.NATIVE  # CI's PostgreSQL has no TimescaleDB
    assert first.applied == [f"{m.version:04d}_{m.name}" for m in available_migrations()]
    again = migrate(pg_dsn)
    assert again.applied == [] and again.already == first.applied
    status = schema_status(pg_dsn)
    assert status["backend"] == "native" and status["pending"] == []


def test_an_edited_migration_is_refused(pg_dsn, tmp_path):
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    migrate(pg_dsn, directory=copy)
    first = sorted(copy.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after the fact\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(pg_dsn, directory=copy)


def test_a_new_migration_is_applied_once(pg_dsn, tmp_path):
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    migrate(pg_dsn, directory=copy)
    (copy / "0999_extra.sql").write_text(
        "CREATE TABLE extra_thing (id int);\n--@native COMMENT ON TABLE extra_thing IS 'n';\n")
    report = migrate(pg_dsn, directory=copy)
    assert report.applied == ["0999_extra"]
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT obj_description('extra_thing'::regclass)").fetchone() == ("n",)


def test_the_backend_is_decided_once(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn, pytest.raises(BackendError, match="not available"):
        choose_backend(conn, "timescaledb")
    migrate(pg_dsn, "native")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert choose_backend(conn, "auto") is Backend.NATIVE
        with pytest.raises(BackendError, match="cannot switch"):
            choose_backend(conn, "timescaledb")


def test_each_backend_sees_only_its_own_lines():
    by_name = {m.name: m for m in available_migrations()}
    native = by_name["samples"].render(Backend.NATIVE)
    tsdb = by_name["samples"].render(Backend.TIMESCALEDB)
    assert "PARTITION BY RANGE (ts)" in native and "create_hypertable" not in native
    assert "create_hypertable('samples', by_range('ts'" in tsdb and "PARTITION BY" not in tsdb
    assert "timescaledb.enable_columnstore" in tsdb and "timescaledb.segmentby = 'device_key'" in tsdb
    rollups_ts = by_name["rollups"].render(Backend.TIMESCALEDB)
    assert rollups_ts.count("timescaledb.continuous") == 2 and "WITH NO DATA" in rollups_ts
    assert "vinsight_refresh_rollups" not in rollups_ts
    assert "vinsight_refresh_rollups" in by_name["rollups"].render(Backend.NATIVE)
    for m in available_migrations():
        for backend in Backend:
            assert not any(line.startswith("--@") for line in m.render(backend).splitlines())


def test_samples_columns_follow_the_signal_catalog(db):
    with psycopg.connect(db) as conn:
        cols = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'samples'"
            " ORDER BY ordinal_position").fetchall()
    names = [c for c, _ in cols]
    assert names[:5] == ["device_key", "ts", "boot_id", "seq", "interval_ms"] and names[-1] == "extras"
    assert names[5:-1] == [s.name for s in SIGNALS], "a catalog signal needs a column (and a migration)"
    pg = {"real": "float4", "double precision": "float8"}
    assert {c: pg[t] for c, t in cols[5:-1]} == SIGNAL_PG_TYPES


def test_native_partitions_are_created_ahead_and_dropped_for_retention(db):
    today = datetime.now(UTC).date()
    with psycopg.connect(db, autocommit=True) as conn:
        have = existing_partitions(conn)
        assert all(today + timedelta(days=i) in have for i in range(4)), "3 days ahead by default"
        old = today - timedelta(days=800)
        ensure_partitions(conn, [old, old + timedelta(days=1)], 1)
        assert drop_expired_partitions(conn, today, 730, 1) == [f"samples_p{old:%Y%m%d}",
                                                                f"samples_p{old + timedelta(days=1):%Y%m%d}"]
        assert old not in existing_partitions(conn)
    assert partition_start(date(2026, 11, 23), 7) == date(2026, 11, 21)  # aligned to 2000-01-01


def _store(db: str, batches: list[SampleBatch]) -> None:
    now = int(time.time() * 1000)
    flush = Flush()
    for b in batches:
        d = Delivery(topics.samples(b.device_id), codec.encode_samples_binary(b), codec.CT_SAMPLES_BINARY, now)
        out = process_delivery(d, now)
        assert not out.dead_letters
        flush.add(d, out)
    store = IngestStore(db)
    store.write(flush)
    store.close()


def _drive(device: str, t0: int, n: int, seq0: int = 0, boot: uuid.UUID | None = None) -> SampleBatch:
    rng = np.random.default_rng(seq0)
    samples = [Sample(seq0 + i, t0 + i * 1000, {
        "speed": float(rng.integers(0, 120)), "rpm": float(rng.integers(700, 3000)),
        "fuel_rate": round(float(rng.uniform(0.5, 8)) * 20) / 20}) for i in range(n)]  # on the 0.05 L/h grid
    return SampleBatch.from_samples(device, boot or uuid.uuid4(), samples)


def _expected_hourly(batches: list[SampleBatch]) -> dict[tuple[str, int], tuple[int, float, float, float, float]]:
    """Plain Python: per (device, hour) samples, km, driving s, max speed, litres."""
    from ingest.fast_decode import sample_intervals_reference

    acc: dict[tuple[str, int], list[float]] = {}
    for b in batches:
        intervals = sample_intervals_reference(list(b.ts_ms), 5000)
        for s, iv in zip(b.samples(), intervals, strict=True):
            key = (b.device_id, s.ts_ms // HOUR)
            a = acc.setdefault(key, [0, 0.0, 0.0, 0.0, 0.0])
            a[0] += 1
            if iv > 0:
                a[1] += s.values["speed"] * iv / 3_600_000
                a[2] += iv / 1000 if s.values["speed"] > 0 else 0
                a[4] += s.values["fuel_rate"] * iv / 3_600_000
            a[3] = max(a[3], s.values["speed"])
    return {k: tuple(v) for k, v in acc.items()}  # type: ignore[misc]


def _stored_hourly(db: str) -> dict[tuple[str, int], tuple[int, float, float, float, float]]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT d.device_id, h.bucket, h.samples, h.distance_km, h.driving_s, h.max_speed_kmh, h.fuel_l"
            " FROM samples_hourly h JOIN devices d USING (device_key)").fetchall()
    return {(dev, int(b.timestamp() * 1000) // HOUR): (n, km, drv, vmax, fuel)
            for dev, b, n, km, drv, vmax, fuel in rows}


def test_native_rollups_match_the_samples_and_follow_late_data(db):
    base = (int(time.time() * 1000) // HOUR - 5) * HOUR
    batches = [_drive("car-a", base + 1_800_000, 3600), _drive("car-b", base, 900),
               _drive("car-b", base + 2 * HOUR + 10_000, 600, seq0=900)]
    _store(db, batches)
    with psycopg.connect(db, autocommit=True) as conn:
        assert refresh_rollups(conn) > 0
    expected = _expected_hourly(batches)
    stored = _stored_hourly(db)
    assert stored.keys() == expected.keys()
    for key, (n, km, drv, vmax, fuel) in expected.items():
        got = stored[key]
        assert got[0] == n and got[3] == vmax
        assert got[1] == pytest.approx(km, rel=1e-6) and got[2] == pytest.approx(drv)
        assert got[4] == pytest.approx(fuel, rel=1e-5)

    late = _drive("car-b", base + 30 * 60_000, 120, seq0=5000)  # late data into an hour already rolled up
    _store(db, [late])
    with psycopg.connect(db, autocommit=True) as conn:
        refreshed = refresh_rollups(conn)
        assert refreshed == 1, "only the hour the late batch touched is recomputed"
        daily = conn.execute("SELECT sum(samples), sum(distance_km) FROM samples_daily").fetchone()
        hourly = conn.execute("SELECT sum(samples), sum(distance_km) FROM samples_hourly").fetchone()
        total = conn.execute("SELECT count(*) FROM samples").fetchone()
        assert daily[0] == hourly[0] == total[0] == 3600 + 900 + 600 + 120
        assert daily[1] == pytest.approx(hourly[1])
        stats = conn.execute("SELECT avg_moving_speed_kmh, distance_km / (driving_s / 3600) FROM samples_daily_stats"
                             " WHERE driving_s > 0").fetchall()
        assert stats and all(a == pytest.approx(b) for a, b in stats)
    stored = _stored_hourly(db)
    for key, exp in _expected_hourly([*batches, late]).items():
        assert stored[key][0] == exp[0] and stored[key][1] == pytest.approx(exp[1], rel=1e-6)


def test_maintenance_drops_expired_partitions_but_keeps_rollups(db):
    old_day = datetime.now(UTC) - timedelta(days=60)
    batch = _drive("car-old", int(old_day.timestamp() * 1000), 100)
    _store(db, [batch])  # 60 days old: inside the ingest window, and its partition is created on demand
    with psycopg.connect(db, autocommit=True) as conn:
        assert partition_start(old_day.date(), 1) in existing_partitions(conn)
    report = run_maintenance(db, now=datetime.now(UTC) + timedelta(days=700))  # 760 days later
    assert f"samples_p{old_day.date():%Y%m%d}" in report.partitions_dropped
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM samples").fetchone() == (0,)
        assert conn.execute("SELECT sum(samples) FROM samples_daily").fetchone() == (100,)


def test_copy_redelivery_takes_the_dedup_path(db):
    b = _drive("car-dup", int(time.time() * 1000) - 600_000, 300)
    _store(db, [b])
    _store(db, [b, _drive("car-dup", int(time.time() * 1000) - 200_000, 100, seq0=300, boot=b.boot_id)])
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT (boot_id, seq)) FROM samples").fetchone() == (400, 400)


def test_a_redelivered_refused_message_is_one_dead_letter_counted_twice(db):
    now = int(time.time() * 1000)
    good = _drive("car-dl", now - 600_000, 3)
    # one message refused whole (garbage), one with a single impossible sample among good ones
    garbage = Delivery(topics.samples("car-dl"), b"\x00not a batch", codec.CT_SAMPLES_BINARY, now)
    mixed_batch = SampleBatch.from_samples("car-dl", good.boot_id, [
        *good.samples(), Sample(3, now - 590_000, {"speed": 9_999.0})])
    mixed = Delivery(topics.samples("car-dl"), codec.encode_samples_json(mixed_batch), codec.CT_SAMPLES_JSON, now)
    other = Delivery(topics.samples("car-dl"), b"\x00other garbage", codec.CT_SAMPLES_BINARY, now)

    def deliver(*deliveries: Delivery) -> dict[str, int]:
        flush = Flush()
        for d in deliveries:
            flush.add(d, process_delivery(d, now))
        store = IngestStore(db)
        try:
            return dict(store.write(flush).dead_letters)
        finally:
            store.close()

    first = deliver(garbage, mixed)
    assert sum(first.values()) == 2
    deliver(garbage, mixed)  # the broker delivers both again (the worker stopped before acknowledging)
    deliver(other)           # a different message with the same fault is a row of its own
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT reason, sample_index, deliveries, last_received_at IS NOT NULL FROM dead_letters"
                            " WHERE device_id = 'car-dl' OR topic = %s ORDER BY deliveries DESC, sample_index",
                            (topics.samples("car-dl"),)).fetchall()
        assert len(rows) == 3, rows
        assert [r[2] for r in rows] == [2, 2, 1]
        assert {r[1] for r in rows if r[2] == 2} == {3, None}  # the impossible sample, the garbage message
        assert all(r[3] == (r[2] == 2) for r in rows)            # redelivery time kept where one happened
        assert conn.execute("SELECT count(*) FROM samples s JOIN devices d USING (device_key)"
                            " WHERE d.device_id = 'car-dl'").fetchone() == (3,)
