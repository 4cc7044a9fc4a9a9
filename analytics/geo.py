"""Geodesy shared by the analytics stages: great-circle distance on the WGS84 mean sphere.

Kernels are numba ``njit`` functions over arrays (cached to disk), each with a plain-Python
reference that the tests compare it to. Haversine on a sphere of radius 6,371,008.8 m (the IUGG
mean radius) is what trackintel and movingpandas use; its error against the ellipsoid (< 0.5 %)
is far below GPS noise at the distances a car covers between fixes.
"""

from __future__ import annotations

import math

import numba
import numpy as np

EARTH_RADIUS_M = 6_371_008.8


@numba.njit(cache=True, inline="always")
def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Metres between two WGS84 points given in degrees (usable inside other kernels)."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2.0 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@numba.njit(cache=True)
def step_distances_m(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Distance from each fix to the next (length n - 1); NaN where either fix is missing."""
    n = len(lat)
    out = np.empty(max(n - 1, 0))
    for i in range(n - 1):
        if (lat[i] != lat[i]) or (lat[i + 1] != lat[i + 1]) or (lon[i] != lon[i]) or (lon[i + 1] != lon[i + 1]):
            out[i] = np.nan
        else:
            out[i] = haversine_m(lat[i], lon[i], lat[i + 1], lon[i + 1])
    return out


def haversine_m_reference(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Plain Python haversine, the reference for :func:`haversine_m`."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2.0 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def step_distances_m_reference(lat: list[float], lon: list[float]) -> list[float]:
    out = []
    for i in range(len(lat) - 1):
        pts = (lat[i], lon[i], lat[i + 1], lon[i + 1])
        out.append(math.nan if any(math.isnan(v) for v in pts) else haversine_m_reference(*pts))
    return out
