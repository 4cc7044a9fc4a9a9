"""Engine sessions, movement trips and per-trip metrics from a vehicle's sample arrays.

Two segmentations, kept apart on purpose (platform-anchors.md (d) 1: Traccar trusts a device
``ignition`` flag, AutoPi infers engine state from RPM only, neither keeps both):

* **Engine sessions** (:func:`engine_sessions_kernel`): the ECU is running — RPM > 0, or any OBD
  value answered where RPM itself is absent — with silences/zero RPM shorter than
  ``engine_off_gap_s`` bridged. Idling while parked is an engine session without a trip.
* **Movement trips** (:func:`movement_trips_kernel`): Traccar's stop rule (``report.trip.*`` new
  logic: a stop is staying within ``minDistance`` = 200 m for ``minDuration`` = 180 s, and a data gap
  over ``stopGap`` = 3600 s closes a trip), plus Geotab's speed rule (not moving for the same
  duration), so a track without GPS still segments and a track without speed still segments.

Segment kernels return ``(start_idx, end_idx)`` int64 arrays, **both inclusive**; a trip runs from
its first to its last *moving* sample. :func:`trip_metrics_kernel` summarises each trip into one row
of floats (columns :data:`TRIP_COLUMNS`); :func:`detect_trips` runs cleaning, segmentation and
metrics and returns a DataFrame. :func:`trip_proof_table` is the real-data proof (POLIDriving).

All kernels are numba functions over arrays, O(n) single passes; each has a plain-Python
``*_reference`` that the hypothesis tests compare it with.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import pandas as pd

from analytics.cleaning import CleaningParams, clean_gps_fixes
from analytics.geo import (
    SMALL_ANGLE,
    cos_near,
    haversine_m,
    haversine_m_reference,
    haversine_rad_m,
    py_mod,
    within_m,
)

# Petrol: stoichiometric air/fuel mass ratio and density, to turn MAF (g air/s) into litres of fuel.
STOICHIOMETRIC_AFR_PETROL = 14.7
PETROL_DENSITY_G_PER_L = 745.0

DISTANCE_SOURCES: tuple[str, ...] = ("odometer", "speed", "gps")
"""Codes of ``distance_source`` (the column holds the index; -1 = no source)."""


@dataclass(frozen=True, slots=True)
class TripParams:
    """Segmentation and metric thresholds; SI units (speeds in km/h where the data is), overridable."""

    # --- movement trips (Traccar new-logic defaults, platform-anchors.md (c)) ---
    stop_radius_m: float = 200.0
    """Traccar ``report.trip.minDistance``: staying within this radius counts as stopped."""
    stop_duration_s: float = 180.0
    """Traccar ``report.trip.minDuration``: ...for this long. Geotab's speed rule is 200 s."""
    max_gap_s: float = 3600.0
    """Traccar ``report.trip.stopGap``: a silence longer than this ends the trip before it."""
    moving_speed_kmh: float = 4.0
    """Above this speed a sample is moving. 4 km/h ≈ 200 m / 180 s, the leg speed that Traccar uses to
    move a trip start back; it is also above the 1–3 km/h that GPS jitter shows at a standstill."""
    min_trip_distance_m: float = 500.0
    """Traccar old-logic ``minimalTripDistance``: a trip is kept if it covers this far..."""
    min_trip_duration_s: float = 300.0
    """...or lasts this long (``minimalTripDuration``). Shorter ones are parking manoeuvres."""
    # --- engine sessions ---
    engine_off_gap_s: float = 180.0
    """An engine stop/ECU silence shorter than this does not end a session: start-stop systems cut
    the engine at traffic lights, and a stop shorter than the trip stop duration is not parking."""
    min_engine_session_s: float = 10.0
    """Shorter ECU answers are a door opening or key-on without start; they are dropped."""
    # --- metrics ---
    max_hold_s: float = 60.0
    """Longest interval a sample's value is held or interpolated over. POLIDriving misses single OBD rows
    every few minutes while driving; integrating only intervals with speed on both sides loses up to
    2.5 % of a session (pablo 20231123). 60 s also bridges a short adapter drop-out; beyond it the
    vehicle's state is unknown and the interval counts toward duration only."""
    min_distance_coverage: float = 0.9
    """A distance source is used only if its samples bridge this share of the trip's duration."""
    distance_source_order: tuple[str, ...] = ("odometer", "speed", "gps")
    """Preference among distance sources. The vehicle's own measures come first: the odometer, then
    OBD speed integrated (the same wheel-speed signal the odometer counts). On POLIDriving, GPS reads
    ~5 % above OBD speed on three of four cars, and the logger's own distance is OBD-speed-based."""
    urban_max_kmh: float = 50.0
    """Driving at or below this speed is urban (the usual built-up-area limit in Europe and Ecuador)."""
    rural_max_kmh: float = 90.0
    """Above urban and at or below this: rural. Above it, *sustained* for ``motorway_min_s``: motorway;
    a shorter burst above 90 km/h is an overtake on a rural road and counts as rural."""
    motorway_min_s: float = 60.0
    night_start_h: float = 22.0
    """Night window start, local time of day (h). 22:00–05:00 spans insurers' late-night windows
    (Allstate 23:00–04:00/05:00) and scikit-mobility's ``start_night``."""
    night_end_h: float = 5.0
    utc_offset_h: float = 0.0
    """Local time = UTC + this, when ``timezone`` is not given."""
    timezone: str | None = None
    """IANA zone (e.g. ``America/Guayaquil``); takes precedence over ``utc_offset_h`` and follows DST."""


# Columns of the trip_metrics_kernel result, in order.
TRIP_COLUMNS: tuple[str, ...] = (
    "start_idx", "end_idx", "start_ts_ms", "end_ts_ms", "duration_s", "driving_s", "idle_s",
    "distance_m", "distance_source", "distance_odometer_m", "distance_speed_m", "distance_gps_m",
    "speed_coverage", "gps_coverage", "max_speed_kmh", "avg_speed_kmh", "fuel_l", "night_share",
    "urban_share", "rural_share", "motorway_share", "start_lat", "start_lon", "end_lat", "end_lon",
)
_C = {name: k for k, name in enumerate(TRIP_COLUMNS)}
N_TRIP_COLUMNS = len(TRIP_COLUMNS)


# ----------------------------------------------------------------------------------------------
# Engine sessions


@numba.njit(cache=True)
def engine_sessions_kernel(ts_ms: np.ndarray, rpm: np.ndarray, obd_present: np.ndarray, off_gap_s: float,
                           min_session_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(start_idx, end_idx) inclusive of the ECU-on samples that bound each engine session.

    A sample is on when ``rpm > 0``, or when RPM is absent (NaN) but some other OBD value answered
    (``obd_present``). RPM == 0 is off even with the ECU answering: key on, engine stopped.
    """
    n = len(ts_ms)
    starts = np.empty(n, dtype=np.int64)
    ends = np.empty(n, dtype=np.int64)
    k = 0
    start = -1
    last_on = -1
    gap_ms = off_gap_s * 1000.0
    min_ms = min_session_s * 1000.0
    for i in range(n):
        r = rpm[i]
        on = (r > 0.0) if r == r else obd_present[i]
        if not on:
            continue
        if start >= 0 and ts_ms[i] - ts_ms[last_on] <= gap_ms:
            last_on = i
            continue
        if start >= 0 and ts_ms[last_on] - ts_ms[start] >= min_ms:
            starts[k] = start
            ends[k] = last_on
            k += 1
        start = i
        last_on = i
    if start >= 0 and ts_ms[last_on] - ts_ms[start] >= min_ms:
        starts[k] = start
        ends[k] = last_on
        k += 1
    return starts[:k].copy(), ends[:k].copy()


def engine_sessions_reference(ts_ms: list[int], rpm: list[float], obd_present: list[bool], off_gap_s: float,
                              min_session_s: float) -> list[tuple[int, int]]:
    on_idx = [i for i in range(len(ts_ms)) if (rpm[i] > 0 if not math.isnan(rpm[i]) else obd_present[i])]
    runs: list[list[int]] = []
    for i in on_idx:
        if runs and ts_ms[i] - ts_ms[runs[-1][1]] <= off_gap_s * 1000:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return [(s, e) for s, e in runs if ts_ms[e] - ts_ms[s] >= min_session_s * 1000]


# ----------------------------------------------------------------------------------------------
# Movement trips


@numba.njit(cache=True, error_model="numpy")  # divisors are > 0: no zero-division checks
def movement_trips_kernel(ts_ms: np.ndarray, lat: np.ndarray, lon: np.ndarray, usable: np.ndarray,
                          speed_kmh: np.ndarray, moving_speed_kmh: float, stop_radius_m: float,
                          stop_duration_s: float, max_gap_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(start_idx, end_idx) inclusive: first and last *moving* sample of each trip.

    Moving: speed > ``moving_speed_kmh`` where speed is known, else the implied speed from the
    previous usable fix (within ``stop_duration_s``). A trip starts at a moving sample — if only GPS
    says it moves, the fix must also lie beyond ``stop_radius_m`` from where the vehicle stopped
    (Traccar's start rule; POLIDriving's receiver alternates between the parked position and a
    stale one 60 m away for half an hour after a drive, which would otherwise be trips) — and ends,
    at its last moving sample, when (a) the sample is not moving and no moving sample came for
    ``stop_duration_s`` (Geotab's rule), or (b) it is not known to be moving and every usable fix
    since the anchor lay within ``stop_radius_m`` of it for ``stop_duration_s`` (Traccar's rule; the
    anchor moves to any fix outside the radius, which keeps the pass O(n)), or (c) before a
    silence longer than ``max_gap_s``, or (d) at the end of the data — the last trip is never lost.
    """
    n = len(ts_ms)
    starts = np.empty(n, dtype=np.int64)
    ends = np.empty(n, dtype=np.int64)
    k = 0
    in_trip = False
    start = 0
    last_moving = 0
    have_prev = False
    p_lat = 0.0
    p_lon = 0.0
    p_ts = 0
    have_anchor = False
    a_lat = 0.0
    a_lon = 0.0
    a_ts = 0
    have_stop = False  # where the vehicle stands while no trip is open
    s_lat = 0.0
    s_lon = 0.0
    stop_ms = stop_duration_s * 1000.0
    gap_ms = max_gap_s * 1000.0
    for i in range(n):
        t = ts_ms[i]
        if i > 0 and t - ts_ms[i - 1] > gap_ms:
            if in_trip:
                starts[k] = start
                ends[k] = last_moving
                k += 1
                in_trip = False
            have_prev = False
            have_anchor = False
            have_stop = False
        moving = -1  # unknown
        v = speed_kmh[i]
        if v == v:
            moving = 1 if v > moving_speed_kmh else 0
        elif usable[i] and have_prev and 0 < t - p_ts <= stop_ms:
            implied = haversine_m(p_lat, p_lon, lat[i], lon[i]) / ((t - p_ts) / 1000.0) * 3.6
            moving = 1 if implied > moving_speed_kmh else 0
        if usable[i]:
            have_prev = True
            p_lat, p_lon, p_ts = lat[i], lon[i], t
        if not in_trip:
            if usable[i] and not have_stop:
                have_stop = True
                s_lat, s_lon = lat[i], lon[i]
            if moving == 1 and v != v and within_m(s_lat, s_lon, lat[i], lon[i], stop_radius_m):
                moving = 0  # GPS-only motion that has not left the stop: jitter or a glitch, not a trip
            if moving == 1:
                in_trip = True
                start = i
                last_moving = i
                have_anchor = bool(usable[i])
                a_lat, a_lon, a_ts = lat[i], lon[i], t
            continue
        if moving == 1:
            last_moving = i
        stopped = moving == 0 and t - ts_ms[last_moving] >= stop_ms
        if usable[i]:
            if not have_anchor or not within_m(a_lat, a_lon, lat[i], lon[i], stop_radius_m):
                have_anchor = True
                a_lat, a_lon, a_ts = lat[i], lon[i], t
            elif moving != 1 and t - a_ts >= stop_ms:
                stopped = True
        if stopped:
            starts[k] = start
            ends[k] = last_moving
            k += 1
            in_trip = False
            have_stop = have_anchor
            s_lat, s_lon = a_lat, a_lon
    if in_trip:
        starts[k] = start
        ends[k] = last_moving
        k += 1
    return starts[:k].copy(), ends[:k].copy()


def movement_trips_reference(ts_ms: list[int], lat: list[float], lon: list[float], usable: list[bool],
                             speed_kmh: list[float], params: TripParams) -> list[tuple[int, int]]:
    """Plain-Python reference for :func:`movement_trips_kernel`."""
    trips: list[tuple[int, int]] = []
    trip: list[int] | None = None  # [start, last_moving]
    prev_fix: tuple[float, float, int] | None = None
    anchor: tuple[float, float, int] | None = None
    stop_at: tuple[float, float] | None = None
    stop_ms = params.stop_duration_s * 1000
    for i, t in enumerate(ts_ms):
        if i > 0 and t - ts_ms[i - 1] > params.max_gap_s * 1000:
            if trip is not None:
                trips.append((trip[0], trip[1]))
                trip = None
            prev_fix = anchor = stop_at = None
        moving: bool | None = None
        if not math.isnan(speed_kmh[i]):
            moving = speed_kmh[i] > params.moving_speed_kmh
        elif usable[i] and prev_fix is not None and 0 < t - prev_fix[2] <= stop_ms:
            step = haversine_m_reference(prev_fix[0], prev_fix[1], lat[i], lon[i])
            moving = step / ((t - prev_fix[2]) / 1000) * 3.6 > params.moving_speed_kmh
        if usable[i]:
            prev_fix = (lat[i], lon[i], t)
        if trip is None:
            if usable[i] and stop_at is None:
                stop_at = (lat[i], lon[i])
            if (moving and math.isnan(speed_kmh[i]) and stop_at is not None
                    and haversine_m_reference(stop_at[0], stop_at[1], lat[i], lon[i]) <= params.stop_radius_m):
                moving = False
            if moving:
                trip = [i, i]
                anchor = (lat[i], lon[i], t) if usable[i] else None
            continue
        if moving:
            trip[1] = i
        stopped = moving is False and t - ts_ms[trip[1]] >= stop_ms
        if usable[i]:
            if anchor is None or haversine_m_reference(anchor[0], anchor[1], lat[i], lon[i]) > params.stop_radius_m:
                anchor = (lat[i], lon[i], t)
            elif moving is not True and t - anchor[2] >= stop_ms:
                stopped = True
        if stopped:
            trips.append((trip[0], trip[1]))
            trip = None
            stop_at = anchor[:2] if anchor is not None else None
    if trip is not None:
        trips.append((trip[0], trip[1]))
    return trips


# ----------------------------------------------------------------------------------------------
# Per-trip metrics


@numba.njit(cache=True)
def _select_distance(order: np.ndarray, available: np.ndarray, coverage: np.ndarray, values: np.ndarray,
                     min_coverage: float) -> tuple[float, int]:
    for j in range(len(order)):
        s = order[j]
        if available[s] and coverage[s] >= min_coverage:
            return values[s], s
    best = -1
    for j in range(len(order)):
        s = order[j]
        if available[s] and (best < 0 or coverage[s] > coverage[best]):
            best = s
    if best < 0:
        return np.nan, -1
    return values[best], best


@numba.njit(cache=True, error_model="numpy")  # divisors are > 0: no zero-division checks
def trip_metrics_kernel(
    ts_ms: np.ndarray, starts: np.ndarray, ends: np.ndarray,
    lat: np.ndarray, lon: np.ndarray, usable: np.ndarray,
    speed_kmh: np.ndarray, rpm: np.ndarray, odometer_km: np.ndarray,
    fuel_rate_lph: np.ndarray, maf_gps: np.ndarray, local_offset_s: np.ndarray,
    max_speed_mps: float, max_hold_s: float, min_coverage: float, source_order: np.ndarray,
    night_start_s: float, night_end_s: float, urban_max_kmh: float, rural_max_kmh: float,
    motorway_min_s: float,
) -> np.ndarray:
    """One row of :data:`TRIP_COLUMNS` per trip ``[starts[j], ends[j]]`` (inclusive).

    * Distances: GPS = haversine steps between consecutive usable fixes, skipping any step faster
      than ``max_speed_mps`` (a cleaning re-anchor); speed = trapezoid over consecutive valid speed
      samples at most ``max_hold_s`` apart; odometer = last − first reading (if not negative).
      ``distance_m`` is the first source in ``source_order`` whose coverage (share of the duration
      bridged by intervals ≤ ``max_hold_s``) reaches ``min_coverage``, else the best-covered one.
    * Time shares: each interval between consecutive samples takes the state of its first sample,
      with speed/RPM held from their last valid reading for ≤ ``max_hold_s``; intervals longer than
      that are unknown and count toward duration only. driving: speed > 0; idle: speed == 0 and
      RPM > 0; urban/rural/motorway: shares of driving time (see :class:`TripParams`); night: share of
      driving time whose local time of day (UTC + ``local_offset_s``) is in the night window.
    * fuel_l: fuel rate (L/h) integrated if the trip has ≥ 2 readings, else MAF (g/s) / AFR / density.
    """
    m = len(starts)
    out = np.full((m, 25), np.nan)
    hold_ms = max_hold_s * 1000.0
    available = np.zeros(3, dtype=np.bool_)
    coverage = np.zeros(3)
    values = np.zeros(3)
    for j in range(m):
        s = starts[j]
        e = ends[j]
        duration = (ts_ms[e] - ts_ms[s]) / 1000.0
        # One pass over the trip's samples: distances, maxima, fuel, and interval states.
        gps_d = 0.0
        gps_cov = 0.0
        n_fix = 0
        first_fix = -1
        prev = -1
        p_prev = 0.0
        cos_prev = 1.0
        p_ref = np.nan
        cos_ref = 1.0
        sin_ref = 0.0
        spd_d = 0.0
        spd_cov = 0.0
        n_spd = 0
        vmax = np.nan
        q = -1
        odo_first = np.nan
        odo_last = np.nan
        n_odo = 0
        fuel_rate_l = 0.0
        n_fr = 0
        qf = -1
        maf_g = 0.0
        n_maf = 0
        qm = -1
        driving = 0.0
        idle = 0.0
        night = 0.0
        urban = 0.0
        rural = 0.0
        motorway = 0.0
        run = 0.0
        cs = np.nan
        cs_t = 0
        cr = np.nan
        cr_t = 0
        for i in range(s, e + 1):
            t = ts_ms[i]
            if usable[i]:
                # haversine_m(lat[prev], lon[prev], lat[i], lon[i]) term for term, with the previous fix's
                # radians and cosine kept instead of recomputed, the cosine from the trip's reference latitude
                # (cos_near) and the small-angle sine and arcsine of haversine_rad_m: within a few ulps of libm's,
                # and no libm call at all for a 1 Hz step.
                p_i = math.radians(lat[i])
                if not abs(p_i - p_ref) <= SMALL_ANGLE:  # first fix of the trip, or ~50 km of latitude away
                    p_ref = p_i
                    cos_ref = math.cos(p_i)
                    sin_ref = math.sin(p_i)
                cos_i = cos_near(p_i, p_ref, cos_ref, sin_ref)
                if prev < 0:
                    first_fix = i
                else:
                    dt_ms = t - ts_ms[prev]
                    d = haversine_rad_m(p_prev, cos_prev, p_i, cos_i, math.radians(lon[i] - lon[prev]))
                    if dt_ms > 0 and d <= max_speed_mps * (dt_ms / 1000.0):
                        gps_d += d
                    if dt_ms <= hold_ms:
                        gps_cov += dt_ms / 1000.0
                n_fix += 1
                prev = i
                p_prev = p_i
                cos_prev = cos_i
            v_i = speed_kmh[i]
            if v_i == v_i:
                if vmax != vmax or v_i > vmax:
                    vmax = v_i
                if q >= 0 and t - ts_ms[q] <= hold_ms:
                    dt = (t - ts_ms[q]) / 1000.0
                    spd_d += (speed_kmh[q] + v_i) / 2.0 / 3.6 * dt
                    spd_cov += dt
                n_spd += 1
                q = i
                cs = v_i
                cs_t = t
            o = odometer_km[i]
            if o == o:
                if n_odo == 0:
                    odo_first = o
                odo_last = o
                n_odo += 1
            f = fuel_rate_lph[i]
            if f == f:
                if qf >= 0 and t - ts_ms[qf] <= hold_ms:
                    fuel_rate_l += (fuel_rate_lph[qf] + f) / 2.0 / 3600.0 * ((t - ts_ms[qf]) / 1000.0)
                n_fr += 1
                qf = i
            a = maf_gps[i]
            if a == a:
                if qm >= 0 and t - ts_ms[qm] <= hold_ms:
                    maf_g += (maf_gps[qm] + a) / 2.0 * ((t - ts_ms[qm]) / 1000.0)
                n_maf += 1
                qm = i
            if rpm[i] == rpm[i]:
                cr = rpm[i]
                cr_t = t
            if i == e:
                break
            # The interval [t_i, t_i+1) takes the state held at sample i.
            dt_ms = ts_ms[i + 1] - t
            v = cs if (cs == cs and t - cs_t <= hold_ms) else np.nan
            r = cr if (cr == cr and t - cr_t <= hold_ms) else np.nan
            if dt_ms > hold_ms or not v > 0.0:
                if run >= motorway_min_s:
                    motorway += run
                else:
                    rural += run
                run = 0.0
                if dt_ms <= hold_ms and v == 0.0 and r > 0.0:
                    idle += dt_ms / 1000.0
                continue
            dt = dt_ms / 1000.0
            driving += dt
            tod = py_mod(t / 1000.0 + local_offset_s[i], 86400.0)
            if night_start_s > night_end_s:
                is_night = tod >= night_start_s or tod < night_end_s
            else:
                is_night = night_start_s <= tod < night_end_s
            if is_night:
                night += dt
            if v <= urban_max_kmh:
                urban += dt
            elif v <= rural_max_kmh:
                rural += dt
            else:
                run += dt
                continue
            if run >= motorway_min_s:
                motorway += run
            else:
                rural += run
            run = 0.0
        if run >= motorway_min_s:
            motorway += run
        else:
            rural += run
        if n_fr >= 2:
            fuel = fuel_rate_l
        elif n_maf >= 2:
            fuel = maf_g / STOICHIOMETRIC_AFR_PETROL / PETROL_DENSITY_G_PER_L
        else:
            fuel = np.nan
        # Distance selection
        available[0] = n_odo >= 2 and odo_last >= odo_first
        coverage[0] = 1.0
        values[0] = (odo_last - odo_first) * 1000.0 if available[0] else np.nan
        available[1] = n_spd >= 2
        coverage[1] = 1.0 if duration <= 0.0 else spd_cov / duration
        values[1] = spd_d
        available[2] = n_fix >= 2
        coverage[2] = 1.0 if duration <= 0.0 else gps_cov / duration
        values[2] = gps_d
        dist, src = _select_distance(source_order, available, coverage, values, min_coverage)
        row = out[j]
        row[0] = s
        row[1] = e
        row[2] = ts_ms[s]
        row[3] = ts_ms[e]
        row[4] = duration
        row[5] = driving
        row[6] = idle
        row[7] = dist
        row[8] = src
        row[9] = values[0]
        row[10] = spd_d if n_spd >= 2 else np.nan
        row[11] = gps_d if n_fix >= 2 else np.nan
        row[12] = coverage[1] if n_spd >= 2 else 0.0
        row[13] = coverage[2] if n_fix >= 2 else 0.0
        row[14] = vmax
        row[15] = dist / driving * 3.6 if driving > 0.0 else np.nan
        row[16] = fuel
        if driving > 0.0:
            row[17] = night / driving
            row[18] = urban / driving
            row[19] = rural / driving
            row[20] = motorway / driving
        if first_fix >= 0:
            row[21] = lat[first_fix]
            row[22] = lon[first_fix]
            row[23] = lat[prev]
            row[24] = lon[prev]
    return out


def _band_flush(run: float, motorway_min_s: float) -> tuple[float, float]:
    """(motorway, rural) seconds that a finished run above the rural limit adds."""
    return (run, 0.0) if run >= motorway_min_s else (0.0, run)


def trip_metrics_reference(
    ts_ms: list[int], trips: list[tuple[int, int]], lat: list[float], lon: list[float], usable: list[bool],
    speed_kmh: list[float], rpm: list[float], odometer_km: list[float], fuel_rate_lph: list[float],
    maf_gps: list[float], local_offset_s: list[float], params: TripParams, max_speed_mps: float,
) -> list[dict[str, float]]:
    """Plain-Python reference for :func:`trip_metrics_kernel`: one dict per trip, keys TRIP_COLUMNS."""
    hold_ms = params.max_hold_s * 1000
    rows = []
    for s, e in trips:
        idx = range(s, e + 1)
        duration = (ts_ms[e] - ts_ms[s]) / 1000
        fixes = [i for i in idx if usable[i]]
        gps_d = gps_cov = 0.0
        for a, b in itertools.pairwise(fixes):
            dt = (ts_ms[b] - ts_ms[a]) / 1000
            d = haversine_m_reference(lat[a], lon[a], lat[b], lon[b])
            if dt > 0 and d <= max_speed_mps * dt:
                gps_d += d
            if ts_ms[b] - ts_ms[a] <= hold_ms:
                gps_cov += dt

        def integral(values: list[float], scale: float, idx: range = idx) -> tuple[float, float, int]:
            valid = [i for i in idx if not math.isnan(values[i])]
            total = covered = 0.0
            for a, b in itertools.pairwise(valid):
                if ts_ms[b] - ts_ms[a] <= hold_ms:
                    dt = (ts_ms[b] - ts_ms[a]) / 1000
                    total += (values[a] + values[b]) / 2 * scale * dt
                    covered += dt
            return total, covered, len(valid)

        spd_d, spd_cov, n_spd = integral(speed_kmh, 1 / 3.6)
        speeds = [speed_kmh[i] for i in idx if not math.isnan(speed_kmh[i])]
        odo = [odometer_km[i] for i in idx if not math.isnan(odometer_km[i])]
        fr_l, _, n_fr = integral(fuel_rate_lph, 1 / 3600)
        maf_g, _, n_maf = integral(maf_gps, 1.0)
        if n_fr >= 2:
            fuel = fr_l
        elif n_maf >= 2:
            fuel = maf_g / STOICHIOMETRIC_AFR_PETROL / PETROL_DENSITY_G_PER_L
        else:
            fuel = math.nan

        driving = idle = night = urban = rural = motorway = run = 0.0
        held_speed: tuple[float, int] | None = None
        held_rpm: tuple[float, int] | None = None
        night_start, night_end = params.night_start_h * 3600, params.night_end_h * 3600
        for i in range(s, e):
            t = ts_ms[i]
            if not math.isnan(speed_kmh[i]):
                held_speed = (speed_kmh[i], t)
            if not math.isnan(rpm[i]):
                held_rpm = (rpm[i], t)
            v = held_speed[0] if held_speed and t - held_speed[1] <= hold_ms else math.nan
            r = held_rpm[0] if held_rpm and t - held_rpm[1] <= hold_ms else math.nan
            dt_ms = ts_ms[i + 1] - t
            if dt_ms > hold_ms or not v > 0:
                mw, ru = _band_flush(run, params.motorway_min_s)
                motorway, rural, run = motorway + mw, rural + ru, 0.0
                if dt_ms <= hold_ms and v == 0 and r > 0:
                    idle += dt_ms / 1000
                continue
            dt = dt_ms / 1000
            driving += dt
            tod = (t / 1000 + local_offset_s[i]) % 86400
            if night_start > night_end:
                night += dt if (tod >= night_start or tod < night_end) else 0.0
            else:
                night += dt if night_start <= tod < night_end else 0.0
            if v > params.rural_max_kmh:
                run += dt
                continue
            if v <= params.urban_max_kmh:
                urban += dt
            else:
                rural += dt
            mw, ru = _band_flush(run, params.motorway_min_s)
            motorway, rural, run = motorway + mw, rural + ru, 0.0
        mw, ru = _band_flush(run, params.motorway_min_s)
        motorway, rural = motorway + mw, rural + ru

        def cov(c: float, duration: float = duration) -> float:
            return 1.0 if duration <= 0 else c / duration

        candidates = {
            "odometer": (len(odo) >= 2 and odo[-1] >= odo[0], 1.0, (odo[-1] - odo[0]) * 1000 if len(odo) >= 2 else 0),
            "speed": (n_spd >= 2, cov(spd_cov), spd_d),
            "gps": (len(fixes) >= 2, cov(gps_cov), gps_d),
        }
        chosen = next((name for name in params.distance_source_order
                       if candidates[name][0] and candidates[name][1] >= params.min_distance_coverage), None)
        if chosen is None:
            best = None
            for name in params.distance_source_order:
                if candidates[name][0] and (best is None or candidates[name][1] > candidates[best][1]):
                    best = name
            chosen = best
        dist = candidates[chosen][2] if chosen else math.nan
        rows.append({
            "start_idx": s, "end_idx": e, "start_ts_ms": ts_ms[s], "end_ts_ms": ts_ms[e], "duration_s": duration,
            "driving_s": driving, "idle_s": idle, "distance_m": dist,
            "distance_source": DISTANCE_SOURCES.index(chosen) if chosen else -1,
            "distance_odometer_m": candidates["odometer"][2] if candidates["odometer"][0] else math.nan,
            "distance_speed_m": spd_d if n_spd >= 2 else math.nan,
            "distance_gps_m": gps_d if len(fixes) >= 2 else math.nan,
            "speed_coverage": cov(spd_cov) if n_spd >= 2 else 0.0,
            "gps_coverage": cov(gps_cov) if len(fixes) >= 2 else 0.0,
            "max_speed_kmh": max(speeds) if speeds else math.nan,
            "avg_speed_kmh": dist / driving * 3.6 if driving > 0 else math.nan,
            "fuel_l": fuel,
            "night_share": night / driving if driving > 0 else math.nan,
            "urban_share": urban / driving if driving > 0 else math.nan,
            "rural_share": rural / driving if driving > 0 else math.nan,
            "motorway_share": motorway / driving if driving > 0 else math.nan,
            "start_lat": lat[fixes[0]] if fixes else math.nan, "start_lon": lon[fixes[0]] if fixes else math.nan,
            "end_lat": lat[fixes[-1]] if fixes else math.nan, "end_lon": lon[fixes[-1]] if fixes else math.nan,
        })
    return rows


# ----------------------------------------------------------------------------------------------
# Array-level API


def _f64(a: np.ndarray | None, n: int) -> np.ndarray:
    if a is None:
        return np.full(n, np.nan)
    out = np.ascontiguousarray(a, dtype=np.float64)
    if out.shape != (n,):
        raise ValueError(f"array of shape {out.shape}, expected ({n},)")
    return out


def local_offsets_s(ts_ms: np.ndarray, params: TripParams) -> np.ndarray:
    """Seconds to add to UTC for local time at each sample (DST-aware when ``params.timezone`` is set)."""
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    if params.timezone is None:
        return np.full(len(ts_ms), params.utc_offset_h * 3600.0)
    utc = pd.DatetimeIndex(pd.to_datetime(ts_ms, unit="ms", utc=True))
    local_wall = utc.tz_convert(params.timezone).tz_localize(None)
    return ((local_wall - utc.tz_localize(None)) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)


def engine_sessions(ts_ms: np.ndarray, rpm: np.ndarray | None, obd_present: np.ndarray | None = None,
                    params: TripParams = TripParams()) -> pd.DataFrame:
    """Engine sessions as a DataFrame: start_idx, end_idx (inclusive), start_ts_ms, end_ts_ms, duration_s."""
    ts = np.ascontiguousarray(ts_ms, dtype=np.int64)
    n = len(ts)
    present = np.zeros(n, dtype=np.bool_) if obd_present is None else np.ascontiguousarray(obd_present, dtype=np.bool_)
    s, e = engine_sessions_kernel(ts, _f64(rpm, n), present, params.engine_off_gap_s, params.min_engine_session_s)
    return pd.DataFrame({"start_idx": s, "end_idx": e, "start_ts_ms": ts[s], "end_ts_ms": ts[e],
                         "duration_s": (ts[e] - ts[s]) / 1000.0})


def trip_metrics(
    ts_ms: np.ndarray, starts: np.ndarray, ends: np.ndarray, *,
    lat: np.ndarray | None = None, lon: np.ndarray | None = None, usable: np.ndarray | None = None,
    speed: np.ndarray | None = None, rpm: np.ndarray | None = None, odometer: np.ndarray | None = None,
    fuel_rate: np.ndarray | None = None, maf: np.ndarray | None = None,
    params: TripParams = TripParams(), cleaning: CleaningParams = CleaningParams(),  # noqa: B008
) -> pd.DataFrame:
    """Per-trip metrics as a DataFrame with :data:`TRIP_COLUMNS` (SI units in the names; see the kernel).

    ``usable`` is the clean-fix mask (default: every fix with both coordinates). ``distance_source``
    is the source's name (``odometer``/``speed``/``gps``, or None).
    """
    ts = np.ascontiguousarray(ts_ms, dtype=np.int64)
    n = len(ts)
    lat_a, lon_a = _f64(lat, n), _f64(lon, n)
    mask = (~np.isnan(lat_a) & ~np.isnan(lon_a)) if usable is None else np.ascontiguousarray(usable, dtype=np.bool_)
    order = np.array([DISTANCE_SOURCES.index(name) for name in params.distance_source_order], dtype=np.int64)
    table = trip_metrics_kernel(
        ts, np.ascontiguousarray(starts, dtype=np.int64), np.ascontiguousarray(ends, dtype=np.int64),
        lat_a, lon_a, mask, _f64(speed, n), _f64(rpm, n), _f64(odometer, n), _f64(fuel_rate, n), _f64(maf, n),
        local_offsets_s(ts, params), cleaning.max_speed_mps, params.max_hold_s, params.min_distance_coverage,
        order, params.night_start_h * 3600.0, params.night_end_h * 3600.0, params.urban_max_kmh,
        params.rural_max_kmh, params.motorway_min_s,
    )
    df = pd.DataFrame(table, columns=list(TRIP_COLUMNS))
    for col in ("start_idx", "end_idx", "start_ts_ms", "end_ts_ms"):
        df[col] = df[col].astype(np.int64)
    codes = df["distance_source"].to_numpy()
    df["distance_source"] = pd.Series([DISTANCE_SOURCES[int(c)] if c >= 0 else None for c in codes],
                                      dtype="object", index=df.index)
    return df


def detect_trips(
    ts_ms: np.ndarray, *,
    lat: np.ndarray | None = None, lon: np.ndarray | None = None,
    speed: np.ndarray | None = None, gps_speed: np.ndarray | None = None, rpm: np.ndarray | None = None,
    odometer: np.ndarray | None = None, fuel_rate: np.ndarray | None = None, maf: np.ndarray | None = None,
    hdop: np.ndarray | None = None, satellites: np.ndarray | None = None, fix_mode: np.ndarray | None = None,
    params: TripParams = TripParams(), cleaning: CleaningParams = CleaningParams(),  # noqa: B008
) -> pd.DataFrame:
    """Clean fixes, segment movement trips, compute metrics, drop too-short trips (one row per trip).

    ``speed`` is OBD speed (km/h); where it is absent the receiver's ``gps_speed`` stands in. Trips
    shorter than both ``min_trip_distance_m`` and ``min_trip_duration_s`` are dropped (Traccar's old
    rule keeps a trip that reaches either). Columns: :data:`TRIP_COLUMNS`.
    """
    ts = np.ascontiguousarray(ts_ms, dtype=np.int64)
    n = len(ts)
    lat_a, lon_a = _f64(lat, n), _f64(lon, n)
    usable = clean_gps_fixes(ts, lat_a, lon_a, hdop, satellites, fix_mode, cleaning)
    speed_a = _f64(speed, n)
    if gps_speed is not None:
        speed_a = np.where(np.isnan(speed_a), _f64(gps_speed, n), speed_a)
    starts, ends = movement_trips_kernel(ts, lat_a, lon_a, usable, speed_a, params.moving_speed_kmh,
                                         params.stop_radius_m, params.stop_duration_s, params.max_gap_s)
    df = trip_metrics(ts, starts, ends, lat=lat_a, lon=lon_a, usable=usable, speed=speed_a, rpm=rpm,
                      odometer=odometer, fuel_rate=fuel_rate, maf=maf, params=params, cleaning=cleaning)
    keep = (df["distance_m"].fillna(0.0) >= params.min_trip_distance_m) | (
        df["duration_s"] >= params.min_trip_duration_s)
    return df[keep].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Real-data proof (POLIDriving)

POLIDRIVING_GLOB = "*/*/*_col.csv*"


def load_polidriving_arrays(path: Path) -> dict[str, np.ndarray]:
    """A POLIDriving session as catalog-named arrays (UTC ms, NaN where absent), plus the logger's
    cumulative ``logger_distance_km`` (its ``distance_travelled`` column, km)."""
    from device_agent.replay import read_polidriving

    rows = list(read_polidriving(Path(path)))
    names = ("speed", "rpm", "latitude", "longitude", "throttle_pos", "coolant_temp", "battery_voltage",
             "engine_load")
    out = {"ts_ms": np.array([r.ts_ms for r in rows], dtype=np.int64)}
    for name in names:
        out[name] = np.array([r.values.get(name, np.nan) for r in rows], dtype=np.float64)
    out["logger_distance_km"] = np.array([r.extras.get("logger_distance_km", np.nan) for r in rows])
    return out


def trip_proof_table(root: Path, params: TripParams = TripParams(),
                     cleaning: CleaningParams = CleaningParams()) -> pd.DataFrame:  # noqa: B008
    """Per POLIDriving session: samples, trips, our distance vs the logger's own, and each source alone.

    The logger's distance is the span of its cumulative ``distance_travelled`` (km). ``our_km`` is the
    sum of ``distance_m`` over detected trips (the documented source order); ``gps_km`` and ``speed_km``
    are the same trips measured by one source only, and ``raw_gps_km`` the unfiltered haversine sum.
    """
    from analytics.geo import step_distances_m

    records = []
    for path in sorted(Path(root).glob(POLIDRIVING_GLOB)):
        a = load_polidriving_arrays(path)
        obd = ~np.isnan(np.vstack([a[k] for k in ("speed", "rpm", "throttle_pos", "coolant_temp",
                                                   "engine_load")])).all(axis=0)
        trips = detect_trips(a["ts_ms"], lat=a["latitude"], lon=a["longitude"], speed=a["speed"], rpm=a["rpm"],
                             params=params, cleaning=cleaning)
        sessions = engine_sessions(a["ts_ms"], a["rpm"], obd, params)
        logger_km = float(np.nanmax(a["logger_distance_km"]) - np.nanmin(a["logger_distance_km"]))
        our_km = float(trips["distance_m"].sum()) / 1000.0
        records.append({
            "session": f"{path.parent.parent.name}/{path.parent.name}",
            "samples": len(a["ts_ms"]),
            "engine_sessions": len(sessions),
            "trips": len(trips),
            "our_km": our_km,
            "logger_km": logger_km,
            "error_pct": (our_km - logger_km) / logger_km * 100.0,
            "speed_km": float(trips["distance_speed_m"].sum()) / 1000.0,
            "gps_km": float(trips["distance_gps_m"].sum()) / 1000.0,
            "raw_gps_km": float(np.nansum(step_distances_m(a["latitude"], a["longitude"]))) / 1000.0,
            "source": ",".join(sorted(set(trips["distance_source"].dropna()))),
        })
    return pd.DataFrame.from_records(records)


if __name__ == "__main__":  # python -m analytics.trips [POLIDRIVING_ROOT]
    import sys

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/data/polidriving"
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(trip_proof_table(root).round(2).to_string(index=False))
