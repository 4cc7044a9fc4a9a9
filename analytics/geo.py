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


_DEG = math.pi / 180.0


@numba.njit(cache=True, inline="always")
def py_mod(x: float, w: float) -> float:
    """Python's ``x % w`` for a whole-number ``w`` > 0 (360, 86400), bit for bit, without ``fmod``.

    Why: the trip metrics take the time of day of every driving second; fmod is a slow loop in libm. Here
    q = floor(x / w), corrected by one if the division rounded across an integer, and r = x - q·w in one
    rounding: q·w is exact (|q| < 2^53 / w), and the exact value x - q·w is the one Python rounds too (fmod
    is exact; Python adds ``w`` to a negative remainder in one rounding). Non-finite input: Python's result.
    """
    if not (math.isfinite(x) and 0.0 < w < 2.0 ** 20 and w == math.floor(w) and abs(x) < 2.0 ** 52):
        return x % w
    q = math.floor(x / w)
    r = x - q * w
    if r < 0.0:
        q -= 1.0
        r = x - q * w
    elif r >= w:
        q += 1.0
        r = x - q * w
    if not 0.0 <= r < w:  # -tiny + w rounds to w: Python returns w there; leave such edge cases to it
        return x % w
    return r if r != 0.0 else 0.0  # Python gives +0.0 for a zero remainder (the sign of w)


def py_mod_reference(x: float, w: float) -> float:
    """What :func:`py_mod` must equal."""
    return x % w


@numba.njit(cache=True, inline="always")
def within_m(lat1: float, lon1: float, lat2: float, lon2: float, limit_m: float) -> bool:
    """``haversine_m(lat1, lon1, lat2, lon2) <= limit_m``, skipping the trigonometry when a bound decides.

    Why: the cleaning and stop tests ask this once per fix, and at 1 Hz almost every answer is obvious (a car
    moves ~30 m per second against a 70 m/s jump bound or a 200 m stop radius); the haversine is the most
    expensive operation of those passes. Bounds on the great-circle distance d of the R-sphere:
    R·|Δφ| <= d <= R·(|Δφ| + |Δλ|) (along the meridian, then along a parallel, which is no shorter than the
    great circle). Only when neither decides, with a margin of 1e-6 relative + 1 mm far above the rounding of
    either side, is the haversine computed, so the answer is always the haversine's.
    NaN coordinates fall through to the haversine, which answers False as before.
    """
    dphi = abs(lat2 - lat1) * _DEG
    upper = EARTH_RADIUS_M * (dphi + abs(lon2 - lon1) * _DEG)
    if upper * (1.0 + 1e-6) + 1e-3 < limit_m:
        return True
    if EARTH_RADIUS_M * dphi * (1.0 - 1e-6) - 1e-3 > limit_m:
        return False
    return haversine_m(lat1, lon1, lat2, lon2) <= limit_m


def within_m_reference(lat1: float, lon1: float, lat2: float, lon2: float, limit_m: float) -> bool:
    """What :func:`within_m` must answer: the plain haversine against the limit."""
    return haversine_m_reference(lat1, lon1, lat2, lon2) <= limit_m


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
