"""Driving events from a vehicle's 1 Hz OBD + GPS track: harsh acceleration, braking and cornering, speeding,
over-revving and long idling.

Why thresholds depend on the source and the sampling rate
---------------------------------------------------------
Published harsh-event thresholds come in two families (see
``/work/shared/docs/scoring-and-trajectory-conventions.md`` §D):

* **accelerometer thresholds at high rates**: Naturalistic Teen Driving Study (Simons-Morton et al. 2011/2012)
  braking ≤ −0.45 g, acceleration ≥ 0.35 g, lateral ≥ 0.50 g; GPS Insight class 1: 0.38 / 0.37 / 0.38 g;
  Digital Matter device defaults 4.4 / 4.4 / 5.5 m/s² sampled at 100 Hz;
* **speed-difference thresholds at 1 Hz**: Progressive Snapshot Δv ≥ 7 mph in 1 s (3.13 m/s²);
  Allstate 8 / 10 mph/s (3.58 / 4.47 m/s²); Verizon Connect −5 / −7 / −9 mph in 1 s (2.24 / 3.13 / 4.02 m/s²)
  for normal / moderate / severe.

A 1 Hz speed difference is a 1 s mean of the acceleration, so it never reaches the short peaks an accelerometer
sees. What the POLIDriving drives (7 sessions, ~14 h, ~500 km of Quito traffic, 1 Hz OBD speed in whole km/h)
show for the 1 Hz longitudinal acceleration (49 802 one-step differences of OBD speed):

============================  ======  ======  ======  ======  ======
percentile                    0.1 %   0.5 %   1 %     99 %    99.9 %
one-step Δv/Δt  [m/s²]        −2.50   −1.94   −1.67   +1.39   +2.22
2 s window      [m/s²]        −2.22   −1.67   −1.39   +1.25   +1.94
============================  ======  ======  ======  ======  ======

Samples at or beyond a threshold (one-step / 2 s window, out of ~49 800):

====================================  ===========  ===========
threshold                             braking      acceleration
====================================  ===========  ===========
2.0 m/s²                              162 / 91     98 / 27
2.5 m/s²                              77 / 28      47 / 1
3.13 m/s² (Progressive 7 mph/s)       13 / 11      3 / 0
3.43 m/s² (0.35 g, accelerometer)     ~9 / 5       0 / 0
4.41 m/s² (0.45 g, accelerometer)     1 / 1        0 / 0
====================================  ===========  ===========

So the accelerometer thresholds essentially never fire on 1 Hz speed (0.35 g acceleration: zero samples in 14 h),
which is the problem the issue describes. The OBD speed is also *stale*: it changes value on only 51–67 % of
seconds (the adapter polls it below 1 Hz), so a steady 1.5 m/s² often shows as a 0 step followed by a 3 m/s²
step. The 1 Hz defaults therefore:

* take Δv over a **2 s window** (averaging the stale-then-jump pattern; one noisy step counts half),
* use the **speed-based published thresholds**: braking at Progressive Snapshot's 7 mph/s (3.13 m/s²; Snapshot is
  itself a 1 Hz OBD dongle), with severities 2 and 3 at Allstate's "hard" 8 and "extreme" 10 mph/s;
  acceleration at 5 mph/s (2.24 m/s², Verizon's lowest grade): no speed-based acceleration threshold is published
  and cars accelerate far less hard than they brake (99.9th percentile +1.94 m/s² in a 2 s window against
  −2.22 m/s² braking). Both sit beyond the data's 99.9th percentiles, so they flag the tail, not urban routine;
  the lower Verizon braking grade (5 mph/s) would fire 4.8 times per 100 km on these ordinary drivers,
* require **hysteresis and a minimum duration**: an event opens when the windowed value passes the threshold, stays
  open while it is beyond half of it, and must span ≥ 3 s (at least two consecutive 2 s windows). A lone glitch
  sample shows as −Δ/2 in one window, 0 in the next and +Δ/2 in the one after, so it never fires on its own; a
  2 s minimum would let a 20 km/h glitch through as a 2.8 m/s² "acceleration". Going from 2 s to 3 s leaves
  braking at 1.41 per 100 km (real brakes are sustained) and takes acceleration from 1.41 to 0.60.

With these defaults the seven POLIDriving sessions (497 km by the logger's odometer) give
:data:`POLIDRIVING_RATES_PER_100KM`: 0.6 harsh accelerations, 1.4 harsh brakings, 2.4 harsh cornerings and 0.2
long idlings per 100 km, no speeding (no limit layer; never above 128.75 km/h), no over-revving.

High-rate sources (≥ 5 Hz: an IMU, or 10 Hz GNSS Doppler speed) see peaks, so they use the accelerometer family
(:data:`IMU_HIGH_RATE`: 0.35 g acceleration, 0.45 g braking, 0.50 g lateral, Simons-Morton) with a 0.5 s window.

Cornering from GPS
------------------
Lateral acceleration is speed × yaw rate, the yaw rate from the GPS course unwrapped at 0/360°. Course from 1 Hz
fixes is noisy: on POLIDriving (course derived from consecutive fixes) the one-step lateral estimate at
≥ 20 km/h had a 99.9th percentile of 24 m/s² — physically impossible. What fixed it:

* a **3 s window** for the course change (the Simons-Morton yaw criterion also spans 3 s),
* dropping samples whose GPS speed exceeds 250 km/h (position jumps; alonso 20231229 sums to 3 935 km),
* taking the speed from **OBD** (GPS speed only where OBD is absent): the receiver often repeats a fix for a second
  and then jumps two seconds' worth, so GPS speed reads 0 then double (e.g. 0 → 194 km/h at a true 95 km/h).

The resulting |lateral| at ≥ 20 km/h (27 454 samples) has percentiles 50 %: 0.20, 90 %: 1.47, 99 %: 3.07,
99.5 %: 3.47, 99.9 %: 4.43 m/s². GPS Insight's 0.38 g (3.7 m/s²) would give 9.3 events per 100 km on Quito's
winding roads and 0.45 g 4.6; the default is Simons-Morton's **0.50 g** (4.9 m/s²) held ≥ 3 s, beyond the 99.9th
percentile, giving 2.4 per 100 km. Below 20 km/h course is noise and is ignored; values above 1 g are dropped.

Speeding, over-revving, idling
------------------------------
* Speeding against a limit layer (GeoJSON LineStrings with ``maxspeed`` in km/h; each fix matched to the nearest
  segment within 25 m): eDriving Mentor's rule — ≥ 20 % over when the limit is under 40 mph (64.4 km/h), ≥ 10 mph
  (16.1 km/h) over otherwise — for ≥ 60 s. Without a layer (or for fixes that match no segment): absolute band
  above 80 mph (128.7 km/h, Allstate); severity 2 above 145 km/h (Geotab "excessive speeding"), 3 above 160 km/h.
  With a limit, severity 2 at ≥ 30 % over (WiseDriving's "extreme speeding"), 3 at ≥ 50 % over.
* Over-revving: rpm > 4 000 for ≥ 5 s. No published default; 4 000 rpm is above everything POLIDriving shows
  (99.9th percentile 3 456 rpm, > 4 000 on 0.004 % of samples), so it flags unusual engine use, not brisk driving
  (the eco score handles the latter with its 3 000 rpm share).
* Idling: rpm > 300 (engine running) and speed < 1 km/h (Geotab's stop speed) for ≥ 300 s.

Kernels are numba ``njit`` functions over arrays, each with a plain-Python reference the tests compare to. Speed
limit matching uses shapely's STRtree outside numba; the per-sample comparison and run detection are kernels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pandas as pd

from analytics.geo import EARTH_RADIUS_M, py_mod

G_MS2 = 9.80665

KIND_HARSH_ACCELERATION = "harsh_acceleration"
KIND_HARSH_BRAKING = "harsh_braking"
KIND_HARSH_CORNERING = "harsh_cornering"
KIND_SPEEDING = "speeding"
KIND_OVER_REVVING = "over_revving"
KIND_IDLING = "idling"
EVENT_KINDS: tuple[str, ...] = (KIND_HARSH_ACCELERATION, KIND_HARSH_BRAKING, KIND_HARSH_CORNERING, KIND_SPEEDING,
                                KIND_OVER_REVVING, KIND_IDLING)
EVENT_COLUMNS: tuple[str, ...] = ("kind", "start_idx", "end_idx", "ts_ms", "lat", "lon", "severity", "peak",
                                  "peak_unit", "duration_s", "reference", "source")


@dataclass(frozen=True)
class LongitudinalThresholds:
    """Harsh acceleration / braking from a speed (or acceleration) signal of one source and sampling rate."""

    accel_ms2: float
    """Acceleration at or above which an event opens (m/s²)."""
    brake_ms2: float
    """Deceleration magnitude at or above which an event opens (m/s², positive)."""
    window_s: float
    """Δv is taken over the longest span of consecutive valid samples not exceeding this (s)."""
    min_duration_s: float
    """An event must span at least this long, window included (s)."""
    release_fraction: float = 0.5
    """Hysteresis: an open event stays open while the value is beyond this fraction of the threshold."""
    max_gap_s: float = 3.0
    """Consecutive valid samples further apart than this break the chain: no Δv across a data gap (s)."""
    severity_ratios: tuple[float, float] = (8 / 7, 10 / 7)
    """Peak / threshold at which severity becomes 2 and 3: from 7 mph/s, Allstate's "hard" 8 and "extreme"
    10 mph/s."""


@dataclass(frozen=True)
class LateralThresholds:
    """Harsh cornering from speed × yaw rate of one source and sampling rate."""

    lateral_ms2: float
    """|lateral acceleration| at or above which an event opens (m/s²)."""
    window_s: float
    """Yaw rate is the unwrapped course change over at most this span (s)."""
    min_speed_kmh: float = 20.0
    """Below this speed (at either end of the window) course is noise: no lateral estimate."""
    min_duration_s: float = 3.0
    """An event must span at least this long, window included (s)."""
    release_fraction: float = 0.5
    max_gap_s: float = 3.0
    max_plausible_ms2: float = G_MS2
    """Estimates above 1 g are GPS noise for a road car and are dropped."""
    severity_ratios: tuple[float, float] = (8 / 7, 10 / 7)
    """Same hard / extreme spacing as the longitudinal grades (no published lateral grades)."""


MPH_PER_S = 0.44704
"""1 mph/s in m/s²."""
OBD_SPEED_1HZ = LongitudinalThresholds(accel_ms2=5 * MPH_PER_S, brake_ms2=7 * MPH_PER_S, window_s=2.0,
                                       min_duration_s=3.0)
"""OBD PID 0D at ~1 Hz, whole km/h, stale on ~40 % of seconds: speed-based published thresholds (module doc)."""
GPS_SPEED_1HZ = LongitudinalThresholds(accel_ms2=5 * MPH_PER_S, brake_ms2=7 * MPH_PER_S, window_s=2.0,
                                       min_duration_s=3.0)
"""GNSS speed at 1 Hz: the same speed-in-1-s family (Verizon's grades are defined on GPS speed); same window
against fix noise (stuck-then-double fixes)."""
IMU_HIGH_RATE = LongitudinalThresholds(accel_ms2=0.35 * G_MS2, brake_ms2=0.45 * G_MS2, window_s=0.5,
                                       min_duration_s=0.5, max_gap_s=0.5)
"""≥ 5 Hz accelerometer or Doppler speed: Simons-Morton's 0.35 g / 0.45 g (GPS Insight 0.37 / 0.38 g, Digital
Matter 0.45 g are in the same range)."""
GPS_COURSE_1HZ = LateralThresholds(lateral_ms2=0.50 * G_MS2, window_s=3.0)
"""1 Hz GNSS course: Simons-Morton's 0.50 g over a 3 s window, ≥ 3 s (module doc)."""
IMU_LATERAL_HIGH_RATE = LateralThresholds(lateral_ms2=0.50 * G_MS2, window_s=0.5, min_duration_s=0.5,
                                          max_gap_s=0.5)
"""≥ 5 Hz sources: Simons-Morton's 0.50 g lateral (Digital Matter 0.56 g)."""

POLIDRIVING_RATES_PER_100KM: Mapping[str, float] = {
    KIND_HARSH_ACCELERATION: 0.60, KIND_HARSH_BRAKING: 1.41, KIND_HARSH_CORNERING: 2.41, KIND_IDLING: 0.20,
    KIND_SPEEDING: 0.0, KIND_OVER_REVVING: 0.0}
"""Event rates the defaults give on the 7 POLIDriving sessions (497 km): a reference for calibrating a fleet."""

HIGH_RATE_HZ = 5.0
"""From this sampling rate on, a source sees peaks and gets the accelerometer family of thresholds."""


def longitudinal_thresholds_for(source: str, sample_rate_hz: float) -> LongitudinalThresholds:
    """Default longitudinal thresholds for a source ("obd", "gps", "imu") at a sampling rate."""
    if source == "imu" or sample_rate_hz >= HIGH_RATE_HZ:
        return IMU_HIGH_RATE
    if source == "obd":
        return OBD_SPEED_1HZ
    if source == "gps":
        return GPS_SPEED_1HZ
    raise ValueError(f"unknown longitudinal source {source!r} (obd, gps, imu)")


def lateral_thresholds_for(source: str, sample_rate_hz: float) -> LateralThresholds:
    """Default cornering thresholds for a source ("gps", "imu") at a sampling rate."""
    if source == "imu" or sample_rate_hz >= HIGH_RATE_HZ:
        return IMU_LATERAL_HIGH_RATE
    if source == "gps":
        return GPS_COURSE_1HZ
    raise ValueError(f"unknown lateral source {source!r} (gps, imu)")


@dataclass(frozen=True)
class EventParams:
    """Every threshold of :func:`detect_events`, SI units, overridable per deployment."""

    longitudinal_source: str = "obd"
    """Speed signal for harsh acceleration/braking: "obd" (PID 0D) or "gps". "obd" falls back to GPS speed (with
    :attr:`gps_longitudinal`) when the track has no OBD speed at all."""
    obd_longitudinal: LongitudinalThresholds = OBD_SPEED_1HZ
    gps_longitudinal: LongitudinalThresholds = GPS_SPEED_1HZ
    lateral: LateralThresholds = GPS_COURSE_1HZ
    max_plausible_speed_kmh: float = 250.0
    """GPS speeds above this are position jumps (POLIDriving alonso 20231229 sums to 3 935 km): dropped."""
    max_plausible_longitudinal_ms2: float = G_MS2
    """|Δv/Δt| above 1 g is a glitch for a road car: dropped."""

    speed_limit_match_m: float = 25.0
    """A fix takes the limit of the nearest segment within this distance (m); farther fixes have no limit."""
    speeding_relative_tolerance: float = 0.20
    """eDriving: ≥ 20 % over the limit when the limit is below :attr:`speeding_relative_below_kmh`."""
    speeding_relative_below_kmh: float = 64.37
    """40 mph."""
    speeding_absolute_tolerance_kmh: float = 16.09
    """eDriving: ≥ 10 mph over the limit otherwise."""
    speeding_min_duration_s: float = 60.0
    """eDriving: over for ≥ 60 s (Traccar's ``event.overspeed.minimalDuration`` plays the same role)."""
    speeding_severity_ratios: tuple[float, float] = (1.3, 1.5)
    """Peak / limit for severity 2 (WiseDriving "extreme speeding", 30 % over) and 3 (50 % over, project choice)."""
    absolute_speed_bands_kmh: tuple[float, float, float] = (128.75, 145.0, 160.0)
    """Without a limit: over 80 mph is speeding (Allstate); severity 2 over 145 km/h (Geotab "excessive"), 3 over
    160 km/h (project choice)."""
    speeding_max_gap_s: float = 10.0

    over_rev_rpm: float = 4000.0
    over_rev_min_duration_s: float = 5.0
    over_rev_severity_ratios: tuple[float, float] = (1.125, 1.25)
    """4 500 and 5 000 rpm (project choice)."""

    idle_min_rpm: float = 300.0
    """Engine running: any real idle speed is above this."""
    idle_max_speed_kmh: float = 1.0
    """Geotab's stop speed (< 1 km/h)."""
    idle_min_duration_s: float = 300.0
    idle_severity_ratios: tuple[float, float] = (2.0, 4.0)
    """10 and 20 min of idling (project choice)."""
    state_max_gap_s: float = 10.0
    """Over-revving and idling runs break across data gaps longer than this (s)."""

    @classmethod
    def for_rates(cls, obd_speed_hz: float = 1.0, gps_hz: float = 1.0, **overrides: Any) -> EventParams:
        """Params with the per-source defaults for the sampling rates of this deployment's signals."""
        return cls(obd_longitudinal=longitudinal_thresholds_for("obd", obd_speed_hz),
                   gps_longitudinal=longitudinal_thresholds_for("gps", gps_hz),
                   lateral=lateral_thresholds_for("gps", gps_hz), **overrides)


# --------------------------------------------------------------------------------------------------------------
# Kernels and their references
# --------------------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _valid_chain_indices(ts_ms: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Indices where a and b are not NaN and the time is strictly after the previously kept sample."""
    n = len(ts_ms)
    out = np.empty(n, dtype=np.int64)
    k = 0
    last_ts = np.iinfo(np.int64).min
    for i in range(n):
        if a[i] != a[i] or b[i] != b[i] or ts_ms[i] <= last_ts:
            continue
        out[k] = i
        k += 1
        last_ts = ts_ms[i]
    return out[:k]


@numba.njit(cache=True, error_model="numpy")  # divisors are > 0: no zero-division checks
def longitudinal_accel_kernel(ts_ms: np.ndarray, speed_kmh: np.ndarray, window_s: float, max_gap_s: float,
                              max_plausible_ms2: float) -> tuple[np.ndarray, np.ndarray]:
    """Δv/Δt (m/s²) ending at each sample over the longest span ≤ window_s of consecutive valid samples.

    Returns (accel, origin): origin[i] is the sample the window starts at (-1 where accel is NaN). A window never
    crosses a gap > max_gap_s; when the previous sample is already farther than window_s it alone is used.
    Implausible magnitudes become NaN. O(n): the window start only moves forward.
    """
    n = len(ts_ms)
    accel = np.full(n, np.nan)
    origin = np.full(n, -1, dtype=np.int64)
    idx = _valid_chain_indices(ts_ms, speed_kmh, speed_kmh)
    window_ms = window_s * 1000.0
    gap_ms = max_gap_s * 1000.0
    chain_start = 0
    j = 0
    for k in range(len(idx)):
        i = idx[k]
        if k == 0 or ts_ms[i] - ts_ms[idx[k - 1]] > gap_ms:
            chain_start = k
            j = k
            continue
        if j < chain_start:
            j = chain_start
        while j < k - 1 and ts_ms[i] - ts_ms[idx[j]] > window_ms:
            j += 1
        o = idx[j]
        a = (speed_kmh[i] - speed_kmh[o]) / 3.6 / ((ts_ms[i] - ts_ms[o]) / 1000.0)
        if abs(a) <= max_plausible_ms2:
            accel[i] = a
            origin[i] = o
    return accel, origin


def _valid_chain_indices_reference(ts_ms: list[int], a: list[float], b: list[float]) -> list[int]:
    out: list[int] = []
    for i in range(len(ts_ms)):
        if math.isnan(a[i]) or math.isnan(b[i]):
            continue
        if out and ts_ms[i] <= ts_ms[out[-1]]:
            continue
        out.append(i)
    return out


def longitudinal_accel_reference(ts_ms: list[int], speed_kmh: list[float], window_s: float, max_gap_s: float,
                                 max_plausible_ms2: float) -> tuple[list[float], list[int]]:
    """Plain-Python reference for :func:`longitudinal_accel_kernel` (backward scan per sample)."""
    n = len(ts_ms)
    accel, origin = [math.nan] * n, [-1] * n
    idx = _valid_chain_indices_reference(ts_ms, speed_kmh, speed_kmh)
    for k in range(1, len(idx)):
        i = idx[k]
        if ts_ms[i] - ts_ms[idx[k - 1]] > max_gap_s * 1000.0:
            continue
        best = idx[k - 1]
        m = k - 2
        while m >= 0 and ts_ms[idx[m + 1]] - ts_ms[idx[m]] <= max_gap_s * 1000.0 \
                and ts_ms[i] - ts_ms[idx[m]] <= window_s * 1000.0:
            best = idx[m]
            m -= 1
        a = (speed_kmh[i] - speed_kmh[best]) / 3.6 / ((ts_ms[i] - ts_ms[best]) / 1000.0)
        if abs(a) <= max_plausible_ms2:
            accel[i], origin[i] = a, best
    return accel, origin


@numba.njit(cache=True, error_model="numpy")  # divisors are > 0: no zero-division checks
def lateral_accel_kernel(ts_ms: np.ndarray, course_deg: np.ndarray, gps_speed_kmh: np.ndarray,
                         obd_speed_kmh: np.ndarray, window_s: float, max_gap_s: float, min_speed_kmh: float,
                         max_plausible_ms2: float, max_speed_kmh: float) -> tuple[np.ndarray, np.ndarray]:
    """Lateral acceleration (m/s², + = turning right) = mean speed × yaw rate over a window, per sample.

    Speed is GPS speed (the course's own source) and OBD speed only where GPS speed is absent; speeds above
    max_speed_kmh are jumps and void the sample. Course is unwrapped along the chain of valid samples, so a turn
    through north is continuous. Returns (lateral, origin) like :func:`longitudinal_accel_kernel`.
    """
    n = len(ts_ms)
    speed = np.empty(n)
    for i in range(n):
        v = obd_speed_kmh[i]
        if v != v:
            v = gps_speed_kmh[i]
        speed[i] = np.nan if gps_speed_kmh[i] > max_speed_kmh else v
    lateral = np.full(n, np.nan)
    origin = np.full(n, -1, dtype=np.int64)
    idx = _valid_chain_indices(ts_ms, course_deg, speed)
    m = len(idx)
    unwrapped = np.empty(m)
    window_ms = window_s * 1000.0
    gap_ms = max_gap_s * 1000.0
    chain_start = 0
    j = 0
    for k in range(m):
        i = idx[k]
        if k == 0 or ts_ms[i] - ts_ms[idx[k - 1]] > gap_ms:
            chain_start = k
            j = k
            unwrapped[k] = course_deg[i]
            continue
        d = py_mod(course_deg[i] - course_deg[idx[k - 1]], 360.0)
        if d >= 180.0:
            d -= 360.0
        unwrapped[k] = unwrapped[k - 1] + d
        if j < chain_start:
            j = chain_start
        while j < k - 1 and ts_ms[i] - ts_ms[idx[j]] > window_ms:
            j += 1
        o = idx[j]
        if speed[i] < min_speed_kmh or speed[o] < min_speed_kmh:
            continue
        dt = (ts_ms[i] - ts_ms[o]) / 1000.0
        a = 0.5 * (speed[i] + speed[o]) / 3.6 * math.radians(unwrapped[k] - unwrapped[j]) / dt
        if abs(a) <= max_plausible_ms2:
            lateral[i] = a
            origin[i] = o
    return lateral, origin


def lateral_accel_reference(ts_ms: list[int], course_deg: list[float], gps_speed_kmh: list[float],
                            obd_speed_kmh: list[float], window_s: float, max_gap_s: float, min_speed_kmh: float,
                            max_plausible_ms2: float, max_speed_kmh: float) -> tuple[list[float], list[int]]:
    """Plain-Python reference for :func:`lateral_accel_kernel`: turn angles summed step by step."""
    n = len(ts_ms)
    speed = []
    for i in range(n):
        v = gps_speed_kmh[i] if math.isnan(obd_speed_kmh[i]) else obd_speed_kmh[i]
        speed.append(math.nan if gps_speed_kmh[i] > max_speed_kmh else v)
    lateral, origin = [math.nan] * n, [-1] * n
    idx = _valid_chain_indices_reference(ts_ms, course_deg, speed)
    for k in range(1, len(idx)):
        i = idx[k]
        if ts_ms[i] - ts_ms[idx[k - 1]] > max_gap_s * 1000.0:
            continue
        start = k - 1
        while start - 1 >= 0 and ts_ms[idx[start]] - ts_ms[idx[start - 1]] <= max_gap_s * 1000.0 \
                and ts_ms[i] - ts_ms[idx[start - 1]] <= window_s * 1000.0:
            start -= 1
        o = idx[start]
        if speed[i] < min_speed_kmh or speed[o] < min_speed_kmh:
            continue
        turn = 0.0
        for q in range(start + 1, k + 1):
            d = (course_deg[idx[q]] - course_deg[idx[q - 1]]) % 360.0
            turn += d - 360.0 if d >= 180.0 else d
        a = 0.5 * (speed[i] + speed[o]) / 3.6 * math.radians(turn) / ((ts_ms[i] - ts_ms[o]) / 1000.0)
        if abs(a) <= max_plausible_ms2:
            lateral[i], origin[i] = a, o
    return lateral, origin


@numba.njit(cache=True)
def threshold_runs_kernel(ts_ms: np.ndarray, value: np.ndarray, threshold: np.ndarray, sign: float,
                          origin: np.ndarray, release_fraction: float, min_duration_ms: float,
                          max_gap_ms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Runs where sign × value / threshold reaches 1, kept open while it stays ≥ release_fraction.

    ``threshold`` has one element (a constant) or one per sample (NaN there = no threshold, sample skipped).
    ``origin`` (empty = each sample itself) gives where a windowed value's window starts; a run starts at the
    first sample's origin, clamped to after the previous run. NaN values are skipped; a run closes when the next
    valid sample is more than max_gap_ms after the run's last. Runs shorter than min_duration_ms (first origin to
    last sample) are dropped. Returns (start, end, peak index, peak ratio). O(n).
    """
    n = len(ts_ms)
    starts = np.empty(n, dtype=np.int64)
    ends = np.empty(n, dtype=np.int64)
    peaks = np.empty(n, dtype=np.int64)
    ratios = np.empty(n)
    count = 0
    constant = len(threshold) == 1
    own_origin = len(origin) == 0
    in_run = False
    run_start = 0
    last = -1
    peak = -1
    peak_ratio = 0.0
    previous_end = -1
    for i in range(n):
        thr = threshold[0] if constant else threshold[i]
        r = sign * value[i] / thr
        if r != r:
            continue
        if in_run and ts_ms[i] - ts_ms[last] > max_gap_ms:
            if ts_ms[last] - ts_ms[run_start] >= min_duration_ms:
                starts[count] = run_start
                ends[count] = last
                peaks[count] = peak
                ratios[count] = peak_ratio
                count += 1
                previous_end = last
            in_run = False
        if in_run:
            if r >= release_fraction:
                last = i
                if r > peak_ratio:
                    peak_ratio = r
                    peak = i
                continue
            if ts_ms[last] - ts_ms[run_start] >= min_duration_ms:
                starts[count] = run_start
                ends[count] = last
                peaks[count] = peak
                ratios[count] = peak_ratio
                count += 1
                previous_end = last
            in_run = False
        if r >= 1.0:
            o = i if own_origin else origin[i]
            if o < 0:
                o = i
            if o <= previous_end:
                o = previous_end + 1
            in_run = True
            run_start = o
            last = i
            peak = i
            peak_ratio = r
    if in_run and ts_ms[last] - ts_ms[run_start] >= min_duration_ms:
        starts[count] = run_start
        ends[count] = last
        peaks[count] = peak
        ratios[count] = peak_ratio
        count += 1
    return starts[:count], ends[:count], peaks[:count], ratios[:count]


def threshold_runs_reference(ts_ms: list[int], value: list[float], threshold: list[float], sign: float,
                             origin: list[int], release_fraction: float, min_duration_ms: float,
                             max_gap_ms: float) -> tuple[list[int], list[int], list[int], list[float]]:
    """Plain-Python reference for :func:`threshold_runs_kernel`: collect runs first, then filter."""
    valid = []
    for i in range(len(ts_ms)):
        thr = threshold[0] if len(threshold) == 1 else threshold[i]
        r = sign * value[i] / thr
        if not math.isnan(r):
            valid.append((i, r))
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for i, r in valid:
        if current and ts_ms[i] - ts_ms[current[-1][0]] > max_gap_ms:
            runs.append(current)
            current = []
        if current and r < release_fraction:
            runs.append(current)
            current = []
        if current or r >= 1.0:
            current.append((i, r))
    if current:
        runs.append(current)
    out: tuple[list[int], list[int], list[int], list[float]] = ([], [], [], [])
    previous_end = -1
    for run in runs:
        first = run[0][0]
        start = first if not origin or origin[first] < 0 else origin[first]
        start = max(start, previous_end + 1)
        end = run[-1][0]
        if ts_ms[end] - ts_ms[start] < min_duration_ms:
            continue
        peak_i, peak_r = run[0]
        for i, r in run:
            if r > peak_r:
                peak_i, peak_r = i, r
        out[0].append(start)
        out[1].append(end)
        out[2].append(peak_i)
        out[3].append(peak_r)
        previous_end = end
    return out


@numba.njit(cache=True)
def speeding_threshold_kernel(limit_kmh: np.ndarray, relative_tolerance: float, relative_below_kmh: float,
                              absolute_tolerance_kmh: float, absolute_band_kmh: float) -> np.ndarray:
    """Per-sample speed (km/h) above which a fix is speeding: the limit plus tolerance, or the absolute band."""
    n = len(limit_kmh)
    out = np.empty(n)
    for i in range(n):
        lim = limit_kmh[i]
        if lim != lim or lim <= 0.0:
            out[i] = absolute_band_kmh
        elif lim < relative_below_kmh:
            out[i] = lim * (1.0 + relative_tolerance)
        else:
            out[i] = lim + absolute_tolerance_kmh
    return out


def speeding_threshold_reference(limit_kmh: list[float], relative_tolerance: float, relative_below_kmh: float,
                                 absolute_tolerance_kmh: float, absolute_band_kmh: float) -> list[float]:
    out = []
    for lim in limit_kmh:
        if math.isnan(lim) or lim <= 0.0:
            out.append(absolute_band_kmh)
        else:
            out.append(lim * (1.0 + relative_tolerance) if lim < relative_below_kmh else lim + absolute_tolerance_kmh)
    return out


@numba.njit(cache=True)
def idle_indicator_kernel(rpm: np.ndarray, speed_kmh: np.ndarray, min_rpm: float, max_speed_kmh: float) -> np.ndarray:
    """1 where the engine runs and the car stands, 0 where not, NaN where either signal is missing."""
    n = len(rpm)
    out = np.empty(n)
    for i in range(n):
        if rpm[i] != rpm[i] or speed_kmh[i] != speed_kmh[i]:
            out[i] = np.nan
        elif rpm[i] > min_rpm and speed_kmh[i] < max_speed_kmh:
            out[i] = 1.0
        else:
            out[i] = 0.0
    return out


def idle_indicator_reference(rpm: list[float], speed_kmh: list[float], min_rpm: float,
                             max_speed_kmh: float) -> list[float]:
    out = []
    for r, v in zip(rpm, speed_kmh, strict=True):
        if math.isnan(r) or math.isnan(v):
            out.append(math.nan)
        else:
            out.append(1.0 if (r > min_rpm and v < max_speed_kmh) else 0.0)
    return out


@numba.njit(cache=True)
def nearest_fix_kernel(lat: np.ndarray, lon: np.ndarray, peak: np.ndarray, start: np.ndarray,
                       end: np.ndarray) -> np.ndarray:
    """Per event, the fix nearest in index to the peak within [start, end] (-1 if the event has none)."""
    out = np.full(len(peak), -1, dtype=np.int64)
    for e in range(len(peak)):
        p = peak[e]
        for d in range(0, max(p - start[e], end[e] - p) + 1):
            lo = p - d
            if lo >= start[e] and lat[lo] == lat[lo] and lon[lo] == lon[lo]:
                out[e] = lo
                break
            hi = p + d
            if hi <= end[e] and lat[hi] == lat[hi] and lon[hi] == lon[hi]:
                out[e] = hi
                break
    return out


# --------------------------------------------------------------------------------------------------------------
# Speed-limit layer (shapely, outside numba)
# --------------------------------------------------------------------------------------------------------------


def _parse_maxspeed_kmh(value: Any) -> float:
    """km/h from a ``maxspeed`` property: a number (km/h), "50", "30 mph"; NaN otherwise."""
    if value is None:
        return math.nan
    if isinstance(value, int | float):
        return float(value) if value > 0 else math.nan
    text = str(value).strip().lower()
    factor = 1.0
    if text.endswith("mph"):
        factor, text = 1.609344, text[:-3].strip()
    elif text.endswith("km/h"):
        text = text[:-4].strip()
    try:
        v = float(text) * factor
    except ValueError:
        return math.nan
    return v if v > 0 else math.nan


def match_speed_limits(lat: np.ndarray, lon: np.ndarray, speed_limits: Mapping[str, Any] | str | Path,
                       max_distance_m: float = 25.0) -> np.ndarray:
    """Per fix, the ``maxspeed`` (km/h) of the nearest LineString within max_distance_m; NaN where none.

    Coordinates are projected to a local equirectangular plane (metres) centred on the track's mean latitude:
    within a country-sized area the scale error (< 2 % for ±5° of latitude) changes a 25 m radius by < 0.5 m.
    Where two segments are equally near (junctions), shapely's first match wins.
    """
    import shapely

    if isinstance(speed_limits, str | Path):
        speed_limits = json.loads(Path(speed_limits).read_text(encoding="utf-8"))
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    out = np.full(len(lat), np.nan)
    ok = ~(np.isnan(lat) | np.isnan(lon))
    if not ok.any():
        return out
    lat0 = math.radians(float(np.mean(lat[ok])))
    kx = EARTH_RADIUS_M * math.cos(lat0) * math.pi / 180.0
    ky = EARTH_RADIUS_M * math.pi / 180.0
    lines, limits = [], []
    for feature in speed_limits.get("features", []):
        geom = feature.get("geometry") or {}
        limit = _parse_maxspeed_kmh((feature.get("properties") or {}).get("maxspeed"))
        if math.isnan(limit):
            continue
        if geom.get("type") == "LineString":
            parts = [geom["coordinates"]]
        elif geom.get("type") == "MultiLineString":
            parts = geom["coordinates"]
        else:
            continue
        for coords in parts:
            if len(coords) < 2:
                continue
            xy = np.asarray(coords, dtype=np.float64)[:, :2]
            lines.append(shapely.linestrings(xy[:, 0] * kx, xy[:, 1] * ky))
            limits.append(limit)
    if not lines:
        return out
    tree = shapely.STRtree(lines)
    fixes = np.flatnonzero(ok)
    points = shapely.points(lon[fixes] * kx, lat[fixes] * ky)
    pairs = tree.query_nearest(points, max_distance=max_distance_m, all_matches=False)
    limit_arr = np.asarray(limits)
    out[fixes[pairs[0]]] = limit_arr[pairs[1]]
    return out


# --------------------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------------------


def _severity(ratio: np.ndarray, bands: tuple[float, float]) -> np.ndarray:
    return 1 + (ratio >= bands[0]).astype(np.int64) + (ratio >= bands[1]).astype(np.int64)


def _as_f64(a: Any, n: int) -> np.ndarray:
    if a is None:
        return np.full(n, np.nan)
    arr = np.ascontiguousarray(a, dtype=np.float64)
    if len(arr) != n:
        raise ValueError(f"array of length {len(arr)} does not match ts_ms ({n})")
    return arr


def _frame(kind: str, source: str, ts_ms: np.ndarray, lat: np.ndarray, lon: np.ndarray,
           runs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], peak_values: np.ndarray, unit: str,
           severity: np.ndarray, reference: np.ndarray) -> dict[str, np.ndarray]:
    """One kind's events as columns; :func:`detect_events` builds a single DataFrame from all kinds
    (a DataFrame per kind plus a concat cost more than the kernels for a typical vehicle)."""
    start, end, peak, _ = runs
    m = len(start)
    fix = nearest_fix_kernel(lat, lon, peak, start, end)
    has_fix = fix >= 0
    safe = np.where(has_fix, fix, 0)
    return {
        "kind": np.full(m, kind, dtype=object),
        "start_idx": start,
        "end_idx": end,
        "ts_ms": ts_ms[peak],
        "lat": np.where(has_fix, lat[safe], np.nan) if len(lat) else np.full(m, np.nan),
        "lon": np.where(has_fix, lon[safe], np.nan) if len(lon) else np.full(m, np.nan),
        "severity": severity.astype(np.int64),
        "peak": np.asarray(peak_values, dtype=np.float64),
        "peak_unit": np.full(m, unit, dtype=object),
        "duration_s": (ts_ms[end] - ts_ms[start]) / 1000.0,
        "reference": np.asarray(reference, dtype=np.float64),
        "source": np.full(m, source, dtype=object),
    }


def detect_events(ts_ms: np.ndarray, speed: np.ndarray | None, rpm: np.ndarray | None, lat: np.ndarray | None,
                  lon: np.ndarray | None, course: np.ndarray | None, gps_speed: np.ndarray | None,
                  params: EventParams | None = None,
                  speed_limits: Mapping[str, Any] | str | Path | None = None) -> pd.DataFrame:
    """All driving events of one vehicle's time-ordered track, sorted by start index.

    Arrays are the ``samples`` columns (km/h, rpm, degrees; NaN where absent; ``None`` for a missing column).
    ``speed_limits`` is a GeoJSON FeatureCollection (mapping or file path) of LineStrings with ``maxspeed`` (km/h).

    Columns: kind, start_idx, end_idx (sample indices, inclusive), ts_ms (at the peak), lat, lon (the fix nearest
    the peak inside the event), severity (1–3), peak (SI: m/s² signed — braking negative, cornering + = right;
    m/s for speeding; rev/s for over-revving; s for idling), peak_unit, duration_s, reference (the threshold at the
    peak in the same unit; for speeding with a limit layer, the limit), source ("obd", "gps", "limit", "band").
    """
    p = params or EventParams()
    ts = np.ascontiguousarray(ts_ms, dtype=np.int64)
    n = len(ts)
    speed_a, rpm_a = _as_f64(speed, n), _as_f64(rpm, n)
    lat_a, lon_a = _as_f64(lat, n), _as_f64(lon, n)
    course_a, gps_a = _as_f64(course, n), _as_f64(gps_speed, n)
    gps_a = np.where(gps_a > p.max_plausible_speed_kmh, np.nan, gps_a)
    frames: list[dict[str, np.ndarray]] = []
    no_origin = np.empty(0, dtype=np.int64)

    # Harsh acceleration / braking.
    source, long_speed, lt = "obd", speed_a, p.obd_longitudinal
    if p.longitudinal_source == "gps" or not np.isfinite(speed_a).any():
        source, long_speed, lt = "gps", gps_a, p.gps_longitudinal
    accel, origin = longitudinal_accel_kernel(ts, long_speed, lt.window_s, lt.max_gap_s,
                                              p.max_plausible_longitudinal_ms2)
    for kind, sign, thr in ((KIND_HARSH_ACCELERATION, 1.0, lt.accel_ms2), (KIND_HARSH_BRAKING, -1.0, lt.brake_ms2)):
        runs = threshold_runs_kernel(ts, accel, np.array([thr]), sign, origin, lt.release_fraction,
                                     lt.min_duration_s * 1000.0, lt.max_gap_s * 1000.0)
        frames.append(_frame(kind, source, ts, lat_a, lon_a, runs, accel[runs[2]], "m/s²",
                             _severity(runs[3], lt.severity_ratios), np.full(len(runs[0]), sign * thr)))

    # Harsh cornering.
    la = p.lateral
    lateral, origin = lateral_accel_kernel(ts, course_a, gps_a, speed_a, la.window_s, la.max_gap_s, la.min_speed_kmh,
                                           la.max_plausible_ms2, p.max_plausible_speed_kmh)
    abs_lateral = np.abs(lateral)
    runs = threshold_runs_kernel(ts, abs_lateral, np.array([la.lateral_ms2]), 1.0, origin, la.release_fraction,
                                 la.min_duration_s * 1000.0, la.max_gap_s * 1000.0)
    frames.append(_frame(KIND_HARSH_CORNERING, "gps", ts, lat_a, lon_a, runs, lateral[runs[2]], "m/s²",
                         _severity(runs[3], la.severity_ratios), np.full(len(runs[0]), la.lateral_ms2)))

    # Speeding: OBD speed, GPS speed where OBD is absent.
    best_speed = np.where(np.isnan(speed_a), gps_a, speed_a)
    limit = np.full(n, np.nan)
    if speed_limits is not None:
        limit = match_speed_limits(lat_a, lon_a, speed_limits, p.speed_limit_match_m)
    bands = p.absolute_speed_bands_kmh
    threshold = speeding_threshold_kernel(limit, p.speeding_relative_tolerance, p.speeding_relative_below_kmh,
                                          p.speeding_absolute_tolerance_kmh, bands[0])
    runs = threshold_runs_kernel(ts, best_speed, threshold, 1.0, no_origin, 1.0, p.speeding_min_duration_s * 1000.0,
                                 p.speeding_max_gap_s * 1000.0)
    peak_kmh = best_speed[runs[2]]
    peak_limit = limit[runs[2]]
    with_limit = ~np.isnan(peak_limit)
    severity = np.where(with_limit,
                        _severity(peak_kmh / np.where(with_limit, peak_limit, 1.0), p.speeding_severity_ratios),
                        1 + (peak_kmh > bands[1]).astype(np.int64) + (peak_kmh > bands[2]).astype(np.int64))
    frame = _frame(KIND_SPEEDING, "limit", ts, lat_a, lon_a, runs, peak_kmh / 3.6, "m/s", severity,
                   np.where(with_limit, peak_limit, bands[0]) / 3.6)
    frame["source"] = np.where(with_limit, "limit", "band").astype(object)
    frames.append(frame)

    # Over-revving.
    runs = threshold_runs_kernel(ts, rpm_a, np.array([p.over_rev_rpm]), 1.0, no_origin, 1.0,
                                 p.over_rev_min_duration_s * 1000.0, p.state_max_gap_s * 1000.0)
    frames.append(_frame(KIND_OVER_REVVING, "obd", ts, lat_a, lon_a, runs, rpm_a[runs[2]] / 60.0, "1/s",
                         _severity(runs[3], p.over_rev_severity_ratios), np.full(len(runs[0]), p.over_rev_rpm / 60)))

    # Long idling: OBD speed; GPS speed where OBD speed is absent.
    idle = idle_indicator_kernel(rpm_a, best_speed, p.idle_min_rpm, p.idle_max_speed_kmh)
    runs = threshold_runs_kernel(ts, idle, np.array([1.0]), 1.0, no_origin, 1.0, p.idle_min_duration_s * 1000.0,
                                 p.state_max_gap_s * 1000.0)
    durations = (ts[runs[1]] - ts[runs[0]]) / 1000.0
    frames.append(_frame(KIND_IDLING, "obd", ts, lat_a, lon_a, runs, durations, "s",
                         _severity(durations / p.idle_min_duration_s, p.idle_severity_ratios),
                         np.full(len(runs[0]), p.idle_min_duration_s)))

    columns = {c: np.concatenate([f[c] for f in frames]) for c in EVENT_COLUMNS}
    order = np.lexsort((columns["kind"].astype(str), columns["start_idx"]))  # by start, then kind
    events = pd.DataFrame({c: v[order] for c, v in columns.items()}, columns=list(EVENT_COLUMNS))
    events.index.name = "event_id"
    return events
