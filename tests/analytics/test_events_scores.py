"""Driving events and scores: kernels against their plain-Python references, event semantics, score properties
(bounded, monotone in events, weighted sum, minimum exposure, explanation), and a smoke test on real POLIDriving.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.events import (
    EVENT_COLUMNS,
    KIND_HARSH_ACCELERATION,
    KIND_HARSH_BRAKING,
    KIND_HARSH_CORNERING,
    KIND_IDLING,
    KIND_OVER_REVVING,
    KIND_SPEEDING,
    EventParams,
    detect_events,
    idle_indicator_kernel,
    idle_indicator_reference,
    lateral_accel_kernel,
    lateral_accel_reference,
    longitudinal_accel_kernel,
    longitudinal_accel_reference,
    match_speed_limits,
    speeding_threshold_kernel,
    speeding_threshold_reference,
    threshold_runs_kernel,
    threshold_runs_reference,
)
from analytics.scores import (
    ACCELERATION,
    BRAKING,
    CORNERING,
    FUEL,
    HIGH_RPM,
    MILEAGE,
    SPEEDING,
    ScoreParams,
    eco_score,
    eco_time_shares_kernel,
    eco_time_shares_reference,
    period_score,
    trip_score,
)

HYP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
maybe_nan = st.one_of(st.just(math.nan), st.floats(0, 200, allow_nan=False))


@st.composite
def timestamps(draw, n: int) -> list[int]:
    ts = [draw(st.integers(0, 10**12))]
    for step in draw(st.lists(st.sampled_from([0, 500, 1000, 1000, 1000, 2000, 4000, 30000]), min_size=n - 1,
                              max_size=n - 1)):
        ts.append(ts[-1] + step)
    return ts


@st.composite
def tracks(draw, max_n: int = 60):
    n = draw(st.integers(1, max_n))
    ts = draw(timestamps(n))
    speed = draw(st.lists(maybe_nan, min_size=n, max_size=n))
    return ts, speed


def close(a: list[float], b: list[float], tol: float = 1e-9) -> bool:
    return all((math.isnan(x) and math.isnan(y)) or abs(x - y) <= tol * max(1.0, abs(y))
               for x, y in zip(a, b, strict=True))


# ----------------------------------------------------------------------------- kernels vs references


@HYP
@given(tracks(), st.sampled_from([0.5, 1.0, 2.0, 3.0]), st.sampled_from([1.0, 3.0, 10.0]))
def test_longitudinal_kernel_matches_reference(track, window_s, gap_s):
    ts, speed = track
    accel, origin = longitudinal_accel_kernel(np.array(ts, dtype=np.int64), np.array(speed), window_s, gap_s, 9.8)
    ref_a, ref_o = longitudinal_accel_reference(ts, speed, window_s, gap_s, 9.8)
    assert close(list(accel), ref_a)
    assert list(origin) == ref_o


@HYP
@given(tracks(), st.data(), st.sampled_from([1.0, 3.0]))
def test_lateral_kernel_matches_reference(track, data, window_s):
    ts, obd = track
    n = len(ts)
    course = data.draw(st.lists(st.one_of(st.just(math.nan), st.floats(0, 359.9)), min_size=n, max_size=n))
    gps = data.draw(st.lists(st.one_of(st.just(math.nan), st.floats(0, 300)), min_size=n, max_size=n))
    args = (window_s, 3.0, 20.0, 9.8, 250.0)
    lat, origin = lateral_accel_kernel(np.array(ts, dtype=np.int64), np.array(course), np.array(gps), np.array(obd),
                                       *args)
    ref_l, ref_o = lateral_accel_reference(ts, course, gps, obd, *args)
    assert close(list(lat), ref_l, 1e-7)
    assert list(origin) == ref_o


@HYP
@given(tracks(), st.data(), st.sampled_from([0.5, 1.0]), st.sampled_from([0.0, 2000.0]), st.booleans(),
       st.booleans())
def test_threshold_runs_kernel_matches_reference(track, data, release, min_ms, per_sample, windowed):
    ts, value = track
    n = len(ts)
    thr = data.draw(st.lists(st.one_of(st.just(math.nan), st.floats(20, 120)), min_size=n, max_size=n)) \
        if per_sample else [60.0]
    sign = data.draw(st.sampled_from([1.0, -1.0]))
    value = value if sign > 0 else [-v for v in value]
    origin = [data.draw(st.integers(-1, i)) for i in range(n)] if windowed else []
    got = threshold_runs_kernel(np.array(ts, dtype=np.int64), np.array(value), np.array(thr), sign,
                                np.array(origin, dtype=np.int64), release, min_ms, 3000.0)
    ref = threshold_runs_reference(ts, value, thr, sign, origin, release, min_ms, 3000.0)
    assert [list(map(int, got[k])) for k in range(3)] == [ref[0], ref[1], ref[2]]
    assert close(list(got[3]), ref[3])


@HYP
@given(st.lists(st.one_of(st.just(math.nan), st.floats(-10, 150)), max_size=50), st.data())
def test_small_kernels_match_references(limits, data):
    assert close(list(speeding_threshold_kernel(np.array(limits, dtype=np.float64), 0.2, 64.37, 16.09, 128.75)),
                 speeding_threshold_reference(limits, 0.2, 64.37, 16.09, 128.75))
    n = len(limits)
    rpm = data.draw(st.lists(st.one_of(st.just(math.nan), st.floats(0, 7000)), min_size=n, max_size=n))
    assert close(list(idle_indicator_kernel(np.array(rpm, dtype=np.float64), np.array(limits, dtype=np.float64),
                                            300.0, 1.0)), idle_indicator_reference(rpm, limits, 300.0, 1.0))


@HYP
@given(tracks(), st.data())
def test_eco_shares_kernel_matches_reference(track, data):
    ts, rpm = track
    n = len(ts)
    rpm = [v * 30 for v in rpm]
    thr = data.draw(st.lists(maybe_nan, min_size=n, max_size=n))
    start = data.draw(st.integers(0, n - 1))
    end = data.draw(st.integers(start, n - 1))
    got = eco_time_shares_kernel(np.array(ts, dtype=np.int64), np.array(rpm), np.array(thr), start, end, 3000.0,
                                 80.0, 10_000.0)
    assert close(list(got), eco_time_shares_reference(ts, rpm, thr, start, end, 3000.0, 80.0, 10_000.0))


# ----------------------------------------------------------------------------- event semantics


def synthetic(n: int = 600) -> dict[str, np.ndarray]:
    """A 1 Hz straight drive north at 50 km/h near Quito, engine at 2000 rpm."""
    ts = np.arange(n, dtype=np.int64) * 1000 + 1_700_000_000_000
    lat = -0.2 + np.arange(n) * (50 / 3.6) / 111_195.0
    return {"ts_ms": ts, "speed": np.full(n, 50.0), "rpm": np.full(n, 2000.0), "lat": lat,
            "lon": np.full(n, -78.5), "course": np.zeros(n), "gps_speed": np.full(n, 50.0)}


def run(track: dict[str, np.ndarray], params: EventParams | None = None, limits=None) -> pd.DataFrame:
    return detect_events(track["ts_ms"], track["speed"], track["rpm"], track["lat"], track["lon"], track["course"],
                         track["gps_speed"], params, speed_limits=limits)


def test_quiet_drive_has_no_events_and_the_frame_has_the_contract_columns():
    ev = run(synthetic())
    assert list(ev.columns) == list(EVENT_COLUMNS)
    assert len(ev) == 0


def test_one_noisy_step_does_not_fire_but_a_sustained_brake_does():
    t = synthetic()
    t["speed"][100] = 30.0  # a single glitch: -20 km/h in 1 s then back
    assert len(run(t)) == 0
    t = synthetic()
    t["speed"][200:205] = [38, 26, 14, 2, 0]  # ~ -3.3 m/s² for 4 s
    t["speed"][205:] = 0.0
    t["gps_speed"][:] = t["speed"]
    ev = run(t)
    brakes = ev[ev.kind == KIND_HARSH_BRAKING]
    assert len(brakes) == 1
    b = brakes.iloc[0]
    assert b.start_idx <= 200 <= b.end_idx and b.peak < -3.13 and b.peak_unit == "m/s²"
    assert b.severity >= 1 and b.duration_s >= 2.0 and not math.isnan(b.lat)


def test_harsh_acceleration_from_standstill():
    t = synthetic()
    t["speed"][:300] = 0.0
    t["speed"][300:306] = [9, 18, 27, 36, 45, 50]  # 2.5 m/s²
    ev = run(t)
    assert list(ev.kind.unique()) == [KIND_HARSH_ACCELERATION] or KIND_HARSH_ACCELERATION in set(ev.kind)
    acc = ev[ev.kind == KIND_HARSH_ACCELERATION].iloc[0]
    assert acc.peak > 2.24


def test_cornering_through_north_is_unwrapped():
    t = synthetic()
    t["speed"][:] = 60.0
    t["gps_speed"][:] = 60.0
    # turn right at 20 °/s through 360/0: 60 km/h × 0.349 rad/s = 5.8 m/s²
    t["course"][:] = 300.0
    t["course"][300:306] = [(300 + 20 * k) % 360 for k in range(1, 7)]
    t["course"][306:] = 60.0
    ev = run(t)
    corners = ev[ev.kind == KIND_HARSH_CORNERING]
    assert len(corners) == 1 and corners.iloc[0].peak == pytest.approx(60 / 3.6 * math.radians(20), rel=0.05)
    t["speed"][:] = 10.0  # too slow: course is noise there
    t["gps_speed"][:] = 10.0
    assert (run(t).kind == KIND_HARSH_CORNERING).sum() == 0


def test_speeding_with_a_limit_layer_and_with_absolute_bands():
    t = synthetic(400)
    t["speed"][100:200] = 70.0  # 70 on a 50 road: > 20 % over for 99 s
    t["gps_speed"][:] = t["speed"]
    layer = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"maxspeed": 50},
         "geometry": {"type": "LineString", "coordinates": [[-78.5001, -0.21], [-78.5001, -0.10]]}},
        {"type": "Feature", "properties": {"maxspeed": "100"},  # 200 m west: too far to match
         "geometry": {"type": "LineString", "coordinates": [[-78.5018, -0.21], [-78.5018, -0.10]]}}]}
    limits = match_speed_limits(t["lat"], t["lon"], layer, 25.0)
    assert np.all(limits == 50.0)
    ev = run(t, limits=layer)
    sp = ev[ev.kind == KIND_SPEEDING]
    assert len(sp) == 1 and sp.iloc[0].source == "limit"
    assert sp.iloc[0].peak == pytest.approx(70 / 3.6) and sp.iloc[0].severity == 2  # 40 % over
    assert (run(t).kind == KIND_SPEEDING).sum() == 0  # no layer: 70 km/h is under the 128.75 band
    t["speed"][100:200] = 150.0
    sp = run(t)
    sp = sp[sp.kind == KIND_SPEEDING]
    assert len(sp) == 1 and sp.iloc[0].source == "band" and sp.iloc[0].severity == 2


def test_over_revving_and_idling():
    t = synthetic(1000)
    t["rpm"][100:110] = 4600.0
    t["speed"][400:800] = 0.0
    t["rpm"][400:800] = 800.0
    t["gps_speed"][:] = t["speed"]
    ev = run(t)
    rev = ev[ev.kind == KIND_OVER_REVVING]
    assert len(rev) == 1 and rev.iloc[0].severity == 2 and rev.iloc[0].peak == pytest.approx(4600 / 60)
    idle = ev[ev.kind == KIND_IDLING]
    assert len(idle) == 1 and idle.iloc[0].duration_s == pytest.approx(399.0)


# ----------------------------------------------------------------------------- scores


def trip_row(**kw) -> dict:
    row = {"trip_id": 1, "start_idx": 0, "end_idx": 10_000, "start_ms": 0, "end_ms": 3_600_000,
           "distance_m": 50_000.0, "duration_s": 3600.0, "driving_s": 3300.0, "idle_s": 300.0,
           "max_speed_kmh": 90.0, "avg_speed_kmh": 50.0, "fuel_l": 4.0, "night_share": 0.0,
           "urban_share": 1.0, "rural_share": 0.0, "motorway_share": 0.0}
    row.update(kw)
    return row


def events_frame(kinds: list[str], positions: list[int] | None = None, durations: list[float] | None = None
                 ) -> pd.DataFrame:
    n = len(kinds)
    ev = pd.DataFrame({"kind": kinds, "start_idx": positions or list(range(0, 10 * n, 10)),
                       "end_idx": positions or list(range(2, 10 * n + 2, 10)), "ts_ms": 0, "lat": 0.0, "lon": 0.0,
                       "severity": 1, "peak": -3.5, "peak_unit": "m/s²", "duration_s": durations or [3.0] * n,
                       "reference": -3.13, "source": "obd"})
    ev.index.name = "event_id"
    return ev


KINDS = [KIND_HARSH_BRAKING, KIND_HARSH_ACCELERATION, KIND_HARSH_CORNERING, KIND_SPEEDING]


@HYP
@given(st.lists(st.sampled_from(KINDS), max_size=30), st.sampled_from(KINDS), st.floats(1000, 500_000),
       st.floats(0, 1))
def test_score_bounded_monotone_and_weighted_sum(kinds, extra, distance_m, night):
    row = trip_row(distance_m=distance_m, night_share=night)
    before = trip_score(row, events_frame(kinds))
    after = trip_score(row, events_frame([*kinds, extra]))
    for s in (before, after):
        total = sum(c.contribution for c in s.components)
        assert sum(c.weight for c in s.components) == pytest.approx(1.0)
        if s.eligible:
            assert 0.0 <= s.score <= 100.0
            assert s.score == pytest.approx(total)
        for c in s.components:
            assert 0.0 <= c.sub_score <= 100.0
    if before.eligible:
        assert after.score <= before.score
        assert after.component({KIND_HARSH_BRAKING: BRAKING, KIND_HARSH_ACCELERATION: ACCELERATION,
                                KIND_HARSH_CORNERING: CORNERING, KIND_SPEEDING: SPEEDING}[extra]).value \
            == before.component({KIND_HARSH_BRAKING: BRAKING, KIND_HARSH_ACCELERATION: ACCELERATION,
                                 KIND_HARSH_CORNERING: CORNERING, KIND_SPEEDING: SPEEDING}[extra]).value + (
            1 if extra != KIND_SPEEDING else 3.0)


def test_min_exposure_rule_and_pooling():
    p = ScoreParams()
    short = trip_row(trip_id=2, start_idx=20_000, end_idx=20_500, distance_m=3000.0, duration_s=400.0,
                     driving_s=400.0)
    ev = events_frame([KIND_HARSH_BRAKING], positions=[20_100])
    s = trip_score(short, ev, p)
    assert s.score is None and not s.eligible and "minimum exposure" in s.reason
    assert s.component(BRAKING).normalised == pytest.approx(100 / 3)  # still explained
    trips = pd.DataFrame([trip_row(), short])
    per = period_score(trips, ev, p, period_days=30)
    assert per.eligible and per.component(BRAKING).value == 1  # the short trip's brake is pooled
    assert per.component(BRAKING).normalised == pytest.approx(100 / 53)
    assert per.distance_m == 53_000
    assert period_score(pd.DataFrame([short]), ev, p, period_days=30).score is None


def test_explanation_references_the_right_events_and_serialises():
    ev = events_frame([KIND_HARSH_BRAKING, KIND_HARSH_CORNERING, KIND_HARSH_BRAKING, KIND_SPEEDING],
                      positions=[5, 50, 500, 20_000], durations=[2.0, 3.0, 2.0, 120.0])
    s = trip_score(trip_row(), ev)  # trip covers samples 0..10 000: the speeding event (20 000) is outside
    assert s.component(BRAKING).event_ids == [0, 2]
    assert s.component(CORNERING).event_ids == [1]
    assert s.component(SPEEDING).event_ids == []
    assert s.component(MILEAGE).weight == 0.0 and not s.component(MILEAGE).applied
    assert s.component(SPEEDING).weight == pytest.approx(50 / 90)
    d = json.loads(json.dumps(s.as_dict(), allow_nan=False))
    assert d["score"] == pytest.approx(s.score) and d["weights"][SPEEDING] == 50.0
    ev2 = ev.assign(trip_id=[1, 1, 9, 1])  # an explicit trip_id wins over index ranges
    assert trip_score(trip_row(), ev2).component(BRAKING).event_ids == [0]
    assert trip_score(trip_row(), ev2).component(SPEEDING).event_ids == [3]


def test_mileage_exposure_and_eco_score():
    trips = pd.DataFrame([trip_row(distance_m=100_000.0)])
    low = period_score(trips, events_frame([]), period_days=365.25)
    high = period_score(trips.assign(distance_m=50_000_000.0), events_frame([]), period_days=365.25)
    assert low.component(MILEAGE).sub_score == 100.0 and high.component(MILEAGE).sub_score == 0.0
    assert high.score < low.score
    n = 3601
    ts = np.arange(n, dtype=np.int64) * 1000
    rpm = np.full(n, 2000.0)
    rpm[:360] = 3500.0  # 10 % above 3000
    eco = eco_score(trip_row(end_idx=n - 1), ts, rpm, np.full(n, 30.0))
    assert eco.component(HIGH_RPM).normalised == pytest.approx(0.1, abs=1e-3)
    assert eco.component(FUEL).normalised == pytest.approx(1.0)  # 8 L/100 km = the reference
    assert eco.score == pytest.approx(sum(c.contribution for c in eco.components))
    assert 0 <= eco.score <= 100
    no_fuel = eco_score(trip_row(end_idx=n - 1, fuel_l=math.nan), ts, rpm, None)
    assert not no_fuel.component(FUEL).applied and no_fuel.component(HIGH_RPM).weight == pytest.approx(0.5)


# ----------------------------------------------------------------------------- real data


def test_polidriving_session_smoke(shared_data: Path):
    from device_agent.replay import derive_gps_motion, read_polidriving

    path = shared_data / "polidriving" / "andres" / "20231226_150915" / "20231226_150915_col.csv.gz"
    if not path.exists():
        pytest.skip("POLIDriving session absent")
    rows = list(read_polidriving(path))
    derive_gps_motion(rows)

    def col(name: str) -> np.ndarray:
        return np.array([r.values.get(name, math.nan) for r in rows])

    ts = np.array([r.ts_ms for r in rows], dtype=np.int64)
    speed = col("speed")
    ev = detect_events(ts, speed, col("rpm"), col("latitude"), col("longitude"), col("course"), col("gps_speed"))
    assert set(ev.kind) <= {KIND_HARSH_ACCELERATION, KIND_HARSH_BRAKING, KIND_HARSH_CORNERING, KIND_IDLING}
    assert ev[ev.kind == KIND_HARSH_BRAKING].peak.between(-9.81, -3.13).all()
    assert ev.lat.between(-0.5, 0.1).all() and ev.lon.between(-78.7, -78.3).all()
    logger_km = [r.extras["logger_distance_km"] for r in rows if "logger_distance_km" in r.extras]
    distance_m = (max(logger_km) - min(logger_km)) * 1000
    per_100 = len(ev[ev.kind.isin([KIND_HARSH_ACCELERATION, KIND_HARSH_BRAKING, KIND_HARSH_CORNERING])]) \
        / distance_m * 100_000
    assert per_100 < 15  # harsh events stay the tail (all 7 sessions together: 4.4 per 100 km)
    dts = np.diff(ts) / 1000
    duration = float(ts[-1] - ts[0]) / 1000
    idle_s = float(np.sum(np.where((speed[:-1] == 0) & (col("rpm")[:-1] > 300), np.minimum(dts, 10), 0)))
    row = trip_row(end_idx=len(ts) - 1, start_ms=int(ts[0]), end_ms=int(ts[-1]), distance_m=distance_m,
                   duration_s=duration, driving_s=duration - idle_s, idle_s=idle_s, fuel_l=math.nan)
    s = trip_score(row, ev)
    assert s.eligible and 40 <= s.score <= 100
    assert s.component(BRAKING).value == (ev.kind == KIND_HARSH_BRAKING).sum()
    per = period_score(pd.DataFrame([row]), ev, period_days=7)
    assert per.eligible and 0 <= per.score <= 100
    eco = eco_score(row, ts, col("rpm"), col("throttle_pos"))
    assert 0 <= eco.score <= 100 and not eco.component(FUEL).applied
    print(f"\nPOLIDriving andres 20231226: {distance_m / 1000:.1f} km, events {ev.kind.value_counts().to_dict()}, "
          f"trip score {s.score:.1f} {[(c.name, round(c.sub_score, 1)) for c in s.components]}, "
          f"period (7 d) {per.score:.1f}, eco {eco.score:.1f} "
          f"{[(c.name, round(c.normalised, 3)) for c in eco.components if c.applied]}")
