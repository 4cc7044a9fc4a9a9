"""The reader's binary COPY parser and the geodesy kernels against their plain-Python references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.geo import (
    SMALL_ANGLE,
    asin_small,
    cos_near,
    haversine_m,
    haversine_m_reference,
    haversine_rad_m,
    haversine_rad_m_reference,
    sin_small,
    step_distances_m,
    step_distances_m_reference,
)
from analytics.reader import KIND_F4, KIND_F8, KIND_INT4, KIND_TS, parse_copy_kernel, parse_copy_reference
from ingest.copy_binary import CopyColumn, copy_buffer, float_column

lat = st.floats(-89.9, 89.9)
lon = st.floats(-180, 180)


@settings(max_examples=300, deadline=None)
@given(lat, lon, lat, lon)
def test_haversine_kernel_matches_reference(a, b, c, d):
    # Same formula, but numba's trigonometry (LLVM / the platform libm) and CPython's math module may round the
    # last bit differently (e.g. (-49.71, 0, 70.04, 1): 13315663.700123584 vs ...586), so: equal to 1 ulp.
    assert haversine_m(a, b, c, d) == pytest.approx(haversine_m_reference(a, b, c, d), rel=1e-15, abs=1e-9)


small = st.one_of(st.floats(-SMALL_ANGLE, SMALL_ANGLE), st.floats(-1e-5, 1e-5), st.sampled_from([0.0, -0.0]))


@settings(max_examples=500, deadline=None)
@given(small)
def test_small_angle_sine_and_arcsine_are_libms_to_the_last_bit(x):
    # Taylor series whose omitted terms are far below half an ulp, the correction term < 1e-5 of the result:
    # within half an ulp of the exact value like libm, so equal but for a rare tie rounded the other way (1 ulp).
    assert sin_small(x) == pytest.approx(math.sin(x), rel=2.3e-16, abs=0.0)
    assert asin_small(abs(x)) == pytest.approx(math.asin(abs(x)), rel=2.3e-16, abs=0.0)


@settings(max_examples=500, deadline=None)
@given(lat, small)
def test_cosine_near_a_reference_latitude_is_libms_to_rounding(a, d):
    """The trip metrics' per-fix cosine from a reference latitude: a few ulps of libm's (absolute near a pole)."""
    p0 = math.radians(a)
    p = max(-math.pi / 2, min(math.pi / 2, p0 + d))
    if abs(p - p0) <= SMALL_ANGLE:
        assert cos_near(p, p0, math.cos(p0), math.sin(p0)) == pytest.approx(math.cos(p), rel=1e-15, abs=5e-16)


@settings(max_examples=300, deadline=None)
@given(lat, lon, st.floats(-0.5, 0.5), st.floats(-0.5, 0.5))
def test_haversine_from_radians_matches_reference(a, b, dlat, dlon):
    """The trip metrics' step distance (small-angle sine / arcsine) against the libm haversine: 1e-15 relative
    (a few ulps: the polynomials and libm may each round a last bit differently), far below any metric's 1e-9."""
    c = max(-89.9, min(89.9, a + dlat))
    p1, p2 = math.radians(a), math.radians(c)
    dl = math.radians(dlon)
    got = haversine_rad_m(p1, math.cos(p1), p2, math.cos(p2), dl)
    assert got == pytest.approx(haversine_rad_m_reference(p1, math.cos(p1), p2, math.cos(p2), dl), rel=1e-15,
                                abs=1e-9)
    assert got == pytest.approx(haversine_m_reference(a, b, c, b + dlon), rel=1e-12, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.none() | lat, lon), max_size=40))
def test_step_distances_match_reference(points):
    la = [math.nan if p[0] is None else p[0] for p in points]
    lo = [p[1] for p in points]
    got = step_distances_m(np.array(la, dtype=float), np.array(lo, dtype=float)).tolist()
    want = step_distances_m_reference(la, lo)
    assert len(got) == len(want)
    assert all((math.isnan(g) and math.isnan(w)) or g == pytest.approx(w, rel=1e-15, abs=1e-9)
               for g, w in zip(got, want, strict=True))  # to 1 ulp, as above


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2**31 - 1), st.integers(0, 4 * 10**12),
                          st.none() | st.floats(-1e6, 1e6, width=32), st.none() | st.floats(-180, 180)),
                min_size=0, max_size=50))
def test_copy_parser_matches_reference(rows):
    """What ingest's COPY builder writes, the reader's kernel parses back like struct does."""
    n = len(rows)
    cols = [CopyColumn("device_key", "int4", np.array([r[0] for r in rows], dtype=np.int64)),
            CopyColumn("ts", "timestamptz", np.array([r[1] for r in rows], dtype=np.int64)),
            float_column("a", "float4", np.array([math.nan if r[2] is None else r[2] for r in rows], dtype=float)),
            float_column("b", "float8", np.array([math.nan if r[3] is None else r[3] for r in rows], dtype=float))]
    if n == 0:
        return
    data = copy_buffer(cols)
    kinds = np.array([KIND_INT4, KIND_TS, KIND_F4, KIND_F8], dtype=np.int64)
    status, keys, ts, values = parse_copy_kernel(np.frombuffer(data, dtype=np.uint8), kinds)
    ref_keys, ref_ts, ref_values = parse_copy_reference(data, kinds.tolist())
    assert status == 0
    assert keys.tolist() == ref_keys == [r[0] for r in rows]
    assert ts.tolist() == ref_ts == [r[1] for r in rows]
    assert np.array_equal(values, np.array(ref_values, dtype=float).reshape(n, 2), equal_nan=True)
