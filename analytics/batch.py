"""The fleet-wide batch path: cleaning, trips, events, trip / period / eco scores for many vehicles in one pass.

Why: :func:`analytics.pipeline.analyse_vehicle` costs ~20 ms of Python and pandas per vehicle (DataFrames,
score dataclasses, per-trip dict rows) around ~2 ms of numba work. For a fleet's daily job that wrapper, not the
arithmetic, is the bill. Here all vehicles' samples are one set of concatenated arrays with segment offsets
(``bounds[v]:bounds[v + 1]`` are vehicle ``v``'s rows, time-sorted), and:

* :func:`fleet_kernel` loops over the vehicles *inside numba*, calling the very same stage kernels the
  per-vehicle path calls (cleaning, movement trips, trip metrics, the event kernels) on each vehicle's slice, so
  the results are the per-vehicle results by construction; it returns flat arrays for the whole fleet;
* :func:`safety_scores_kernel` and :func:`eco_scores_kernel` compute every trip's and every vehicle's score
  components with the exact arithmetic of :mod:`analytics.scores` (including numpy's pairwise summation where
  the per-vehicle path sums with numpy / pandas, so scores agree to the last bit);
* Python objects appear only at the very end and only when asked for: :func:`trips_frame`, :func:`events_frame`
  and the ``*_explanation`` functions build, for one vehicle, the DataFrames and ``ScoreExplanation.as_dict()``
  dicts that the per-vehicle path produces.

Scope: the stages that run per sample (cleaning, trips, events, scores, eco), plus the trips' map tracks for
a whole fleet in one shapely call (:func:`simplified_tracks`) and the day scores of stored trips
(:func:`period_scores`). Battery health has its own fleet kernel (:func:`analytics.health.battery_health_fleet`);
coolant and geofences stay per vehicle (:mod:`analytics.runner` calls them). A speed-limit layer is matched per
vehicle outside numba (shapely) and passed in as a per-sample limit array.

Numba's on-disk cache of a kernel here does not notice a change in a kernel it calls from another module (the
callee is compiled into it): after editing cleaning / trips / events / scores / geo kernels, clear
``analytics/__pycache__/*.nbi`` / ``*.nbc`` (or touch this file), or the batch path runs the old code and the
batch-equals-per-vehicle tests fail on the last bits.

Every kernel here has a plain-Python/numpy reference: :func:`pairwise_sum_reference` (numpy's own ``np.sum``),
and for the drivers, the per-vehicle public API (:func:`analytics.pipeline.analyse_vehicle`), which the tests
compare them with on synthetic fleets.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import pandas as pd

from analytics.cleaning import CleaningParams, gps_fix_mask_kernel
from analytics.events import (
    EVENT_COLUMNS,
    EVENT_KINDS,
    EventParams,
    lateral_accel_kernel,
    longitudinal_accel_kernel,
    match_speed_limits,
    nearest_fix_kernel,
    speeding_threshold_kernel,
    threshold_runs_kernel,
)
from analytics.scores import (
    ACCELERATION,
    BRAKING,
    CORNERING,
    DAYS_PER_YEAR,
    FUEL,
    HIGH_RPM,
    HIGH_THROTTLE,
    IDLE,
    MILEAGE,
    NIGHT,
    SPEEDING,
    ScoreParams,
    eco_time_shares_kernel,
)
from analytics.trips import (
    DISTANCE_SOURCES,
    TRIP_COLUMNS,
    TripParams,
    local_offsets_s,
    movement_trips_kernel,
    trip_metrics_kernel,
)

# The per-sample columns the batch path reads (NaN where a vehicle lacks one).
BATCH_SIGNALS: tuple[str, ...] = ("speed", "rpm", "latitude", "longitude", "gps_speed", "course", "hdop",
                                  "satellites", "fix_mode", "fuel_rate", "maf", "odometer", "throttle_pos")

# Event matrix columns (float64; indices are vehicle-local sample rows).
EV_KIND, EV_START, EV_END, EV_PEAK, EV_TS, EV_LAT, EV_LON, EV_SEVERITY, EV_VALUE, EV_DURATION, EV_REFERENCE, \
    EV_SOURCE, EV_TRIP, EV_RATIO = range(14)
N_EV_COLUMNS = 14
SOURCES: tuple[str, ...] = ("obd", "gps", "limit", "band")
"""Codes of an event's ``source`` column."""
_UNITS: tuple[str, ...] = ("m/s²", "m/s²", "m/s²", "m/s", "1/s", "s")
"""Peak unit per kind, in :data:`EVENT_KINDS` order."""
_ALPHA_RANK = np.array([sorted(EVENT_KINDS).index(k) for k in EVENT_KINDS], dtype=np.int64)
"""Rank of each kind's name: detect_events sorts events by start, then by kind *name*."""

# Float parameter vector of fleet_kernel (numba takes one array instead of forty scalars).
(P_MAX_SPEED_MPS, P_MAX_HDOP, P_MIN_SATS, P_MIN_FIX, P_REANCHOR_AFTER, P_REANCHOR_GAP_S, P_DROP_REPEATED,
 P_MOVING_KMH, P_STOP_RADIUS_M, P_STOP_DURATION_S, P_MAX_GAP_S, P_MAX_HOLD_S, P_MIN_COVERAGE, P_NIGHT_START_S,
 P_NIGHT_END_S, P_URBAN_KMH, P_RURAL_KMH, P_MOTORWAY_S, P_MIN_TRIP_M, P_MIN_TRIP_S,
 P_LONG_GPS, P_OBD_ACCEL, P_OBD_BRAKE, P_OBD_WINDOW, P_OBD_MIN_DUR, P_OBD_RELEASE, P_OBD_GAP, P_OBD_SEV2, P_OBD_SEV3,
 P_GPS_ACCEL, P_GPS_BRAKE, P_GPS_WINDOW, P_GPS_MIN_DUR, P_GPS_RELEASE, P_GPS_GAP, P_GPS_SEV2, P_GPS_SEV3,
 P_MAX_PLAUSIBLE_KMH, P_MAX_PLAUSIBLE_MS2,
 P_LAT_THR, P_LAT_WINDOW, P_LAT_MIN_KMH, P_LAT_MIN_DUR, P_LAT_RELEASE, P_LAT_GAP, P_LAT_MAX_MS2, P_LAT_SEV2, P_LAT_SEV3,
 P_SPD_REL_TOL, P_SPD_REL_BELOW, P_SPD_ABS_TOL, P_SPD_MIN_DUR, P_SPD_SEV2, P_SPD_SEV3, P_BAND1, P_BAND2, P_BAND3,
 P_SPD_GAP, P_REV_RPM, P_REV_MIN_DUR, P_REV_SEV2, P_REV_SEV3, P_IDLE_RPM, P_IDLE_KMH, P_IDLE_MIN_DUR, P_IDLE_SEV2,
 P_IDLE_SEV3, P_STATE_GAP, P_HIGH_RPM, P_HIGH_THROTTLE, P_ECO_GAP_MS, P_UTC_OFFSET_S, N_PARAMS) = range(73)


def kernel_params(cleaning: CleaningParams, trips: TripParams, events: EventParams,
                  scores: ScoreParams) -> np.ndarray:
    """The parameter vector of :func:`fleet_kernel` from the stages' dataclasses."""
    p = np.zeros(N_PARAMS)
    c, t, e = cleaning, trips, events
    ol, gl, la = e.obd_longitudinal, e.gps_longitudinal, e.lateral
    values = {
        P_MAX_SPEED_MPS: c.max_speed_mps, P_MAX_HDOP: c.max_hdop, P_MIN_SATS: c.min_satellites,
        P_MIN_FIX: c.min_fix_mode, P_REANCHOR_AFTER: c.reanchor_after, P_REANCHOR_GAP_S: c.reanchor_gap_s,
        P_DROP_REPEATED: float(c.drop_repeated_positions),
        P_MOVING_KMH: t.moving_speed_kmh, P_STOP_RADIUS_M: t.stop_radius_m, P_STOP_DURATION_S: t.stop_duration_s,
        P_MAX_GAP_S: t.max_gap_s, P_MAX_HOLD_S: t.max_hold_s, P_MIN_COVERAGE: t.min_distance_coverage,
        P_NIGHT_START_S: t.night_start_h * 3600.0, P_NIGHT_END_S: t.night_end_h * 3600.0,
        P_URBAN_KMH: t.urban_max_kmh, P_RURAL_KMH: t.rural_max_kmh, P_MOTORWAY_S: t.motorway_min_s,
        P_MIN_TRIP_M: t.min_trip_distance_m, P_MIN_TRIP_S: t.min_trip_duration_s,
        P_LONG_GPS: float(e.longitudinal_source == "gps"),
        P_OBD_ACCEL: ol.accel_ms2, P_OBD_BRAKE: ol.brake_ms2, P_OBD_WINDOW: ol.window_s,
        P_OBD_MIN_DUR: ol.min_duration_s, P_OBD_RELEASE: ol.release_fraction, P_OBD_GAP: ol.max_gap_s,
        P_OBD_SEV2: ol.severity_ratios[0], P_OBD_SEV3: ol.severity_ratios[1],
        P_GPS_ACCEL: gl.accel_ms2, P_GPS_BRAKE: gl.brake_ms2, P_GPS_WINDOW: gl.window_s,
        P_GPS_MIN_DUR: gl.min_duration_s, P_GPS_RELEASE: gl.release_fraction, P_GPS_GAP: gl.max_gap_s,
        P_GPS_SEV2: gl.severity_ratios[0], P_GPS_SEV3: gl.severity_ratios[1],
        P_MAX_PLAUSIBLE_KMH: e.max_plausible_speed_kmh, P_MAX_PLAUSIBLE_MS2: e.max_plausible_longitudinal_ms2,
        P_LAT_THR: la.lateral_ms2, P_LAT_WINDOW: la.window_s, P_LAT_MIN_KMH: la.min_speed_kmh,
        P_LAT_MIN_DUR: la.min_duration_s, P_LAT_RELEASE: la.release_fraction, P_LAT_GAP: la.max_gap_s,
        P_LAT_MAX_MS2: la.max_plausible_ms2, P_LAT_SEV2: la.severity_ratios[0], P_LAT_SEV3: la.severity_ratios[1],
        P_SPD_REL_TOL: e.speeding_relative_tolerance, P_SPD_REL_BELOW: e.speeding_relative_below_kmh,
        P_SPD_ABS_TOL: e.speeding_absolute_tolerance_kmh, P_SPD_MIN_DUR: e.speeding_min_duration_s,
        P_SPD_SEV2: e.speeding_severity_ratios[0], P_SPD_SEV3: e.speeding_severity_ratios[1],
        P_BAND1: e.absolute_speed_bands_kmh[0], P_BAND2: e.absolute_speed_bands_kmh[1],
        P_BAND3: e.absolute_speed_bands_kmh[2], P_SPD_GAP: e.speeding_max_gap_s,
        P_REV_RPM: e.over_rev_rpm, P_REV_MIN_DUR: e.over_rev_min_duration_s, P_REV_SEV2: e.over_rev_severity_ratios[0],
        P_REV_SEV3: e.over_rev_severity_ratios[1], P_IDLE_RPM: e.idle_min_rpm, P_IDLE_KMH: e.idle_max_speed_kmh,
        P_IDLE_MIN_DUR: e.idle_min_duration_s, P_IDLE_SEV2: e.idle_severity_ratios[0],
        P_IDLE_SEV3: e.idle_severity_ratios[1], P_STATE_GAP: e.state_max_gap_s,
        P_UTC_OFFSET_S: t.utc_offset_h * 3600.0, P_HIGH_RPM: scores.high_rpm,
        P_HIGH_THROTTLE: scores.high_throttle_pct, P_ECO_GAP_MS: scores.eco_max_gap_s * 1000.0,
    }
    for k, v in values.items():
        p[k] = float(v)
    return p


# ----------------------------------------------------------------------------------------------------------------
# Kernels


@numba.njit(cache=True)
def pairwise_sum(a: np.ndarray) -> float:
    """``np.sum`` of a float64 vector, bit for bit: numpy's pairwise summation (8 accumulators, blocks of 128).

    The per-vehicle path sums trip distances, driving time and speeding time with numpy / pandas; a plain
    running sum differs from theirs in the last bits, and a score must not depend on the code path.
    """
    n = len(a)
    if n < 8:
        res = -0.0
        for i in range(n):
            res += a[i]
        return res
    if n <= 128:
        r0, r1, r2, r3, r4, r5, r6, r7 = a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
        i = 8
        stop = n - (n % 8)
        while i < stop:
            r0 += a[i]
            r1 += a[i + 1]
            r2 += a[i + 2]
            r3 += a[i + 3]
            r4 += a[i + 4]
            r5 += a[i + 5]
            r6 += a[i + 6]
            r7 += a[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return pairwise_sum(a[:n2]) + pairwise_sum(a[n2:])


def pairwise_sum_reference(a: Sequence[float]) -> float:
    """What :func:`pairwise_sum` must equal: numpy's own sum."""
    return float(np.sum(np.asarray(a, dtype=np.float64)))


@numba.njit(cache=True)
def _severity(ratio: float, b2: float, b3: float) -> float:
    return 1.0 + (1.0 if ratio >= b2 else 0.0) + (1.0 if ratio >= b3 else 0.0)


@numba.njit(cache=True)
def _put_runs(out: np.ndarray, k: int, kind: int, runs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
              ts: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> int:
    """Write one kind's runs into the vehicle's event matrix from row k (columns common to all kinds)."""
    start, end, peak, ratio = runs
    fix = nearest_fix_kernel(lat, lon, peak, start, end)
    for r in range(len(start)):
        row = out[k + r]
        row[EV_KIND] = kind
        row[EV_START] = start[r]
        row[EV_END] = end[r]
        row[EV_PEAK] = peak[r]
        row[EV_TS] = ts[peak[r]]
        row[EV_LAT] = lat[fix[r]] if fix[r] >= 0 else np.nan
        row[EV_LON] = lon[fix[r]] if fix[r] >= 0 else np.nan
        row[EV_DURATION] = (ts[end[r]] - ts[start[r]]) / 1000.0
        row[EV_RATIO] = ratio[r]
        row[EV_TRIP] = -1.0
    return k + len(start)


@numba.njit(cache=True)
def vehicle_events_kernel(ts: np.ndarray, speed: np.ndarray, rpm: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                          course: np.ndarray, gps_speed: np.ndarray, limit: np.ndarray, p: np.ndarray) -> np.ndarray:
    """One vehicle's events as a matrix (columns ``EV_*``), sorted by start then kind name: the rows of
    :func:`analytics.events.detect_events` (same kernels, same arithmetic), trip column left at -1.
    ``limit`` is the matched speed limit per sample (km/h, NaN = none) or empty (no limit layer)."""
    n = len(ts)
    gps = np.empty(n)
    best = np.empty(n)
    any_obd = False
    for i in range(n):
        g = gps_speed[i]
        gps[i] = np.nan if g > p[P_MAX_PLAUSIBLE_KMH] else g
        v = speed[i]
        if np.isfinite(v):
            any_obd = True
        best[i] = gps[i] if v != v else v
    no_origin = np.empty(0, dtype=np.int64)
    # Harsh acceleration / braking (OBD speed, or GPS speed for a vehicle without any).
    if p[P_LONG_GPS] != 0.0 or not any_obd:
        src, lsp = 1.0, gps
        acc_thr, brk_thr, win, min_dur, rel, gap, s2, s3 = (p[P_GPS_ACCEL], p[P_GPS_BRAKE], p[P_GPS_WINDOW],
                                                            p[P_GPS_MIN_DUR], p[P_GPS_RELEASE], p[P_GPS_GAP],
                                                            p[P_GPS_SEV2], p[P_GPS_SEV3])
    else:
        src, lsp = 0.0, speed
        acc_thr, brk_thr, win, min_dur, rel, gap, s2, s3 = (p[P_OBD_ACCEL], p[P_OBD_BRAKE], p[P_OBD_WINDOW],
                                                            p[P_OBD_MIN_DUR], p[P_OBD_RELEASE], p[P_OBD_GAP],
                                                            p[P_OBD_SEV2], p[P_OBD_SEV3])
    accel, origin = longitudinal_accel_kernel(ts, lsp, win, gap, p[P_MAX_PLAUSIBLE_MS2])
    r_acc = threshold_runs_kernel(ts, accel, np.array([acc_thr]), 1.0, origin, rel, min_dur * 1000.0, gap * 1000.0)
    r_brk = threshold_runs_kernel(ts, accel, np.array([brk_thr]), -1.0, origin, rel, min_dur * 1000.0,
                                  gap * 1000.0)
    lateral, lorigin = lateral_accel_kernel(ts, course, gps, speed, p[P_LAT_WINDOW], p[P_LAT_GAP], p[P_LAT_MIN_KMH],
                                            p[P_LAT_MAX_MS2], p[P_MAX_PLAUSIBLE_KMH])
    abs_lat = np.abs(lateral)
    r_lat = threshold_runs_kernel(ts, abs_lat, np.array([p[P_LAT_THR]]), 1.0, lorigin, p[P_LAT_RELEASE],
                                  p[P_LAT_MIN_DUR] * 1000.0, p[P_LAT_GAP] * 1000.0)
    if len(limit):
        threshold = speeding_threshold_kernel(limit, p[P_SPD_REL_TOL], p[P_SPD_REL_BELOW], p[P_SPD_ABS_TOL],
                                              p[P_BAND1])
    else:  # no limit layer: every sample's threshold is the absolute band (what the kernel gives for NaN)
        threshold = np.array([p[P_BAND1]])
    r_spd = threshold_runs_kernel(ts, best, threshold, 1.0, no_origin, 1.0, p[P_SPD_MIN_DUR] * 1000.0,
                                  p[P_SPD_GAP] * 1000.0)
    r_rev = threshold_runs_kernel(ts, rpm, np.array([p[P_REV_RPM]]), 1.0, no_origin, 1.0, p[P_REV_MIN_DUR] * 1000.0,
                                  p[P_STATE_GAP] * 1000.0)
    idle = np.empty(n)
    for i in range(n):
        if rpm[i] != rpm[i] or best[i] != best[i]:
            idle[i] = np.nan
        elif rpm[i] > p[P_IDLE_RPM] and best[i] < p[P_IDLE_KMH]:
            idle[i] = 1.0
        else:
            idle[i] = 0.0
    r_idle = threshold_runs_kernel(ts, idle, np.array([1.0]), 1.0, no_origin, 1.0, p[P_IDLE_MIN_DUR] * 1000.0,
                                   p[P_STATE_GAP] * 1000.0)
    total = len(r_acc[0]) + len(r_brk[0]) + len(r_lat[0]) + len(r_spd[0]) + len(r_rev[0]) + len(r_idle[0])
    ev = np.empty((total, N_EV_COLUMNS))
    k = 0
    k0 = k
    k = _put_runs(ev, k, 0, r_acc, ts, lat, lon)
    for r in range(k0, k):
        ev[r, EV_VALUE] = accel[int(ev[r, EV_PEAK])]
        ev[r, EV_SEVERITY] = _severity(ev[r, EV_RATIO], s2, s3)
        ev[r, EV_REFERENCE] = 1.0 * acc_thr
        ev[r, EV_SOURCE] = src
    k0 = k
    k = _put_runs(ev, k, 1, r_brk, ts, lat, lon)
    for r in range(k0, k):
        ev[r, EV_VALUE] = accel[int(ev[r, EV_PEAK])]
        ev[r, EV_SEVERITY] = _severity(ev[r, EV_RATIO], s2, s3)
        ev[r, EV_REFERENCE] = -1.0 * brk_thr
        ev[r, EV_SOURCE] = src
    k0 = k
    k = _put_runs(ev, k, 2, r_lat, ts, lat, lon)
    for r in range(k0, k):
        ev[r, EV_VALUE] = lateral[int(ev[r, EV_PEAK])]
        ev[r, EV_SEVERITY] = _severity(ev[r, EV_RATIO], p[P_LAT_SEV2], p[P_LAT_SEV3])
        ev[r, EV_REFERENCE] = p[P_LAT_THR]
        ev[r, EV_SOURCE] = 1.0
    k0 = k
    k = _put_runs(ev, k, 3, r_spd, ts, lat, lon)
    for r in range(k0, k):
        pk = int(ev[r, EV_PEAK])
        kmh = best[pk]
        lim = limit[pk] if len(limit) else np.nan
        ev[r, EV_VALUE] = kmh / 3.6
        if lim == lim:
            ev[r, EV_SEVERITY] = _severity(kmh / lim, p[P_SPD_SEV2], p[P_SPD_SEV3])
            ev[r, EV_REFERENCE] = lim / 3.6
            ev[r, EV_SOURCE] = 2.0
        else:
            ev[r, EV_SEVERITY] = 1.0 + (1.0 if kmh > p[P_BAND2] else 0.0) + (1.0 if kmh > p[P_BAND3] else 0.0)
            ev[r, EV_REFERENCE] = p[P_BAND1] / 3.6
            ev[r, EV_SOURCE] = 3.0
    k0 = k
    k = _put_runs(ev, k, 4, r_rev, ts, lat, lon)
    for r in range(k0, k):
        ev[r, EV_VALUE] = rpm[int(ev[r, EV_PEAK])] / 60.0
        ev[r, EV_SEVERITY] = _severity(ev[r, EV_RATIO], p[P_REV_SEV2], p[P_REV_SEV3])
        ev[r, EV_REFERENCE] = p[P_REV_RPM] / 60
        ev[r, EV_SOURCE] = 0.0
    k0 = k
    k = _put_runs(ev, k, 5, r_idle, ts, lat, lon)
    for r in range(k0, k):
        d = ev[r, EV_DURATION]
        ev[r, EV_VALUE] = d
        ev[r, EV_SEVERITY] = _severity(d / p[P_IDLE_MIN_DUR], p[P_IDLE_SEV2], p[P_IDLE_SEV3])
        ev[r, EV_REFERENCE] = p[P_IDLE_MIN_DUR]
        ev[r, EV_SOURCE] = 0.0
    key = np.empty(total, dtype=np.int64)
    for r in range(total):
        key[r] = np.int64(ev[r, EV_START]) * 8 + _ALPHA_RANK[np.int64(ev[r, EV_KIND])]
    return ev[np.argsort(key, kind="mergesort")]


@numba.njit(cache=True)
def _grow(a: np.ndarray, need: int) -> np.ndarray:
    if need <= a.shape[0]:
        return a
    b = np.empty((max(need, 2 * a.shape[0]), a.shape[1]), dtype=a.dtype)
    b[:a.shape[0]] = a
    return b


@numba.njit(cache=True, nogil=True)
def fleet_kernel(ts_all: np.ndarray, bounds: np.ndarray, v0: int, v1: int, speed_all: np.ndarray,
                 rpm_all: np.ndarray, lat_all: np.ndarray, lon_all: np.ndarray, gps_speed_all: np.ndarray,
                 course_all: np.ndarray, hdop_all: np.ndarray, sats_all: np.ndarray, fix_all: np.ndarray,
                 fuel_all: np.ndarray, maf_all: np.ndarray, odo_all: np.ndarray, throttle_all: np.ndarray,
                 limit_all: np.ndarray, local_offset_all: np.ndarray, source_order: np.ndarray, p: np.ndarray,
                 usable_out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cleaning, trips (kept ones), events and eco time shares of vehicles ``v0 .. v1 - 1``, in one pass.

    Signal arrays hold every vehicle's samples (NaN where absent). ``limit_all`` (speed limit per sample, km/h)
    and ``local_offset_all`` (seconds to local time per sample) may be empty: no limit layer, and a fixed offset
    ``p[P_UTC_OFFSET_S]``. Per vehicle this calls the kernels that :func:`analytics.trips.detect_trips` and
    :func:`analytics.events.detect_events` call, on the vehicle's slice. Returns (trip table rows
    (TRIP_COLUMNS), trip counts per vehicle, event matrix rows (EV_*), event counts per vehicle, eco shares per
    trip (rpm known s, rpm high s, throttle known s, throttle high s)); ``usable_out`` receives the usable-fix
    mask. Nogil, so a caller may run disjoint vehicle ranges in threads.
    """
    n_v = v1 - v0
    trips = np.empty((64, len(TRIP_COLUMNS)))
    eco = np.empty((64, 4))
    events = np.empty((64, N_EV_COLUMNS))
    trip_counts = np.zeros(n_v, dtype=np.int64)
    event_counts = np.zeros(n_v, dtype=np.int64)
    m = 0
    q = 0
    for v in range(v0, v1):
        a = bounds[v]
        b = bounds[v + 1]
        ts = ts_all[a:b]
        speed, rpm, lat, lon = speed_all[a:b], rpm_all[a:b], lat_all[a:b], lon_all[a:b]
        gps_speed, course, hdop, sats, fix = (gps_speed_all[a:b], course_all[a:b], hdop_all[a:b], sats_all[a:b],
                                              fix_all[a:b])
        fuel, maf, odo, throttle = fuel_all[a:b], maf_all[a:b], odo_all[a:b], throttle_all[a:b]
        n = b - a
        offsets = local_offset_all[a:b] if len(local_offset_all) else np.full(n, p[P_UTC_OFFSET_S])
        limit = limit_all[a:b] if len(limit_all) else limit_all
        usable = gps_fix_mask_kernel(ts, lat, lon, hdop, sats, fix, p[P_MAX_SPEED_MPS], p[P_MAX_HDOP],
                                     p[P_MIN_SATS], p[P_MIN_FIX], int(p[P_REANCHOR_AFTER]), p[P_REANCHOR_GAP_S],
                                     p[P_DROP_REPEATED] != 0.0)
        usable_out[a:b] = usable
        trip_speed = np.empty(n)
        for i in range(n):
            trip_speed[i] = gps_speed[i] if speed[i] != speed[i] else speed[i]
        starts, ends = movement_trips_kernel(ts, lat, lon, usable, trip_speed, p[P_MOVING_KMH], p[P_STOP_RADIUS_M],
                                             p[P_STOP_DURATION_S], p[P_MAX_GAP_S])
        table = trip_metrics_kernel(ts, starts, ends, lat, lon, usable, trip_speed, rpm, odo, fuel, maf,
                                    offsets, p[P_MAX_SPEED_MPS], p[P_MAX_HOLD_S], p[P_MIN_COVERAGE],
                                    source_order, p[P_NIGHT_START_S], p[P_NIGHT_END_S], p[P_URBAN_KMH],
                                    p[P_RURAL_KMH], p[P_MOTORWAY_S])
        trips = _grow(trips, m + len(table))
        eco = _grow(eco, m + len(table))
        kept = 0
        for j in range(len(table)):
            d = table[j, 7]
            if (d if d == d else 0.0) >= p[P_MIN_TRIP_M] or table[j, 4] >= p[P_MIN_TRIP_S]:
                trips[m + kept] = table[j]
                eco[m + kept] = eco_time_shares_kernel(ts, rpm, throttle, int(table[j, 0]), int(table[j, 1]),
                                                       p[P_HIGH_RPM], p[P_HIGH_THROTTLE], p[P_ECO_GAP_MS])
                kept += 1
        ev = vehicle_events_kernel(ts, speed, rpm, lat, lon, course, gps_speed, limit, p)
        # Events to trips: the kept trip whose [start, end] holds the event's start.
        t = 0
        for r in range(len(ev)):
            s = ev[r, EV_START]
            while t < kept and trips[m + t, 1] < s:
                t += 1
            if t < kept and trips[m + t, 0] <= s:
                ev[r, EV_TRIP] = t
        events = _grow(events, q + len(ev))
        events[q:q + len(ev)] = ev
        trip_counts[v - v0] = kept
        event_counts[v - v0] = len(ev)
        m += kept
        q += len(ev)
    return trips[:m].copy(), trip_counts, events[:q].copy(), event_counts, eco[:m].copy()


# Trip / period safety score arrays: columns of the component matrix, in the order of analytics.scores.
COMPONENTS: tuple[str, ...] = (BRAKING, ACCELERATION, CORNERING, SPEEDING, NIGHT, MILEAGE)
ECO_COMPONENTS: tuple[str, ...] = (IDLE, HIGH_RPM, HIGH_THROTTLE, FUEL)
_HARSH_KIND = np.array([1, 0, 2], dtype=np.int64)  # braking, acceleration, cornering -> EVENT_KINDS codes
# value, normalised, sub-score, weight, contribution per component
CV, CN, CS, CW, CC = range(5)


@numba.njit(cache=True)
def _linear(points: float) -> float:
    return max(0.0, 100.0 - points) if np.isfinite(points) else 0.0


@numba.njit(cache=True)
def _band(x: float, good: float, bad: float) -> float:
    if x <= good:
        return 100.0
    if x >= bad:
        return 0.0
    return 100.0 * (bad - x) / (bad - good)


@numba.njit(cache=True)
def _behaviour(comp: np.ndarray, counts: np.ndarray, speeding_s: float, distance_m: float, driving_s: float,
               night_share: float, points_per_event: float, speeding_points: float, night_points: float) -> None:
    """Components 0..4 (value, normalised, sub-score) as analytics.scores._behaviour_components computes them."""
    km = distance_m / 1000.0
    for c in range(3):
        count = counts[c]
        rate = count / km * 100.0 if km > 0 else (np.inf if count else 0.0)
        comp[c, CV] = float(count)
        comp[c, CN] = rate
        comp[c, CS] = _linear(points_per_event * rate)
    pct = min(100.0, speeding_s / driving_s * 100.0) if driving_s > 0 else (100.0 if speeding_s > 0 else 0.0)
    comp[3, CV] = speeding_s
    comp[3, CN] = pct
    comp[3, CS] = _linear(speeding_points * pct)
    night_pct = 100.0 * min(1.0, max(0.0, night_share if np.isfinite(night_share) else 0.0))
    comp[4, CV] = night_pct / 100.0
    comp[4, CN] = night_pct
    comp[4, CS] = _linear(night_points * night_pct)


@numba.njit(cache=True)
def _finish(comp: np.ndarray, applied: np.ndarray, weights: np.ndarray, eligible: bool) -> float:
    """Weights rescaled over the applied components, contributions, the score (NaN = None), as scores._finish."""
    total = 0.0
    for c in range(len(weights)):
        if applied[c]:
            total += weights[c]
    score = 0.0
    for c in range(len(weights)):
        comp[c, CW] = weights[c] / total if (applied[c] and total > 0) else 0.0
        comp[c, CC] = comp[c, CW] * comp[c, CS]
        score += comp[c, CC]
    return score if (eligible and total > 0) else np.nan


@numba.njit(cache=True)
def safety_scores_kernel(trips: np.ndarray, trip_bounds: np.ndarray, events: np.ndarray, event_bounds: np.ndarray,
                         weights: np.ndarray, sp: np.ndarray, period_days: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every trip's and every vehicle's (all its trips pooled) safety score, as analytics.scores computes them.

    ``sp`` = (points per event per 100 km, speeding points per %, night points per %, min trip m, min trip s,
    min period m, min period days, mileage full km/y, mileage zero km/y). ``period_days`` (one per vehicle, or
    empty) is the period length that mileage is annualised over; NaN or empty = the span of the trips, at least
    the minimum (``period_score``'s default). Events must be ordered by trip (their ``EV_TRIP`` column, -1 = none,
    non-decreasing among those with a trip). Returns (trip components (M, 6, 5), trip scores (NaN = not
    eligible), period components (V, 6, 5), period scores, period distance_m, period_days).
    """
    m = len(trips)
    n_v = len(trip_bounds) - 1
    t_comp = np.zeros((m, 6, 5))
    t_score = np.full(m, np.nan)
    p_comp = np.zeros((n_v, 6, 5))
    p_score = np.full(n_v, np.nan)
    p_dist = np.zeros(n_v)
    p_days = np.zeros(n_v)
    trip_applied = np.array([True, True, True, True, True, False])
    all_applied = np.ones(6, dtype=np.bool_)
    counts = np.zeros(3, dtype=np.int64)
    for v in range(n_v):
        ta, tb = trip_bounds[v], trip_bounds[v + 1]
        ea, eb = event_bounds[v], event_bounds[v + 1]
        r = ea
        period_counts = np.zeros(3, dtype=np.int64)
        period_speeding = np.empty(eb - ea)
        n_ps = 0
        for j in range(ta, tb):
            local = j - ta
            while r < eb and events[r, EV_TRIP] < local:
                r += 1  # events outside trips (-1), or of a trip already passed
            counts[:] = 0
            speeding = np.empty(eb - r)
            n_s = 0
            while r < eb and events[r, EV_TRIP] == local:
                kind = int(events[r, EV_KIND])
                for c in range(3):
                    if kind == _HARSH_KIND[c]:
                        counts[c] += 1
                        period_counts[c] += 1
                if kind == 3:
                    speeding[n_s] = events[r, EV_DURATION]
                    n_s += 1
                    period_speeding[n_ps] = events[r, EV_DURATION]
                    n_ps += 1
                r += 1
            speeding_s = pairwise_sum(speeding[:n_s]) if n_s > 0 else 0.0
            distance = trips[j, 7]
            duration = trips[j, 4]
            comp = t_comp[j]
            _behaviour(comp, counts, speeding_s, distance, trips[j, 5], trips[j, 17], sp[0], sp[1], sp[2])
            comp[5, CV] = distance / 1000.0
            comp[5, CN] = np.nan
            comp[5, CS] = 100.0
            t_score[j] = _finish(comp, trip_applied, weights, distance >= sp[3] and duration >= sp[4])
        k = tb - ta
        dist = np.empty(k)
        driving = np.empty(k)
        night_m = np.empty(k)
        for j in range(ta, tb):
            d = trips[j, 7]
            dist[j - ta] = d if d == d else 0.0
            dr = trips[j, 5]
            driving[j - ta] = dr if dr == dr else 0.0
            ns = trips[j, 17]
            night_m[j - ta] = (ns if ns == ns else 0.0) * dist[j - ta]
        distance_m = pairwise_sum(dist) if k else 0.0
        driving_s = pairwise_sum(driving) if k else 0.0
        night_share = pairwise_sum(night_m) / distance_m if distance_m > 0 else 0.0
        speeding_s = pairwise_sum(period_speeding[:n_ps]) if n_ps > 0 else 0.0
        comp = p_comp[v]
        _behaviour(comp, period_counts, speeding_s, distance_m, driving_s, night_share, sp[0], sp[1], sp[2])
        span_ms = 0.0
        if k:
            lo = trips[ta, 2]
            hi = trips[ta, 3]
            for j in range(ta, tb):
                lo = min(lo, trips[j, 2])
                hi = max(hi, trips[j, 3])
            span_ms = float(np.int64(hi) - np.int64(lo))
        days = max(sp[6], span_ms / 86_400_000.0)
        if len(period_days) and period_days[v] == period_days[v]:
            days = period_days[v]
        km_per_year = distance_m / 1000.0 * DAYS_PER_YEAR / days
        comp[5, CV] = distance_m / 1000.0
        comp[5, CN] = km_per_year
        comp[5, CS] = _band(km_per_year, sp[7], sp[8])
        p_score[v] = _finish(comp, all_applied, weights, distance_m >= sp[5])
        p_dist[v] = distance_m
        p_days[v] = days
    return t_comp, t_score, p_comp, p_score, p_dist, p_days


@numba.njit(cache=True)
def eco_scores_kernel(trips: np.ndarray, shares: np.ndarray, weights: np.ndarray, ep: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every trip's eco score as analytics.scores.eco_score computes it.

    ``ep`` = (idle band good, bad, rpm band good, bad, throttle band good, bad, fuel band good, bad, reference
    L/100 km, min trip m, min trip s). Returns (components (M, 4, 5), applied (M, 4), scores (NaN = None)).
    """
    m = len(trips)
    comp = np.zeros((m, 4, 5))
    applied = np.zeros((m, 4), dtype=np.bool_)
    score = np.full(m, np.nan)
    for j in range(m):
        distance_m = trips[j, 7]
        duration_s = trips[j, 4]
        idle_s = trips[j, 6]
        fuel_l = trips[j, 16]
        c = comp[j]
        idle_share = idle_s / duration_s if duration_s > 0 and np.isfinite(idle_s) else np.nan
        applied[j, 0] = np.isfinite(idle_share)
        c[0, CV] = idle_s
        c[0, CN] = idle_share
        c[0, CS] = _band(idle_share, ep[0], ep[1]) if np.isfinite(idle_share) else 0.0
        rpm_known, rpm_high, thr_known, thr_high = shares[j, 0], shares[j, 1], shares[j, 2], shares[j, 3]
        c[1, CV] = rpm_high
        c[1, CN] = rpm_high / rpm_known if rpm_known > 0 else np.nan
        c[1, CS] = _band(c[1, CN], ep[2], ep[3]) if rpm_known > 0 else 0.0
        applied[j, 1] = rpm_known > 0
        c[2, CV] = thr_high
        c[2, CN] = thr_high / thr_known if thr_known > 0 else np.nan
        c[2, CS] = _band(c[2, CN], ep[4], ep[5]) if thr_known > 0 else 0.0
        applied[j, 2] = thr_known > 0
        has_fuel = np.isfinite(fuel_l) and fuel_l > 0 and distance_m > 0
        l_per_100 = fuel_l / (distance_m / 1000.0) * 100.0 if has_fuel else np.nan
        c[3, CV] = fuel_l
        c[3, CN] = l_per_100 / ep[8] if has_fuel else np.nan
        c[3, CS] = _band(c[3, CN], ep[6], ep[7]) if has_fuel else 0.0
        applied[j, 3] = has_fuel
        score[j] = _finish(c, applied[j], weights, distance_m >= ep[9] and duration_s >= ep[10])
    return comp, applied, score


# ----------------------------------------------------------------------------------------------------------------
# Python API


@dataclass
class FleetAnalysis:
    """Results for a fleet as flat arrays; vehicle ``v``'s trips are rows ``trip_bounds[v]:trip_bounds[v+1]``
    of ``trips`` (TRIP_COLUMNS, kept trips only, vehicle-local sample indices), its events rows
    ``event_bounds[v]:event_bounds[v+1]`` of ``events`` (EV_* columns, ``EV_TRIP`` = vehicle-local trip row)."""

    bounds: np.ndarray
    ts_ms: np.ndarray
    usable: np.ndarray
    trips: np.ndarray
    trip_bounds: np.ndarray
    events: np.ndarray
    event_bounds: np.ndarray
    eco_shares: np.ndarray
    trip_components: np.ndarray
    trip_scores: np.ndarray
    period_components: np.ndarray
    period_scores: np.ndarray
    period_distance_m: np.ndarray
    period_days: np.ndarray
    eco_components: np.ndarray
    eco_applied: np.ndarray
    eco_scores: np.ndarray
    scores_params: ScoreParams

    @property
    def vehicles(self) -> int:
        return len(self.bounds) - 1


def _score_vectors(sc: ScoreParams) -> tuple[np.ndarray, np.ndarray]:
    """(weights, parameters) of :func:`safety_scores_kernel`."""
    weights = np.array([sc.weights.get(c, 0.0) for c in COMPONENTS], dtype=np.float64)
    sp = np.array([sc.points_per_event_per_100km, sc.speeding_points_per_pct, sc.night_points_per_pct,
                   sc.min_trip_distance_m, sc.min_trip_duration_s, sc.min_period_distance_m, sc.min_period_days,
                   sc.mileage_full_km_per_year, sc.mileage_zero_km_per_year])
    return weights, sp


def _offsets(bounds: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(bounds))).astype(np.int64)


def _run_threads(work: Any, parts: list[tuple[int, int]]) -> list[Any]:
    """``work(v0, v1)`` over vehicle ranges, in threads (the kernel releases the GIL) when there are several."""
    if len(parts) == 1:
        return [work(*parts[0])]
    out: list[Any] = [None] * len(parts)

    def run(k: int) -> None:
        out[k] = work(*parts[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(parts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def analyse_fleet(ts_ms: np.ndarray, bounds: np.ndarray, columns: Mapping[str, np.ndarray | None], *,
                  cleaning: CleaningParams | None = None, trips: TripParams | None = None,
                  events: EventParams | None = None, scores: ScoreParams | None = None,
                  speed_limits: Any = None, threads: int = 1) -> FleetAnalysis:
    """Cleaning, trips, events, trip / period / eco scores of every vehicle, as flat arrays.

    ``ts_ms`` and ``columns`` (BATCH_SIGNALS names; missing ones may be omitted or None) hold all vehicles'
    samples, vehicle ``v`` in rows ``bounds[v]:bounds[v + 1]``, each time-sorted. ``threads`` > 1 splits the
    vehicles into that many ranges of about equal sample count run concurrently (results are the same).
    """
    cp, tp, epar, sc = cleaning or CleaningParams(), trips or TripParams(), events or EventParams(), \
        scores or ScoreParams()
    ts = np.ascontiguousarray(ts_ms, dtype=np.int64)
    bounds = np.ascontiguousarray(bounds, dtype=np.int64)
    n = len(ts)
    missing = np.full(n, np.nan) if any(columns.get(name) is None for name in BATCH_SIGNALS) else None
    cols = [missing if columns.get(name) is None else np.ascontiguousarray(columns[name], dtype=np.float64)
            for name in BATCH_SIGNALS]
    if any(len(c) != n for c in cols):
        raise ValueError("every column must have one value per sample")
    limit = np.empty(0)
    if speed_limits is not None:
        limit = np.full(n, np.nan)
        for v in range(len(bounds) - 1):
            a, b = bounds[v], bounds[v + 1]
            limit[a:b] = match_speed_limits(cols[2][a:b], cols[3][a:b], speed_limits, epar.speed_limit_match_m)
    offsets = np.empty(0) if tp.timezone is None else local_offsets_s(ts, tp)
    order = np.array([DISTANCE_SOURCES.index(s) for s in tp.distance_source_order], dtype=np.int64)
    params = kernel_params(cp, tp, epar, sc)
    usable = np.zeros(n, dtype=np.bool_)
    n_v = len(bounds) - 1
    parts = [(0, n_v)]
    if threads > 1 and n_v > 1:
        cuts = np.searchsorted(bounds, np.linspace(0, n, threads + 1)[1:-1])
        edges = sorted({0, n_v, *[int(min(max(c, 1), n_v - 1)) for c in cuts]})
        parts = list(itertools.pairwise(edges))
    results = _run_threads(lambda v0, v1: fleet_kernel(ts, bounds, v0, v1, *cols, limit, offsets, order, params,
                                                        usable), parts)
    trip_table = np.concatenate([r[0] for r in results]) if len(results) > 1 else results[0][0]
    trip_bounds = _offsets(np.concatenate([r[1] for r in results]))
    ev = np.concatenate([r[2] for r in results]) if len(results) > 1 else results[0][2]
    event_bounds = _offsets(np.concatenate([r[3] for r in results]))
    eco = np.concatenate([r[4] for r in results]) if len(results) > 1 else results[0][4]
    t_comp, t_score, p_comp, p_score, p_dist, p_days = safety_scores_kernel(trip_table, trip_bounds, ev,
                                                                             event_bounds, *_score_vectors(sc),
                                                                             np.empty(0))
    eco_w = np.array([sc.eco_weights.get(c, 0.0) for c in ECO_COMPONENTS], dtype=np.float64)
    ep = np.array([*sc.idle_share_band, *sc.high_rpm_share_band, *sc.high_throttle_share_band, *sc.fuel_ratio_band,
                   sc.fuel_reference_l_per_100km, sc.min_trip_distance_m, sc.min_trip_duration_s])
    e_comp, e_applied, e_score = eco_scores_kernel(trip_table, eco, eco_w, ep)
    return FleetAnalysis(bounds, ts, usable, trip_table, trip_bounds, ev, event_bounds, eco, t_comp, t_score, p_comp,
                         p_score, p_dist, p_days, e_comp, e_applied, e_score, sc)


# ----------------------------------------------------------------------------------------------------------------
# Per-vehicle views (the per-vehicle path's DataFrames and explanations), built only on demand


def trips_frame(fa: FleetAnalysis, v: int) -> pd.DataFrame:
    """Vehicle ``v``'s trips as :func:`analytics.trips.detect_trips` returns them (plus ``trip_id``)."""
    table = fa.trips[fa.trip_bounds[v]:fa.trip_bounds[v + 1]]
    df = pd.DataFrame(table, columns=list(TRIP_COLUMNS))
    for col in ("start_idx", "end_idx", "start_ts_ms", "end_ts_ms"):
        df[col] = df[col].astype(np.int64)
    df["distance_source"] = pd.Series([DISTANCE_SOURCES[int(c)] if c >= 0 else None for c in table[:, 8]],
                                      dtype="object", index=df.index)
    df["trip_id"] = np.arange(len(df))
    return df


def events_frame(fa: FleetAnalysis, v: int) -> pd.DataFrame:
    """Vehicle ``v``'s events as :func:`analytics.events.detect_events` returns them (plus ``trip_index``)."""
    ev = fa.events[fa.event_bounds[v]:fa.event_bounds[v + 1]]
    kinds = ev[:, EV_KIND].astype(np.int64)
    cols: dict[str, Any] = {
        "kind": np.array([EVENT_KINDS[k] for k in kinds], dtype=object),
        "start_idx": ev[:, EV_START].astype(np.int64),
        "end_idx": ev[:, EV_END].astype(np.int64),
        "ts_ms": ev[:, EV_TS].astype(np.int64),
        "lat": ev[:, EV_LAT],
        "lon": ev[:, EV_LON],
        "severity": ev[:, EV_SEVERITY].astype(np.int64),
        "peak": ev[:, EV_VALUE],
        "peak_unit": np.array([_UNITS[k] for k in kinds], dtype=object),
        "duration_s": ev[:, EV_DURATION],
        "reference": ev[:, EV_REFERENCE],
        "source": np.array([SOURCES[int(s)] for s in ev[:, EV_SOURCE]], dtype=object),
    }
    df = pd.DataFrame(cols, columns=list(EVENT_COLUMNS))
    df.index.name = "event_id"
    df["trip_index"] = ev[:, EV_TRIP].astype(np.int64)
    return df


def _j(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _component(name: str, comp: np.ndarray, value_unit: str, normalised_unit: str, applied: bool,
               event_ids: list[int], note: str) -> dict[str, Any]:
    return {"name": name, "value": _j(comp[CV]), "value_unit": value_unit, "normalised": _j(comp[CN]),
            "normalised_unit": normalised_unit, "sub_score": _j(comp[CS]), "weight": _j(comp[CW]),
            "contribution": _j(comp[CC]), "event_ids": event_ids, "applied": applied, "note": note}


def _behaviour_dicts(comp: np.ndarray, kinds: np.ndarray, ids: np.ndarray, km: float) -> list[dict[str, Any]]:
    out = []
    for c, name in enumerate(COMPONENTS[:3]):
        out.append(_component(name, comp[c], "events", "events/100 km", True,
                              ids[kinds == _HARSH_KIND[c]].tolist(), ""))
    mask = kinds == 3
    count = int(mask.sum())
    out.append(_component(SPEEDING, comp[3], "s", "% of driving time", True, ids[mask].tolist(),
                          f"{count} speeding events, {count / km * 100 if km > 0 else 0:.2f} per 100 km"))
    out.append(_component(NIGHT, comp[4], "share", "% of trip at night", True, [], ""))
    return out


def trip_safety_explanation(fa: FleetAnalysis, v: int, t: int) -> dict[str, Any]:
    """``trip_score(...).as_dict()`` of vehicle ``v``'s trip ``t`` (event ids are vehicle-local event rows)."""
    p = fa.scores_params
    j = fa.trip_bounds[v] + t
    ev = fa.events[fa.event_bounds[v]:fa.event_bounds[v + 1]]
    ids = np.flatnonzero(ev[:, EV_TRIP] == t)
    kinds = ev[ids, EV_KIND].astype(np.int64)
    distance_m, duration_s = float(fa.trips[j, 7]), float(fa.trips[j, 4])
    comp = fa.trip_components[j]
    components = _behaviour_dicts(comp, kinds, ids, distance_m / 1000.0)
    components.append(_component(MILEAGE, comp[5], "km", "km/year", False, [],
                                 "period-level only; weight rescaled over the others"))
    eligible_exposure = distance_m >= p.min_trip_distance_m and duration_s >= p.min_trip_duration_s
    reason = "ok" if eligible_exposure else (
        f"below minimum exposure ({distance_m / 1000:.1f} km < {p.min_trip_distance_m / 1000:g} km or "
        f"{duration_s / 60:.1f} min < {p.min_trip_duration_s / 60:g} min): pooled into the period score")
    score = fa.trip_scores[j]
    return {"kind": "trip", "score": _j(score), "eligible": bool(math.isfinite(score)), "reason": reason,
            "distance_m": _j(distance_m), "duration_s": _j(duration_s), "trip_ids": [int(t)],
            "components": components, "weights": {str(k): _j(float(w)) for k, w in p.weights.items()}}


def trip_eco_explanation(fa: FleetAnalysis, v: int, t: int) -> dict[str, Any]:
    """``eco_score(...).as_dict()`` of vehicle ``v``'s trip ``t``."""
    p = fa.scores_params
    j = fa.trip_bounds[v] + t
    comp, applied = fa.eco_components[j], fa.eco_applied[j]
    distance_m, duration_s = float(fa.trips[j, 7]), float(fa.trips[j, 4])
    has_fuel = bool(applied[3])
    components = [
        _component(IDLE, comp[0], "s", "share of trip time", bool(applied[0]), [], ""),
        _component(HIGH_RPM, comp[1], "s", f"share of rpm-known time above {p.high_rpm:g} rpm", bool(applied[1]),
                   [], ""),
        _component(HIGH_THROTTLE, comp[2], "s", f"share of throttle-known time above {p.high_throttle_pct:g} %",
                   bool(applied[2]), [], ""),
        _component(FUEL, comp[3], "L", f"L/100 km over the {p.fuel_reference_l_per_100km:g} L/100 km reference",
                   has_fuel, [], _fuel_note(fa, j) if has_fuel else "no fuel data"),
    ]
    eligible = distance_m >= p.min_trip_distance_m and duration_s >= p.min_trip_duration_s
    score = fa.eco_scores[j]
    return {"kind": "eco", "score": _j(score), "eligible": bool(math.isfinite(score)),
            "reason": "ok" if eligible else "below minimum exposure", "distance_m": _j(distance_m),
            "duration_s": _j(duration_s), "trip_ids": [int(t)], "components": components,
            "weights": {str(k): _j(float(w)) for k, w in p.eco_weights.items()}}


def _fuel_note(fa: FleetAnalysis, j: int) -> str:
    fuel_l, distance_m = float(fa.trips[j, 16]), float(fa.trips[j, 7])
    return f"{fuel_l / (distance_m / 1000.0) * 100.0:.2f} L/100 km"


def period_explanation(fa: FleetAnalysis, v: int) -> dict[str, Any]:
    """``period_score(trips, events).as_dict()`` of vehicle ``v`` (all its trips pooled, default period)."""
    ev = fa.events[fa.event_bounds[v]:fa.event_bounds[v + 1]]
    ids = np.flatnonzero(ev[:, EV_TRIP] >= 0)
    ta, tb = fa.trip_bounds[v], fa.trip_bounds[v + 1]
    return _period_dict(fa.scores_params, fa.period_components[v], float(fa.period_scores[v]),
                        float(fa.period_distance_m[v]), fa.trips[ta:tb, 4], float(fa.period_days[v]),
                        ev[ids, EV_KIND].astype(np.int64), ids, list(range(tb - ta)))


def _period_dict(p: ScoreParams, comp: np.ndarray, score: float, distance_m: float, durations: np.ndarray,
                 period_days: float, kinds: np.ndarray, event_ids: np.ndarray, trip_ids: list[int]) -> dict[str, Any]:
    """A period score's ``as_dict()`` from its component matrix (see :func:`analytics.scores.period_score`)."""
    duration_s = float(pd.Series(durations).fillna(0).sum()) if len(durations) else 0.0
    components = _behaviour_dicts(comp, kinds, event_ids, distance_m / 1000.0)
    components.append(_component(MILEAGE, comp[5], "km", "km/year", True, [],
                                 f"annualised over {period_days:g} days"))
    eligible = distance_m >= p.min_period_distance_m
    reason = "ok" if eligible else (f"below minimum exposure ({distance_m / 1000:.1f} km < "
                                    f"{p.min_period_distance_m / 1000:g} km)")
    return {"kind": "period", "score": _j(score), "eligible": bool(math.isfinite(score)), "reason": reason,
            "distance_m": _j(distance_m), "duration_s": _j(duration_s), "trip_ids": trip_ids,
            "components": components, "weights": {str(k): _j(float(w)) for k, w in p.weights.items()}}


@dataclass
class PeriodScores:
    """Period scores of groups of stored trips (e.g. a vehicle's day), with their explanations."""

    scores: np.ndarray
    distance_m: np.ndarray
    explanations: list[dict[str, Any]]


def period_scores(trips: pd.DataFrame, events: pd.DataFrame, groups: np.ndarray, params: ScoreParams | None = None,
                  period_days: float | None = None) -> PeriodScores:
    """:func:`analytics.scores.period_score` of many groups of stored trips at once (one kernel call).

    ``trips`` has the trips table's columns (trip_id, start_ms, end_ms, distance_m, duration_s, driving_s,
    night_share), ordered by group; ``groups[g]:groups[g + 1]`` are group ``g``'s rows. ``events`` has event_id,
    trip_id, kind, duration_s; an event counts for the trip with its trip_id (events of other trips are ignored).
    The result's ``explanations[g]`` is ``period_score(group_trips, group_events).as_dict()``.
    """
    sc = params or ScoreParams()
    m = len(trips)
    table = np.full((m, len(TRIP_COLUMNS)), np.nan)
    for col, k in (("start_ms", 2), ("end_ms", 3), ("duration_s", 4), ("driving_s", 5), ("distance_m", 7),
                   ("night_share", 17)):
        table[:, k] = trips[col].to_numpy(dtype=np.float64)
    groups = np.ascontiguousarray(groups, dtype=np.int64)
    trip_ids = trips["trip_id"].to_numpy()
    row_of = {int(t): r for r, t in enumerate(trip_ids)}
    group_of_row = np.repeat(np.arange(len(groups) - 1), np.diff(groups))
    ev_rows = np.array([row_of.get(int(t), -1) for t in events["trip_id"].to_numpy()], dtype=np.int64) \
        if len(events) else np.zeros(0, dtype=np.int64)
    keep = ev_rows >= 0
    ev_rows = ev_rows[keep]
    order = np.argsort(ev_rows, kind="stable")  # by trip (group order), then as given
    ev_rows = ev_rows[order]
    kinds = np.array([EVENT_KINDS.index(k) if k in EVENT_KINDS else -1 for k in events["kind"].to_numpy()[keep]],
                     dtype=np.int64)[order] if len(ev_rows) else np.zeros(0, dtype=np.int64)
    ev = np.full((len(ev_rows), N_EV_COLUMNS), np.nan)
    ev[:, EV_KIND] = kinds
    ev[:, EV_DURATION] = events["duration_s"].to_numpy(dtype=np.float64)[keep][order]
    ev_group = group_of_row[ev_rows]
    ev[:, EV_TRIP] = ev_rows - groups[ev_group]
    event_bounds = np.searchsorted(ev_group, np.arange(len(groups)), side="left").astype(np.int64)
    days = np.full(len(groups) - 1, np.nan if period_days is None else float(period_days))
    _, _, comp, score, dist, used_days = safety_scores_kernel(table, groups, ev, event_bounds, *_score_vectors(sc),
                                                              days)
    event_ids = events["event_id"].to_numpy()[keep][order] if len(ev_rows) else np.zeros(0, dtype=np.int64)
    out = []
    for g in range(len(groups) - 1):
        a, b = event_bounds[g], event_bounds[g + 1]
        out.append(_period_dict(sc, comp[g], float(score[g]), float(dist[g]), table[groups[g]:groups[g + 1], 4],
                                float(used_days[g]), kinds[a:b], event_ids[a:b],
                                [int(t) for t in trip_ids[groups[g]:groups[g + 1]]]))
    return PeriodScores(score, dist, out)


def simplified_tracks(fa: FleetAnalysis, lat: np.ndarray, lon: np.ndarray,
                      tolerance_deg: float = 1e-4) -> list[list[list[float]]]:
    """Every trip's map track (:func:`analytics.pipeline._simplified_track`), simplified in one shapely call.

    ``lat`` / ``lon`` are the fleet's concatenated arrays. A trip with fewer than two fixes gets ``[]``.
    """
    import shapely

    m = len(fa.trips)
    if m == 0:
        return []
    vehicle_of_trip = np.repeat(np.arange(fa.vehicles), np.diff(fa.trip_bounds))
    first = fa.bounds[vehicle_of_trip] + fa.trips[:, 0].astype(np.int64)
    length = fa.trips[:, 1].astype(np.int64) - fa.trips[:, 0].astype(np.int64) + 1
    trip_of_row = np.repeat(np.arange(m), length)
    rows = np.arange(len(trip_of_row)) - np.repeat(np.cumsum(length) - length, length) + np.repeat(first, length)
    ok = ~(np.isnan(lat[rows]) | np.isnan(lon[rows]))
    rows, trip_of_row = rows[ok], trip_of_row[ok]
    fixes = np.bincount(trip_of_row, minlength=m)
    drawable = fixes >= 2
    take = drawable[trip_of_row]
    rows, trip_of_row = rows[take], trip_of_row[take]
    out: list[list[list[float]]] = [[] for _ in range(m)]
    if len(rows) == 0:
        return out
    drawn = np.flatnonzero(drawable)
    lines = shapely.linestrings(np.column_stack([lon[rows], lat[rows]]), indices=np.searchsorted(drawn, trip_of_row))
    simple = shapely.simplify(lines, tolerance_deg, preserve_topology=False)
    coords, index = shapely.get_coordinates(simple, return_index=True)
    coords = np.round(coords, 6)
    cuts = np.searchsorted(index, np.arange(len(simple) + 1))
    for j, trip in enumerate(drawn):
        out[trip] = coords[cuts[j]:cuts[j + 1]].tolist()
    return out
