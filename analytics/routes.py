"""Frequent routes: trips that follow the same roads, found by clustering their simplified polylines.

1. Each trip's fixes are simplified with Douglas–Peucker (tolerance in metres, on a local equirectangular
   projection about the trip's first fix: at city scale its distortion is far below the tolerance). Simplification
   keeps the shape and makes the distance below cheap; 1 Hz drives shrink 10–50×.
2. Trips are compared with the **discrete Fréchet distance** in metres (haversine between vertices; Eiter & Mannila
   1994): the shortest "leash" with which two walkers can traverse both polylines forward. Unlike Hausdorff it
   respects direction and order, so A→B and B→A, or a loop driven the other way, are different routes. Fréchet is at
   least the distance between the two start points and between the two end points, a free lower bound used to skip
   the dynamic programme for trips that cannot be within the threshold. Discrete Fréchet only looks at vertices,
   and two simplifications of the same road put their vertices in different places along a straight, so the
   simplified polylines are re-sampled to at most ``max_vertex_spacing_m`` between vertices first: the discrete
   distance then exceeds the continuous one by at most half that spacing.
3. **Complete-linkage** agglomerative clustering cut at ``cluster_threshold_m``: every two trips in a route are
   within the threshold of each other (single linkage would chain a slow drift of variants into one "route").
4. Each route's representative is its medoid (the member with the least summed distance to the others), returned as
   GeoJSON ``[lon, lat]`` coordinates of its simplified polyline.

Defaults (``RouteParams``): 200 m threshold as in the brief and about two city blocks, so a parallel street is a
different route but GPS noise (σ 5–10 m) and a different lane or parking row are not; simplification tolerance
20 m, a tenth of that, so the simplified shape moves Fréchet by at most 2 × 20 m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage

from analytics.geo import EARTH_RADIUS_M, haversine_m, haversine_m_reference


@dataclass(frozen=True, slots=True)
class RouteParams:
    """Route clustering thresholds (see the module docstring for where they come from)."""

    simplify_tolerance_m: float = 20.0
    """Douglas–Peucker tolerance: a tenth of the cluster threshold, twice a consumer GPS's noise."""
    cluster_threshold_m: float = 200.0
    """Complete-linkage cut on discrete Fréchet distance: about two city blocks."""
    min_trips: int = 2
    """Trips a cluster needs to be reported as a frequent route (once is not a habit)."""
    max_vertex_spacing_m: float = 50.0
    """Re-sampling before Fréchet: a quarter of the threshold, so the discrete distance errs by <= 25 m."""


MAX_SPLIT = 64  # densify: pieces per segment at most (64 x 50 m = 3.2 km of straight road)

# --------------------------------------------------------------------------------------------------------------------
# kernels


@numba.njit(cache=True)
def local_xy_m(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equirectangular metres about the first point (x east, y north)."""
    n = len(lat)
    x = np.empty(n)
    y = np.empty(n)
    if n == 0:
        return x, y
    k = math.cos(math.radians(lat[0]))
    for i in range(n):
        x[i] = math.radians(lon[i] - lon[0]) * EARTH_RADIUS_M * k
        y[i] = math.radians(lat[i] - lat[0]) * EARTH_RADIUS_M
    return x, y


@numba.njit(cache=True, inline="always")
def _segment_distance(px: float, py: float, ax: float, ay: float, bx: float, by: float) -> float:
    dx = bx - ax
    dy = by - ay
    den = dx * dx + dy * dy
    if den == 0.0:
        return math.hypot(px - ax, py - ay)
    t = ((px - ax) * dx + (py - ay) * dy) / den
    t = min(1.0, max(0.0, t))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


@numba.njit(cache=True)
def douglas_peucker_keep(x: np.ndarray, y: np.ndarray, tolerance: float) -> np.ndarray:
    """Mask of the vertices Douglas–Peucker keeps (iterative, explicit stack; distance to the segment)."""
    n = len(x)
    keep = np.zeros(n, dtype=np.bool_)
    if n == 0:
        return keep
    keep[0] = True
    keep[n - 1] = True
    stack = np.empty((n, 2), dtype=np.int64)
    top = 0
    stack[0, 0] = 0
    stack[0, 1] = n - 1
    top = 1
    while top > 0:
        top -= 1
        a = stack[top, 0]
        b = stack[top, 1]
        best = -1.0
        best_i = -1
        for i in range(a + 1, b):
            d = _segment_distance(x[i], y[i], x[a], y[a], x[b], y[b])
            if d > best:
                best = d
                best_i = i
        if best_i >= 0 and best > tolerance:
            keep[best_i] = True
            stack[top, 0] = a
            stack[top, 1] = best_i
            top += 1
            stack[top, 0] = best_i
            stack[top, 1] = b
            top += 1
    return keep


@numba.njit(cache=True)
def _frechet_hav(phi_a: np.ndarray, lam_a: np.ndarray, cos_a: np.ndarray, phi_b: np.ndarray, lam_b: np.ndarray,
                 cos_b: np.ndarray, a_cutoff: float) -> float:
    """Discrete Fréchet in haversine "a" units (sin²(d / 2R)), which orders like metres: the table's max/min pick
    the same couplings, and skipping asin/sqrt per cell halves the cost. Inputs in radians with cos(latitude)."""
    n = len(phi_a)
    m = len(phi_b)
    prev = np.empty(m)
    curr = np.empty(m)
    for i in range(n):
        row_min = np.inf
        for j in range(m):
            s1 = math.sin((phi_b[j] - phi_a[i]) * 0.5)
            s2 = math.sin((lam_b[j] - lam_a[i]) * 0.5)
            d = s1 * s1 + cos_a[i] * cos_b[j] * s2 * s2
            if i == 0 and j == 0:
                curr[j] = d
            elif i == 0:
                curr[j] = max(curr[j - 1], d)
            elif j == 0:
                curr[j] = max(prev[0], d)
            else:
                curr[j] = max(min(prev[j], prev[j - 1], curr[j - 1]), d)
            row_min = min(row_min, curr[j])
        if row_min > a_cutoff:
            return row_min
        prev, curr = curr, prev
    return prev[m - 1]


@numba.njit(cache=True, inline="always")
def _a_to_m(a: float) -> float:
    return 2.0 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@numba.njit(cache=True, inline="always")
def _m_to_a(metres: float) -> float:
    if metres >= math.pi * EARTH_RADIUS_M:
        return np.inf
    return math.sin(metres / (2.0 * EARTH_RADIUS_M)) ** 2


@numba.njit(cache=True)
def discrete_frechet_m(lat_a: np.ndarray, lon_a: np.ndarray, lat_b: np.ndarray, lon_b: np.ndarray,
                       cutoff_m: float = np.inf) -> float:
    """Discrete Fréchet distance in metres (haversine between vertices), O(n m) time, O(m) memory.

    Every coupling passes through each row of the table, so once a whole row exceeds ``cutoff_m`` the distance
    does too: the row minimum (a lower bound above the cutoff) is returned early. Exact whenever <= ``cutoff_m``.
    """
    if len(lat_a) == 0 or len(lat_b) == 0:
        return np.inf
    pa, la_, pb, lb = np.radians(lat_a), np.radians(lon_a), np.radians(lat_b), np.radians(lon_b)
    return _a_to_m(_frechet_hav(pa, la_, np.cos(pa), pb, lb, np.cos(pb), _m_to_a(cutoff_m)))


@numba.njit(cache=True)
def densify(lat: np.ndarray, lon: np.ndarray, max_spacing_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Insert evenly spaced vertices (linear in degrees) so no segment is longer than ``max_spacing_m``.

    At most ``MAX_SPLIT`` pieces per segment: a GPS jump of thousands of km (POLIDriving alonso 20231229 has one)
    would otherwise become tens of thousands of vertices; such a trip matches nothing anyway.
    """
    n = len(lat)
    if n < 2:
        return lat.copy(), lon.copy()
    parts = np.empty(n - 1, dtype=np.int64)
    total = 1
    for i in range(n - 1):
        d = haversine_m(lat[i], lon[i], lat[i + 1], lon[i + 1])
        parts[i] = min(MAX_SPLIT, max(1, math.ceil(d / max_spacing_m)))
        total += parts[i]
    out_lat = np.empty(total)
    out_lon = np.empty(total)
    p = 0
    for i in range(n - 1):
        for k in range(parts[i]):
            f = k / parts[i]
            out_lat[p] = lat[i] + f * (lat[i + 1] - lat[i])
            out_lon[p] = lon[i] + f * (lon[i + 1] - lon[i])
            p += 1
    out_lat[p] = lat[n - 1]
    out_lon[p] = lon[n - 1]
    return out_lat, out_lon


@numba.njit(cache=True)
def pairwise_frechet_m(lat: np.ndarray, lon: np.ndarray, offsets: np.ndarray, cutoff_m: float) -> np.ndarray:
    """Condensed (scipy order) Fréchet distances between polylines packed as ``lat[offsets[k]:offsets[k+1]]``.

    Cheap lower bounds come first: the start-to-start and end-to-end distances (every coupling pairs them) and
    the bounding boxes (each vertex has a partner within the distance, so the boxes' sides can differ by no
    more; north-south exactly R·Δφ, east-west R·cos(φmax)·Δλ with a 1 % margin for the sphere). A pair whose bound
    exceeds ``cutoff_m`` gets the bound, and the dynamic programme stops early once it must exceed ``cutoff_m``:
    a clustering cut at ``cutoff_m`` treats a lower bound above it and the exact value alike.
    """
    k = len(offsets) - 1
    phi = np.radians(lat)
    lam = np.radians(lon)
    cphi = np.cos(phi)
    box = np.empty((k, 4))
    for a in range(k):
        seg_phi = phi[offsets[a]:offsets[a + 1]]
        seg_lam = lam[offsets[a]:offsets[a + 1]]
        box[a, 0] = seg_phi.min()
        box[a, 1] = seg_phi.max()
        box[a, 2] = seg_lam.min()
        box[a, 3] = seg_lam.max()
    a_cutoff = _m_to_a(cutoff_m)
    out = np.empty(k * (k - 1) // 2)
    p = 0
    for a in range(k):
        a0, a1 = offsets[a], offsets[a + 1]
        for b in range(a + 1, k):
            b0, b1 = offsets[b], offsets[b + 1]
            bound = max(haversine_m(lat[a0], lon[a0], lat[b0], lon[b0]),
                        haversine_m(lat[a1 - 1], lon[a1 - 1], lat[b1 - 1], lon[b1 - 1]))
            ns = EARTH_RADIUS_M * max(abs(box[a, 0] - box[b, 0]), abs(box[a, 1] - box[b, 1]))
            phi_max = max(abs(box[a, 0]), abs(box[a, 1]), abs(box[b, 0]), abs(box[b, 1]))
            ew = 0.99 * EARTH_RADIUS_M * math.cos(phi_max) * max(abs(box[a, 2] - box[b, 2]), abs(box[a, 3] - box[b, 3]))
            bound = max(bound, ns, ew)
            if bound > cutoff_m:
                out[p] = bound
            else:
                out[p] = _a_to_m(_frechet_hav(phi[a0:a1], lam[a0:a1], cphi[a0:a1], phi[b0:b1], lam[b0:b1],
                                              cphi[b0:b1], a_cutoff))
            p += 1
    return out


# --------------------------------------------------------------------------------------------------------------------
# plain-Python references


def local_xy_m_reference(lat: list[float], lon: list[float]) -> tuple[list[float], list[float]]:
    if not lat:
        return [], []
    k = math.cos(math.radians(lat[0]))
    return ([math.radians(v - lon[0]) * EARTH_RADIUS_M * k for v in lon],
            [math.radians(v - lat[0]) * EARTH_RADIUS_M for v in lat])


def douglas_peucker_keep_reference(x: list[float], y: list[float], tolerance: float) -> list[bool]:
    """Textbook recursive Douglas–Peucker; ties go to the first farthest vertex, as in the kernel."""
    keep = [False] * len(x)
    if not x:
        return keep

    def seg(i: int, a: int, b: int) -> float:
        dx, dy = x[b] - x[a], y[b] - y[a]
        den = dx * dx + dy * dy
        if den == 0.0:
            return math.hypot(x[i] - x[a], y[i] - y[a])
        t = min(1.0, max(0.0, ((x[i] - x[a]) * dx + (y[i] - y[a]) * dy) / den))
        return math.hypot(x[i] - (x[a] + t * dx), y[i] - (y[a] + t * dy))

    def rec(a: int, b: int) -> None:
        best, best_i = -1.0, -1
        for i in range(a + 1, b):
            d = seg(i, a, b)
            if d > best:
                best, best_i = d, i
        if best_i >= 0 and best > tolerance:
            keep[best_i] = True
            rec(a, best_i)
            rec(best_i, b)

    keep[0] = keep[-1] = True
    rec(0, len(x) - 1)
    return keep


def densify_reference(lat: list[float], lon: list[float],
                      max_spacing_m: float) -> tuple[list[float], list[float]]:
    if len(lat) < 2:
        return list(lat), list(lon)
    out_lat, out_lon = [], []
    for i in range(len(lat) - 1):
        d = haversine_m_reference(lat[i], lon[i], lat[i + 1], lon[i + 1])
        parts = min(MAX_SPLIT, max(1, math.ceil(d / max_spacing_m)))
        for k in range(parts):
            out_lat.append(lat[i] + k / parts * (lat[i + 1] - lat[i]))
            out_lon.append(lon[i] + k / parts * (lon[i + 1] - lon[i]))
    return [*out_lat, lat[-1]], [*out_lon, lon[-1]]


def discrete_frechet_m_reference(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Eiter & Mannila's recurrence over the full table; points are (lat, lon)."""
    if not a or not b:
        return math.inf
    table = [[0.0] * len(b) for _ in a]
    for i, (la, lo) in enumerate(a):
        for j, (lb, lob) in enumerate(b):
            d = haversine_m_reference(la, lo, lb, lob)
            if i == 0 and j == 0:
                table[i][j] = d
            elif i == 0:
                table[i][j] = max(table[i][j - 1], d)
            elif j == 0:
                table[i][j] = max(table[i - 1][j], d)
            else:
                table[i][j] = max(min(table[i - 1][j], table[i - 1][j - 1], table[i][j - 1]), d)
    return table[-1][-1]


# --------------------------------------------------------------------------------------------------------------------
# public API


def simplify_polyline(lat: np.ndarray, lon: np.ndarray, tolerance_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Douglas–Peucker in metres; fixes without a position are dropped first."""
    la = np.ascontiguousarray(lat, dtype=np.float64)
    lo = np.ascontiguousarray(lon, dtype=np.float64)
    ok = ~(np.isnan(la) | np.isnan(lo))
    la, lo = la[ok], lo[ok]
    x, y = local_xy_m(la, lo)
    keep = douglas_peucker_keep(x, y, float(tolerance_m))
    return la[keep], lo[keep]


def trip_polylines(lat: np.ndarray, lon: np.ndarray, trips: pd.DataFrame,
                   params: RouteParams = RouteParams()) -> list[tuple[np.ndarray, np.ndarray]]:
    """Simplified polyline of each trip (fixes ``start_idx .. end_idx`` of the vehicle's arrays, inclusive)."""
    return [simplify_polyline(lat[s:e + 1], lon[s:e + 1], params.simplify_tolerance_m)
            for s, e in zip(trips["start_idx"].to_numpy(), trips["end_idx"].to_numpy(), strict=True)]


def _polyline_length_m(lat: np.ndarray, lon: np.ndarray) -> float:
    return float(sum(haversine_m_reference(lat[i], lon[i], lat[i + 1], lon[i + 1]) for i in range(len(lat) - 1)))


def cluster_routes(polylines: list[tuple[np.ndarray, np.ndarray]], trip_ids: np.ndarray | None = None,
                   params: RouteParams = RouteParams()) -> tuple[np.ndarray, pd.DataFrame]:
    """Group polylines into routes: (route_id per polyline, routes frame).

    route_id is -1 for an empty polyline or a cluster smaller than ``min_trips``; reported routes are numbered
    0.. by decreasing size. Routes frame columns: route_id, n_trips, trip_ids (list), representative_trip,
    coordinates (GeoJSON LineString coordinates, ``[[lon, lat], ...]``), length_m, max_spread_m (the largest
    Fréchet distance between two members, <= the threshold).
    """
    cols = ["route_id", "n_trips", "trip_ids", "representative_trip", "coordinates", "length_m", "max_spread_m"]
    ids = np.arange(len(polylines)) if trip_ids is None else np.asarray(trip_ids)
    usable = np.array([len(p[0]) > 0 for p in polylines], dtype=bool)
    route_of = np.full(len(polylines), -1, dtype=np.int64)
    idx = np.nonzero(usable)[0]
    if len(idx) == 0:
        return route_of, pd.DataFrame(columns=cols)
    dense = [densify(np.ascontiguousarray(polylines[i][0], dtype=np.float64),
                     np.ascontiguousarray(polylines[i][1], dtype=np.float64), float(params.max_vertex_spacing_m))
             for i in idx]
    offsets = np.zeros(len(idx) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p[0]) for p in dense])
    lat = np.concatenate([p[0] for p in dense])
    lon = np.concatenate([p[1] for p in dense])
    if len(idx) == 1:
        labels = np.ones(1, dtype=np.int64)
        dist = np.zeros(0)
    else:
        dist = pairwise_frechet_m(lat, lon, offsets, float(params.cluster_threshold_m))
        labels = fcluster(linkage(dist, method="complete"), t=params.cluster_threshold_m, criterion="distance")
    k = len(idx)

    def d(a: int, b: int) -> float:
        if a == b:
            return 0.0
        a, b = min(a, b), max(a, b)
        return float(dist[k * a - a * (a + 1) // 2 + (b - a - 1)])

    groups = [np.nonzero(labels == lab)[0] for lab in np.unique(labels)]
    groups = [g for g in groups if len(g) >= params.min_trips]
    groups.sort(key=lambda g: (-len(g), int(g[0])))
    rows = []
    for rid, g in enumerate(groups):
        sums = [sum(d(a, b) for b in g) for a in g]
        medoid = int(g[int(np.argmin(sums))])
        p_lat, p_lon = polylines[idx[medoid]]
        route_of[idx[g]] = rid
        rows.append({
            "route_id": rid, "n_trips": len(g), "trip_ids": [ids[idx[i]].item() for i in g],
            "representative_trip": ids[idx[medoid]].item(),
            "coordinates": [[float(a), float(b)] for a, b in zip(p_lon, p_lat, strict=True)],
            "length_m": _polyline_length_m(p_lat, p_lon),
            "max_spread_m": max((d(a, b) for a in g for b in g), default=0.0),
        })
    return route_of, pd.DataFrame(rows, columns=cols)


def frequent_routes(lat: np.ndarray, lon: np.ndarray, trips: pd.DataFrame,
                    params: RouteParams = RouteParams()) -> tuple[np.ndarray, pd.DataFrame]:
    """Routes of one vehicle's trips (the frame :func:`analytics.places.trips_between_stays` returns)."""
    return cluster_routes(trip_polylines(lat, lon, trips, params), trips["trip_id"].to_numpy(), params)
