"""The analytics pipeline for one vehicle's track, wired in one visible place.

Stages, each its own module with its own ``*Params`` (documented SI defaults):

1. :mod:`analytics.cleaning`   - usable GPS fixes (jumps, duplicates, bad HDOP, gaps)
2. :mod:`analytics.trips`      - movement trips and their metrics (distance, time, fuel, night, road mix)
3. :mod:`analytics.events`     - harsh acceleration / braking / cornering, speeding, over-revving, idling
4. :mod:`analytics.scores`     - safety score per trip with its explanation, eco score per trip
5. :mod:`analytics.health`     - battery (resting / cranking voltage), coolant anomalies
6. :mod:`analytics.geofences`  - enter / exit / dwell at dealer sites, home zones, custom areas

Fleet-level and long-horizon stages (places, routes, heatmaps, period scores) run over the tables
this pipeline writes, in :mod:`analytics.runner`. Everything here is arrays in, DataFrames and
dataclasses out: no database, so the same function serves notebooks, tests and the library API.
For many vehicles at once (``vinsight analytics run``, the benchmarks), :mod:`analytics.batch` runs
stages 1–4 over all of them in one numba pass with identical results, without the per-vehicle
DataFrames and dataclasses that dominate this function's cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .cleaning import CleaningParams
from .events import EventParams, detect_events
from .geofences import GeofenceParams, Geofences, geofence_visits
from .health import BatteryAssessment, CoolantAssessment, HealthParams, battery_health, coolant_health
from .heatmaps import HeatmapParams
from .scores import ScoreExplanation, ScoreParams, eco_score, trip_score
from .trips import TripParams, detect_trips

# The samples columns the pipeline reads (analytics.reader fetches exactly these).
SIGNALS: tuple[str, ...] = (
    "speed", "rpm", "throttle_pos", "coolant_temp", "maf", "fuel_rate", "battery_voltage", "odometer",
    "latitude", "longitude", "gps_speed", "course", "hdop", "satellites", "fix_mode",
)


@dataclass(frozen=True)
class PipelineParams:
    """Every stage's parameters; a deployment overrides fields from a JSON file (see settings)."""

    cleaning: CleaningParams = field(default_factory=CleaningParams)
    trips: TripParams = field(default_factory=TripParams)
    events: EventParams = field(default_factory=EventParams)
    scores: ScoreParams = field(default_factory=ScoreParams)
    health: HealthParams = field(default_factory=HealthParams)
    geofences: GeofenceParams = field(default_factory=GeofenceParams)
    heatmap: HeatmapParams = field(default_factory=HeatmapParams)
    speed_limits: Any = None  # GeoJSON FeatureCollection of LineStrings with a maxspeed (km/h) property


@dataclass
class VehicleAnalysis:
    trips: pd.DataFrame
    events: pd.DataFrame  # with a trip_index column (row of ``trips``), -1 outside trips
    trip_scores: list[ScoreExplanation]
    eco_scores: list[ScoreExplanation]
    battery: BatteryAssessment | None
    coolant: CoolantAssessment | None
    visits: pd.DataFrame | None
    tracks: list[list[list[float]]]  # per trip: simplified [lon, lat] coordinates (GeoJSON order)


def _col(values: np.ndarray, signals: tuple[str, ...], name: str) -> np.ndarray | None:
    if name not in signals:
        return None
    col = np.ascontiguousarray(values[:, signals.index(name)])
    return None if np.isnan(col).all() else col


def analyse_vehicle(ts_ms: np.ndarray, values: np.ndarray, signals: tuple[str, ...] = SIGNALS,
                    params: PipelineParams | None = None, fences: Geofences | None = None) -> VehicleAnalysis:
    """Run every per-vehicle stage over one vehicle's time-ordered samples."""
    p = params or PipelineParams()
    ts_ms = np.ascontiguousarray(ts_ms, dtype=np.int64)

    def c(name: str) -> np.ndarray | None:
        return _col(values, signals, name)

    speed, rpm, lat, lon = c("speed"), c("rpm"), c("latitude"), c("longitude")
    trips = detect_trips(ts_ms, lat=lat, lon=lon, speed=speed, gps_speed=c("gps_speed"), rpm=rpm,
                         odometer=c("odometer"), fuel_rate=c("fuel_rate"), maf=c("maf"), hdop=c("hdop"),
                         satellites=c("satellites"), fix_mode=c("fix_mode"), params=p.trips, cleaning=p.cleaning)
    trips = trips.reset_index(drop=True)
    trips["trip_id"] = np.arange(len(trips))
    events = detect_events(ts_ms, speed, rpm, lat, lon, c("course"), c("gps_speed"), p.events, p.speed_limits)
    events = events.reset_index(drop=True)
    events.index.name = "event_id"
    events["trip_index"] = _trip_of(events["start_idx"].to_numpy(), trips)
    trip_events = events.assign(trip_id=events["trip_index"])
    rows = trips.to_dict("records")
    throttle = c("throttle_pos")
    scores = [trip_score(row, trip_events, p.scores) for row in rows]
    ecos = [eco_score(row, ts_ms, rpm, throttle, p.scores) for row in rows]
    battery = coolant = None
    voltage, coolant_temp = c("battery_voltage"), c("coolant_temp")
    zeros = np.zeros(len(ts_ms))
    if voltage is not None:
        battery = battery_health(ts_ms, rpm if rpm is not None else np.full(len(ts_ms), np.nan),
                                 speed if speed is not None else zeros, voltage, p.health)
    if coolant_temp is not None:
        coolant = coolant_health(ts_ms, rpm if rpm is not None else np.full(len(ts_ms), np.nan),
                                 speed if speed is not None else zeros, coolant_temp, p.health)
    visits = None
    if fences is not None and lat is not None and lon is not None:
        visits = geofence_visits(ts_ms, lat, lon, fences, hdop=c("hdop"), params=p.geofences)
    tracks = [_simplified_track(lat, lon, int(a), int(b))
              for a, b in zip(trips["start_idx"].to_numpy(), trips["end_idx"].to_numpy(), strict=True)]
    return VehicleAnalysis(trips, events, scores, ecos, battery, coolant, visits, tracks)


def analyse_frame(df: pd.DataFrame, params: PipelineParams | None = None, fences: Geofences | None = None,
                  time_column: str = "ts") -> VehicleAnalysis:
    """:func:`analyse_vehicle` for one vehicle's samples as a DataFrame or GeoDataFrame.

    ``time_column`` holds datetimes (tz-aware, or naive UTC) or Unix milliseconds; signal columns use
    the catalog names (``speed``, ``rpm``, ``latitude`` ...). A GeoDataFrame's point geometry, in
    any CRS, supplies ``latitude`` / ``longitude`` when those columns are absent.
    """
    frame = df.sort_values(time_column, kind="stable")
    t = frame[time_column]
    if pd.api.types.is_datetime64_any_dtype(t):
        epoch = pd.Timestamp(0, tz="UTC")  # whatever the resolution (ns, us, ms) of the column
        ts = ((pd.to_datetime(t, utc=True) - epoch) // pd.Timedelta(milliseconds=1)).to_numpy(np.int64)
    else:
        ts = t.to_numpy(np.int64)
    columns = {name: frame[name].to_numpy(np.float64) for name in SIGNALS if name in frame.columns}
    geometry = getattr(frame, "geometry", None) if hasattr(frame, "crs") else None
    if geometry is not None and "latitude" not in columns:
        wgs84 = geometry.to_crs(4326) if frame.crs is not None else geometry
        columns["longitude"] = wgs84.x.to_numpy(np.float64)
        columns["latitude"] = wgs84.y.to_numpy(np.float64)
    values = np.full((len(frame), len(SIGNALS)), np.nan)
    for name, col in columns.items():
        values[:, SIGNALS.index(name)] = col
    return analyse_vehicle(ts, values, SIGNALS, params, fences)


def _trip_of(event_starts: np.ndarray, trips: pd.DataFrame) -> np.ndarray:
    """Row of the trip containing each event start (trips are inclusive index ranges), else -1."""
    out = np.full(len(event_starts), -1, dtype=np.int64)
    if len(trips) == 0 or len(event_starts) == 0:
        return out
    starts = trips["start_idx"].to_numpy()
    ends = trips["end_idx"].to_numpy()
    k = np.searchsorted(starts, event_starts, side="right") - 1
    inside = (k >= 0) & (event_starts <= ends[np.maximum(k, 0)])
    out[inside] = k[inside]
    return out


def _simplified_track(lat: np.ndarray | None, lon: np.ndarray | None, start: int, end: int,
                      tolerance_deg: float = 1e-4) -> list[list[float]]:
    """The trip's track for maps, Douglas-Peucker simplified to ~10 m (shapely)."""
    if lat is None or lon is None:
        return []
    la, lo = lat[start:end + 1], lon[start:end + 1]
    ok = ~(np.isnan(la) | np.isnan(lo))
    if ok.sum() < 2:
        return []
    from shapely.geometry import LineString

    line = LineString(np.column_stack([lo[ok], la[ok]])).simplify(tolerance_deg, preserve_topology=False)
    return np.round(np.asarray(line.coords), 6).tolist()  # one conversion, not one per vertex
