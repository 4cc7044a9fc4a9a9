"""``vinsight analytics run``: the pipeline over the database, incrementally.

Which data is new: for every vehicle and hour, ``analytics_marks`` remembers how many samples
analytics saw; ``samples_hourly`` (a continuous aggregate on TimescaleDB, an incrementally refreshed
table natively) says how many there are now. Hours that differ are new or received late data.

What a run re-opens for a vehicle: from the earliest changed hour, widened by the trip gap rule
(``max_gap_s``, a trip cannot span a longer gap) and back to the start of any stored trip that
overlaps it, to the end of the latest changed hour. Those samples are read in one binary COPY
(:mod:`analytics.reader`), analysed (:mod:`analytics.pipeline`), and the derived rows of that span
(trips, events, trip scores, geofence visits) are replaced in one transaction together with the
marks, so a crash leaves either the old or the new result, never half. Day scores are recomputed
for the days the span touches, from the stored trips.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from ingest.backend import Backend, recorded_backend

from .geofences import Geofences, load_geofences
from .health import health_summary
from .pipeline import SIGNALS, PipelineParams, VehicleAnalysis, analyse_vehicle
from .places import PlaceParams, analyse_places
from .reader import read_samples
from .routes import RouteParams, frequent_routes
from .scores import period_score
from .staypoints import all_stays

log = logging.getLogger(__name__)
HOUR = timedelta(hours=1)


@dataclass
class RunReport:
    vehicles: int = 0
    samples: int = 0
    trips: int = 0
    events: int = 0
    read_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0
    places_s: float = 0.0


def _ts(ms: float) -> datetime:
    return datetime.fromtimestamp(float(ms) / 1000, UTC)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return json.loads(value.to_json(orient="records", date_format="iso"))
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def dirty_spans(conn: psycopg.Connection,
                device_keys: Sequence[int] | None = None) -> dict[int, tuple[datetime, datetime]]:
    """Per vehicle: (first changed hour, end of the last changed hour) since the last run."""
    rows = conn.execute(
        "SELECT h.device_key, min(h.bucket), max(h.bucket) FROM samples_hourly h"
        " LEFT JOIN analytics_marks m ON m.device_key = h.device_key AND m.bucket = h.bucket"
        " WHERE m.samples IS DISTINCT FROM h.samples AND (%s::int[] IS NULL OR h.device_key = ANY(%s::int[]))"
        " GROUP BY h.device_key",
        (None if device_keys is None else list(device_keys),) * 2,
    ).fetchall()
    return {int(k): (lo, hi + HOUR) for k, lo, hi in rows}


def widen(conn: psycopg.Connection, device_key: int, start: datetime, end: datetime,
          params: PipelineParams, max_days: int) -> tuple[datetime, datetime]:
    """Back to the start of any stored trip that could continue into the span (see module doc)."""
    start = max(start - timedelta(seconds=params.trips.max_gap_s), end - timedelta(days=max_days))
    row = conn.execute("SELECT min(start_ts) FROM trips WHERE device_key = %s AND end_ts >= %s AND start_ts < %s",
                       (device_key, start, end)).fetchone()
    if row and row[0] is not None and row[0] < start:
        start = row[0]
    return start, end


def run_once(db_url: str, *, params: PipelineParams | None = None, device_keys: Sequence[int] | None = None,
             vehicles_per_batch: int = 200, max_window_days: int = 95, place_horizon_days: int = 28,
             tz: str = "UTC") -> RunReport:
    """Analyse everything new once; returns counts and where the time went."""
    p = params or PipelineParams()
    report = RunReport()
    with psycopg.connect(db_url, autocommit=True) as conn:
        if recorded_backend(conn) is Backend.NATIVE:
            conn.execute("SELECT vinsight_refresh_rollups()")  # the change detector must be current
        fences = _load_fences(conn, p)
        spans = dirty_spans(conn, device_keys)
        keys = sorted(spans)
        for i in range(0, len(keys), vehicles_per_batch):
            batch = keys[i:i + vehicles_per_batch]
            windows = {k: widen(conn, k, *spans[k], p, max_window_days) for k in batch}
            t0 = time.perf_counter()
            frame = read_samples(conn, batch, min(w[0] for w in windows.values()),
                                 max(w[1] for w in windows.values()), SIGNALS)
            report.read_s += time.perf_counter() - t0
            for key, lo, hi in frame.vehicles():
                start, end = windows[key]
                ts = frame.ts_ms[lo:hi]
                sel = (ts >= start.timestamp() * 1000) & (ts < end.timestamp() * 1000)
                t1 = time.perf_counter()
                analysis = analyse_vehicle(ts[sel], frame.values[lo:hi][sel], frame.signals, p, fences)
                report.compute_s += time.perf_counter() - t1
                t2 = time.perf_counter()
                _write_vehicle(conn, key, start, end, ts[sel], analysis, p)
                report.write_s += time.perf_counter() - t2
                report.vehicles += 1
                report.samples += int(sel.sum())
                report.trips += len(analysis.trips)
                report.events += len(analysis.events)
        if place_horizon_days > 0:
            for key in keys:
                t3 = time.perf_counter()
                update_places(conn, key, place_horizon_days, tz)
                report.places_s += time.perf_counter() - t3
    return report


def update_places(conn: psycopg.Connection, key: int, horizon_days: int, tz: str,
                  place_params: PlaceParams | None = None, route_params: RouteParams | None = None) -> None:
    """Stay points, places (home / work) and frequent routes of one vehicle over the last
    ``horizon_days``, replaced as a whole: they are patterns over weeks, not facts of one span."""
    end = datetime.now(UTC)
    frame = read_samples(conn, [key], end - timedelta(days=horizon_days), end, ("latitude", "longitude"))
    lat, lon = frame.column("latitude"), frame.column("longitude")
    ok = ~(np.isnan(lat) | np.isnan(lon))
    ts, lat, lon = frame.ts_ms[ok], np.ascontiguousarray(lat[ok]), np.ascontiguousarray(lon[ok])
    with conn.transaction():
        conn.execute("DELETE FROM routes WHERE device_key = %s", (key,))
        conn.execute("DELETE FROM staypoints WHERE device_key = %s", (key,))
        conn.execute("UPDATE trips SET start_place_id = NULL, end_place_id = NULL WHERE device_key = %s", (key,))
        conn.execute("DELETE FROM places WHERE device_key = %s", (key,))
        if len(ts) < 2:
            return
        stays = all_stays(ts, lat, lon)
        if stays.empty:
            return
        pa = analyse_places(stays, tz, place_params or PlaceParams())
        place_ids: dict[int, int] = {}
        for pl in pa.places.itertuples():
            place_ids[int(pl.place_id)] = conn.execute(
                "INSERT INTO places (device_key, lat, lon, label, visits, dwell_s) VALUES (%s, %s, %s, %s, %s, %s)"
                " RETURNING place_id",
                (key, float(pl.lat), float(pl.lon), pl.label or None, int(pl.n_visits), float(pl.total_dwell_s)),
            ).fetchone()[0]
        ordered = stays.sort_values("started_ms", kind="stable").reset_index(drop=True)
        for st, place in zip(ordered.itertuples(), pa.stay_place, strict=True):
            conn.execute(
                "INSERT INTO staypoints (device_key, started_at, finished_at, lat, lon, place_id)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (key, _ts(st.started_ms), _ts(st.finished_ms), float(st.lat), float(st.lon),
                 place_ids.get(int(place))),
            )
        if len(pa.trips) >= 2:
            _, routes = frequent_routes(lat, lon, pa.trips, route_params or RouteParams())
            for r in routes.itertuples():
                members = pa.trips[pa.trips["trip_id"].isin(list(r.trip_ids))]
                origin = members["origin_place"].mode()
                dest = members["dest_place"].mode()
                conn.execute(
                    "INSERT INTO routes (device_key, origin_place_id, dest_place_id, trips, geometry)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (key, place_ids.get(int(origin.iloc[0])) if len(origin) else None,
                     place_ids.get(int(dest.iloc[0])) if len(dest) else None, int(r.n_trips),
                     Jsonb({"type": "LineString", "coordinates": [list(map(float, c)) for c in r.coordinates]})),
                )


def _load_fences(conn: psycopg.Connection, p: PipelineParams) -> Geofences | None:
    rows = conn.execute("SELECT geofence_id, kind, name, geometry FROM geofences").fetchall()
    if not rows:
        return None
    features = [{"type": "Feature", "geometry": g, "properties": {"geofence_id": i, "kind": k, "name": n}}
                for i, k, n, g in rows]
    return load_geofences({"type": "FeatureCollection", "features": features}, p.geofences)


def _write_vehicle(conn: psycopg.Connection, key: int, start: datetime, end: datetime, ts: np.ndarray,
                   a: VehicleAnalysis, p: PipelineParams) -> None:
    with conn.transaction():
        conn.execute("DELETE FROM trips WHERE device_key = %s AND start_ts >= %s AND start_ts < %s", (key, start, end))
        conn.execute("DELETE FROM driving_events WHERE device_key = %s AND ts >= %s AND ts < %s", (key, start, end))
        conn.execute("DELETE FROM geofence_visits WHERE device_key = %s AND entered_at >= %s AND entered_at < %s",
                     (key, start, end))
        trip_ids: list[int] = []
        last_ms = float(ts[-1]) if len(ts) else 0.0
        for row, score, eco, track in zip(a.trips.to_dict("records"), a.trip_scores, a.eco_scores, a.tracks,
                                          strict=True):
            is_open = (time.time() * 1000 - last_ms) < p.trips.max_gap_s * 1000 and row["end_ts_ms"] == last_ms
            tid = conn.execute(
                "INSERT INTO trips (device_key, start_ts, end_ts, is_open, start_lat, start_lon, end_lat, end_lon,"
                " distance_m, distance_source, duration_s, driving_s, idle_s, max_speed_kmh, avg_speed_kmh, fuel_l,"
                " night_share, urban_share, rural_share, motorway_share, track)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING trip_id",
                (key, _ts(row["start_ts_ms"]), _ts(row["end_ts_ms"]), is_open, *_num(row, "start_lat", "start_lon",
                 "end_lat", "end_lon", "distance_m"), row.get("distance_source") or "gps",
                 *_num(row, "duration_s", "driving_s", "idle_s", "max_speed_kmh", "avg_speed_kmh", "fuel_l",
                       "night_share", "urban_share", "rural_share", "motorway_share"),
                 Jsonb({"type": "LineString", "coordinates": track}) if len(track) >= 2 else None),
            ).fetchone()[0]
            trip_ids.append(tid)
            conn.execute(
                "INSERT INTO scores (device_key, scope, trip_id, period_start, period_end, score, eco_score,"
                " distance_m, explanation) VALUES (%s, 'trip', %s, %s, %s, %s, %s, %s, %s)",
                (key, tid, _ts(row["start_ts_ms"]), _ts(row["end_ts_ms"]), score.score, eco.score,
                 float(row["distance_m"] or 0), Jsonb(_jsonable({"safety": score.as_dict(), "eco": eco.as_dict()}))),
            )
        for ev in a.events.itertuples():
            trip_id = trip_ids[ev.trip_index] if ev.trip_index >= 0 else None
            conn.execute(
                "INSERT INTO driving_events (device_key, trip_id, kind, ts, end_ts, lat, lon, severity, peak,"
                " peak_unit, duration_s) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                (key, trip_id, ev.kind, _ts(ev.ts_ms), _ts(ts[int(ev.end_idx)]), _f(ev.lat), _f(ev.lon),
                 int(ev.severity), _f(ev.peak), ev.peak_unit, _f(ev.duration_s)),
            )
        if a.visits is not None:
            for v in a.visits.itertuples():
                conn.execute(
                    "INSERT INTO geofence_visits (device_key, geofence_id, entered_at, exited_at, dwell_s)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (key, int(v.geofence_id), _ts(v.entered_ms), None if v.ongoing else _ts(v.exited_ms),
                     _f(v.dwell_s)),
                )
        _write_day_scores(conn, key, start, end, p)
        _write_health(conn, key, a, p)
        conn.execute(
            "INSERT INTO analytics_marks (device_key, bucket, samples)"
            " SELECT device_key, bucket, samples FROM samples_hourly"
            " WHERE device_key = %s AND bucket >= %s AND bucket < %s"
            " ON CONFLICT (device_key, bucket) DO UPDATE SET samples = EXCLUDED.samples",
            (key, start - HOUR, end),
        )


def _write_day_scores(conn: psycopg.Connection, key: int, start: datetime, end: datetime, p: PipelineParams) -> None:
    """Per UTC day the span touches: the period score over that day's stored trips and events."""
    day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        nxt = day + timedelta(days=1)
        trips = pd.DataFrame(conn.execute(
            "SELECT trip_id, extract(epoch FROM start_ts) * 1000 AS start_ms, extract(epoch FROM end_ts) * 1000"
            " AS end_ms, distance_m, duration_s, driving_s, idle_s, fuel_l, night_share FROM trips"
            " WHERE device_key = %s AND start_ts >= %s AND start_ts < %s", (key, day, nxt)).fetchall(),
            columns=["trip_id", "start_ms", "end_ms", "distance_m", "duration_s", "driving_s", "idle_s", "fuel_l",
                     "night_share"])
        if len(trips):
            events = pd.DataFrame(conn.execute(
                "SELECT event_id, trip_id, kind, severity, extract(epoch FROM ts) * 1000 AS ts_ms, duration_s"
                " FROM driving_events WHERE device_key = %s AND trip_id = ANY(%s)",
                (key, trips["trip_id"].tolist())).fetchall(),
                columns=["event_id", "trip_id", "kind", "severity", "ts_ms", "duration_s"]).set_index("event_id")
            for col in ("start_ms", "end_ms", "distance_m", "duration_s", "driving_s", "idle_s", "fuel_l",
                        "night_share"):
                trips[col] = trips[col].astype(float)
            score = period_score(trips, events, p.scores, period_days=1.0)
            conn.execute(
                "INSERT INTO scores (device_key, scope, period_start, period_end, score, distance_m, explanation)"
                " VALUES (%s, 'day', %s, %s, %s, %s, %s) ON CONFLICT (device_key, scope, period_start)"
                " WHERE scope <> 'trip' DO UPDATE SET score = EXCLUDED.score, distance_m = EXCLUDED.distance_m,"
                " explanation = EXCLUDED.explanation, computed_at = now()",
                (key, day, nxt, score.score, float(trips["distance_m"].sum()), Jsonb(_jsonable(score.as_dict()))),
            )
        else:
            conn.execute("DELETE FROM scores WHERE device_key = %s AND scope = 'day' AND period_start = %s",
                         (key, day))
        day = nxt


def _write_health(conn: psycopg.Connection, key: int, a: VehicleAnalysis, p: PipelineParams) -> None:
    if a.battery is None and a.coolant is None:
        return
    summary = health_summary(key, datetime.now(UTC), battery=a.battery, coolant=a.coolant, params=p.health)
    battery = _jsonable({k: v for k, v in dataclasses.asdict(a.battery).items() if k != "daily"}) if a.battery else None
    conn.execute(
        "INSERT INTO vehicle_health (device_key, battery, coolant, leads) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (device_key) DO UPDATE SET battery = EXCLUDED.battery, coolant = EXCLUDED.coolant,"
        " leads = EXCLUDED.leads, computed_at = now()",
        (key, Jsonb(battery) if battery else None, Jsonb(_jsonable(a.coolant)) if a.coolant else None,
         Jsonb(_jsonable(list(summary.leads)))),
    )


def _f(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _num(row: dict[str, Any], *names: str) -> list[float | None]:
    return [_f(row.get(n)) for n in names]
