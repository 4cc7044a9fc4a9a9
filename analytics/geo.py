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
    if 0.0 <= x < w:  # fast paths (a course difference): fmod is x itself; -0.0 becomes +0.0, as in Python
        return x + 0.0
    if -w < x < 0.0:  # fmod is x (exact), of the other sign than w: Python adds w in one rounding
        return x + w
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


SMALL_ANGLE = 2.0 ** -7
"""Largest half-angle (rad; ~50 km of latitude) that :func:`sin_small` and :func:`asin_small` take."""


@numba.njit(cache=True, inline="always")
def sin_small(x: float) -> float:
    """``math.sin(x)`` for ``|x| <= SMALL_ANGLE``, without the libm call.

    Why: at 1 Hz a car moves ~1e-6 rad between fixes, and the haversine's two sines and arcsine were half of the
    trip metrics' time. Taylor x - x³/6 + x⁵/120: the first omitted term is below x·2.3e-17 (half an ulp is
    x·1.1e-16), and the correction term is < 1e-5·x, so its rounding is negligible: the result is within
    half an ulp of the exact sine plus ~1e-21 relative, like libm's (a last-bit tie may round the other way).
    """
    x2 = x * x
    return x + x * (x2 * (-1.0 / 6.0 + x2 * (1.0 / 120.0)))


@numba.njit(cache=True, inline="always")
def asin_small(s: float) -> float:
    """``math.asin(s)`` for ``0 <= s <= SMALL_ANGLE`` (as :func:`sin_small`: Taylor to s⁷, omitted term
    below s·5e-19)."""
    s2 = s * s
    return s + s * (s2 * (1.0 / 6.0 + s2 * (3.0 / 40.0 + s2 * (5.0 / 112.0))))


@numba.njit(cache=True, inline="always")
def cos_near(p: float, p0: float, cos0: float, sin0: float) -> float:
    """``math.cos(p)`` for ``|p - p0| <= SMALL_ANGLE`` from ``cos0 = cos(p0)``, ``sin0 = sin(p0)``, without a libm call.

    cos(p0 + δ) = cos p0·cos δ − sin p0·sin δ with cos δ = 1 − δ²/2 + δ⁴/24 − δ⁶/720 (omitted term < 2e-21) and
    :func:`sin_small`: within a few ulps of libm's cosine (absolutely: a few 1e-16). Why: the trip metrics took one
    cosine per GPS fix for the haversine; a trip's fixes lie within ~50 km of latitude of a reference fix.
    """
    d = p - p0
    d2 = d * d
    return cos0 * (1.0 + d2 * (-0.5 + d2 * (1.0 / 24.0 + d2 * (-1.0 / 720.0)))) - sin0 * sin_small(d)


@numba.njit(cache=True, inline="always")
def haversine_rad_m(p1: float, cos1: float, p2: float, cos2: float, dl: float) -> float:
    """:func:`haversine_m` from the latitudes in radians with their cosines and the longitude difference in
    radians: the same formula, the same operations, with the small-angle sine and arcsine where the angles allow
    (every step between 1 Hz fixes). Lets a caller compute each fix's cosine once (it is shared by two steps)."""
    hp = (p2 - p1) / 2
    hl = dl / 2
    if abs(hp) <= SMALL_ANGLE and abs(hl) <= SMALL_ANGLE:
        sp = sin_small(hp)
        sl = sin_small(hl)
        s = math.sqrt(sp * sp + cos1 * cos2 * (sl * sl))
        if s <= SMALL_ANGLE:
            return 2.0 * EARTH_RADIUS_M * asin_small(s)
        return 2.0 * EARTH_RADIUS_M * math.asin(min(1.0, s))
    a = math.sin(hp) ** 2 + cos1 * cos2 * math.sin(hl) ** 2
    return 2.0 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def haversine_rad_m_reference(p1: float, cos1: float, p2: float, cos2: float, dl: float) -> float:
    """What :func:`haversine_rad_m` must equal (to rounding): the plain haversine with libm's sine and arcsine."""
    a = math.sin((p2 - p1) / 2) ** 2 + cos1 * cos2 * math.sin(dl / 2) ** 2
    return 2.0 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@numba.njit(cache=True, inline="always")
def within_m(lat1: float, lon1: float, lat2: float, lon2: float, limit_m: float) -> bool:
    """``haversine_m(lat1, lon1, lat2, lon2) <= limit_m``, skipping the trigonometry when a bound decides.

    Why: the cleaning and stop tests ask this once per fix, and at 1 Hz almost every answer is obvious (a car
    moves ~30 m per second against a 70 m/s jump bound or a 200 m stop radius); the haversine is the most
    expensive operation of those passes. Bounds on the great-circle distance d of the R-sphere:
    R·|Δφ| <= d <= R·(|Δφ| + |Δλ|) (along the meridian, then along a parallel, which is no shorter than the
    great circle). Only when neither decides, with a margin of 1e-6 relative + 1 mm far above the rounding of
    either side, is a distance computed: first a cheap one (one cosine: cos φ1·cos φ2 = cos² φm − sin²(Δφ/2),
    small-angle sine and arcsine), within a few ulps of the haversine's; only when even that lies within
    1e-12 relative + 1e-9 m of the limit is the haversine itself computed, so the answer is always the
    haversine's. NaN coordinates fall through to the haversine, which answers False as before.
    """
    dphi = abs(lat2 - lat1) * _DEG
    upper = EARTH_RADIUS_M * (dphi + abs(lon2 - lon1) * _DEG)
    if upper * (1.0 + 1e-6) + 1e-3 < limit_m:
        return True
    if EARTH_RADIUS_M * dphi * (1.0 - 1e-6) - 1e-3 > limit_m:
        return False
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    hp = (p2 - p1) / 2
    hl = math.radians(lon2 - lon1) / 2
    if abs(hp) <= SMALL_ANGLE and abs(hl) <= SMALL_ANGLE:
        c = math.cos((p1 + p2) / 2)
        sp = sin_small(hp)
        sl = sin_small(hl)
        s = math.sqrt(sp * sp + (c * c - sp * sp) * (sl * sl))
        if s <= SMALL_ANGLE:
            d = 2.0 * EARTH_RADIUS_M * asin_small(s)
            tol = d * 1e-12 + 1e-9
            if d + tol < limit_m:
                return True
            if d - tol > limit_m:
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
