"""GPS cleaning, engine sessions, movement trips and trip metrics: kernels vs references, rules, real data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.cleaning import (
    CleaningParams,
    clean_gps_fixes,
    gap_mask,
    gap_mask_reference,
    gps_fix_mask_kernel,
    gps_fix_mask_reference,
    implied_speed_kmh,
    implied_speed_kmh_reference,
)
from analytics.trips import (
    DISTANCE_SOURCES,
    TRIP_COLUMNS,
    TripParams,
    detect_trips,
    engine_sessions,
    engine_sessions_kernel,
    engine_sessions_reference,
    local_offsets_s,
    movement_trips_kernel,
    movement_trips_reference,
    trip_metrics,
    trip_metrics_kernel,
    trip_metrics_reference,
    trip_proof_table,
)

NAN = math.nan
LAT0, LON0 = -0.2, -78.5  # Quito
M_PER_DEG = 111_195.0  # metres per degree of latitude on the mean sphere
HYP = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------------------
# Random tracks for the property tests


@st.composite
def tracks(draw: st.DrawFn, max_len: int = 40) -> dict[str, list]:
    """A time-sorted track with duplicates, gaps, missing values, jumps, stops and noise."""
    n = draw(st.integers(0, max_len))

    def column(values: st.SearchStrategy) -> list:
        return draw(st.lists(values, min_size=n, max_size=n))

    steps = column(st.sampled_from([0, 1000, 1000, 1000, 2000, 20_000, 200_000, 400_000, 4_000_000]))
    kinds = column(st.sampled_from(["still", "drive", "drive", "jump", "nan", "same"]))
    moves = column(st.sampled_from([-35.0, -12.5, -1.5, 0.0, 0.7, 3.0, 14.0, 41.0]))
    ts, t = [], 1_700_000_000_000
    for s in steps:
        t += s
        ts.append(t)
    lat, lon = [], []
    y = x = 0.0  # metres north/east of the origin
    for kind, move in zip(kinds, moves, strict=True):
        if kind == "drive":
            y += move
            x += move / 2
        elif kind == "still":
            y += move / 20
        if kind == "nan":
            lat.append(NAN)
            lon.append(NAN)
        elif kind == "jump":
            lat.append(LAT0 + (y + move * 1000) / M_PER_DEG)
            lon.append(LON0 + x / M_PER_DEG)
        elif kind == "same" and lat:
            lat.append(lat[-1])
            lon.append(lon[-1])
        else:
            lat.append(LAT0 + y / M_PER_DEG)
            lon.append(LON0 + x / M_PER_DEG)

    def maybe(*values: float) -> list[float]:
        return column(st.sampled_from([NAN, *values]))

    return {
        "ts": ts, "lat": lat, "lon": lon,
        "hdop": maybe(0.8, 1.5, 6.0), "sats": maybe(2.0, 3.0, 4.0, 9.0), "fix": maybe(1.0, 2.0, 3.0),
        "speed": maybe(0.0, 0.0, 2.0, 5.0, 30.0, 60.0, 95.0, 120.0), "rpm": maybe(0.0, 800.0, 2500.0),
        "odo": maybe(1000.0, 1000.4, 1003.25, 1007.0), "fuel_rate": maybe(0.0, 0.8, 7.5, 19.0),
        "maf": maybe(0.0, 2.5, 18.0, 55.0), "present": column(st.booleans()),
    }


def _a(values: list, dtype: type = np.float64) -> np.ndarray:
    return np.array(values, dtype=dtype)


def _mask(tr: dict, params: CleaningParams) -> np.ndarray:
    return gps_fix_mask_kernel(
        _a(tr["ts"], np.int64), _a(tr["lat"]), _a(tr["lon"]), _a(tr["hdop"]), _a(tr["sats"]), _a(tr["fix"]),
        params.max_speed_mps, params.max_hdop, params.min_satellites, params.min_fix_mode, params.reanchor_after,
        params.reanchor_gap_s, params.drop_repeated_positions)


# --------------------------------------------------------------------------------------------
# Kernel == reference


@HYP
@given(tracks(), st.booleans(), st.integers(1, 6))
def test_gps_fix_mask_matches_reference(tr: dict, drop_repeats: bool, reanchor_after: int) -> None:
    params = CleaningParams(drop_repeated_positions=drop_repeats, reanchor_after=reanchor_after)
    expected = gps_fix_mask_reference(tr["ts"], tr["lat"], tr["lon"], tr["hdop"], tr["sats"], tr["fix"], params)
    assert _mask(tr, params).tolist() == expected


@HYP
@given(tracks(), st.sampled_from([1.0, 30.0, 3600.0]))
def test_gap_mask_and_implied_speed_match_reference(tr: dict, max_gap_s: float) -> None:
    ts = _a(tr["ts"], np.int64)
    assert gap_mask(ts, max_gap_s).tolist() == gap_mask_reference(tr["ts"], max_gap_s)
    usable = _mask(tr, CleaningParams())
    got = implied_speed_kmh(ts, _a(tr["lat"]), _a(tr["lon"]), usable, max_gap_s)
    want = implied_speed_kmh_reference(tr["ts"], tr["lat"], tr["lon"], usable.tolist(), max_gap_s)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@HYP
@given(tracks(), st.sampled_from([0.0, 10.0]), st.sampled_from([5.0, 180.0]))
def test_engine_sessions_match_reference(tr: dict, min_s: float, off_gap_s: float) -> None:
    s, e = engine_sessions_kernel(_a(tr["ts"], np.int64), _a(tr["rpm"]), _a(tr["present"], np.bool_),
                                  off_gap_s, min_s)
    assert list(zip(s.tolist(), e.tolist(), strict=True)) == engine_sessions_reference(
        tr["ts"], tr["rpm"], tr["present"], off_gap_s, min_s)


@HYP
@given(tracks(), st.sampled_from([10.0, 180.0]), st.sampled_from([50.0, 200.0]))
def test_movement_trips_match_reference(tr: dict, stop_s: float, radius_m: float) -> None:
    params = TripParams(stop_duration_s=stop_s, stop_radius_m=radius_m)
    usable = _mask(tr, CleaningParams())
    s, e = movement_trips_kernel(_a(tr["ts"], np.int64), _a(tr["lat"]), _a(tr["lon"]), usable, _a(tr["speed"]),
                                 params.moving_speed_kmh, params.stop_radius_m, params.stop_duration_s,
                                 params.max_gap_s)
    got = list(zip(s.tolist(), e.tolist(), strict=True))
    assert got == movement_trips_reference(tr["ts"], tr["lat"], tr["lon"], usable.tolist(), tr["speed"], params)
    for a, b in got:
        assert a <= b


@HYP
@given(tracks(), st.sampled_from([0.0, -5.0, 5.5]), st.sampled_from([(22.0, 5.0), (1.0, 4.0)]),
       st.permutations(list(DISTANCE_SOURCES)))
def test_trip_metrics_match_reference(tr: dict, offset_h: float, night: tuple[float, float],
                                      order: list[str]) -> None:
    params = TripParams(utc_offset_h=offset_h, night_start_h=night[0], night_end_h=night[1], motorway_min_s=2.0,
                        distance_source_order=tuple(order))
    n = len(tr["ts"])
    usable = _mask(tr, CleaningParams())
    trips = [(0, n - 1)] if n else []
    if n > 4:
        trips += [(1, n // 2), (n // 2, n - 2), (3, 3)]
    ts = _a(tr["ts"], np.int64)
    offsets = local_offsets_s(ts, params)
    got = trip_metrics_kernel(
        ts, _a([t[0] for t in trips], np.int64), _a([t[1] for t in trips], np.int64), _a(tr["lat"]),
        _a(tr["lon"]), usable, _a(tr["speed"]), _a(tr["rpm"]), _a(tr["odo"]), _a(tr["fuel_rate"]), _a(tr["maf"]),
        offsets, 70.0, params.max_hold_s, params.min_distance_coverage,
        _a([DISTANCE_SOURCES.index(o) for o in order], np.int64), night[0] * 3600, night[1] * 3600,
        params.urban_max_kmh, params.rural_max_kmh, params.motorway_min_s)
    want = trip_metrics_reference(tr["ts"], trips, tr["lat"], tr["lon"], usable.tolist(), tr["speed"], tr["rpm"],
                                  tr["odo"], tr["fuel_rate"], tr["maf"], offsets.tolist(), params, 70.0)
    assert got.shape == (len(trips), len(TRIP_COLUMNS))
    for row, ref in zip(got, want, strict=True):
        np.testing.assert_allclose(row, [ref[c] for c in TRIP_COLUMNS], rtol=1e-9, atol=1e-6, equal_nan=True)
        if not math.isnan(ref["urban_share"]):
            assert ref["urban_share"] + ref["rural_share"] + ref["motorway_share"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# Cleaning rules


def _line(n: int, step_m: float = 15.0, dt_ms: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ts = 1_700_000_000_000 + np.arange(n, dtype=np.int64) * dt_ms
    return ts, LAT0 + np.arange(n) * step_m / M_PER_DEG, np.full(n, LON0)


def test_single_jump_is_rejected_and_does_not_poison_the_following_fixes() -> None:
    ts, lat, lon = _line(20)
    lat[7] += 0.2  # 22 km away for one second
    mask = clean_gps_fixes(ts, lat, lon)
    assert mask.tolist() == [i != 7 for i in range(20)]


def test_bad_first_fix_is_abandoned_after_consistent_fixes() -> None:
    ts, lat, lon = _line(20)
    lat[0] += 0.5
    mask = clean_gps_fixes(ts, lat, lon)
    params = CleaningParams()
    assert mask[0] and not mask[1 : params.reanchor_after].any()
    assert mask[params.reanchor_after :].all()


def test_quality_duplicates_and_null_island() -> None:
    ts, lat, lon = _line(8)
    ts[3] = ts[2]  # duplicate timestamp
    lat[4], lon[4] = 0.0, 0.0
    hdop = np.array([1, 9, 1, 1, 1, 1, 1, NAN])
    sats = np.array([8, 8, 8, 8, 8, 3, 8, NAN])
    fix = np.array([3, 3, 3, 3, 3, 3, 1, NAN])
    mask = clean_gps_fixes(ts, lat, lon, hdop, sats, fix)
    assert mask.tolist() == [True, False, True, False, False, False, False, True]


def test_stale_anchor_is_replaced_after_a_long_outage() -> None:
    ts = np.array([0, 1000, 1_000_000], dtype=np.int64) + 1_700_000_000_000
    lat = np.array([LAT0, LAT0, LAT0 + 1.0])  # 111 km in ~17 min: 111 m/s, but the anchor is stale
    assert clean_gps_fixes(ts, lat, np.full(3, LON0)).all()


# --------------------------------------------------------------------------------------------
# Segmentation and metrics on constructed drives


def _drive(plan: list[tuple[str, int]], start_ms: int = 1_700_000_000_000) -> dict[str, np.ndarray]:
    """1 Hz track from (kind, seconds) legs: 'drive' at 36 km/h north, 'park' engine off, 'idle' engine on,
    'gap' no samples."""
    ts, lat, speed, rpm = [], [], [], []
    t, y = start_ms, 0.0
    for kind, seconds in plan:
        if kind == "gap":
            t += seconds * 1000
            continue
        for _ in range(seconds):
            if kind == "drive":
                y += 10.0
            ts.append(t)
            lat.append(LAT0 + y / M_PER_DEG)
            speed.append(36.0 if kind == "drive" else 0.0)
            rpm.append(2000.0 if kind == "drive" else 800.0 if kind == "idle" else 0.0)
            t += 1000
    n = len(ts)
    return {"ts": _a(ts, np.int64), "lat": _a(lat), "lon": np.full(n, LON0), "speed": _a(speed), "rpm": _a(rpm)}


def test_short_stop_keeps_one_trip_long_stop_splits_and_idle_is_counted() -> None:
    d = _drive([("drive", 300), ("idle", 120), ("drive", 300), ("idle", 400), ("park", 600), ("drive", 200)])
    trips = detect_trips(d["ts"], lat=d["lat"], lon=d["lon"], speed=d["speed"], rpm=d["rpm"])
    assert len(trips) == 2
    first = trips.iloc[0]
    assert first["distance_source"] == "speed"
    assert first["distance_m"] == pytest.approx(6000, abs=20)
    assert first["distance_gps_m"] == pytest.approx(6000, abs=20)
    assert first["idle_s"] == pytest.approx(120, abs=2)
    assert first["driving_s"] == pytest.approx(600, abs=2)
    assert first["avg_speed_kmh"] == pytest.approx(36, rel=0.01)
    assert first["urban_share"] == pytest.approx(1.0)
    # The second trip (200 s, 2 km) is kept by distance; engine sessions: idle while parked included.
    sessions = engine_sessions(d["ts"], d["rpm"], params=TripParams())
    assert len(sessions) == 2
    assert sessions.iloc[0]["duration_s"] == pytest.approx(300 + 120 + 300 + 400 - 1)


def test_data_gap_over_an_hour_closes_the_trip_and_shorter_gap_does_not() -> None:
    d = _drive([("drive", 300), ("gap", 1800), ("drive", 300), ("gap", 4000), ("drive", 300)])
    trips = detect_trips(d["ts"], lat=d["lat"], lon=d["lon"], speed=d["speed"])
    assert trips["start_idx"].tolist() == [0, 600]
    assert trips.iloc[0]["duration_s"] == pytest.approx(599 + 1800)
    assert trips.iloc[0]["driving_s"] == pytest.approx(598)  # the gap itself is unknown time


def test_gps_only_and_speed_only_tracks_segment() -> None:
    d = _drive([("park", 100), ("drive", 300), ("park", 400), ("drive", 300)])
    gps_only = detect_trips(d["ts"], lat=d["lat"], lon=d["lon"])
    assert len(gps_only) == 2 and set(gps_only["distance_source"]) == {"gps"}
    speed_only = detect_trips(d["ts"], speed=d["speed"])
    assert len(speed_only) == 2 and speed_only["distance_m"].iloc[0] == pytest.approx(2990, abs=15)
    assert math.isnan(speed_only["start_lat"].iloc[0])


def test_gps_glitches_at_a_stop_do_not_make_trips() -> None:
    d = _drive([("drive", 300), ("park", 1200)])
    stale = d["lat"][0]
    lat = d["lat"].copy()
    lat[320::20] = stale + 60 / M_PER_DEG  # the receiver alternates with a stale fix 60 m away
    speed = d["speed"].copy()
    speed[310:] = NAN  # OBD gone after parking
    trips = detect_trips(d["ts"], lat=lat, lon=d["lon"], speed=speed)
    assert len(trips) == 1


def test_distance_source_order_fuel_night_and_motorway() -> None:
    n = 400
    ts = 1_700_000_000_000 + np.arange(n, dtype=np.int64) * 1000
    speed = np.where(np.arange(n) < 200, 100.0, 70.0)
    speed[150:160] = 40.0  # breaks the first run into 150 s + 40 s: only the first is sustained
    odo = np.full(n, NAN)
    odo[10], odo[390] = 5000.0, 5009.0
    starts, ends = np.array([0]), np.array([n - 1])
    df = trip_metrics(ts, starts, ends, speed=speed, odometer=odo, fuel_rate=np.full(n, 7.2),
                      maf=np.full(n, 10.0), params=TripParams(utc_offset_h=0.0))
    row = df.iloc[0]
    assert row["distance_source"] == "odometer" and row["distance_m"] == pytest.approx(9000)
    assert row["fuel_l"] == pytest.approx(7.2 * 399 / 3600)
    assert row["motorway_share"] == pytest.approx(150 / 399)
    assert row["rural_share"] == pytest.approx((40 + 199) / 399)
    assert row["urban_share"] == pytest.approx(10 / 399)
    maf_only = trip_metrics(ts, starts, ends, speed=speed, maf=np.full(n, 14.7 * 745 / 100))
    assert maf_only.iloc[0]["fuel_l"] == pytest.approx(399 / 100)
    # 1_700_000_000 s is 22:13:20 UTC: inside 22:00–05:00 at UTC, outside at UTC-5 (17:13).
    assert row["night_share"] == pytest.approx(1.0)
    day = trip_metrics(ts, starts, ends, speed=speed, params=TripParams(timezone="America/Guayaquil"))
    assert day.iloc[0]["night_share"] == 0.0


# --------------------------------------------------------------------------------------------
# Real data: POLIDriving


def test_polidriving_distances_match_the_logger(shared_data) -> None:
    table = trip_proof_table(shared_data / "polidriving").set_index("session")
    assert len(table) == 7
    assert (table["error_pct"].abs() < 2.0).all(), table
    jumpy = table.loc["alonso/20231229_151643"]
    assert jumpy["raw_gps_km"] > 1000  # the jump is in the data...
    assert jumpy["gps_km"] < 1.02 * jumpy["logger_km"]  # ...and not in our GPS distance
    assert (table["trips"] >= 1).all() and (table["engine_sessions"] >= 1).all()
