"""``vinsight analytics run``: the pipeline over the database, incrementally.

Which data is new: for every vehicle and hour, ``analytics_marks`` remembers how many samples
analytics saw; ``samples_hourly`` (a continuous aggregate on TimescaleDB, an incrementally refreshed
table natively) says how many there are now. Hours that differ are new or received late data.

What a run re-opens for a vehicle: from the earliest changed hour, widened by the trip gap rule
(``max_gap_s``, a trip cannot span a longer gap) and back to the start of any stored trip that
overlaps it, to the end of the latest changed hour. Those samples are read in one binary COPY
(:mod:`analytics.reader`), analysed, and the derived rows of that span (trips, events, trip scores,
geofence visits) are replaced in one transaction together with the marks, so a crash leaves either
the old or the new result, never half. Day scores are recomputed for the days the span touches,
from the stored trips.

Why batches: the daily job is 1,000+ vehicles. Per vehicle, the library path
(:func:`analytics.pipeline.analyse_vehicle`) spends ~20 ms in pandas and Python objects around
~2 ms of numba work, and writing row by row costs a round trip per trip, event and score. So a
batch of vehicles is analysed by the fleet-wide batch path (:mod:`analytics.batch`: one numba pass
over all their samples, results identical to the per-vehicle path) and its rows are written with
COPY and set-based statements in one transaction per batch.
"""

from __future__ import annotations

import dataclasses
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

from .batch import (
    BATCH_SIGNALS,
    EV_END,
    EV_KIND,
    EV_LAT,
    EV_LON,
    EV_SEVERITY,
    EV_TRIP,
    EV_TS,
    EV_VALUE,
    FleetAnalysis,
    analyse_fleet,
    period_scores,
    simplified_tracks,
    trip_eco_explanation,
    trip_safety_explanation,
)
from .events import EVENT_KINDS
from .geofences import Geofences, geofence_visits, load_geofences
from .health import BatteryAssessment, CoolantAssessment, battery_health_fleet, coolant_health, health_summary
from .heatmaps import fleet_heatmap
from .json_values import json_value
from .pipeline import SIGNALS, PipelineParams
from .places import PlaceParams, analyse_places
from .reader import read_samples
from .routes import RouteParams, frequent_routes
from .staypoints import all_stays
from .trips import DISTANCE_SOURCES, TRIP_COLUMNS

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
    heatmap_s: float = 0.0
    summaries: int = 0
    summaries_s: float = 0.0


def _ts(ms: float) -> datetime:
    return datetime.fromtimestamp(float(ms) / 1000, UTC)


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
             tz: str = "UTC", threads: int = 1, heatmap: bool = False) -> RunReport:
    """Analyse everything new once; returns counts and where the time went.

    ``threads`` > 1 runs the batch kernels on that many threads (results are the same). ``heatmap``:
    afterwards, recompute the fleet heatmap cells of every UTC day the run touched (:func:`update_heatmap`;
    it reads the whole fleet's fixes of those days, so the daily job does it, not every incremental run).
    """
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
            windows = widen_all(conn, {k: spans[k] for k in batch}, p, max_window_days)
            t0 = time.perf_counter()
            frame = read_samples(conn, batch, min(w[0] for w in windows.values()),
                                 max(w[1] for w in windows.values()), SIGNALS)
            report.read_s += time.perf_counter() - t0
            t1 = time.perf_counter()
            result = analyse_batch(frame, windows, p, fences, threads)
            report.compute_s += time.perf_counter() - t1
            t2 = time.perf_counter()
            _write_batch(conn, result, p)
            report.write_s += time.perf_counter() - t2
            report.vehicles += len(result.keys)
            report.samples += len(result.fleet.ts_ms)
            report.trips += len(result.fleet.trips)
            report.events += len(result.fleet.events)
        if heatmap and keys:
            t4 = time.perf_counter()
            first = min(spans[k][0] for k in keys).astimezone(UTC).replace(hour=0, minute=0, second=0,
                                                                            microsecond=0)
            last = max(spans[k][1] for k in keys)
            day = first
            while day < last:
                update_heatmap(conn, day, p)
                day += timedelta(days=1)
            report.heatmap_s += time.perf_counter() - t4
        if place_horizon_days > 0:
            for key in keys:
                t3 = time.perf_counter()
                update_places(conn, key, place_horizon_days, tz)
                report.places_s += time.perf_counter() - t3
        t5 = time.perf_counter()
        report.summaries = refresh_vehicle_summaries(conn, keys)
        report.summaries_s = time.perf_counter() - t5
    return report


# A vehicle whose summary is older than this is refreshed by the next run even without new data, so
# the 30-day figures keep sliding for parked cars.
SUMMARY_MAX_AGE = "6 hours"


def refresh_vehicle_summaries(conn: psycopg.Connection, device_keys: Sequence[int],
                              max_age: str = SUMMARY_MAX_AGE) -> int:
    """Recompute the portal's per-vehicle summaries (migration 0009) of the vehicles of ``device_keys``,
    which this run changed, and of every vehicle whose summary is older than ``max_age``."""
    row = conn.execute(
        "SELECT vinsight_refresh_vehicle_summaries(ARRAY(SELECT DISTINCT d.vehicle_id FROM devices d"
        " WHERE d.device_key = ANY (%s) AND d.vehicle_id IS NOT NULL), %s::interval)",
        (list(device_keys), max_age)).fetchone()
    return int(row[0]) if row else 0


def widen_all(conn: psycopg.Connection, spans: dict[int, tuple[datetime, datetime]], params: PipelineParams,
              max_days: int) -> dict[int, tuple[datetime, datetime]]:
    """:func:`widen` for many vehicles in one query."""
    keys = list(spans)
    starts = [max(spans[k][0] - timedelta(seconds=params.trips.max_gap_s), spans[k][1] - timedelta(days=max_days))
              for k in keys]
    ends = [spans[k][1] for k in keys]
    rows = conn.execute(
        "SELECT w.k, min(t.start_ts) FROM unnest(%s::int[], %s::timestamptz[], %s::timestamptz[]) AS w(k, s, e)"
        " JOIN trips t ON t.device_key = w.k AND t.end_ts >= w.s AND t.start_ts < w.e GROUP BY w.k",
        (keys, starts, ends)).fetchall()
    earliest = {int(k): v for k, v in rows}
    out = {}
    for k, start, end in zip(keys, starts, ends, strict=True):
        first = earliest.get(k)
        out[k] = (first if first is not None and first < start else start, end)
    return out


@dataclass
class BatchResult:
    """A batch of vehicles analysed: the fleet arrays plus the per-vehicle pieces that stay in Python."""

    keys: list[int]
    windows: list[tuple[datetime, datetime]]
    fleet: FleetAnalysis
    tracks: list[list[list[float]]]  # per trip (fleet row)
    battery: list[BatteryAssessment | None]
    coolant: list[CoolantAssessment | None]
    visits: list[pd.DataFrame | None]


def analyse_batch(frame: Any, windows: dict[int, tuple[datetime, datetime]], p: PipelineParams,
                  fences: Geofences | None = None, threads: int = 1) -> BatchResult:
    """Every vehicle of ``frame`` over its window: the batch path, then health, geofences and tracks.

    Vehicle by vehicle the results are :func:`analytics.pipeline.analyse_vehicle`'s on the same samples.
    """
    keys, wins, pieces = [], [], []
    for key, lo, hi in frame.vehicles():
        start, end = windows[key]
        ts = frame.ts_ms[lo:hi]
        a = lo + int(np.searchsorted(ts, start.timestamp() * 1000, side="left"))
        b = lo + int(np.searchsorted(ts, end.timestamp() * 1000, side="left"))
        keys.append(key)
        wins.append((start, end))
        pieces.append((a, b))
    lengths = np.array([b - a for a, b in pieces], dtype=np.int64)
    bounds = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    if int(bounds[-1]) == len(frame):  # every sample is in its vehicle's window: no copy
        rows = None
        ts_all = frame.ts_ms
    else:
        rows = np.concatenate([np.arange(a, b) for a, b in pieces]) if pieces else np.zeros(0, dtype=np.int64)
        ts_all = frame.ts_ms[rows]
    columns: dict[str, np.ndarray] = {}
    for name in set(BATCH_SIGNALS) | {"battery_voltage", "coolant_temp"}:
        if name in frame.signals:
            col = frame.values[:, frame.signals.index(name)]
            columns[name] = np.ascontiguousarray(col if rows is None else col[rows])
    fleet = analyse_fleet(ts_all, bounds, columns, cleaning=p.cleaning, trips=p.trips, events=p.events,
                          scores=p.scores, speed_limits=p.speed_limits, threads=threads)
    lat, lon = columns.get("latitude"), columns.get("longitude")
    tracks = simplified_tracks(fleet, lat, lon) if lat is not None and lon is not None else [[] for _ in fleet.trips]
    coolant: list[CoolantAssessment | None] = []
    visits: list[pd.DataFrame | None] = []
    n = len(ts_all)
    speed_h = np.zeros(n) if columns.get("speed") is None else columns["speed"].copy()
    rpm_h = np.full(n, np.nan) if columns.get("rpm") is None else columns["rpm"]
    has_voltage = np.zeros(len(keys), dtype=bool)
    for v in range(len(keys)):
        a, b = int(bounds[v]), int(bounds[v + 1])
        if np.isnan(speed_h[a:b]).all():
            speed_h[a:b] = 0.0  # a vehicle without speed: analyse_vehicle's health stages see zeros
        volts = columns.get("battery_voltage")
        has_voltage[v] = volts is not None and not np.isnan(volts[a:b]).all()
    battery: list[BatteryAssessment | None] = [None] * len(keys)
    if has_voltage.any():
        assessed = battery_health_fleet(ts_all, bounds, rpm_h, speed_h, columns["battery_voltage"], p.health)
        battery = [assessed[v] if has_voltage[v] else None for v in range(len(keys))]
    for v in range(len(keys)):
        a, b = int(bounds[v]), int(bounds[v + 1])
        ts = ts_all[a:b]

        def c(name: str, a: int = a, b: int = b) -> np.ndarray | None:
            col = columns.get(name)
            if col is None:
                return None
            part = col[a:b]
            return None if np.isnan(part).all() else part  # what analytics.pipeline._col gives

        coolant_temp = c("coolant_temp")
        coolant.append(coolant_health(ts, rpm_h[a:b], speed_h[a:b], coolant_temp, p.health)
                       if coolant_temp is not None else None)
        la, lo = c("latitude"), c("longitude")
        visits.append(geofence_visits(ts, la, lo, fences, hdop=c("hdop"), params=p.geofences)
                      if fences is not None and la is not None and lo is not None else None)
    return BatchResult(keys, wins, fleet, tracks, battery, coolant, visits)


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


def update_heatmap(conn: psycopg.Connection, day: datetime, p: PipelineParams, segment: str = "") -> int:
    """Replace the k-anonymous heatmap cells of one UTC day (tables ``heatmap_cells`` / ``heatmap_days``).

    Fixes: every usable-looking fix (both coordinates) of every vehicle that day, one binary COPY for
    the fleet; stops: the stored trips' end points that day. Only cells with at least
    ``p.heatmap.k_min_vehicles`` distinct vehicles are stored (:func:`analytics.heatmaps.fleet_heatmap`),
    the day's suppressed-cell count in ``heatmap_days``. Returns the number of released cells.
    """
    day = day.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    nxt = day + timedelta(days=1)
    keys = [k for (k,) in conn.execute("SELECT DISTINCT device_key FROM samples_hourly WHERE bucket >= %s"
                                       " AND bucket < %s", (day, nxt)).fetchall()]
    frame = read_samples(conn, keys, day, nxt, ("latitude", "longitude"))
    lat, lon = frame.column("latitude"), frame.column("longitude")
    ok = ~(np.isnan(lat) | np.isnan(lon))
    stops = conn.execute("SELECT device_key, end_lat, end_lon FROM trips WHERE end_ts >= %s AND end_ts < %s"
                         " AND end_lat IS NOT NULL AND end_lon IS NOT NULL", (day, nxt)).fetchall()
    stop = np.array(stops, dtype=np.float64).reshape(-1, 3)
    fc = fleet_heatmap(frame.device_key[ok], lat[ok], lon[ok], stop_vehicle=stop[:, 0].astype(np.int64),
                       stop_lat=stop[:, 1], stop_lon=stop[:, 2], params=p.heatmap, segment=segment or None)
    meta = fc["metadata"]
    rows = [(segment, day.date(), f["properties"]["cell"], p.heatmap.cell_size_m, p.heatmap.k_min_vehicles,
             f["properties"]["vehicles"], f["properties"]["fixes"], f["properties"]["fix_vehicles"],
             f["properties"]["stops"], f["properties"]["stop_vehicles"], Jsonb(f["geometry"]))
            for f in fc["features"]]
    with conn.transaction():
        conn.execute("DELETE FROM heatmap_cells WHERE segment = %s AND day = %s", (segment, day.date()))
        _copy_rows(conn, "heatmap_cells", ("segment", "day", "cell", "cell_size_m", "k_min_vehicles", "vehicles",
                                           "fixes", "fix_vehicles", "stops", "stop_vehicles", "geometry"), rows)
        conn.execute(
            "INSERT INTO heatmap_days (segment, day, released_cells, suppressed_cells, metadata)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (segment, day) DO UPDATE SET"
            " released_cells = EXCLUDED.released_cells, suppressed_cells = EXCLUDED.suppressed_cells,"
            " metadata = EXCLUDED.metadata, computed_at = now()",
            (segment, day.date(), meta["released_cells"], meta["suppressed_cells"], Jsonb(json_value(meta))))
    return len(rows)


def _load_fences(conn: psycopg.Connection, p: PipelineParams) -> Geofences | None:
    rows = conn.execute("SELECT geofence_id, kind, name, geometry FROM geofences").fetchall()
    if not rows:
        return None
    features = [{"type": "Feature", "geometry": g, "properties": {"geofence_id": i, "kind": k, "name": n}}
                for i, k, n, g in rows]
    return load_geofences({"type": "FeatureCollection", "features": features}, p.geofences)


def _copy_rows(conn: psycopg.Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Rows into a table by COPY (one round trip for the lot, not one per row)."""
    if not rows:
        return
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)


TRIP_WRITE_COLUMNS: tuple[str, ...] = (
    "trip_id", "device_key", "start_ts", "end_ts", "is_open", "start_lat", "start_lon", "end_lat", "end_lon",
    "distance_m", "distance_source", "duration_s", "driving_s", "idle_s", "max_speed_kmh", "avg_speed_kmh", "fuel_l",
    "night_share", "urban_share", "rural_share", "motorway_share", "track")
_TC = {name: k for k, name in enumerate(TRIP_COLUMNS)}
_TRIP_FLOATS = ("duration_s", "driving_s", "idle_s", "max_speed_kmh", "avg_speed_kmh", "fuel_l", "night_share",
                "urban_share", "rural_share", "motorway_share")


def _write_batch(conn: psycopg.Connection, r: BatchResult, p: PipelineParams) -> None:
    """Replace the derived rows of every vehicle's span in one transaction: set-based deletes, COPY inserts."""
    fa = r.fleet
    keys = r.keys
    starts = [w[0] for w in r.windows]
    ends = [w[1] for w in r.windows]
    now_ms = time.time() * 1000
    with conn.transaction():
        spans = "unnest(%s::int[], %s::timestamptz[], %s::timestamptz[]) AS w(k, s, e)"
        conn.execute(f"DELETE FROM trips t USING {spans} WHERE t.device_key = w.k AND t.start_ts >= w.s"
                     " AND t.start_ts < w.e", (keys, starts, ends))
        conn.execute(f"DELETE FROM driving_events d USING {spans} WHERE d.device_key = w.k AND d.ts >= w.s"
                     " AND d.ts < w.e", (keys, starts, ends))
        conn.execute(f"DELETE FROM geofence_visits g USING {spans} WHERE g.device_key = w.k AND g.entered_at >= w.s"
                     " AND g.entered_at < w.e", (keys, starts, ends))
        m = len(fa.trips)
        trip_ids = [row[0] for row in conn.execute(
            "SELECT nextval(pg_get_serial_sequence('trips', 'trip_id')) FROM generate_series(1, %s)", (m,))
        ] if m else []
        trip_rows, score_rows, event_rows, visit_rows = [], [], [], []
        table = fa.trips
        for v, key in enumerate(keys):
            ta, tb = int(fa.trip_bounds[v]), int(fa.trip_bounds[v + 1])
            a, b = int(fa.bounds[v]), int(fa.bounds[v + 1])
            last_ms = float(fa.ts_ms[b - 1]) if b > a else 0.0
            for j in range(ta, tb):
                row = table[j]
                src = int(row[_TC["distance_source"]])
                track = r.tracks[j]
                is_open = (now_ms - last_ms) < p.trips.max_gap_s * 1000 and row[_TC["end_ts_ms"]] == last_ms
                start_ts, end_ts = _ts(row[_TC["start_ts_ms"]]), _ts(row[_TC["end_ts_ms"]])
                trip_rows.append((
                    trip_ids[j], key, start_ts, end_ts, bool(is_open),
                    *(_f(row[_TC[c]]) for c in ("start_lat", "start_lon", "end_lat", "end_lon", "distance_m")),
                    DISTANCE_SOURCES[src] if src >= 0 else "gps", *(_f(row[_TC[c]]) for c in _TRIP_FLOATS),
                    Jsonb({"type": "LineString", "coordinates": track}) if len(track) >= 2 else None))
                distance = row[_TC["distance_m"]]
                score_rows.append((
                    key, "trip", trip_ids[j], start_ts, end_ts, _f(fa.trip_scores[j]), _f(fa.eco_scores[j]),
                    float(distance),  # NaN stays NaN, as before
                    Jsonb({"safety": trip_safety_explanation(fa, v, j - ta),
                           "eco": trip_eco_explanation(fa, v, j - ta)})))
            ts = fa.ts_ms[a:b]
            for ev in fa.events[int(fa.event_bounds[v]):int(fa.event_bounds[v + 1])]:
                t = int(ev[EV_TRIP])
                kind = int(ev[EV_KIND])
                event_rows.append((
                    key, trip_ids[ta + t] if t >= 0 else None, EVENT_KINDS[kind], _ts(ev[EV_TS]),
                    _ts(ts[int(ev[EV_END])]), _f(ev[EV_LAT]), _f(ev[EV_LON]), int(ev[EV_SEVERITY]), _f(ev[EV_VALUE]),
                    _UNITS_BY_KIND[kind], _f(ev[9])))
            if r.visits[v] is not None:
                for vis in r.visits[v].itertuples():
                    service = vis.kind == "dealer" and vis.dwell_s >= p.geofences.dealer_min_dwell_s  # dealer_visits
                    visit_rows.append((key, int(vis.geofence_id), _ts(vis.entered_ms),
                                       None if vis.ongoing else _ts(vis.exited_ms), _f(vis.dwell_s), bool(service)))
        _copy_rows(conn, "trips", TRIP_WRITE_COLUMNS, trip_rows)
        _copy_rows(conn, "scores", ("device_key", "scope", "trip_id", "period_start", "period_end", "score",
                                    "eco_score", "distance_m", "explanation"), score_rows)
        _copy_rows(conn, "driving_events", ("device_key", "trip_id", "kind", "ts", "end_ts", "lat", "lon", "severity",
                                            "peak", "peak_unit", "duration_s"), event_rows)
        _copy_rows(conn, "geofence_visits", ("device_key", "geofence_id", "entered_at", "exited_at", "dwell_s",
                                             "service_visit"), visit_rows)
        _write_day_scores(conn, keys, starts, ends, p)
        _write_health(conn, r, p)
        conn.execute(
            "INSERT INTO analytics_marks (device_key, bucket, samples)"
            " SELECT h.device_key, h.bucket, h.samples FROM samples_hourly h"
            f" JOIN {spans} ON h.device_key = w.k AND h.bucket >= w.s - interval '1 hour' AND h.bucket < w.e"
            " ON CONFLICT (device_key, bucket) DO UPDATE SET samples = EXCLUDED.samples",
            (keys, starts, ends),
        )


_UNITS_BY_KIND: tuple[str, ...] = ("m/s²", "m/s²", "m/s²", "m/s", "1/s", "s")


def _write_day_scores(conn: psycopg.Connection, keys: Sequence[int], starts: Sequence[datetime],
                      ends: Sequence[datetime], p: PipelineParams) -> None:
    """Per vehicle and UTC day its span touches: the period score over that day's stored trips and events.

    One query for the trips, one for the events, one kernel call for the scores (analytics.batch.period_scores),
    one statement for the upserts and one for the deletes of days left without trips.
    """
    pair_keys: list[int] = []
    pair_days: list[datetime] = []
    for key, start, end in zip(keys, starts, ends, strict=True):
        day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        while day < end:
            pair_keys.append(key)
            pair_days.append(day)
            day += timedelta(days=1)
    if not pair_keys:
        return
    trips = pd.DataFrame(conn.execute(
        "SELECT w.g, t.trip_id, extract(epoch FROM t.start_ts) * 1000, extract(epoch FROM t.end_ts) * 1000,"
        " t.distance_m, t.duration_s, t.driving_s, t.night_share"
        " FROM unnest(%s::int[], %s::timestamptz[]) WITH ORDINALITY AS w(k, d, g)"
        " JOIN trips t ON t.device_key = w.k AND t.start_ts >= w.d AND t.start_ts < w.d + interval '1 day'"
        " ORDER BY w.g, t.start_ts, t.trip_id", (pair_keys, pair_days)).fetchall(),
        columns=["g", "trip_id", "start_ms", "end_ms", "distance_m", "duration_s", "driving_s", "night_share"])
    for col in ("start_ms", "end_ms", "distance_m", "duration_s", "driving_s", "night_share"):
        trips[col] = trips[col].astype(float)
    events = pd.DataFrame(conn.execute(
        "SELECT event_id, trip_id, kind, duration_s FROM driving_events WHERE trip_id = ANY(%s) ORDER BY event_id",
        (trips["trip_id"].tolist(),)).fetchall(), columns=["event_id", "trip_id", "kind", "duration_s"]) \
        if len(trips) else pd.DataFrame(columns=["event_id", "trip_id", "kind", "duration_s"])
    events["duration_s"] = events["duration_s"].astype(float)
    group = trips["g"].to_numpy(dtype=np.int64) - 1
    groups = np.searchsorted(group, np.arange(len(pair_keys) + 1), side="left")
    result = period_scores(trips, events, groups, p.scores, period_days=1.0)
    has = np.diff(groups) > 0
    upserts = [(k, d, d + timedelta(days=1), _f(result.scores[g]), float(result.distance_m[g]),
                Jsonb(result.explanations[g]))
               for g, (k, d) in enumerate(zip(pair_keys, pair_days, strict=True)) if has[g]]
    if upserts:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO scores (device_key, scope, period_start, period_end, score, distance_m, explanation)"
                " VALUES (%s, 'day', %s, %s, %s, %s, %s) ON CONFLICT (device_key, scope, period_start)"
                " WHERE scope <> 'trip' DO UPDATE SET score = EXCLUDED.score, distance_m = EXCLUDED.distance_m,"
                " explanation = EXCLUDED.explanation, computed_at = now()", upserts)
    empty = [g for g in range(len(pair_keys)) if not has[g]]
    if empty:
        conn.execute("DELETE FROM scores s USING unnest(%s::int[], %s::timestamptz[]) AS w(k, d)"
                     " WHERE s.device_key = w.k AND s.scope = 'day' AND s.period_start = w.d",
                     ([pair_keys[g] for g in empty], [pair_days[g] for g in empty]))


def _write_health(conn: psycopg.Connection, r: BatchResult, p: PipelineParams) -> None:
    rows = []
    now = datetime.now(UTC)
    for key, battery, coolant in zip(r.keys, r.battery, r.coolant, strict=True):
        if battery is None and coolant is None:
            continue
        summary = health_summary(key, now, battery=battery, coolant=coolant, params=p.health)
        bat = json_value({k: v for k, v in dataclasses.asdict(battery).items() if k != "daily"}) if battery else None
        rows.append((key, Jsonb(bat) if bat else None, Jsonb(json_value(coolant)) if coolant else None,
                     Jsonb(json_value(list(summary.leads)))))
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO vehicle_health (device_key, battery, coolant, leads) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (device_key) DO UPDATE SET battery = EXCLUDED.battery, coolant = EXCLUDED.coolant,"
                " leads = EXCLUDED.leads, computed_at = now()", rows)


def _f(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _num(row: dict[str, Any], *names: str) -> list[float | None]:
    return [_f(row.get(n)) for n in names]
