"""Geofence visits: when a vehicle entered and left dealer sites, home zones and custom areas.

Geofences are polygons (``geofence_id``, ``kind`` dealer/home/custom, ``name``), given as a GeoJSON
FeatureCollection, the ``geofences`` table's rows, or a GeoDataFrame in WGS84. A vehicle's track
(time-sorted ``ts_ms``, ``latitude``, ``longitude``) becomes one row per *visit*: entered, exited,
dwell. Dealer visits long enough to be a service (``dealer_min_dwell_s``) feed the service
follow-up.

GPS jitter and flapping. A parked car's fixes scatter by 5–30 m (multipath in town; worse under
a workshop roof), so a car parked by a fence's border would raw-enter and raw-exit every few
seconds. Two mechanisms stop that, both with documented defaults:

* *Spatial hysteresis*: entering needs a fix inside the polygon itself; leaving needs a fix
  outside the polygon grown by ``hysteresis_m`` (25 m, the order of urban GPS error). A fix in
  the band between the two keeps whatever state the vehicle is in. The growth is done in the
  local UTM zone, so metres are metres.
* *Temporal debounce*: a candidate enter is committed only when the vehicle has stayed inside the
  grown polygon for ``enter_confirm_s`` (30 s) since its first inside fix; a candidate exit only
  when every fix for ``exit_confirm_s`` (60 s) has been outside the grown polygon. A contrary fix
  cancels the candidate. The visit's times are those of the first inside fix and the last fix
  inside the grown polygon, not the moments of confirmation.

Visits shorter than ``min_dwell_s`` (drive-throughs) are dropped. Fixes with ``hdop`` above
``max_hdop`` are treated as missing. Silence longer than ``max_gap_s`` closes a visit at its last
inside fix (we do not know what happened); shorter silences, e.g. a dongle asleep while the car
stands in a service bay, count as dwell when the next fix is still inside. Traccar's geofence
events have neither hysteresis nor debounce (they fire on each crossing of the raw polygon).

Point-in-polygon is vectorised shapely 2: an STRtree picks the fences near the track, then
``shapely.contains_xy`` tests the fixes inside each fence's bounding box. The enter/exit state
machine is a numba kernel over the per-fix zone code of one fence (-1 missing, 0 outside, 1 in the
hysteresis band, 2 inside); :func:`fence_visits_reference` is its plain-Python statement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numba
import numpy as np
import pandas as pd
import shapely

FENCE_KINDS = ("dealer", "home", "custom")
MISSING, OUTSIDE, BAND, INSIDE = -1, 0, 1, 2


@dataclass(frozen=True, slots=True)
class GeofenceParams:
    """Debounce and hysteresis of enter/exit detection; defaults in the module docstring."""

    hysteresis_m: float = 25.0  # leave only beyond the polygon grown by this (urban GPS error 5–30 m)
    enter_confirm_s: float = 30.0  # stay inside this long before an enter counts
    exit_confirm_s: float = 60.0  # stay outside this long before an exit counts
    min_dwell_s: float = 60.0  # shorter visits are drive-throughs, not visits
    max_gap_s: float = 86_400.0  # silence longer than this closes a visit (a service rarely lasts longer)
    max_hdop: float = 5.0  # fixes with a worse HDOP are ignored (≈ 25 m+ error at 5 m UERE)
    dealer_min_dwell_s: float = 900.0  # a dealer visit this long is a service visit (15 min)


@dataclass(frozen=True, slots=True)
class Geofences:
    """Fences ready for point-in-polygon: the table, the polygons, the grown polygons, an STRtree."""

    frame: gpd.GeoDataFrame  # geofence_id, kind, name, geometry (EPSG:4326)
    inner: np.ndarray  # shapely polygons, prepared
    outer: np.ndarray  # polygons grown by hysteresis_m, prepared
    tree: shapely.STRtree  # over ``outer``

    def __len__(self) -> int:
        return len(self.frame)


def load_geofences(source: gpd.GeoDataFrame | pd.DataFrame | dict[str, Any] | str | Path,
                   params: GeofenceParams = GeofenceParams()) -> Geofences:
    """Validate fences and precompute what the visit detection needs.

    ``source``: a GeoDataFrame (any CRS, converted to WGS84), a DataFrame of ``geofences`` table
    rows (``geometry`` as a GeoJSON dict or string), a GeoJSON FeatureCollection (dict, JSON text
    or a path to a file) whose features carry ``geofence_id``, ``kind`` and ``name`` properties.
    Invalid polygons are repaired with ``make_valid``; non-polygon geometries are rejected.
    """
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
        source = json.loads(Path(source).read_text())
    if isinstance(source, str):
        source = json.loads(source)
    if isinstance(source, dict):
        if source.get("type") != "FeatureCollection":
            raise ValueError("geofences must be a GeoJSON FeatureCollection")
        frame = gpd.GeoDataFrame.from_features(source["features"], crs="EPSG:4326")
    elif isinstance(source, gpd.GeoDataFrame):
        frame = source.copy()
        if frame.crs is None:
            frame = frame.set_crs("EPSG:4326")
        frame = frame.to_crs("EPSG:4326")
    elif isinstance(source, pd.DataFrame):
        geoms = [shapely.geometry.shape(json.loads(g) if isinstance(g, str) else g) for g in source["geometry"]]
        frame = gpd.GeoDataFrame(source.drop(columns=["geometry"]), geometry=geoms, crs="EPSG:4326")
    else:
        raise TypeError(f"unsupported geofence source {type(source).__name__}")
    missing = {"geofence_id", "kind", "name"} - set(frame.columns)
    if missing:
        raise ValueError(f"geofences lack {sorted(missing)}")
    bad_kind = set(frame["kind"]) - set(FENCE_KINDS)
    if bad_kind:
        raise ValueError(f"unknown geofence kind(s) {sorted(bad_kind)}; expected {FENCE_KINDS}")
    if frame["geofence_id"].duplicated().any():
        raise ValueError("geofence_id must be unique")
    geoms = shapely.make_valid(frame.geometry.to_numpy())
    geoms = np.array([_polygonal(g) for g in geoms], dtype=object)
    if any(g is None or g.is_empty for g in geoms):
        raise ValueError("every geofence must be a non-empty Polygon or MultiPolygon")
    frame = frame[["geofence_id", "kind", "name"]].reset_index(drop=True)
    frame = gpd.GeoDataFrame(frame, geometry=list(geoms), crs="EPSG:4326")
    if len(frame):
        utm = frame.estimate_utm_crs()
        outer = frame.geometry.to_crs(utm).buffer(params.hysteresis_m).to_crs("EPSG:4326").to_numpy()
    else:
        outer = np.array([], dtype=object)
    inner = frame.geometry.to_numpy()
    shapely.prepare(inner)
    shapely.prepare(outer)
    return Geofences(frame, inner, outer, shapely.STRtree(outer))


def _polygonal(geom: Any) -> Any:
    """The polygonal part of a geometry (make_valid can return collections); None if there is none."""
    if geom is None:
        return None
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    if geom.geom_type == "GeometryCollection":
        parts = [g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")]
        return shapely.union_all(parts) if parts else None
    return None


def zone_codes(fences: Geofences, lat: np.ndarray, lon: np.ndarray,
               hdop: np.ndarray | None = None, params: GeofenceParams = GeofenceParams()) -> dict[int, np.ndarray]:
    """Per fence near the track: the int8 zone code of every fix (-1 missing, 0 out, 1 band, 2 in).

    Only fences whose grown polygon contains at least one fix are returned (keyed by row position
    in ``fences.frame``); the rest have no visits.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    valid = ~(np.isnan(lat) | np.isnan(lon))
    if hdop is not None:
        hd = np.asarray(hdop, dtype=np.float64)
        valid &= ~(hd > params.max_hdop)  # NaN hdop: unknown quality, keep the fix
    if not valid.any() or len(fences) == 0:
        return {}
    bbox = shapely.box(lon[valid].min(), lat[valid].min(), lon[valid].max(), lat[valid].max())
    out: dict[int, np.ndarray] = {}
    vx, vy = lon[valid], lat[valid]
    valid_idx = np.flatnonzero(valid)
    for f in fences.tree.query(bbox, predicate="intersects"):
        minx, miny, maxx, maxy = shapely.bounds(fences.outer[f])
        near = (vx >= minx) & (vx <= maxx) & (vy >= miny) & (vy <= maxy)
        if not near.any():
            continue
        in_outer = shapely.contains_xy(fences.outer[f], vx[near], vy[near])
        if not in_outer.any():
            continue
        in_inner = shapely.contains_xy(fences.inner[f], vx[near], vy[near])
        codes = np.full(len(lat), MISSING, dtype=np.int8)
        codes[valid_idx] = OUTSIDE
        sub = np.where(in_inner, INSIDE, np.where(in_outer, BAND, OUTSIDE)).astype(np.int8)
        codes[valid_idx[near]] = sub
        out[int(f)] = codes
    return out


@numba.njit(cache=True)
def fence_visits_kernel(ts_ms: np.ndarray, code: np.ndarray, enter_ms: float, exit_ms: float,
                        max_gap_ms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visits of one fence: (enter index, exit index, ongoing flag) from per-fix zone codes.

    Rules (module docstring): outside, a fix with code 2 opens an enter candidate, which a fix
    with code 0 cancels and which commits once a fix with code ≥ 1 lies ``enter_ms`` after it.
    Inside, a code-0 fix opens an exit candidate, which a code ≥ 1 fix cancels and which commits
    once a code-0 fix lies ``exit_ms`` after it; the visit ends at the last code ≥ 1 fix. Code -1
    fixes are ignored. A silence > ``max_gap_ms`` between usable fixes closes a visit at its last
    inside fix and drops candidates. At the end of the data an open visit ends at its last inside
    fix and is ``ongoing`` unless an exit candidate was pending (then it has left).
    """
    n = len(ts_ms)
    enters = np.empty(n, dtype=np.int64)
    exits = np.empty(n, dtype=np.int64)
    ongoing = np.empty(n, dtype=np.int8)
    k = 0
    inside = False
    cand = -1  # index of the candidate's first fix, -1 = none
    enter_at = 0
    last_in = 0  # last fix with code >= 1 while inside
    last_valid = -1
    for i in range(n):
        c = code[i]
        if c < 0:
            continue
        if last_valid >= 0 and ts_ms[i] - ts_ms[last_valid] > max_gap_ms:
            if inside:
                enters[k] = enter_at
                exits[k] = last_in
                ongoing[k] = 0
                k += 1
                inside = False
            cand = -1
        last_valid = i
        if not inside:
            if c == 0:
                cand = -1
            else:
                if cand < 0 and c == 2:
                    cand = i
                if cand >= 0 and ts_ms[i] - ts_ms[cand] >= enter_ms:
                    inside = True
                    enter_at = cand
                    last_in = i
                    cand = -1
        else:
            if c >= 1:
                cand = -1
                last_in = i
            else:
                if cand < 0:
                    cand = i
                if ts_ms[i] - ts_ms[cand] >= exit_ms:
                    enters[k] = enter_at
                    exits[k] = last_in
                    ongoing[k] = 0
                    k += 1
                    inside = False
                    cand = -1
    if inside:
        enters[k] = enter_at
        exits[k] = last_in
        ongoing[k] = 0 if cand >= 0 else 1
        k += 1
    return enters[:k].copy(), exits[:k].copy(), ongoing[:k].copy()


def fence_visits_reference(ts_ms: list[int], code: list[int], enter_ms: float, exit_ms: float,
                           max_gap_ms: float) -> list[tuple[int, int, int]]:
    """The state machine of :func:`fence_visits_kernel`, written as plainly as possible."""
    visits: list[tuple[int, int, int]] = []
    state = "outside"
    candidate: int | None = None
    enter_at = last_in = 0
    previous: int | None = None
    for i, c in enumerate(code):
        if c < 0:
            continue
        if previous is not None and ts_ms[i] - ts_ms[previous] > max_gap_ms:
            if state == "inside":
                visits.append((enter_at, last_in, 0))
                state = "outside"
            candidate = None
        previous = i
        if state == "outside":
            if c == OUTSIDE:
                candidate = None
                continue
            if candidate is None and c == INSIDE:
                candidate = i
            if candidate is not None and ts_ms[i] - ts_ms[candidate] >= enter_ms:
                state, enter_at, last_in, candidate = "inside", candidate, i, None
        elif c >= BAND:
            candidate, last_in = None, i
        else:
            if candidate is None:
                candidate = i
            if ts_ms[i] - ts_ms[candidate] >= exit_ms:
                visits.append((enter_at, last_in, 0))
                state, candidate = "outside", None
    if state == "inside":
        visits.append((enter_at, last_in, 0 if candidate is not None else 1))
    return visits


VISIT_COLUMNS = ["geofence_id", "kind", "name", "entered_ms", "exited_ms", "dwell_s", "ongoing",
                 "enter_index", "exit_index"]


def geofence_visits(ts_ms: np.ndarray, lat: np.ndarray, lon: np.ndarray, fences: Geofences, *,
                    hdop: np.ndarray | None = None, params: GeofenceParams = GeofenceParams()) -> pd.DataFrame:
    """One vehicle's visits to every fence, ordered by entry time.

    Columns: geofence_id, kind, name, entered_ms, exited_ms (the last inside fix; for an
    ``ongoing`` visit the last fix so far; store NULL in ``geofence_visits.exited_at`` then),
    dwell_s, ongoing, enter_index / exit_index (positions in the input arrays).
    """
    ts_ms = np.ascontiguousarray(ts_ms, dtype=np.int64)
    rows: list[dict[str, Any]] = []
    for f, codes in zone_codes(fences, lat, lon, hdop, params).items():
        enters, exits, ongoing = fence_visits_kernel(ts_ms, codes, params.enter_confirm_s * 1000.0,
                                                     params.exit_confirm_s * 1000.0, params.max_gap_s * 1000.0)
        fence = fences.frame.iloc[f]
        for a, b, o in zip(enters, exits, ongoing, strict=True):
            dwell = (ts_ms[b] - ts_ms[a]) / 1000.0
            if dwell < params.min_dwell_s and not o:
                continue
            rows.append({"geofence_id": fence["geofence_id"], "kind": fence["kind"], "name": fence["name"],
                         "entered_ms": int(ts_ms[a]), "exited_ms": int(ts_ms[b]), "dwell_s": dwell,
                         "ongoing": bool(o), "enter_index": int(a), "exit_index": int(b)})
    frame = pd.DataFrame.from_records(rows, columns=VISIT_COLUMNS)
    return frame.sort_values(["entered_ms", "geofence_id"], kind="stable").reset_index(drop=True)


def geofence_events(visits: pd.DataFrame) -> pd.DataFrame:
    """Visits as enter/exit events (ts_ms, event, geofence_id, kind, name); no exit for ongoing visits."""
    enter = visits.assign(ts_ms=visits["entered_ms"], event="enter")
    leave = visits[~visits["ongoing"]].assign(ts_ms=lambda d: d["exited_ms"], event="exit")
    cols = ["ts_ms", "event", "geofence_id", "kind", "name", "dwell_s"]
    events = pd.concat([enter[cols], leave[cols]], ignore_index=True)
    return events.sort_values(["ts_ms", "event"], ascending=[True, False], kind="stable").reset_index(drop=True)


def dealer_visits(visits: pd.DataFrame, params: GeofenceParams = GeofenceParams()) -> pd.DataFrame:
    """Visits to ``dealer`` fences with dwell ≥ ``dealer_min_dwell_s``: likely services, for follow-up.

    An ongoing visit counts once its dwell so far reaches the threshold. The service stage can
    take ``entered_ms`` of the latest one as ``last_service_at`` when the dealer confirms it.
    """
    mask = (visits["kind"] == "dealer") & (visits["dwell_s"] >= params.dealer_min_dwell_s)
    return visits[mask].reset_index(drop=True)
