"""Stay points: where a vehicle stayed within a small radius for a while (trackintel's sliding window).

This reproduces ``trackintel.preprocessing.generate_staypoints(method="sliding")`` (trackintel 1.4.2,
``preprocessing/positionfixes.py::_generate_staypoints_sliding_user``; Li et al. 2008) fix for fix, so that our
stay points can be compared with, and stand in for, the library the literature uses. Its semantics, read from the
source:

* Fixes are sorted by time (stable) after exact duplicates are dropped (``exclude_duplicate_pfs``: rows equal in
  time *and* position; trackintel's ``drop_duplicates``).
* An *anchor* (``start``) is the first fix. For each later fix ``curr``:

  - if the time since the previous fix is **>** ``gap_threshold``, the anchor jumps to ``curr`` and whatever was
    accumulating is dropped (no stay point is closed across a tracking gap);
  - else if the haversine distance anchor→``curr`` is **>=** ``dist_threshold``: when
    ``t[curr] - t[start] >= time_threshold`` a stay point is emitted with fixes ``start .. curr-1``, started at
    ``t[start]`` and finished at ``t[curr]`` (the first fix outside: Li et al. assume the vehicle stayed until it is
    seen elsewhere); in any case the anchor moves to ``curr``.
* ``include_last``: after the loop, the fixes ``start .. n-1`` form a stay point finished at ``t[n-1]`` when they
  span ``>= time_threshold`` (Li et al. only detect a stay once the mover leaves it).

The only deliberate difference is the stay point's position: trackintel takes the centroid of the *distinct*
positions (``union_all`` merges identical points) with a circular mean of longitude; we take the mean over the
member *fixes* (latitude arithmetic, longitude circular like trackintel), so a position the receiver repeated while
parked weighs by the time spent there. The offset between the two is reported by ``bench/staypoints_vs_trackintel``.
Distances use :func:`analytics.geo.haversine_m` (R = 6 371 008.8 m) where trackintel uses a spherical law of cosines
with R = 6 371 000 m: 1.4 ppm, 0.14 mm at the 100 m threshold.

Fixes without a position (NaN latitude or longitude) are not position fixes and are skipped; the indices in the
result always refer to the caller's arrays.

Vehicles switch the tracker off when parked, so a car's overnight stay is a *tracking gap*, which the sliding
method deliberately never turns into a stay point. :func:`gap_stays` provides those parking stays (ignition off
and on again at the same place) for the place, home/work and OD analyses; it is our addition, not trackintel's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

from analytics.geo import haversine_m, haversine_m_reference

STAYPOINT_COLUMNS: tuple[str, ...] = (
    "start_idx", "end_idx", "exit_idx", "started_ms", "finished_ms", "lat", "lon", "duration_s", "n_fixes",
)


@dataclass(frozen=True, slots=True)
class StaypointParams:
    """Sliding-window stay point thresholds; the defaults are trackintel's ``generate_staypoints`` defaults.

    See /work/shared/docs/scoring-and-trajectory-conventions.md, section C (trackintel @261801a, v1.4.2).
    """

    dist_threshold_m: float = 100.0
    """A fix this far (or farther) from the anchor ends the stay (trackintel ``dist_threshold=100`` m)."""
    time_threshold_s: float = 300.0
    """Minimum stay duration (trackintel ``time_threshold=5.0`` min; Li et al. 2008 use 20 min for walkers)."""
    gap_threshold_s: float = 900.0
    """A step longer than this resets the anchor (trackintel ``gap_threshold=15.0`` min)."""
    include_last: bool = False
    """Emit the trailing stay the track ends in (trackintel default False, as in Li et al. 2008)."""
    exclude_duplicate_pfs: bool = True
    """Drop fixes equal in time and position to an earlier one (trackintel default True)."""


@dataclass(frozen=True, slots=True)
class GapStayParams:
    """Parking stays hidden in tracking gaps (ignition off); our addition for vehicles, not trackintel's."""

    min_gap_s: float = 300.0
    """A gap at least this long is a stay; the same 5 min as trackintel's ``time_threshold``."""
    max_jump_m: float = 100.0
    """Last fix before and first fix after the gap must be this close (trackintel's ``dist_threshold``): the car
    restarted where it parked. A larger jump is lost tracking, not parking."""


# --------------------------------------------------------------------------------------------------------------------
# kernels


@numba.njit(cache=True)
def position_fix_index(ts_ms: np.ndarray, lat: np.ndarray, lon: np.ndarray, exclude_duplicates: bool) -> np.ndarray:
    """Indices of the fixes that take part: those with a position, minus exact (time, position) duplicates.

    ``ts_ms`` must be sorted; duplicates of a fix can then only sit among the fixes with the same timestamp.
    """
    n = len(ts_ms)
    keep = np.empty(n, dtype=np.int64)
    m = 0
    group_start = 0  # first kept position (in ``keep``) whose timestamp equals the current one
    for i in range(n):
        if lat[i] != lat[i] or lon[i] != lon[i]:
            continue
        if m == 0 or ts_ms[keep[m - 1]] != ts_ms[i]:
            group_start = m
        elif exclude_duplicates:
            duplicate = False
            for k in range(group_start, m):
                j = keep[k]
                if lat[j] == lat[i] and lon[j] == lon[i]:
                    duplicate = True
                    break
            if duplicate:
                continue
        keep[m] = i
        m += 1
    return keep[:m]


@numba.njit(cache=True)
def sliding_staypoints_kernel(ts_ms: np.ndarray, lat: np.ndarray, lon: np.ndarray, dist_threshold_m: float,
                              time_threshold_ms: int, gap_threshold_ms: int, include_last: bool):
    """trackintel's sliding loop over compact (position-only, deduplicated) fixes.

    Returns (start, stop, finished_ms, mean_lat, mean_lon): member fixes are ``start .. stop-1``; ``stop`` is the
    fix that left the stay (== n for the trailing stay of ``include_last``).
    """
    n = len(ts_ms)
    starts = np.empty(n, dtype=np.int64)
    stops = np.empty(n, dtype=np.int64)
    m = 0
    start = 0
    curr = 0
    for curr in range(1, n):
        if ts_ms[curr] - ts_ms[curr - 1] > gap_threshold_ms:
            start = curr
            continue
        if haversine_m(lat[start], lon[start], lat[curr], lon[curr]) >= dist_threshold_m:
            if ts_ms[curr] - ts_ms[start] >= time_threshold_ms:
                starts[m] = start
                stops[m] = curr
                m += 1
            start = curr
    trailing = False
    if include_last and n > 0 and ts_ms[curr] - ts_ms[start] >= time_threshold_ms:
        starts[m] = start
        stops[m] = n
        m += 1
        trailing = True
    finished = np.empty(m, dtype=np.int64)
    mean_lat = np.empty(m)
    mean_lon = np.empty(m)
    for k in range(m):
        a, b = starts[k], stops[k]
        finished[k] = ts_ms[n - 1] if (trailing and k == m - 1) else ts_ms[b]
        s_lat = 0.0
        s_sin = 0.0
        s_cos = 0.0
        for i in range(a, b):
            s_lat += lat[i]
            r = math.radians(lon[i])
            s_sin += math.sin(r)
            s_cos += math.cos(r)
        mean_lat[k] = s_lat / (b - a)
        mean_lon[k] = math.degrees(math.atan2(s_sin / (b - a), s_cos / (b - a)))
    return starts[:m], stops[:m], finished, mean_lat, mean_lon


@numba.njit(cache=True)
def gap_stays_kernel(ts_ms: np.ndarray, lat: np.ndarray, lon: np.ndarray, min_gap_ms: int, max_jump_m: float):
    """Positions ``i`` (compact fixes) where the step ``i -> i+1`` is a parking gap."""
    n = len(ts_ms)
    out = np.empty(max(n - 1, 0), dtype=np.int64)
    m = 0
    for i in range(n - 1):
        if ts_ms[i + 1] - ts_ms[i] >= min_gap_ms and haversine_m(lat[i], lon[i], lat[i + 1], lon[i + 1]) <= max_jump_m:
            out[m] = i
            m += 1
    return out[:m]


# --------------------------------------------------------------------------------------------------------------------
# plain-Python references (the tests hold the kernels to these)


def position_fix_index_reference(ts_ms: list[int], lat: list[float], lon: list[float],
                                 exclude_duplicates: bool) -> list[int]:
    seen: set[tuple[int, float, float]] = set()
    out = []
    for i in range(len(ts_ms)):
        if math.isnan(lat[i]) or math.isnan(lon[i]):
            continue
        key = (ts_ms[i], lat[i], lon[i])
        if exclude_duplicates and key in seen:
            continue
        seen.add(key)
        out.append(i)
    return out


def sliding_staypoints_reference(ts_ms: list[int], lat: list[float], lon: list[float], dist_threshold_m: float,
                                 time_threshold_ms: int, gap_threshold_ms: int,
                                 include_last: bool) -> list[tuple[int, int, int, float, float]]:
    """trackintel's loop, transcribed: (start, stop, finished_ms, mean_lat, mean_lon) per stay point."""
    found = []
    start = curr = 0
    for curr in range(1, len(ts_ms)):
        if ts_ms[curr] - ts_ms[curr - 1] > gap_threshold_ms:
            start = curr
            continue
        if haversine_m_reference(lat[start], lon[start], lat[curr], lon[curr]) >= dist_threshold_m:
            if ts_ms[curr] - ts_ms[start] >= time_threshold_ms:
                found.append((start, curr, ts_ms[curr]))
            start = curr
    if include_last and ts_ms and ts_ms[curr] - ts_ms[start] >= time_threshold_ms:
        found.append((start, len(ts_ms), ts_ms[-1]))
    out = []
    for a, b, fin in found:
        lats, lons = lat[a:b], lon[a:b]
        mean_sin = sum(math.sin(math.radians(v)) for v in lons) / len(lons)
        mean_cos = sum(math.cos(math.radians(v)) for v in lons) / len(lons)
        out.append((a, b, fin, sum(lats) / len(lats), math.degrees(math.atan2(mean_sin, mean_cos))))
    return out


def gap_stays_reference(ts_ms: list[int], lat: list[float], lon: list[float], min_gap_ms: int,
                        max_jump_m: float) -> list[int]:
    return [i for i in range(len(ts_ms) - 1)
            if ts_ms[i + 1] - ts_ms[i] >= min_gap_ms
            and haversine_m_reference(lat[i], lon[i], lat[i + 1], lon[i + 1]) <= max_jump_m]


# --------------------------------------------------------------------------------------------------------------------
# public API


def _sorted_inputs(ts_ms: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                                 np.ndarray | None]:
    ts = np.ascontiguousarray(ts_ms, dtype=np.int64)
    la = np.ascontiguousarray(lat, dtype=np.float64)
    lo = np.ascontiguousarray(lon, dtype=np.float64)
    if len(ts) > 1 and bool(np.any(ts[1:] < ts[:-1])):
        order = np.argsort(ts, kind="stable")  # trackintel sorts stably by tracked_at too
        return ts[order], la[order], lo[order], order
    return ts, la, lo, None


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c.endswith(("_idx", "_ms", "fixes")) else "float64")
                         for c in STAYPOINT_COLUMNS})


def staypoints(ts_ms: np.ndarray, lat: np.ndarray, lon: np.ndarray,
               params: StaypointParams = StaypointParams()) -> pd.DataFrame:
    """Stay points of one vehicle's track (trackintel sliding semantics, see the module docstring).

    Columns: ``start_idx``/``end_idx`` first and last member fix (inclusive, indices into the caller's arrays),
    ``exit_idx`` the fix that left the stay (-1 for a trailing ``include_last`` stay), ``started_ms``,
    ``finished_ms`` (time of the exit fix, as trackintel), ``lat``/``lon`` mean of the member fixes,
    ``duration_s`` and ``n_fixes``.
    """
    ts, la, lo, order = _sorted_inputs(ts_ms, lat, lon)
    keep = position_fix_index(ts, la, lo, params.exclude_duplicate_pfs)
    if len(keep) == 0:
        return _empty_frame()
    cts, cla, clo = ts[keep], la[keep], lo[keep]
    starts, stops, finished, mlat, mlon = sliding_staypoints_kernel(
        cts, cla, clo, float(params.dist_threshold_m), round(params.time_threshold_s * 1000),
        round(params.gap_threshold_s * 1000), params.include_last)
    original = keep if order is None else order[keep]
    exit_idx = np.full(len(stops), -1, dtype=np.int64)
    inside = stops < len(keep)
    exit_idx[inside] = original[stops[inside]]
    started = cts[starts]
    return pd.DataFrame({
        "start_idx": original[starts],
        "end_idx": original[stops - 1],
        "exit_idx": exit_idx,
        "started_ms": started,
        "finished_ms": finished,
        "lat": mlat,
        "lon": mlon,
        "duration_s": (finished - started) / 1000.0,
        "n_fixes": stops - starts,
    })


def gap_stays(ts_ms: np.ndarray, lat: np.ndarray, lon: np.ndarray,
              params: GapStayParams = GapStayParams()) -> pd.DataFrame:
    """Parking stays: tracking gaps of at least ``min_gap_s`` that end where they began (same columns as
    :func:`staypoints`; ``start_idx`` is the last fix before the gap, ``end_idx`` = ``exit_idx`` the first after).

    A car's tracker sleeps while it is parked, so its longest stays (nights, working days) are gaps that the sliding
    method drops by design. Concatenate these with :func:`staypoints` (:func:`all_stays`) before clustering places.
    """
    ts, la, lo, order = _sorted_inputs(ts_ms, lat, lon)
    keep = position_fix_index(ts, la, lo, True)
    if len(keep) < 2:
        return _empty_frame()
    cts, cla, clo = ts[keep], la[keep], lo[keep]
    at = gap_stays_kernel(cts, cla, clo, round(params.min_gap_s * 1000), float(params.max_jump_m))
    original = keep if order is None else order[keep]
    started, finished = cts[at], cts[at + 1]
    return pd.DataFrame({
        "start_idx": original[at],
        "end_idx": original[at + 1],
        "exit_idx": original[at + 1],
        "started_ms": started,
        "finished_ms": finished,
        "lat": (cla[at] + cla[at + 1]) / 2.0,
        "lon": (clo[at] + clo[at + 1]) / 2.0,
        "duration_s": (finished - started) / 1000.0,
        "n_fixes": np.full(len(at), 2, dtype=np.int64),
    })


def all_stays(ts_ms: np.ndarray, lat: np.ndarray, lon: np.ndarray,
              staypoint_params: StaypointParams = StaypointParams(),
              gap_params: GapStayParams = GapStayParams()) -> pd.DataFrame:
    """Sliding stay points and parking gap stays of one vehicle, in time order, with a ``kind`` column.

    The two cannot overlap: the sliding method resets at gaps longer than its gap threshold, and shorter gaps inside
    a sliding stay point are already part of it (those gap stays are dropped here).
    """
    sp = staypoints(ts_ms, lat, lon, staypoint_params).assign(kind="staypoint")
    gs = gap_stays(ts_ms, lat, lon, gap_params).assign(kind="parking")
    if len(sp) and len(gs):
        s0, s1 = sp["started_ms"].to_numpy(), sp["finished_ms"].to_numpy()
        g0 = gs["started_ms"].to_numpy()
        pos = np.searchsorted(s0, g0, side="right") - 1
        covered = (pos >= 0) & (g0 < s1[np.clip(pos, 0, None)])
        gs = gs[~covered]
    frames = [f for f in (sp, gs) if len(f)]
    if not frames:
        return _empty_frame().assign(kind=pd.Series(dtype="object"))
    return pd.concat(frames, ignore_index=True).sort_values("started_ms", kind="stable").reset_index(drop=True)
