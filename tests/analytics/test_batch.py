"""The fleet-wide batch path (analytics.batch) against the per-vehicle path it replaces: identical trips, events,
scores and explanations on synthetic fleets, and its own kernels against their references (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.batch import (
    BATCH_SIGNALS,
    analyse_fleet,
    events_frame,
    pairwise_sum,
    pairwise_sum_reference,
    period_explanation,
    period_scores,
    simplified_tracks,
    trip_eco_explanation,
    trip_safety_explanation,
    trips_frame,
)
from analytics.events import detect_events
from analytics.geo import haversine_m, haversine_m_reference, py_mod, py_mod_reference, within_m, within_m_reference
from analytics.pipeline import SIGNALS, _simplified_track, analyse_vehicle
from analytics.scores import period_score
from vinsight.fleet_simulator import FleetSimulator

HYP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
START_MS = 1_767_225_600_000
FLEET_SIGNALS = ("speed", "rpm", "latitude", "longitude", "gps_speed", "course", "hdop", "satellites", "fix_mode",
                 "fuel_rate", "maf", "throttle_pos", "battery_voltage", "coolant_temp")


def _faults(a: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """Receiver faults as in bench/analytics_kernels.py: missing OBD rows, GNSS outages, weak fixes, jumps."""
    n = len(a["ts_ms"])
    miss = rng.random(n) < 0.01
    for name in ("speed", "rpm", "fuel_rate", "maf", "throttle_pos"):
        a[name][miss] = np.nan
    for _ in range(max(1, n // 3000)):
        k = int(rng.integers(0, n))
        for name in ("latitude", "longitude", "gps_speed", "course", "hdop", "satellites", "fix_mode"):
            a[name][k:k + int(rng.integers(10, 61))] = np.nan
    weak = rng.random(n) < 0.005
    a["hdop"][weak] = 8.0
    for k in rng.integers(0, max(1, n - 2), max(1, n // 600)):
        a["latitude"][k:k + 2] = np.nanmedian(a["latitude"]) + 0.018


@pytest.fixture(scope="module")
def fleet() -> list[dict[str, np.ndarray]]:
    """Eight simulated vehicles over half a day with faults, plus variants the fall-backs must handle: one without
    OBD speed (GPS thresholds), one without GPS, one without any sample."""
    sim = FleetSimulator(8, 1.0, 60, seed=7, signals=FLEET_SIGNALS)
    tracks = []
    for i in range(8):
        drive = sim.simulate_vehicle(i, 12 * 3600, START_MS)
        a = {"ts_ms": drive.ts_ms.copy()}
        for name in FLEET_SIGNALS:
            a[name] = np.array(drive.columns[name], dtype=np.float64)
        if len(a["ts_ms"]) > 20:
            _faults(a, np.random.default_rng(i))
        tracks.append(a)
    no_obd = {k: v.copy() for k, v in tracks[1].items()}
    no_obd["speed"][:] = np.nan
    no_gps = {k: v.copy() for k, v in tracks[2].items()}
    for name in ("latitude", "longitude", "gps_speed", "course"):
        no_gps[name][:] = np.nan
    empty = {k: v[:0].copy() for k, v in tracks[0].items()}
    return [*tracks, no_obd, empty, no_gps]


def _concat(tracks: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    bounds = np.concatenate(([0], np.cumsum([len(a["ts_ms"]) for a in tracks]))).astype(np.int64)
    return (np.concatenate([a["ts_ms"] for a in tracks]), bounds,
            {name: np.concatenate([a[name] for a in tracks]) for name in FLEET_SIGNALS})


def _per_vehicle(a: dict[str, np.ndarray]):
    values = np.full((len(a["ts_ms"]), len(SIGNALS)), np.nan)
    for k, name in enumerate(SIGNALS):
        if name in a:
            values[:, k] = a[name]
    return analyse_vehicle(a["ts_ms"], values)


def test_batch_equals_the_per_vehicle_path(fleet):
    """Every table and every explanation, bit for bit, vehicle by vehicle."""
    ts, bounds, columns = _concat(fleet)
    fa = analyse_fleet(ts, bounds, columns)
    assert fa.vehicles == len(fleet)
    assert len(fa.trips) >= 10 and len(fa.events) >= 20, "the synthetic fleet must exercise the stages"
    for v, a in enumerate(fleet):
        one = _per_vehicle(a)
        pd.testing.assert_frame_equal(trips_frame(fa, v), one.trips, check_exact=True)
        pd.testing.assert_frame_equal(events_frame(fa, v), one.events, check_exact=True)
        for t in range(len(one.trips)):
            assert trip_safety_explanation(fa, v, t) == one.trip_scores[t].as_dict()
            assert trip_eco_explanation(fa, v, t) == one.eco_scores[t].as_dict()
        trips = one.trips.rename(columns={"start_ts_ms": "start_ms", "end_ts_ms": "end_ms"})
        assert period_explanation(fa, v) == period_score(trips, one.events.drop(columns=["trip_index"])).as_dict()
        lat, lon = columns["latitude"][bounds[v]:bounds[v + 1]], columns["longitude"][bounds[v]:bounds[v + 1]]
        assert fa.usable[bounds[v]:bounds[v + 1]].sum() <= np.isfinite(lat).sum()
        del lon


def test_threads_give_the_same_result(fleet):
    ts, bounds, columns = _concat(fleet)
    one, two = analyse_fleet(ts, bounds, columns), analyse_fleet(ts, bounds, columns, threads=2)
    for name in ("usable", "trips", "trip_bounds", "events", "event_bounds", "trip_scores", "period_scores",
                 "eco_scores"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name))


def test_missing_columns_are_absent_signals(fleet):
    """A column left out is the same as a column of NaN (what the per-vehicle path does with None)."""
    ts, bounds, columns = _concat(fleet[:3])
    partial = {k: v for k, v in columns.items() if k not in ("fuel_rate", "maf", "throttle_pos")}
    full = {**partial, **{k: np.full(len(ts), np.nan) for k in ("fuel_rate", "maf", "throttle_pos")}}
    a, b = analyse_fleet(ts, bounds, partial), analyse_fleet(ts, bounds, full)
    np.testing.assert_array_equal(a.trips, b.trips)
    np.testing.assert_array_equal(a.eco_scores, b.eco_scores)
    assert set(BATCH_SIGNALS) >= {"odometer", "throttle_pos"}


def test_speed_limit_layer_matches_the_per_vehicle_path(fleet):
    """With a limit layer the batch path matches fixes per vehicle as detect_events does."""
    a = fleet[0]
    ok = np.isfinite(a["latitude"]) & np.isfinite(a["longitude"])
    lat, lon = a["latitude"][ok], a["longitude"][ok]
    road = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"maxspeed": 30},
        "geometry": {"type": "LineString", "coordinates": np.column_stack([lon, lat])[::20].tolist()}}]}
    ts, bounds, columns = _concat([a])
    fa = analyse_fleet(ts, bounds, columns, speed_limits=road)
    direct = detect_events(a["ts_ms"], a["speed"], a["rpm"], a["latitude"], a["longitude"], a["course"],
                           a["gps_speed"], speed_limits=road)
    assert (direct["source"] == "limit").any()
    pd.testing.assert_frame_equal(events_frame(fa, 0).drop(columns=["trip_index"]), direct, check_exact=True)


def test_tracks_match_the_per_trip_simplification(fleet):
    ts, bounds, columns = _concat(fleet)
    fa = analyse_fleet(ts, bounds, columns)
    tracks = simplified_tracks(fa, columns["latitude"], columns["longitude"])
    assert len(tracks) == len(fa.trips)
    for v in range(fa.vehicles):
        lat = columns["latitude"][bounds[v]:bounds[v + 1]]
        lon = columns["longitude"][bounds[v]:bounds[v + 1]]
        for t in range(fa.trip_bounds[v], fa.trip_bounds[v + 1]):
            s, e = int(fa.trips[t, 0]), int(fa.trips[t, 1])
            assert tracks[t] == _simplified_track(lat, lon, s, e)


def test_period_scores_of_stored_trips_equal_period_score(fleet):
    """The day-score path: groups of stored trips (with database ids) scored in one call."""
    frames, event_frames, groups = [], [], [0]
    next_trip, next_event = 1000, 50
    for a in fleet[:6]:
        one = _per_vehicle(a)
        trips = one.trips.rename(columns={"start_ts_ms": "start_ms", "end_ts_ms": "end_ms"})
        trips["trip_id"] = np.arange(next_trip, next_trip + len(trips))
        events = one.events[one.events["trip_index"] >= 0].copy()
        events["trip_id"] = trips["trip_id"].to_numpy()[events["trip_index"].to_numpy()]
        events["event_id"] = np.arange(next_event, next_event + len(events))
        next_trip += len(trips) + 3
        next_event += len(events) + 5
        frames.append(trips)
        event_frames.append(events)
        groups.append(groups[-1] + len(trips))
    all_trips = pd.concat(frames, ignore_index=True)
    all_events = pd.concat(event_frames, ignore_index=True)
    result = period_scores(all_trips, all_events[["event_id", "trip_id", "kind", "duration_s"]], np.array(groups),
                           period_days=1.0)
    for g, (trips, events) in enumerate(zip(frames, event_frames, strict=True)):
        expected = period_score(trips, events.set_index("event_id"), period_days=1.0).as_dict()
        assert result.explanations[g] == expected
        score = expected["score"]
        assert (math.isnan(result.scores[g]) and score is None) or result.scores[g] == score


# ----------------------------------------------------------------------------------------------------------------
# Kernels against references


@HYP
@given(st.lists(st.floats(-1e9, 1e9, allow_nan=False), max_size=600))
def test_pairwise_sum_is_numpys_sum(values):
    a = np.array(values, dtype=np.float64)
    assert pairwise_sum(a) == pairwise_sum_reference(values) or (len(values) == 0 and pairwise_sum(a) == 0.0)


@HYP
@given(st.floats(-89.9, 89.9), st.floats(-179.9, 179.9), st.floats(-0.01, 0.01), st.floats(-0.01, 0.01),
       st.floats(0, 3000), st.floats(-1e-6, 1e-6))
def test_within_m_answers_as_the_haversine(lat, lon, dlat, dlon, limit, nudge):
    lat2, lon2 = max(-90.0, min(90.0, lat + dlat)), lon + dlon
    d = haversine_m_reference(lat, lon, lat2, lon2)
    if abs(d - limit) > 1e-9 * max(d, 1.0):  # away from the last-bit ties of numba's and CPython's libm
        assert within_m(lat, lon, lat2, lon2, limit) == within_m_reference(lat, lon, lat2, lon2, limit)
    # Limits right at the distance: the bounds must never decide; the kernel's own haversine does.
    exact = haversine_m(lat, lon, lat2, lon2) * (1 + nudge)
    assert within_m(lat, lon, lat2, lon2, exact) == (haversine_m(lat, lon, lat2, lon2) <= exact)


def test_within_m_with_missing_coordinates():
    """NaN coordinates get the haversine's own answer (it clamps NaN to half the globe)."""
    for args in ((math.nan, 0.0, 1.0, 1.0, 1e9), (math.nan, 0.0, 1.0, 1.0, 10.0), (1.0, 1.0, 1.0, math.nan, 5.0)):
        assert within_m(*args) == within_m_reference(*args)
    assert within_m(10.0, 10.0, 10.0, 10.0, 0.0)


@st.composite
def small_fleets(draw):
    """Random short tracks (1 Hz with gaps, NaN holes, stop-and-go speeds) of 1–4 vehicles."""
    vehicles = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 120))
        steps = draw(st.lists(st.sampled_from([1000, 1000, 1000, 2000, 5000, 400_000]), min_size=n, max_size=n))
        ts = START_MS + np.cumsum(np.array(steps, dtype=np.int64))
        speed = np.array(draw(st.lists(st.one_of(st.just(math.nan), st.floats(0, 140)), min_size=n, max_size=n)))
        rpm = np.array(draw(st.lists(st.one_of(st.just(math.nan), st.floats(0, 5000)), min_size=n, max_size=n)))
        course = np.array(draw(st.lists(st.floats(0, 359), min_size=n, max_size=n)))
        step_m = np.nan_to_num(speed, nan=30.0) / 3.6
        lat = 45.0 + np.cumsum(step_m * np.cos(np.radians(course))) / 111_000.0
        lon = 7.0 + np.cumsum(step_m * np.sin(np.radians(course))) / 78_000.0
        holes = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
        lat[holes & (np.arange(n) % 3 == 0)] = np.nan
        vehicles.append({"ts_ms": ts, "speed": speed, "rpm": rpm, "latitude": lat, "longitude": lon,
                         "gps_speed": speed * 1.02, "course": course})
    return vehicles


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_fleets())
def test_fleet_kernel_equals_the_per_vehicle_path_on_random_tracks(vehicles):
    names = ("speed", "rpm", "latitude", "longitude", "gps_speed", "course")
    bounds = np.concatenate(([0], np.cumsum([len(a["ts_ms"]) for a in vehicles]))).astype(np.int64)
    ts = np.concatenate([a["ts_ms"] for a in vehicles])
    fa = analyse_fleet(ts, bounds, {k: np.concatenate([a[k] for a in vehicles]) for k in names})
    for v, a in enumerate(vehicles):
        one = _per_vehicle(a)
        pd.testing.assert_frame_equal(trips_frame(fa, v), one.trips, check_exact=True)
        pd.testing.assert_frame_equal(events_frame(fa, v), one.events, check_exact=True)
        for t in range(len(one.trips)):
            assert trip_safety_explanation(fa, v, t) == one.trip_scores[t].as_dict()


def test_battery_health_fleet_equals_battery_health(fleet):
    """Verdicts and daily rows per vehicle as battery_health computes them, including multi-day tracks."""
    from analytics.health import HealthParams, battery_health, battery_health_fleet

    tracks = [a for a in fleet if len(a["ts_ms"])]
    # Spread one vehicle over several days with parked (engine-off) readings in between, so resting voltage,
    # several days and the trend code all run.
    a = tracks[0]
    days = []
    for d in range(6):
        part = {k: v.copy() for k, v in a.items()}
        part["ts_ms"] = part["ts_ms"] + d * 86_400_000
        part["battery_voltage"] = part["battery_voltage"] - 0.05 * d
        parked = np.arange(part["ts_ms"][-1] + 60_000, part["ts_ms"][-1] + 4 * 3_600_000, 60_000)
        rest = {k: np.full(len(parked), np.nan) for k in a if k != "ts_ms"}
        rest["rpm"][:] = 0.0
        rest["speed"][:] = 0.0
        rest["battery_voltage"][:] = 12.5 - 0.06 * d
        days.append(part)
        days.append({"ts_ms": parked, **rest})
    multi = {k: np.concatenate([p[k] for p in days]) for k in a}
    tracks = [*tracks, multi]
    ts, bounds, columns = _concat(tracks)
    params = HealthParams()
    fleet_result = battery_health_fleet(ts, bounds, columns["rpm"], np.nan_to_num(columns["speed"]),
                                        columns["battery_voltage"], params)
    for v, t in enumerate(tracks):
        one = battery_health(t["ts_ms"], t["rpm"], np.nan_to_num(t["speed"]), t["battery_voltage"], params)
        got = fleet_result[v]
        pd.testing.assert_frame_equal(got.daily, one.daily, check_exact=True)
        for name in ("weak", "reasons", "level", "resting_v", "cranking_min_v", "resting_slope_v_per_day",
                     "cranking_slope_v_per_day", "charging_v"):
            assert getattr(got, name) == getattr(one, name), name
    assert fleet_result[-1].resting_slope_v_per_day is not None and fleet_result[-1].weak


@HYP
@given(st.one_of(st.floats(-1e12, 1e12), st.floats(-1e-6, 1e-6),
                 st.floats(-800.0, 800.0),  # the fast paths (|x| < w: a course difference)
                 st.sampled_from([-0.0, 0.0, -360.0, 360.0, 720.0, 86_400.0, -1e-300, 1e300, -1e-14, -5e-324])),
       st.sampled_from([360.0, 86_400.0, 1.0, 0.1]))
def test_py_mod_is_pythons_modulo(x, w):
    got, want = py_mod(x, w), py_mod_reference(x, w)
    assert got == want and math.copysign(1.0, got) == math.copysign(1.0, want)
