"""GPS fix cleaning: which fixes of a track are fit to measure distance and detect stops with.

Raw receiver output carries missing fixes, weak fixes (few satellites, high HDOP, 2D/no fix),
duplicates, and jumps. Jumps are the expensive error: one POLIDriving session (alonso 20231229)
returns to a fixed wrong position for two fixes every ~20 s, and the plain haversine sum of that
track is 3 935 km for a ~96 km drive (traccar #1996 asks for exactly this filtering).

:func:`gps_fix_mask_kernel` is a single forward pass with an *anchor*, the last accepted fix. A
fix whose implied speed from the anchor exceeds ``max_speed_mps`` is rejected, and the anchor
stays. So that one bad anchor cannot reject every good fix after it, rejected fixes that agree
with each other (implied speed between them within the bound) are counted; when
``reanchor_after`` of them agree in a row, the current one becomes the new anchor. A stale
anchor (older than ``reanchor_gap_s``) is replaced unconditionally: after a long outage the jump
test has nothing trustworthy to compare with. Consumers that sum distance must still skip any
step between accepted fixes whose implied speed exceeds the bound (a re-anchor is such a step);
:func:`analytics.trips.trip_metrics_kernel` does.

Every kernel has a plain-Python reference (``*_reference``) that the tests hold it to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from analytics.geo import haversine_m, haversine_m_reference, within_m


@dataclass(frozen=True, slots=True)
class CleaningParams:
    """Thresholds for :func:`gps_fix_mask_kernel`; SI units, each overridable per deployment."""

    max_speed_mps: float = 70.0
    """Implied speed (m/s) from the last accepted fix above which a fix is a jump. 70 m/s ≈ 252 km/h:
    no road car in the fleet does that, while scikit-mobility's ``filter(max_speed_kmh=500)`` is
    made for any mode of transport and would let car-scale glitches through."""
    max_hdop: float = 5.0
    """HDOP above 5 is "moderate" or worse in the usual DOP rating table; positions are then off by
    tens of metres, which at 1 Hz is as large as a car's step. NaN (not reported) is accepted."""
    min_satellites: float = 4.0
    """A 3D position needs four satellites. NaN (not reported) is accepted."""
    min_fix_mode: float = 2.0
    """NMEA GSA fix mode: 1 = no fix, 2 = 2D, 3 = 3D. 2D fixes are kept: a car stays on the ground.
    NaN (not reported) is accepted."""
    reanchor_after: int = 5
    """Consecutive rejected fixes, consistent with each other, after which the anchor is taken to
    be the outlier and the current fix becomes the anchor. POLIDriving's glitches come in pairs, so
    5 (five seconds at 1 Hz) never adopts a glitch but recovers within seconds from a bad anchor."""
    reanchor_gap_s: float = 300.0
    """An anchor older than this is stale and the next fix is accepted unconditionally (after a
    5-minute outage the car may have been towed, ferried, or the receiver cold-started)."""
    drop_repeated_positions: bool = False
    """Reject a fix at exactly the anchor's position. Off by default: a parked car legitimately
    repeats its position, and stop detection needs those fixes. Repeats never add distance, and the
    jump test measures time from the *first* fix at a position, so stale repeats are harmless."""


@numba.njit(cache=True)
def gps_fix_mask_kernel(
    ts_ms: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    hdop: np.ndarray,
    satellites: np.ndarray,
    fix_mode: np.ndarray,
    max_speed_mps: float,
    max_hdop: float,
    min_satellites: float,
    min_fix_mode: float,
    reanchor_after: int,
    reanchor_gap_s: float,
    drop_repeated_positions: bool,
) -> np.ndarray:
    """True where a fix is usable. Arrays are equal-length and time-sorted; NaN marks absence.

    Order of tests per fix: missing or impossible coordinates (NaN, out of range, or exactly 0/0,
    the "null island" that receivers emit without a fix); quality (HDOP, satellites, fix mode,
    each only when reported); duplicate timestamp of the anchor; repeated position (optional);
    jump. Rejections for quality or duplicates never touch the anchor.
    """
    n = len(ts_ms)
    out = np.zeros(n, dtype=np.bool_)
    have_anchor = False
    a_lat = 0.0
    a_lon = 0.0
    a_ts = 0  # time of the first fix at the anchor position
    a_last_ts = 0  # time of the latest accepted fix (dup test, staleness)
    c_lat = 0.0
    c_lon = 0.0
    c_ts = 0
    c_count = 0
    for i in range(n):
        la = lat[i]
        lo = lon[i]
        if la != la or lo != lo or la < -90.0 or la > 90.0 or lo < -180.0 or lo > 180.0:
            continue
        if la == 0.0 and lo == 0.0:
            continue
        if hdop[i] == hdop[i] and hdop[i] > max_hdop:
            continue
        if satellites[i] == satellites[i] and satellites[i] < min_satellites:
            continue
        if fix_mode[i] == fix_mode[i] and fix_mode[i] < min_fix_mode:
            continue
        t = ts_ms[i]
        if not have_anchor:
            have_anchor = True
            out[i] = True
            a_lat, a_lon, a_ts, a_last_ts = la, lo, t, t
            c_count = 0
            continue
        if t <= a_last_ts:
            continue  # duplicate (or out-of-order) timestamp: keep the first
        if la == a_lat and lo == a_lon:
            if drop_repeated_positions:
                continue
            out[i] = True
            a_last_ts = t  # the anchor time stays that of the first fix here
            c_count = 0
            continue
        if (t - a_last_ts) / 1000.0 > reanchor_gap_s:
            out[i] = True
            a_lat, a_lon, a_ts, a_last_ts = la, lo, t, t
            c_count = 0
            continue
        dt_s = (t - a_ts) / 1000.0
        if within_m(a_lat, a_lon, la, lo, max_speed_mps * dt_s):
            out[i] = True
            a_lat, a_lon, a_ts, a_last_ts = la, lo, t, t
            c_count = 0
            continue
        # Rejected as a jump: count it toward a re-anchor if it agrees with the previous rejects.
        if c_count > 0:
            cdt = (t - c_ts) / 1000.0
            if cdt > 0.0 and within_m(c_lat, c_lon, la, lo, max_speed_mps * cdt):
                c_count += 1
            else:
                c_count = 1
        else:
            c_count = 1
        c_lat, c_lon, c_ts = la, lo, t
        if c_count >= reanchor_after:
            out[i] = True
            a_lat, a_lon, a_ts, a_last_ts = la, lo, t, t
            c_count = 0
    return out


def gps_fix_mask_reference(
    ts_ms: list[int],
    lat: list[float],
    lon: list[float],
    hdop: list[float],
    satellites: list[float],
    fix_mode: list[float],
    params: CleaningParams,
) -> list[bool]:
    """Plain-Python reference for :func:`gps_fix_mask_kernel` (same rules, written for reading)."""
    out = [False] * len(ts_ms)
    anchor: tuple[float, float, int] | None = None  # lat, lon, time of first fix there
    anchor_last_ts = 0
    candidate: tuple[float, float, int] | None = None
    agreeing = 0

    def accept(i: int) -> None:
        nonlocal anchor, anchor_last_ts, agreeing
        out[i] = True
        anchor = (lat[i], lon[i], ts_ms[i])
        anchor_last_ts = ts_ms[i]
        agreeing = 0

    for i, t in enumerate(ts_ms):
        la, lo = lat[i], lon[i]
        if math.isnan(la) or math.isnan(lo) or not (-90 <= la <= 90 and -180 <= lo <= 180) or (la == 0 and lo == 0):
            continue
        if not math.isnan(hdop[i]) and hdop[i] > params.max_hdop:
            continue
        if not math.isnan(satellites[i]) and satellites[i] < params.min_satellites:
            continue
        if not math.isnan(fix_mode[i]) and fix_mode[i] < params.min_fix_mode:
            continue
        if anchor is None:
            accept(i)
            continue
        if t <= anchor_last_ts:
            continue
        if (la, lo) == anchor[:2]:
            if not params.drop_repeated_positions:
                out[i] = True
                anchor_last_ts = t
                agreeing = 0
            continue
        if (t - anchor_last_ts) / 1000 > params.reanchor_gap_s:
            accept(i)
            continue
        if haversine_m_reference(anchor[0], anchor[1], la, lo) <= params.max_speed_mps * (t - anchor[2]) / 1000:
            accept(i)
            continue
        agrees = (
            agreeing > 0
            and candidate is not None
            and t > candidate[2]
            and haversine_m_reference(candidate[0], candidate[1], la, lo)
            <= params.max_speed_mps * (t - candidate[2]) / 1000
        )
        agreeing = agreeing + 1 if agrees else 1
        candidate = (la, lo, t)
        if agreeing >= params.reanchor_after:
            accept(i)
    return out


def clean_gps_fixes(
    ts_ms: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    hdop: np.ndarray | None = None,
    satellites: np.ndarray | None = None,
    fix_mode: np.ndarray | None = None,
    params: CleaningParams = CleaningParams(),
) -> np.ndarray:
    """Boolean usable-fix mask for a track; quality arrays that the source lacks may be omitted."""
    n = len(ts_ms)
    missing = np.full(n, np.nan)
    return gps_fix_mask_kernel(
        np.ascontiguousarray(ts_ms, dtype=np.int64),
        np.ascontiguousarray(lat, dtype=np.float64),
        np.ascontiguousarray(lon, dtype=np.float64),
        missing if hdop is None else np.ascontiguousarray(hdop, dtype=np.float64),
        missing if satellites is None else np.ascontiguousarray(satellites, dtype=np.float64),
        missing if fix_mode is None else np.ascontiguousarray(fix_mode, dtype=np.float64),
        float(params.max_speed_mps),
        float(params.max_hdop),
        float(params.min_satellites),
        float(params.min_fix_mode),
        int(params.reanchor_after),
        float(params.reanchor_gap_s),
        bool(params.drop_repeated_positions),
    )


@numba.njit(cache=True)
def gap_mask(ts_ms: np.ndarray, max_gap_s: float) -> np.ndarray:
    """True at each sample that follows a silence longer than ``max_gap_s`` (never at index 0).

    Segmenters cut there: Traccar's ``report.trip.stopGap`` (3600 s) and trackintel's
    ``gap_threshold`` (15 min) are this test.
    """
    n = len(ts_ms)
    out = np.zeros(n, dtype=np.bool_)
    limit_ms = max_gap_s * 1000.0
    for i in range(1, n):
        if ts_ms[i] - ts_ms[i - 1] > limit_ms:
            out[i] = True
    return out


def gap_mask_reference(ts_ms: list[int], max_gap_s: float) -> list[bool]:
    return [i > 0 and (ts_ms[i] - ts_ms[i - 1]) > max_gap_s * 1000 for i in range(len(ts_ms))]


@numba.njit(cache=True)
def implied_speed_kmh(ts_ms: np.ndarray, lat: np.ndarray, lon: np.ndarray, usable: np.ndarray,
                      max_step_s: float) -> np.ndarray:
    """Speed (km/h) at each usable fix from the previous usable fix; NaN elsewhere.

    A fallback for tracks that report neither OBD nor GNSS speed. Steps longer than ``max_step_s``
    give NaN: a straight line across a long outage says little about the speed at either end.
    """
    n = len(ts_ms)
    out = np.full(n, np.nan)
    prev = -1
    for i in range(n):
        if not usable[i]:
            continue
        if prev >= 0:
            dt_s = (ts_ms[i] - ts_ms[prev]) / 1000.0
            if 0.0 < dt_s <= max_step_s:
                out[i] = haversine_m(lat[prev], lon[prev], lat[i], lon[i]) / dt_s * 3.6
        prev = i
    return out


def implied_speed_kmh_reference(ts_ms: list[int], lat: list[float], lon: list[float], usable: list[bool],
                                max_step_s: float) -> list[float]:
    out = [math.nan] * len(ts_ms)
    prev = None
    for i in range(len(ts_ms)):
        if not usable[i]:
            continue
        if prev is not None:
            dt_s = (ts_ms[i] - ts_ms[prev]) / 1000
            if 0 < dt_s <= max_step_s:
                out[i] = haversine_m_reference(lat[prev], lon[prev], lat[i], lon[i]) / dt_s * 3.6
        prev = i
    return out
