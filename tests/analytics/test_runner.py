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
