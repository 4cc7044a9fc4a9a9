"""The analytics pipeline written the straightforward pandas way: the baseline ``bench/analytics_kernels.py`` times
the numba kernels against.

What a data scientist would write with pandas for the same rules: one DataFrame holding every vehicle's samples
(one row per sample, a ``vehicle`` column, each vehicle's rows contiguous and time-sorted, a RangeIndex), and
``groupby('vehicle')`` / ``groupby('trip')`` with ``shift``, ``diff``, ``ffill``, ``cumsum`` run-length ids and
boolean masks wherever the logic vectorises. Three pieces are sequential state machines that no vectorised
expression reproduces exactly, so they are ``itertuples`` loops, as such code usually ends up:

* the GPS jump filter (:mod:`analytics.cleaning`): the anchor, the agreeing-rejects counter and re-anchoring;
* movement-trip segmentation (:mod:`analytics.trips`): the stop anchor and the stop-radius / stop-duration rules;
* the event-start clamp (:func:`analytics.events.threshold_runs_kernel`: a run starts after the previous *kept*
  run, and whether that one was kept depends on its own clamped start): a loop over candidate runs, not samples.

Everything else is vectorised: quality masks, per-trip distances/coverage/fuel (trapezoids over ``shift``),
held speed/RPM (``ffill`` with the hold age), urban/rural/motorway shares (run ids of the > 90 km/h intervals),
the 2 s Δv and 3 s yaw-rate windows (window origin by ``searchsorted`` on the time axis, the course unwrapped by
a per-chain ``cumsum``), event hysteresis (``ffill`` of a 1 / 0 / undecided state per gap-free segment), events
to trips (``searchsorted`` on trip starts) and the scores (``groupby`` counts and column arithmetic).

The rules and thresholds are those of the modules (the same ``*Params`` dataclasses), so results should be the
numba path's. Known sources of difference, all floating point: numpy's vectorised sin/cos against the scalar
libm calls in the kernels (ulp-level; could flip a comparison that lands exactly on a threshold) and pandas'
compensated ``groupby().sum()`` against the kernels' running sums (relative 1e-12). The benchmark's equivalence
check prints what it finds. Scope: no speed-limit layer (speeding uses the absolute band, as detect_events does
without one), ``TripParams.timezone`` ignored (fixed ``utc_offset_h``), no engine sessions or eco score.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd

from analytics.cleaning import CleaningParams
from analytics.events import (
    KIND_HARSH_ACCELERATION,
    KIND_HARSH_BRAKING,
    KIND_HARSH_CORNERING,
    KIND_IDLING,
    KIND_OVER_REVVING,
    KIND_SPEEDING,
    EventParams,
)
from analytics.geo import EARTH_RADIUS_M, haversine_m_reference
from analytics.scores import HARSH_COMPONENTS, MILEAGE, NIGHT, SPEEDING, ScoreParams
from analytics.trips import DISTANCE_SOURCES, PETROL_DENSITY_G_PER_L, STOICHIOMETRIC_AFR_PETROL, TripParams

SAMPLE_COLUMNS: tuple[str, ...] = ("vehicle", "ts_ms", "speed", "rpm", "latitude", "longitude", "gps_speed",
                                   "course", "hdop", "satellites", "fix_mode", "fuel_rate", "maf")
"""Columns the reference reads (``odometer`` too when present)."""


def haversine_m_vec(lat1: pd.Series, lon1: pd.Series, lat2: pd.Series, lon2: pd.Series) -> pd.Series:
    """Vectorised haversine, the same formula and radius as :func:`analytics.geo.haversine_m`."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(lon2 - lon1)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2.0 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a)))


def _new_group(key: pd.Series) -> pd.Series:
    """True on the first row of each run of equal keys (rows are grouped contiguously)."""
    return key.ne(key.shift())


# ----------------------------------------------------------------------------------------------------------------
# GPS cleaning


def clean_gps(df: pd.DataFrame, p: CleaningParams = CleaningParams()) -> pd.Series:  # noqa: B008
    """Usable-fix mask: vectorised quality tests, then the anchor state machine over the fixes that pass them."""
    lat, lon = df["latitude"], df["longitude"]
    quality = (lat.between(-90, 90) & lon.between(-180, 180) & ~((lat == 0) & (lon == 0))
               & ~(df["hdop"] > p.max_hdop) & ~(df["satellites"] < p.min_satellites)
               & ~(df["fix_mode"] < p.min_fix_mode))
    usable = np.zeros(len(df), dtype=bool)
    vehicle = None
    anchor: tuple[float, float, int] | None = None
    anchor_last_ts = 0
    candidate: tuple[float, float, int] = (0.0, 0.0, 0)
    agreeing = 0
    limit = p.max_speed_mps
    for i, veh, t, la, lo in df.loc[quality, ["vehicle", "ts_ms", "latitude", "longitude"]].itertuples(name=None):
        if veh != vehicle:
            vehicle, anchor, agreeing = veh, None, 0
        if anchor is None:
            usable[i] = True
            anchor, anchor_last_ts, agreeing = (la, lo, t), t, 0
            continue
        if t <= anchor_last_ts:
            continue
        if la == anchor[0] and lo == anchor[1]:
            if not p.drop_repeated_positions:
                usable[i] = True
                anchor_last_ts, agreeing = t, 0
            continue
        if (t - anchor_last_ts) / 1000.0 > p.reanchor_gap_s or \
                haversine_m_reference(anchor[0], anchor[1], la, lo) <= limit * ((t - anchor[2]) / 1000.0):
            usable[i] = True
            anchor, anchor_last_ts, agreeing = (la, lo, t), t, 0
            continue
        if agreeing > 0 and t > candidate[2] and \
                haversine_m_reference(candidate[0], candidate[1], la, lo) <= limit * ((t - candidate[2]) / 1000.0):
            agreeing += 1
        else:
            agreeing = 1
        candidate = (la, lo, t)
        if agreeing >= p.reanchor_after:
            usable[i] = True
            anchor, anchor_last_ts, agreeing = (la, lo, t), t, 0
    return pd.Series(usable, index=df.index, name="usable")


# ----------------------------------------------------------------------------------------------------------------
# Movement trips


def movement_trips(df: pd.DataFrame, usable: pd.Series, speed_kmh: pd.Series,
                   p: TripParams = TripParams()) -> pd.DataFrame:  # noqa: B008
    """Trips as rows ``start, end`` (row labels, inclusive, first/last moving sample): Traccar's stop radius and
    Geotab's stop duration, one loop over all samples (see :func:`analytics.trips.movement_trips_kernel`)."""
    frame = pd.DataFrame({"vehicle": df["vehicle"], "ts": df["ts_ms"], "lat": df["latitude"],
                          "lon": df["longitude"], "usable": usable, "speed": speed_kmh})
    starts: list[int] = []
    ends: list[int] = []
    stop_ms = p.stop_duration_s * 1000.0
    gap_ms = p.max_gap_s * 1000.0
    radius = p.stop_radius_m
    vehicle = None
    prev_t = 0
    trip: list[int] | None = None  # [start, last moving]
    last_moving_t = 0
    prev_fix: tuple[float, float, int] | None = None
    anchor: tuple[float, float, int] | None = None
    stop_at: tuple[float, float] | None = None
    for i, veh, t, la, lo, ok, v in frame.itertuples(name=None):
        if veh != vehicle or t - prev_t > gap_ms:
            if trip is not None:
                starts.append(trip[0])
                ends.append(trip[1])
                trip = None
            vehicle = veh
            prev_fix = anchor = stop_at = None
        prev_t = t
        moving: bool | None = None
        if v == v:
            moving = v > p.moving_speed_kmh
        elif ok and prev_fix is not None and 0 < t - prev_fix[2] <= stop_ms:
            step = haversine_m_reference(prev_fix[0], prev_fix[1], la, lo)
            moving = step / ((t - prev_fix[2]) / 1000.0) * 3.6 > p.moving_speed_kmh
        if ok:
            prev_fix = (la, lo, t)
        if trip is None:
            if ok and stop_at is None:
                stop_at = (la, lo)
            if moving and v != v and haversine_m_reference(stop_at[0], stop_at[1], la, lo) <= radius:
                moving = False  # GPS-only motion that has not left the stop
            if moving:
                trip = [i, i]
                last_moving_t = t
                anchor = (la, lo, t) if ok else None
            continue
        if moving:
            trip[1] = i
            last_moving_t = t
        stopped = moving is False and t - last_moving_t >= stop_ms
        if ok:
            if anchor is None or haversine_m_reference(anchor[0], anchor[1], la, lo) > radius:
                anchor = (la, lo, t)
            elif moving is not True and t - anchor[2] >= stop_ms:
                stopped = True
        if stopped:
            starts.append(trip[0])
            ends.append(trip[1])
            trip = None
            stop_at = anchor[:2] if anchor is not None else None
    if trip is not None:
        starts.append(trip[0])
        ends.append(trip[1])
    return pd.DataFrame({"start": np.array(starts, dtype=np.int64), "end": np.array(ends, dtype=np.int64)})


# ----------------------------------------------------------------------------------------------------------------
# Per-trip metrics


def _trapezoid(t: pd.DataFrame, column: str, scale: float, hold_ms: float) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Per trip: (integral of column × scale over consecutive valid samples ≤ hold apart, covered s, valid count)."""
    valid = t.loc[t[column].notna(), ["trip", "ts", column]]
    g = valid.groupby("trip", sort=False)
    prev = g[["ts", column]].shift()
    dt_ms = valid["ts"] - prev["ts"]
    ok = dt_ms <= hold_ms
    dt_s = dt_ms / 1000.0
    area = ((prev[column] + valid[column]) / 2.0 * scale * dt_s).where(ok)
    return area.groupby(valid["trip"]).sum(), dt_s.where(ok).groupby(valid["trip"]).sum(), g.size()


def trip_metrics(df: pd.DataFrame, trips: pd.DataFrame, usable: pd.Series, speed_kmh: pd.Series,
                 p: TripParams = TripParams(), cleaning: CleaningParams = CleaningParams(),  # noqa: B008
                 ) -> pd.DataFrame:
    """One row per trip with the columns of :data:`analytics.trips.TRIP_COLUMNS` that the scores use and more."""
    m = len(trips)
    hold_ms = p.max_hold_s * 1000.0
    # Label every sample with its trip (-1 outside): trips are sorted and do not overlap.
    trip_no = pd.Series(0, index=df.index)
    trip_no.iloc[trips["start"].to_numpy()] = 1
    trip_no = trip_no.cumsum() - 1
    inside = (trip_no >= 0) & (df.index.to_series() <= trip_no.map(trips["end"]).fillna(-1))
    odometer = df["odometer"] if "odometer" in df.columns else pd.Series(np.nan, index=df.index)
    t = pd.DataFrame({"trip": trip_no, "ts": df["ts_ms"], "lat": df["latitude"], "lon": df["longitude"],
                      "usable": usable, "speed": speed_kmh, "rpm": df["rpm"], "odometer": odometer,
                      "fuel_rate": df["fuel_rate"], "maf": df["maf"]})[inside]
    out = pd.DataFrame(index=pd.RangeIndex(m))
    out["start_row"] = trips["start"].to_numpy()
    out["end_row"] = trips["end"].to_numpy()
    out["start_ts_ms"] = df["ts_ms"].to_numpy()[out["start_row"]]
    out["end_ts_ms"] = df["ts_ms"].to_numpy()[out["end_row"]]
    duration = (out["end_ts_ms"] - out["start_ts_ms"]) / 1000.0
    out["duration_s"] = duration

    # GPS distance: haversine steps between consecutive usable fixes, skipping re-anchor jumps.
    fixes = t.loc[t["usable"], ["trip", "ts", "lat", "lon"]]
    gf = fixes.groupby("trip", sort=False)
    prev = gf[["ts", "lat", "lon"]].shift()
    dt_ms = fixes["ts"] - prev["ts"]
    step = haversine_m_vec(prev["lat"], prev["lon"], fixes["lat"], fixes["lon"])
    gps_d = step.where((dt_ms > 0) & (step <= cleaning.max_speed_mps * (dt_ms / 1000.0))).groupby(fixes["trip"]).sum()
    gps_cov = (dt_ms / 1000.0).where(dt_ms <= hold_ms).groupby(fixes["trip"]).sum()
    n_fix = gf.size().reindex(out.index, fill_value=0)
    ends_latlon = gf[["lat", "lon"]].agg(["first", "last"]).reindex(out.index)

    spd_d, spd_cov, n_spd = _trapezoid(t, "speed", 1 / 3.6, hold_ms)
    n_spd = n_spd.reindex(out.index, fill_value=0)
    fuel_fr, _, n_fr = _trapezoid(t, "fuel_rate", 1 / 3600.0, hold_ms)
    maf_g, _, n_maf = _trapezoid(t, "maf", 1.0, hold_ms)
    odo = t.loc[t["odometer"].notna()].groupby("trip")["odometer"].agg(["first", "last", "size"]).reindex(out.index)

    # Interval states: each interval [t_i, t_i+1) takes speed/RPM held from the last reading (≤ max_hold_s old).
    g = t.groupby("trip", sort=False)
    v = g["speed"].ffill().where(t["ts"] - t["ts"].where(t["speed"].notna()).groupby(t["trip"]).ffill() <= hold_ms)
    r = g["rpm"].ffill().where(t["ts"] - t["ts"].where(t["rpm"].notna()).groupby(t["trip"]).ffill() <= hold_ms)
    dt_next = g["ts"].shift(-1) - t["ts"]
    known = dt_next <= hold_ms
    drive = known & (v > 0)
    dt_s = dt_next / 1000.0
    tod = (t["ts"] / 1000.0 + p.utc_offset_h * 3600.0) % 86400.0
    n0, n1 = p.night_start_h * 3600.0, p.night_end_h * 3600.0
    is_night = ((tod >= n0) | (tod < n1)) if n0 > n1 else ((tod >= n0) & (tod < n1))
    fast = drive & (v > p.rural_max_kmh)
    run_id = (_new_group(fast) | _new_group(t["trip"])).cumsum()
    runs = pd.DataFrame({"trip": t["trip"], "s": dt_s.where(fast)})[fast].groupby(run_id[fast]).agg(
        trip=("trip", "first"), s=("s", "sum"))
    long_run = runs["s"] >= p.motorway_min_s

    def per_trip(values: pd.Series, mask: pd.Series | None = None) -> pd.Series:
        x = values if mask is None else values.where(mask)
        return x.groupby(t["trip"]).sum().reindex(out.index, fill_value=0.0)

    driving = per_trip(dt_s, drive)
    idle = per_trip(dt_s, known & (v == 0) & (r > 0))
    night = per_trip(dt_s, drive & is_night)
    urban = per_trip(dt_s, drive & (v <= p.urban_max_kmh))
    motorway = runs.loc[long_run, "s"].groupby(runs.loc[long_run, "trip"]).sum().reindex(out.index, fill_value=0.0)
    rural = per_trip(dt_s, drive & (v > p.urban_max_kmh) & (v <= p.rural_max_kmh)) + \
        runs.loc[~long_run, "s"].groupby(runs.loc[~long_run, "trip"]).sum().reindex(out.index, fill_value=0.0)

    # Distance sources and the documented preference.
    def coverage(covered: pd.Series) -> pd.Series:
        return (covered.reindex(out.index, fill_value=0.0) / duration).where(duration > 0, 1.0)

    odo_ok = (odo["size"] >= 2) & (odo["last"] >= odo["first"])
    sources = {
        "odometer": (odo_ok.to_numpy(), np.ones(m), ((odo["last"] - odo["first"]) * 1000.0).where(odo_ok).to_numpy()),
        "speed": ((n_spd >= 2).to_numpy(), coverage(spd_cov).to_numpy(),
                  spd_d.reindex(out.index, fill_value=0.0).to_numpy()),
        "gps": ((n_fix >= 2).to_numpy(), coverage(gps_cov).to_numpy(),
                gps_d.reindex(out.index, fill_value=0.0).to_numpy()),
    }
    distance = np.full(m, np.nan)
    source = np.full(m, -1)
    done = np.zeros(m, dtype=bool)
    for name in p.distance_source_order:
        ok, cov, val = sources[name]
        pick = ~done & ok & (cov >= p.min_distance_coverage)
        distance, source, done = np.where(pick, val, distance), np.where(pick, DISTANCE_SOURCES.index(name), source), \
            done | pick
    best_cov = np.full(m, -np.inf)
    for name in p.distance_source_order:  # none covered enough: the best-covered available source
        ok, cov, val = sources[name]
        pick = ~done & ok & ((source < 0) | (cov > best_cov))
        distance, source, best_cov = np.where(pick, val, distance), \
            np.where(pick, DISTANCE_SOURCES.index(name), source), np.where(pick, cov, best_cov)

    out["driving_s"] = driving
    out["idle_s"] = idle
    out["distance_m"] = distance
    out["distance_source"] = source
    out["distance_speed_m"] = pd.Series(sources["speed"][2]).where(n_spd >= 2)
    out["distance_gps_m"] = pd.Series(sources["gps"][2]).where(n_fix >= 2)
    out["max_speed_kmh"] = g["speed"].max().reindex(out.index)
    out["avg_speed_kmh"] = (out["distance_m"] / driving * 3.6).where(driving > 0)
    n_fr = n_fr.reindex(out.index, fill_value=0)
    n_maf = n_maf.reindex(out.index, fill_value=0)
    out["fuel_l"] = np.where(n_fr >= 2, fuel_fr.reindex(out.index, fill_value=0.0),
                             np.where(n_maf >= 2, maf_g.reindex(out.index, fill_value=0.0)
                                      / STOICHIOMETRIC_AFR_PETROL / PETROL_DENSITY_G_PER_L, np.nan))
    for name, seconds in (("night", night), ("urban", urban), ("rural", rural), ("motorway", motorway)):
        out[f"{name}_share"] = (seconds / driving).where(driving > 0)
    out["start_lat"] = ends_latlon[("lat", "first")]
    out["start_lon"] = ends_latlon[("lon", "first")]
    out["end_lat"] = ends_latlon[("lat", "last")]
    out["end_lon"] = ends_latlon[("lon", "last")]
    return out


def detect_trips(df: pd.DataFrame, p: TripParams = TripParams(),  # noqa: B008
                 cleaning: CleaningParams = CleaningParams()) -> tuple[pd.DataFrame, pd.Series]:  # noqa: B008
    """(trips, usable): clean, segment, measure, drop trips shorter than both minimums. Trips carry ``vehicle``
    and the vehicle-local ``start_idx`` / ``end_idx`` as :func:`analytics.trips.detect_trips` returns them."""
    usable = clean_gps(df, cleaning)
    speed = df["speed"].fillna(df["gps_speed"])
    trips = trip_metrics(df, movement_trips(df, usable, speed, p), usable, speed, p, cleaning)
    trips = trips[(trips["distance_m"].fillna(0.0) >= p.min_trip_distance_m)
                  | (trips["duration_s"] >= p.min_trip_duration_s)].reset_index(drop=True)
    _add_vehicle(df, trips)
    return trips, usable


def _add_vehicle(df: pd.DataFrame, trips: pd.DataFrame) -> None:
    """Add ``vehicle`` and the vehicle-local ``start_idx`` / ``end_idx`` to a trips table, in place."""
    first_row = _first_row_of_vehicle(df)
    trips.insert(0, "vehicle", df["vehicle"].to_numpy()[trips["start_row"]])
    trips["start_idx"] = trips["start_row"] - trips["vehicle"].map(first_row)
    trips["end_idx"] = trips["end_row"] - trips["vehicle"].map(first_row)


def _first_row_of_vehicle(df: pd.DataFrame) -> pd.Series:
    return df.index.to_series().groupby(df["vehicle"], sort=False).first()


# ----------------------------------------------------------------------------------------------------------------
# Events


def _valid_chain(df: pd.DataFrame, values: pd.Series, max_gap_s: float) -> pd.DataFrame:
    """Rows where ``values`` is present and time moves strictly forward, with the gap-free chain they belong to."""
    c = pd.DataFrame({"vehicle": df["vehicle"], "ts": df["ts_ms"], "value": values})[values.notna()]
    running_max = c.groupby("vehicle", sort=False)["ts"].cummax().groupby(c["vehicle"]).shift()
    c = c[running_max.isna() | (c["ts"] > running_max)]
    gap = c.groupby("vehicle", sort=False)["ts"].diff()
    c["new_chain"] = gap.isna() | (gap > max_gap_s * 1000.0)
    c["chain"] = c["new_chain"].cumsum()
    return c


def _window_origin(c: pd.DataFrame, window_s: float) -> np.ndarray:
    """Position (in ``c``) of each row's window start: the earliest row of its chain within window_s, but never
    later than the previous row (what a time-based ``rolling('2s')`` window's first element is, plus that rule)."""
    pos = np.arange(len(c))
    chain_first = pd.Series(np.where(c["new_chain"], pos, np.nan)).ffill().to_numpy().astype(np.int64)
    ts = c["ts"].to_numpy()
    # Integer key, monotone over all chains: chain number, then ms since the chain's first sample.
    key = c["chain"].to_numpy() * (1 << 40) + (ts - ts[chain_first])
    first_in_window = np.searchsorted(key, key - math.floor(window_s * 1000.0), side="left")
    return np.maximum(chain_first, np.minimum(first_in_window, pos - 1))


def longitudinal_accel(df: pd.DataFrame, speed_kmh: pd.Series, window_s: float, max_gap_s: float,
                       max_plausible_ms2: float) -> tuple[pd.Series, pd.Series]:
    """(Δv/Δt in m/s², origin row) per sample over the 2 s window (NaN / -1 where none)."""
    c = _valid_chain(df, speed_kmh, max_gap_s)
    o = _window_origin(c, window_s)
    ts, v = c["ts"].to_numpy(), c["value"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):  # a chain's first sample: 0 / 0, masked below
        a = pd.Series((v - v[o]) / 3.6 / ((ts - ts[o]) / 1000.0), index=c.index)
    a = a.where(~c["new_chain"] & (a.abs() <= max_plausible_ms2))
    origin = pd.Series(c.index.to_numpy()[o], index=c.index).where(a.notna(), -1)
    return a.reindex(df.index), origin.reindex(df.index, fill_value=-1).astype(np.int64)


def lateral_accel(df: pd.DataFrame, speed_kmh: pd.Series, p: EventParams) -> tuple[pd.Series, pd.Series]:
    """(speed × yaw rate in m/s², origin row) per sample over the 3 s course window (NaN / -1 where none)."""
    la = p.lateral
    c = _valid_chain(df, speed_kmh.where(df["course"].notna()), la.max_gap_s)
    course = df["course"].reindex(c.index)
    turn = (course - course.shift()) % 360.0
    turn = turn.where(turn < 180.0, turn - 360.0).where(~c["new_chain"], course)
    unwrapped = turn.groupby(c["chain"]).cumsum().to_numpy()
    o = _window_origin(c, la.window_s)
    ts, v = c["ts"].to_numpy(), c["value"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        a = pd.Series(0.5 * (v + v[o]) / 3.6 * np.radians(unwrapped - unwrapped[o]) / ((ts - ts[o]) / 1000.0),
                      index=c.index)
    a = a.where(~c["new_chain"] & (v >= la.min_speed_kmh) & (v[o] >= la.min_speed_kmh)
                & (a.abs() <= la.max_plausible_ms2))
    origin = pd.Series(c.index.to_numpy()[o], index=c.index).where(a.notna(), -1)
    return a.reindex(df.index), origin.reindex(df.index, fill_value=-1).astype(np.int64)


def threshold_runs(df: pd.DataFrame, ratio: pd.Series, release_fraction: float, min_duration_s: float,
                   max_gap_s: float, origin: pd.Series | None = None) -> pd.DataFrame:
    """Runs where ``ratio`` (value / threshold; NaN = no reading) reaches 1 and stays ≥ release_fraction.

    Hysteresis vectorised: per gap-free segment a sample is 1 (≥ 1), 0 (< release) or undecided, and undecided
    samples take the previous state (``ffill``). The start clamp and the duration filter loop over the runs.
    Returns rows start, end, peak (row labels) and ratio (at the peak).
    """
    r = ratio.dropna()
    veh, ts = df["vehicle"].reindex(r.index), df["ts_ms"].reindex(r.index)
    segment = (_new_group(veh) | (ts.diff() > max_gap_s * 1000.0)).cumsum()
    state = pd.Series(np.where(r >= 1.0, 1.0, np.where(r < release_fraction, 0.0, np.nan)), index=r.index)
    on = state.groupby(segment).ffill().fillna(0.0) == 1.0
    run_id = (_new_group(on) | _new_group(segment)).cumsum()[on]
    rr = r[on]
    if rr.empty:
        return pd.DataFrame({"start": [], "end": [], "peak": [], "ratio": []}).astype(
            {"start": np.int64, "end": np.int64, "peak": np.int64, "ratio": float})
    g = rr.groupby(run_id, sort=False)
    rows = pd.Series(rr.index, index=rr.index).groupby(run_id, sort=False)
    runs = pd.DataFrame({"first": rows.first(), "end": rows.last(), "peak": g.idxmax(), "ratio": g.max()})
    first = runs["first"].to_numpy()
    if origin is None:
        starts = first
    else:
        o = origin.to_numpy()[first]
        starts = np.where(o >= 0, o, first)
    ts_all = df["ts_ms"].to_numpy()
    min_ms = min_duration_s * 1000.0
    keep = np.zeros(len(runs), dtype=bool)
    clamped = starts.copy()
    previous_end = -1
    for k, (start, end) in enumerate(zip(starts.tolist(), runs["end"].tolist(), strict=True)):
        start = max(start, previous_end + 1)
        if ts_all[end] - ts_all[start] >= min_ms:
            keep[k], clamped[k], previous_end = True, start, end
    runs["start"] = clamped
    return runs[keep].reset_index(drop=True)[["start", "end", "peak", "ratio"]]


def _nearest_fix(df: pd.DataFrame, runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per event, the position of the fix nearest (in index) to the peak within the event."""
    has_fix = (df["latitude"].notna() & df["longitude"].notna()).to_numpy()
    lat, lon = df["latitude"].to_numpy(), df["longitude"].to_numpy()
    fix = np.where(has_fix[runs["peak"].to_numpy()], runs["peak"].to_numpy(), -1)
    for k in np.flatnonzero(fix < 0):  # the peak has no fix: search outwards
        p, s, e = runs["peak"].iat[k], runs["start"].iat[k], runs["end"].iat[k]
        for d in range(max(p - s, e - p) + 1):
            if p - d >= s and has_fix[p - d]:
                fix[k] = p - d
                break
            if p + d <= e and has_fix[p + d]:
                fix[k] = p + d
                break
    safe = np.maximum(fix, 0)
    return np.where(fix >= 0, lat[safe], np.nan), np.where(fix >= 0, lon[safe], np.nan)


def _severity(ratio: pd.Series, bands: tuple[float, float]) -> pd.Series:
    return 1 + (ratio >= bands[0]).astype(np.int64) + (ratio >= bands[1]).astype(np.int64)


def detect_events(df: pd.DataFrame, p: EventParams = EventParams()) -> pd.DataFrame:  # noqa: B008
    """All events of all vehicles: vehicle, kind, start/end/peak rows, vehicle-local start_idx / end_idx, severity,
    peak value, duration_s, lat/lon (see :func:`analytics.events.detect_events`; no speed-limit layer)."""
    speed, rpm = df["speed"], df["rpm"]
    gps = df["gps_speed"].mask(df["gps_speed"] > p.max_plausible_speed_kmh)
    best_speed = speed.fillna(gps)
    parts: list[tuple[str, pd.DataFrame, pd.Series]] = []  # (kind, runs, peak value)

    has_obd = speed.notna().groupby(df["vehicle"]).transform("any")
    lt = p.obd_longitudinal
    accel, origin = longitudinal_accel(df, speed.where(has_obd, gps), lt.window_s, lt.max_gap_s,
                                       p.max_plausible_longitudinal_ms2)
    if not has_obd.all():  # vehicles without OBD speed: GPS speed with the GPS thresholds
        lt_gps = p.gps_longitudinal
        accel_gps, origin_gps = longitudinal_accel(df, gps.where(~has_obd), lt_gps.window_s, lt_gps.max_gap_s,
                                                   p.max_plausible_longitudinal_ms2)
        accel, origin = accel.where(has_obd, accel_gps), origin.where(has_obd, origin_gps)
    for kind, sign, thr in ((KIND_HARSH_ACCELERATION, 1.0, lt.accel_ms2), (KIND_HARSH_BRAKING, -1.0, lt.brake_ms2)):
        runs = threshold_runs(df, sign * accel / thr, lt.release_fraction, lt.min_duration_s, lt.max_gap_s, origin)
        runs["severity"] = _severity(runs["ratio"], lt.severity_ratios)
        parts.append((kind, runs, accel))

    lateral, origin = lateral_accel(df, best_speed, p)
    la = p.lateral
    runs = threshold_runs(df, lateral.abs() / la.lateral_ms2, la.release_fraction, la.min_duration_s, la.max_gap_s,
                          origin)
    runs["severity"] = _severity(runs["ratio"], la.severity_ratios)
    parts.append((KIND_HARSH_CORNERING, runs, lateral))

    bands = p.absolute_speed_bands_kmh
    runs = threshold_runs(df, best_speed / bands[0], 1.0, p.speeding_min_duration_s, p.speeding_max_gap_s)
    peak_kmh = best_speed.to_numpy()[runs["peak"].to_numpy()]
    runs["severity"] = 1 + (peak_kmh > bands[1]).astype(np.int64) + (peak_kmh > bands[2]).astype(np.int64)
    parts.append((KIND_SPEEDING, runs, best_speed / 3.6))

    runs = threshold_runs(df, rpm / p.over_rev_rpm, 1.0, p.over_rev_min_duration_s, p.state_max_gap_s)
    runs["severity"] = _severity(runs["ratio"], p.over_rev_severity_ratios)
    parts.append((KIND_OVER_REVVING, runs, rpm / 60.0))

    idle = ((rpm > p.idle_min_rpm) & (best_speed < p.idle_max_speed_kmh)).astype(float).where(
        rpm.notna() & best_speed.notna())
    runs = threshold_runs(df, idle, 1.0, p.idle_min_duration_s, p.state_max_gap_s)
    ts = df["ts_ms"].to_numpy()
    idle_s = pd.Series((ts[runs["end"].to_numpy()] - ts[runs["start"].to_numpy()]) / 1000.0)
    runs["severity"] = _severity(idle_s / p.idle_min_duration_s, p.idle_severity_ratios)
    parts.append((KIND_IDLING, runs, None))

    frames = []
    for kind, runs, values in parts:
        frame = runs.copy()
        frame.insert(0, "kind", kind)
        frame["peak_value"] = idle_s.to_numpy() if values is None else values.to_numpy()[runs["peak"].to_numpy()]
        frame["duration_s"] = (ts[runs["end"].to_numpy()] - ts[runs["start"].to_numpy()]) / 1000.0
        frame["lat"], frame["lon"] = _nearest_fix(df, runs)
        frames.append(frame)
    events = pd.concat(frames, ignore_index=True)
    events.insert(0, "vehicle", df["vehicle"].to_numpy()[events["start"].to_numpy()])
    first_row = events["vehicle"].map(_first_row_of_vehicle(df))
    events["start_idx"] = events["start"] - first_row
    events["end_idx"] = events["end"] - first_row
    return events.sort_values(["vehicle", "start", "kind"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# Scores


def _behaviour_sub_scores(counts: pd.DataFrame, km: pd.Series, speeding_s: pd.Series, driving_s: pd.Series,
                          night_share: pd.Series, p: ScoreParams) -> pd.DataFrame:
    """Braking / acceleration / cornering / speeding / night sub-scores (0–100), Samsara-style (scores module)."""
    subs = pd.DataFrame(index=km.index)
    for name, kind in HARSH_COMPONENTS.items():
        count = counts[kind] if kind in counts.columns else pd.Series(0, index=km.index)
        rate = (count / km * 100.0).where(km > 0, np.where(count > 0, np.inf, 0.0))
        points = p.points_per_event_per_100km * rate
        subs[name] = (100.0 - points).clip(lower=0.0).where(np.isfinite(points), 0.0)
    pct = (speeding_s / driving_s * 100.0).clip(upper=100.0).where(driving_s > 0,
                                                                   np.where(speeding_s > 0, 100.0, 0.0))
    subs[SPEEDING] = (100.0 - p.speeding_points_per_pct * pct).clip(lower=0.0)
    night_pct = 100.0 * night_share.fillna(0.0).clip(0.0, 1.0)
    subs[NIGHT] = (100.0 - p.night_points_per_pct * night_pct).clip(lower=0.0)
    return subs


def _weighted(subs: pd.DataFrame, weights: dict[str, float]) -> pd.Series:
    total = sum(weights.values())
    score = pd.Series(0.0, index=subs.index)
    for name, w in weights.items():
        score = score + w / total * subs[name]
    return score


def scores(trips: pd.DataFrame, events: pd.DataFrame, p: ScoreParams = ScoreParams()  # noqa: B008
           ) -> tuple[pd.Series, pd.Series]:
    """(trip score per trip row, period score per vehicle); NaN where exposure is below the minimum."""
    # Events to trips: the trip whose [start, end] holds the event's start (trips do not overlap).
    pos = np.searchsorted(trips["start_row"].to_numpy(), events["start"].to_numpy(), side="right") - 1
    in_trip = (pos >= 0) & (events["start"].to_numpy() <= trips["end_row"].to_numpy()[np.maximum(pos, 0)])
    ev = events[in_trip].assign(trip=pos[in_trip])
    counts = ev.groupby(["trip", "kind"]).size().unstack(fill_value=0).reindex(trips.index, fill_value=0)
    speeding_s = ev[ev["kind"] == KIND_SPEEDING].groupby("trip")["duration_s"].sum().reindex(trips.index,
                                                                                              fill_value=0.0)
    distance = trips["distance_m"].fillna(0.0)
    trip_subs = _behaviour_sub_scores(counts, trips["distance_m"] / 1000.0, speeding_s, trips["driving_s"],
                                      trips["night_share"], p)
    trip_weights = {k: w for k, w in p.weights.items() if k != MILEAGE}  # no annual mileage for one trip
    eligible = (trips["distance_m"] >= p.min_trip_distance_m) & (trips["duration_s"] >= p.min_trip_duration_s)
    trip_scores = _weighted(trip_subs, trip_weights).where(eligible)

    # Period: every trip of the vehicle pooled (rates over total km, night distance-weighted).
    veh = trips["vehicle"]
    per = pd.DataFrame({"distance_m": distance.groupby(veh).sum(), "driving_s": trips["driving_s"].fillna(0.0)
                        .groupby(veh).sum(), "night_m": (trips["night_share"].fillna(0.0) * distance).groupby(veh)
                        .sum(), "start": trips["start_ts_ms"].groupby(veh).min(),
                        "end": trips["end_ts_ms"].groupby(veh).max()})
    ev_veh = ev.assign(vehicle=veh.to_numpy()[ev["trip"].to_numpy()])
    counts = ev_veh.groupby(["vehicle", "kind"]).size().unstack(fill_value=0).reindex(per.index, fill_value=0)
    speeding_s = ev_veh[ev_veh["kind"] == KIND_SPEEDING].groupby("vehicle")["duration_s"].sum().reindex(
        per.index, fill_value=0.0)
    night_share = (per["night_m"] / per["distance_m"]).where(per["distance_m"] > 0, 0.0)
    subs = _behaviour_sub_scores(counts, per["distance_m"] / 1000.0, speeding_s, per["driving_s"], night_share, p)
    period_days = ((per["end"] - per["start"]) / 86_400_000.0).clip(lower=p.min_period_days)
    km_per_year = per["distance_m"] / 1000.0 * 365.25 / period_days
    full, zero = p.mileage_full_km_per_year, p.mileage_zero_km_per_year
    subs[MILEAGE] = (100.0 * (zero - km_per_year) / (zero - full)).clip(0.0, 100.0)
    period_scores = _weighted(subs, dict(p.weights)).where(per["distance_m"] >= p.min_period_distance_m)
    return trip_scores, period_scores


def run_pipeline(df: pd.DataFrame, stage_s: dict[str, float] | None = None) -> dict[str, Any]:
    """Cleaning, trips, events, trip and period scores for every vehicle of ``df`` (defaults throughout).

    ``stage_s``, when given, accumulates the wall seconds of each stage (the benchmark prints them).
    """
    stages = stage_s if stage_s is not None else {}
    t0 = time.perf_counter()
    usable = clean_gps(df)
    t1 = time.perf_counter()
    speed = df["speed"].fillna(df["gps_speed"])
    segments = movement_trips(df, usable, speed)
    t2 = time.perf_counter()
    trips = trip_metrics(df, segments, usable, speed)
    trips = trips[(trips["distance_m"].fillna(0.0) >= TripParams().min_trip_distance_m)
                  | (trips["duration_s"] >= TripParams().min_trip_duration_s)].reset_index(drop=True)
    _add_vehicle(df, trips)
    t3 = time.perf_counter()
    events = detect_events(df)
    t4 = time.perf_counter()
    trip_scores, period_scores = scores(trips, events)
    t5 = time.perf_counter()
    for name, dt in (("cleaning loop", t1 - t0), ("segmentation loop", t2 - t1), ("trip metrics", t3 - t2),
                     ("events", t4 - t3), ("scores", t5 - t4)):
        stages[name] = stages.get(name, 0.0) + dt
    return {"usable": usable, "trips": trips, "events": events, "trip_scores": trip_scores,
            "period_scores": period_scores}


def nan_or(value: float | None) -> float:
    """A score that may be None (not eligible) as a float (NaN)."""
    return math.nan if value is None else float(value)
