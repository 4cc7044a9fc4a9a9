"""Fleet movement maps: where vehicles of a model or segment drive and stop, k-anonymous.

An OEM or dealer network asks "where are our 2019 diesels driven, where do they stand", never
"where is this car". So positions are aggregated into grid cells and a cell is released only
when at least ``k_min_vehicles`` distinct vehicles contributed to it (k-anonymity, default
k = 5): a cell visited by fewer vehicles could point at one driver's home or workplace.

What is published per released cell: ``vehicles`` (distinct vehicles, ≥ k by construction);
``fixes`` (GPS fixes in the cell; at 1 Hz that is vehicle-seconds spent there) with
``fix_vehicles``; and, from stop points the caller supplies (e.g. staypoints), ``stops`` with
``stop_vehicles``. Each pair is published only when at least k distinct vehicles contributed to
*it*; otherwise both are null, because "3 stops here" in a cell 5 cars merely drive through would
say that one or two of them park there. Consequently every number in the output is ≥ k.
Not covered by k-anonymity: dominance (one vehicle contributing most of a cell's fixes, e.g. a
car parked for a day); use stop points rather than fixes where that matters.
Cells below k are suppressed: left out, not merged into neighbours. Only the *number* of
suppressed cells is reported, never their counts or positions.
Not defended against here: differencing between releases over overlapping vehicle sets or time
windows, which is why the grid is fixed (see below) and releases should be on fixed periods.

Grid: equal-angle cells anchored at (-90°, -180°). The latitude step is ``cell_size_m`` on the
IUGG mean sphere (the radius ``analytics.geo`` uses); the longitude step is the same distance at
``reference_lat_deg``, so cells are square there and narrower poleward (at 500 m and 30° of
latitude difference the east-west size still is 433 m). The grid must not move between releases
(a shifted grid lets two releases be subtracted), so ``reference_lat_deg`` should be fixed per
deployment; when it is None the median latitude of the data rounded to a whole degree is used.
Hexagons (H3) are not implemented: square cells are exact to reason about and to test.

Cell assignment and the distinct-vehicle counting are numba kernels with plain-Python references.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from analytics.geo import EARTH_RADIUS_M

M_PER_DEG_LAT = EARTH_RADIUS_M * math.pi / 180.0  # 111,195 m


@dataclass(frozen=True, slots=True)
class HeatmapParams:
    """Grid and disclosure settings of the fleet heatmap."""

    cell_size_m: float = 500.0  # city-block scale: coarse enough to blur a driveway, fine enough to show roads
    k_min_vehicles: int = 5  # k-anonymity: a cell needs this many distinct vehicles to be released
    reference_lat_deg: float | None = None  # latitude where cells are square; fix it per deployment
    coordinate_decimals: int = 7  # GeoJSON precision (≈ 1 cm), enough for cell corners


@dataclass(frozen=True, slots=True)
class Grid:
    dlat_deg: float
    dlon_deg: float
    ncols: int
    reference_lat_deg: float

    @classmethod
    def for_cell_size(cls, cell_size_m: float, reference_lat_deg: float) -> Grid:
        if cell_size_m <= 0:
            raise ValueError("cell_size_m must be positive")
        dlat = cell_size_m / M_PER_DEG_LAT
        dlon = cell_size_m / (M_PER_DEG_LAT * max(math.cos(math.radians(reference_lat_deg)), 1e-6))
        return cls(dlat, dlon, math.ceil(360.0 / dlon), reference_lat_deg)

    def bounds(self, key: int) -> tuple[float, float, float, float]:
        """(min lon, min lat, max lon, max lat) of a cell."""
        row, col = divmod(int(key), self.ncols)
        lat0 = -90.0 + row * self.dlat_deg
        lon0 = -180.0 + col * self.dlon_deg
        return lon0, lat0, min(lon0 + self.dlon_deg, 180.0), min(lat0 + self.dlat_deg, 90.0)


@numba.njit(cache=True)
def cell_keys_kernel(lat: np.ndarray, lon: np.ndarray, dlat: float, dlon: float, ncols: int) -> np.ndarray:
    """Cell key ``row * ncols + col`` of each point; -1 where a coordinate is missing or out of range."""
    n = len(lat)
    out = np.empty(n, dtype=np.int64)
    nrows = np.int64(math.ceil(180.0 / dlat))
    for i in range(n):
        la = lat[i]
        lo = lon[i]
        if la != la or lo != lo or la < -90.0 or la > 90.0 or lo < -180.0 or lo > 180.0:
            out[i] = -1
            continue
        row = np.int64(math.floor((la + 90.0) / dlat))
        col = np.int64(math.floor((lo + 180.0) / dlon))
        if row >= nrows:
            row = nrows - 1
        if col >= ncols:
            col = ncols - 1
        out[i] = row * ncols + col
    return out


def cell_keys_reference(lat: list[float], lon: list[float], dlat: float, dlon: float, ncols: int) -> list[int]:
    nrows = math.ceil(180.0 / dlat)
    out = []
    for la, lo in zip(lat, lon, strict=True):
        if math.isnan(la) or math.isnan(lo) or not (-90.0 <= la <= 90.0) or not (-180.0 <= lo <= 180.0):
            out.append(-1)
            continue
        row = min(math.floor((la + 90.0) / dlat), nrows - 1)
        col = min(math.floor((lo + 180.0) / dlon), ncols - 1)
        out.append(row * ncols + col)
    return out


@numba.njit(cache=True)
def cell_counts_kernel(keys: np.ndarray, vehicle: np.ndarray, is_stop: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per cell (ascending key): fixes, stop points, distinct vehicles, distinct vehicles with a fix,
    distinct vehicles with a stop.

    ``vehicle`` holds dense ids (0..V-1); rows with key -1 are ignored. Rows are ordered by
    (key, vehicle) with two stable sorts, then each (cell, vehicle) run is counted once.
    """
    by_vehicle = np.argsort(vehicle, kind="mergesort")
    order = by_vehicle[np.argsort(keys[by_vehicle], kind="mergesort")]
    n = len(keys)
    cells = np.empty(n, dtype=np.int64)
    fixes = np.zeros(n, dtype=np.int64)
    stops = np.zeros(n, dtype=np.int64)
    vehicles = np.zeros(n, dtype=np.int64)
    fix_vehicles = np.zeros(n, dtype=np.int64)
    stop_vehicles = np.zeros(n, dtype=np.int64)
    k = -1
    prev_key = np.int64(-1)
    prev_vehicle = np.int64(-1)
    vehicle_stopped = False
    vehicle_fixed = False
    for idx in range(n):
        i = order[idx]
        key = keys[i]
        if key < 0:
            continue
        v = vehicle[i]
        if k < 0 or key != prev_key:
            k += 1
            cells[k] = key
            prev_key = key
            prev_vehicle = -1
        if v != prev_vehicle:
            vehicles[k] += 1
            prev_vehicle = v
            vehicle_stopped = False
            vehicle_fixed = False
        if is_stop[i]:
            stops[k] += 1
            if not vehicle_stopped:
                stop_vehicles[k] += 1
                vehicle_stopped = True
        else:
            fixes[k] += 1
            if not vehicle_fixed:
                fix_vehicles[k] += 1
                vehicle_fixed = True
    m = k + 1
    return (cells[:m].copy(), fixes[:m].copy(), stops[:m].copy(), vehicles[:m].copy(), fix_vehicles[:m].copy(),
            stop_vehicles[:m].copy())


def cell_counts_reference(keys: list[int], vehicle: list[int],
                          is_stop: list[bool]) -> list[tuple[int, int, int, int, int, int]]:
    """(key, fixes, stops, vehicles, fix_vehicles, stop_vehicles) per cell, ascending key, with sets."""
    cells: dict[int, dict[str, Any]] = {}
    for key, v, stop in zip(keys, vehicle, is_stop, strict=True):
        if key < 0:
            continue
        cell = cells.setdefault(key, {"fixes": 0, "stops": 0, "vehicles": set(), "fixers": set(), "stoppers": set()})
        cell["vehicles"].add(v)
        if stop:
            cell["stops"] += 1
            cell["stoppers"].add(v)
        else:
            cell["fixes"] += 1
            cell["fixers"].add(v)
    return [(key, c["fixes"], c["stops"], len(c["vehicles"]), len(c["fixers"]), len(c["stoppers"]))
            for key, c in sorted(cells.items())]


def _reference_lat(lat: np.ndarray, params: HeatmapParams) -> float:
    if params.reference_lat_deg is not None:
        return float(params.reference_lat_deg)
    known = lat[~np.isnan(lat)]
    return float(round(float(np.median(known)))) if len(known) else 0.0


def fleet_heatmap(fix_vehicle: np.ndarray, fix_lat: np.ndarray, fix_lon: np.ndarray, *,
                  stop_vehicle: np.ndarray | None = None, stop_lat: np.ndarray | None = None,
                  stop_lon: np.ndarray | None = None, params: HeatmapParams = HeatmapParams(),
                  segment: str | None = None) -> dict[str, Any]:
    """The k-anonymous heatmap of a set of vehicles as a GeoJSON FeatureCollection.

    ``fix_vehicle`` / ``fix_lat`` / ``fix_lon``: every GPS fix of the segment's vehicles (vehicle
    ids of any type, e.g. device keys). ``stop_*``: one point per stop (staypoint centre). Each
    feature is a cell polygon with properties ``cell`` (grid key), ``vehicles``, ``fixes`` and
    ``fix_vehicles``, ``stops`` and ``stop_vehicles`` (each pair null below k, see the module
    docstring). The collection's
    ``metadata`` gives the grid, k and how many cells were suppressed.
    """
    fix_lat = np.asarray(fix_lat, dtype=np.float64)
    fix_lon = np.asarray(fix_lon, dtype=np.float64)
    fix_vehicle = np.asarray(fix_vehicle)
    if not (len(fix_vehicle) == len(fix_lat) == len(fix_lon)):
        raise ValueError("fix_vehicle, fix_lat and fix_lon must have the same length")
    if stop_vehicle is None:
        stop_vehicle, stop_lat, stop_lon = fix_vehicle[:0], np.empty(0), np.empty(0)
    elif stop_lat is None or stop_lon is None:
        raise ValueError("stop_vehicle needs stop_lat and stop_lon")
    stop_lat = np.asarray(stop_lat, dtype=np.float64)
    stop_lon = np.asarray(stop_lon, dtype=np.float64)
    stop_vehicle = np.asarray(stop_vehicle)
    if not (len(stop_vehicle) == len(stop_lat) == len(stop_lon)):
        raise ValueError("stop_vehicle, stop_lat and stop_lon must have the same length")
    if params.k_min_vehicles < 1:
        raise ValueError("k_min_vehicles must be at least 1")

    lat = np.concatenate((fix_lat, stop_lat))
    lon = np.concatenate((fix_lon, stop_lon))
    is_stop = np.concatenate((np.zeros(len(fix_lat), dtype=np.bool_), np.ones(len(stop_lat), dtype=np.bool_)))
    all_vehicles = np.concatenate((fix_vehicle, stop_vehicle)) if len(stop_vehicle) else fix_vehicle
    if len(all_vehicles):
        _, dense = np.unique(all_vehicles, return_inverse=True)
        dense = dense.astype(np.int64).ravel()
    else:
        dense = np.empty(0, dtype=np.int64)
    grid = Grid.for_cell_size(params.cell_size_m, _reference_lat(lat, params))
    keys = cell_keys_kernel(lat, lon, grid.dlat_deg, grid.dlon_deg, grid.ncols)
    cells, fixes, stops, vehicles, fix_vehicles, stop_vehicles = cell_counts_kernel(keys, dense, is_stop)

    k_min = params.k_min_vehicles
    features: list[dict[str, Any]] = []
    nd = params.coordinate_decimals
    for j in np.flatnonzero(vehicles >= k_min):
        lon0, lat0, lon1, lat1 = (round(c, nd) for c in grid.bounds(int(cells[j])))
        fixes_released = bool(fix_vehicles[j] >= k_min)
        stops_released = bool(stop_vehicles[j] >= k_min)
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon",
                         "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]]},
            "properties": {
                "cell": int(cells[j]),
                "vehicles": int(vehicles[j]),
                "fixes": int(fixes[j]) if fixes_released else None,
                "fix_vehicles": int(fix_vehicles[j]) if fixes_released else None,
                "stops": int(stops[j]) if stops_released else None,
                "stop_vehicles": int(stop_vehicles[j]) if stops_released else None,
            },
        })
    return {
        "type": "FeatureCollection",
        "features": features,
        "metadata": {
            "segment": segment,
            "cell_size_m": params.cell_size_m,
            "k_min_vehicles": k_min,
            "grid": {"origin": [-180.0, -90.0], "dlat_deg": grid.dlat_deg, "dlon_deg": grid.dlon_deg,
                     "reference_lat_deg": grid.reference_lat_deg},
            "released_cells": len(features),
            "suppressed_cells": int(np.count_nonzero(vehicles < k_min)),
        },
    }
