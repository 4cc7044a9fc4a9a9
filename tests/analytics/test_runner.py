"""``vinsight analytics run`` over a real database: recorded drives go in through ingest, trips,
events and scores come out; a second run finds nothing new; late data re-opens only its span."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pytest

from analytics.pipeline import SIGNALS, analyse_vehicle
from analytics.runner import dirty_spans, run_once
from device_agent.replay import derive_gps_motion, read_polidriving
from ingest.maintenance import apply_storage_policies
from ingest.migrate import migrate
from ingest.pipeline import Delivery, process_delivery
from ingest.settings import IngestSettings
from ingest.store import Flush, IngestStore
from vinsight.contract import SampleBatch, codec, topics
from vinsight.contract.messages import Sample

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "polidriving" / "20231222_134710_col.csv.gz"


def drive_samples(path: Path, end_ms: int) -> list[Sample]:
    """A recorded drive moved in time so that it ends at ``end_ms`` (ingest takes 90 days back)."""
    rows = list(read_polidriving(path))
    derive_gps_motion(rows)
    shift = end_ms - rows[-1].ts_ms
    return [Sample(i, r.ts_ms + shift, dict(r.values)) for i, r in enumerate(rows)]


def ingest(db: str, device_id: str, samples: list[Sample], boot: uuid.UUID | None = None) -> None:
    boot = boot or uuid.uuid4()
    now = int(time.time() * 1000)
    flush = Flush()
    for i in range(0, len(samples), 60):
        batch = SampleBatch.from_samples(device_id, boot, samples[i:i + 60])
        d = Delivery(topics.samples(device_id), codec.encode_samples_binary(batch), codec.CT_SAMPLES_BINARY, now)
        out = process_delivery(d, now)
        assert not out.dead_letters, out.dead_letters[:1]
        flush.add(d, out)
    store = IngestStore(db)
    store.write(flush)
    store.close()


@pytest.fixture
def db(pg_dsn: str) -> str:
    migrate(pg_dsn)
    apply_storage_policies(pg_dsn, IngestSettings(db_url=pg_dsn))
    return pg_dsn


def _counts(db: str) -> dict[str, int]:
    with psycopg.connect(db) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("trips", "driving_events", "scores", "analytics_marks")}


def test_run_derives_trips_events_and_scores_then_finds_nothing_new(db):
    now = int(time.time() * 1000)
    samples = drive_samples(FIXTURE, now - 3 * 3_600_000)
    ingest(db, "poli-fixture", samples)
    report = run_once(db)
    assert report.vehicles == 1 and report.samples == len(samples)
    counts = _counts(db)
    assert counts["trips"] >= 1 and counts["analytics_marks"] >= 1
    with psycopg.connect(db) as conn:
        trip = conn.execute("SELECT distance_m, duration_s, track->>'type', jsonb_array_length(track->'coordinates'),"
                            " distance_source FROM trips").fetchone()
        assert trip[0] > 1000 and trip[1] > 300 and trip[2] == "LineString" and trip[3] >= 2
        scored = conn.execute("SELECT count(*) FROM scores s JOIN trips t USING (trip_id) WHERE s.scope = 'trip'"
                              " AND s.explanation ? 'safety'").fetchone()[0]
        assert scored == counts["trips"]
        assert conn.execute("SELECT count(*) FROM scores WHERE scope = 'day'").fetchone()[0] >= 1
    # The same numbers as the library on the same arrays: the database adds nothing and loses nothing.
    ts = np.array([s.ts_ms for s in samples], dtype=np.int64)
    values = np.full((len(samples), len(SIGNALS)), np.nan)
    for i, s in enumerate(samples):
        for k, v in s.values.items():
            if k in SIGNALS:
                values[i, SIGNALS.index(k)] = v
    direct = analyse_vehicle(ts, values)
    assert counts["trips"] == len(direct.trips) and counts["driving_events"] == len(direct.events)
    with psycopg.connect(db) as conn:
        stored = conn.execute("SELECT sum(distance_m) FROM trips").fetchone()[0]
    assert stored == pytest.approx(direct.trips["distance_m"].sum(), rel=1e-3)  # float4 storage of signals

    again = run_once(db)
    assert again.vehicles == 0 and _counts(db) == counts


def test_late_data_reopens_only_its_span(db):
    now = int(time.time() * 1000)
    recent = drive_samples(FIXTURE, now - 2 * 3_600_000)
    ingest(db, "car-late", recent)
    ingest(db, "car-other", drive_samples(FIXTURE, now - 5 * 3_600_000))
    run_once(db)
    before = _counts(db)
    with psycopg.connect(db) as conn:
        assert dirty_spans(conn) == {}
    # A drive from 30 hours ago arrives now (the car was out of coverage): only car-late is re-opened.
    ingest(db, "car-late", drive_samples(FIXTURE, now - 30 * 3_600_000))
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SELECT vinsight_refresh_rollups()")
        spans = dirty_spans(conn)
        keys = dict(conn.execute("SELECT device_id, device_key FROM devices").fetchall())
    assert set(spans) == {keys["car-late"]}
    report = run_once(db)
    assert report.vehicles == 1
    after = _counts(db)
    assert after["trips"] > before["trips"]
    with psycopg.connect(db) as conn:
        per_device = dict(conn.execute("SELECT d.device_id, count(*) FROM trips JOIN devices d USING (device_key)"
                                       " GROUP BY 1").fetchall())
        days = conn.execute("SELECT count(*) FROM scores s JOIN devices d USING (device_key)"
                            " WHERE d.device_id = 'car-late' AND scope = 'day'").fetchone()[0]
    assert per_device["car-late"] == 2 * per_device["car-other"]
    assert days >= 2


def test_polidriving_sessions_through_the_database(db, shared_data):
    files = sorted(shared_data.glob("polidriving/*/*/*_col.csv.gz"))[:3]
    if not files:
        pytest.skip("no POLIDriving sessions")
    now = int(time.time() * 1000)
    for i, f in enumerate(files):
        ingest(db, f"poli-{i}", drive_samples(f, now - (i + 1) * 86_400_000))
    report = run_once(db)
    assert report.vehicles == len(files)
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT d.device_id, sum(t.distance_m) FROM trips t JOIN devices d USING (device_key)"
                            " GROUP BY 1").fetchall()
    assert len(rows) == len(files) and all(km > 20_000 for _, km in rows)


def test_places_and_stay_points_from_repeated_drives(db):
    """A recorded drive out in the morning and the same road back in the evening, three days running:
    the car parks at both ends (nothing is recorded while parked), so the run finds parking stays at
    two places and every stay belongs to one."""
    now = int(time.time() * 1000)
    seq = 0
    boot = uuid.uuid4()
    for day in (3, 2, 1):
        out = drive_samples(FIXTURE, now - day * 86_400_000 - 10 * 3_600_000)
        back = drive_samples(FIXTURE, now - day * 86_400_000)
        back_values = [s.values for s in reversed(back)]  # the same road, the other way
        samples = [Sample(seq + i, s.ts_ms, s.values) for i, s in enumerate(out)]
        seq += len(out)
        samples += [Sample(seq + i, s.ts_ms, v) for i, (s, v) in enumerate(zip(back, back_values, strict=True))]
        seq += len(back)
        ingest(db, "commuter", samples, boot)
    report = run_once(db, place_horizon_days=7)
    assert report.places_s > 0
    with psycopg.connect(db) as conn:
        stays = conn.execute("SELECT count(*), count(place_id) FROM staypoints").fetchone()
        places = conn.execute("SELECT count(*), sum(visits) FROM places").fetchone()
    assert stays[0] >= 2 and stays[1] == stays[0], "every stay belongs to a place"
    assert places[0] >= 1 and places[1] == stays[0]


def test_the_library_takes_dataframes_and_geodataframes():
    """Same trips from arrays, a DataFrame with datetimes, and a projected GeoDataFrame."""
    import geopandas as gpd
    import pandas as pd

    from analytics.pipeline import analyse_frame

    samples = drive_samples(FIXTURE, int(time.time() * 1000))
    df = pd.DataFrame([{"ts": s.ts_ms, **s.values} for s in samples])
    ts = df["ts"].to_numpy(np.int64)
    values = np.full((len(df), len(SIGNALS)), np.nan)
    for j, name in enumerate(SIGNALS):
        if name in df.columns:
            values[:, j] = df[name].to_numpy(float)
    direct = analyse_vehicle(ts, values)
    by_frame = analyse_frame(df.assign(ts=pd.to_datetime(df["ts"], unit="ms", utc=True)))
    gdf = gpd.GeoDataFrame(df.drop(columns=["latitude", "longitude"]),
                           geometry=gpd.points_from_xy(df["longitude"], df["latitude"]), crs=4326).to_crs(32717)
    by_geo = analyse_frame(gdf)
    assert len(direct.trips) >= 1
    for other in (by_frame, by_geo):
        assert len(other.trips) == len(direct.trips)
        assert other.trips["distance_m"].to_numpy() == pytest.approx(direct.trips["distance_m"].to_numpy(), rel=1e-6)
        assert len(other.events) == len(direct.events)


def test_stored_rows_are_the_per_vehicle_results(db):
    """The runner's batch path and batched writes store exactly what analyse_vehicle computes from the same
    samples: trip columns, score explanations (safety and eco), events, battery health, day scores."""
    import dataclasses
    from datetime import UTC, datetime

    from analytics.json_values import json_value as _jsonable
    from analytics.reader import read_samples
    from analytics.scores import period_score

    now = int(time.time() * 1000)
    ingest(db, "batch-a", drive_samples(FIXTURE, now - 3 * 3_600_000))
    ingest(db, "batch-b", drive_samples(FIXTURE, now - 28 * 3_600_000))
    report = run_once(db, vehicles_per_batch=1)  # one transaction per vehicle here; the same result as one batch
    assert report.vehicles == 2
    with psycopg.connect(db) as conn:
        keys = dict(conn.execute("SELECT device_id, device_key FROM devices").fetchall())
        for device in ("batch-a", "batch-b"):
            key = keys[device]
            frame = read_samples(conn, [key], datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC),
                                 SIGNALS)
            direct = analyse_vehicle(frame.ts_ms, frame.values, frame.signals)
            trips = conn.execute(
                "SELECT t.distance_m, t.duration_s, t.driving_s, t.max_speed_kmh, t.distance_source, s.score,"
                " s.eco_score, s.explanation FROM trips t JOIN scores s USING (trip_id) WHERE t.device_key = %s"
                " ORDER BY t.start_ts", (key,)).fetchall()
            assert len(trips) == len(direct.trips) >= 1
            for k, row in enumerate(trips):
                want = direct.trips.iloc[k]
                assert row[:4] == (want["distance_m"], want["duration_s"], want["driving_s"], want["max_speed_kmh"])
                assert row[4] == want["distance_source"]
                assert row[7] == _jsonable({"safety": direct.trip_scores[k].as_dict(),
                                            "eco": direct.eco_scores[k].as_dict()})
                assert row[5] == direct.trip_scores[k].score and row[6] == direct.eco_scores[k].score
            events = conn.execute("SELECT kind, peak, severity FROM driving_events WHERE device_key = %s"
                                  " ORDER BY ts, kind", (key,)).fetchall()
            assert sorted(events) == sorted(zip(direct.events["kind"], direct.events["peak"],
                                                direct.events["severity"], strict=True))
            battery = conn.execute("SELECT battery FROM vehicle_health WHERE device_key = %s", (key,)).fetchone()[0]
            assert battery == _jsonable({k: v for k, v in dataclasses.asdict(direct.battery).items() if k != "daily"})
            day_start, day = conn.execute("SELECT period_start, explanation FROM scores WHERE device_key = %s"
                                          " AND scope = 'day' ORDER BY period_start LIMIT 1", (key,)).fetchone()
            lo = day_start.timestamp() * 1000
            trips_df = direct.trips.rename(columns={"start_ts_ms": "start_ms", "end_ts_ms": "end_ms"})
            of_day = trips_df[(trips_df["start_ms"] >= lo) & (trips_df["start_ms"] < lo + 86_400_000)]
            stored_ids = conn.execute("SELECT trip_id FROM trips WHERE device_key = %s AND start_ts >= %s"
                                      " AND start_ts < %s + interval '1 day' ORDER BY start_ts",
                                      (key, day_start, day_start)).fetchall()
            assert day["trip_ids"] == [t for (t,) in stored_ids]
            expected = period_score(of_day, direct.events.assign(trip_id=direct.events["trip_index"]),
                                    period_days=1.0)
            assert day["distance_m"] == expected.distance_m and day["score"] == expected.score


def test_heatmap_cells_and_dealer_visits_are_written(db):
    """Five cars on the same road: the day's cells are released (k = 5) and stored; with k = 6 none are. A dealer
    fence around the area gives visits flagged as service visits by the dwell rule, readable from the view."""
    from datetime import UTC, datetime, timedelta

    from psycopg.types.json import Jsonb

    from analytics.heatmaps import HeatmapParams
    from analytics.pipeline import PipelineParams
    from analytics.runner import update_heatmap

    now = int(time.time() * 1000)
    samples = drive_samples(FIXTURE, now - 2 * 3_600_000)
    lats = [s.values["latitude"] for s in samples if "latitude" in s.values]
    lons = [s.values["longitude"] for s in samples if "longitude" in s.values]
    w, e, s_, n = min(lons) - 0.01, max(lons) + 0.01, min(lats) - 0.01, max(lats) + 0.01
    box = [[w, s_], [e, s_], [e, n], [w, n], [w, s_]]
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO geofences (kind, name, geometry) VALUES ('dealer', 'Dealer Quito', %s)",
                     (Jsonb({"type": "Polygon", "coordinates": [box]}),))
    for i in range(5):
        ingest(db, f"heat-{i}", samples)
    report = run_once(db, heatmap=True)
    assert report.vehicles == 5 and report.heatmap_s > 0
    day = datetime.fromtimestamp(samples[0].ts_ms / 1000, UTC).date()
    with psycopg.connect(db, autocommit=True) as conn:
        cells = conn.execute("SELECT count(*), min(vehicles), min(fixes) FROM heatmap_cells WHERE day = %s",
                             (day,)).fetchone()
        assert cells[0] >= 2 and cells[1] == 5 and cells[2] >= 5
        stored = conn.execute("SELECT released_cells, suppressed_cells FROM heatmap_days WHERE day = %s",
                              (day,)).fetchone()
        assert stored == (cells[0], 0)
        visits = conn.execute("SELECT device_id, dwell_s, service_visit FROM dealer_visits_view").fetchall()
        assert len(visits) >= 5
        assert all(service == (dwell is not None and dwell >= 900.0) for _, dwell, service in visits)
        start = datetime.combine(day, datetime.min.time(), UTC)
        released = update_heatmap(conn, start + timedelta(hours=1), PipelineParams(heatmap=HeatmapParams(
            k_min_vehicles=6)))
        assert released == 0
        assert conn.execute("SELECT count(*) FROM heatmap_cells WHERE day = %s", (day,)).fetchone()[0] == 0
        assert conn.execute("SELECT suppressed_cells FROM heatmap_days WHERE day = %s", (day,)).fetchone()[0] >= 2
