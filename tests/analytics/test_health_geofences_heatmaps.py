"""Vehicle health, geofences and fleet heatmaps: kernels against references, rules on synthetic traces.

Kernels (engine state, battery starts/rest, overheating, warm-up, geofence state machine, grid cell
keys, per-cell counts) are compared with their plain-Python references by hypothesis. The rules are
checked on synthetic traces whose answer is known, and on POLIDriving where the data allow it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.dtc_descriptions import Category, Severity, describe_dtc, describe_dtc_or_none, is_well_formed
from analytics.geofences import (
    GeofenceParams,
    dealer_visits,
    fence_visits_kernel,
    fence_visits_reference,
    geofence_events,
    geofence_visits,
    load_geofences,
)
from analytics.health import (
    HealthParams,
    battery_daily,
    battery_health,
    battery_kernel,
    battery_reference,
    coolant_health,
    engine_state_kernel,
    engine_state_reference,
    health_summary,
    open_episodes_with_descriptions,
    overheat_kernel,
    overheat_reference,
    service_due,
    warmup_kernel,
    warmup_reference,
)
from analytics.heatmaps import (
    Grid,
    HeatmapParams,
    cell_counts_kernel,
    cell_counts_reference,
    cell_keys_kernel,
    cell_keys_reference,
    fleet_heatmap,
)

HYP = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC
MIDNIGHT = 1_700_006_400_000  # 2023-11-15 00:00 UTC
M_PER_DEG = 111_195.08


def same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

@st.composite
def times(draw: st.DrawFn, n: int) -> list[int]:
    steps = draw(st.lists(st.sampled_from([0, 500, 1000, 1000, 1000, 2000, 5000, 40_000, 4_000_000]),
                          min_size=n, max_size=n))
    out, t = [], T0
    for s in steps:
        t += s
        out.append(t)
    return out


def maybe(values: st.SearchStrategy[float]) -> st.SearchStrategy[float]:
    return st.one_of(st.just(math.nan), values)


@st.composite
def engine_tracks(draw: st.DrawFn) -> tuple[list[int], list[float], list[float], list[float], list[float]]:
    n = draw(st.integers(0, 120))
    ts = draw(times(n))
    rpm = draw(st.lists(maybe(st.sampled_from([0.0, 0.0, 250.0, 800.0, 2500.0])), min_size=n, max_size=n))
    speed = draw(st.lists(maybe(st.sampled_from([0.0, 0.0, 0.0, 12.0])), min_size=n, max_size=n))
    volts = draw(st.lists(maybe(st.floats(8.0, 15.0)), min_size=n, max_size=n))
    coolant = draw(st.lists(maybe(st.sampled_from([20.0, 60.0, 69.9, 70.0, 90.0, 110.0, 110.5, 118.0])),
                            min_size=n, max_size=n))
    return ts, rpm, speed, volts, coolant


def arr(values: list[float]) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def tarr(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# DTC descriptions
# ---------------------------------------------------------------------------------------------

def test_every_well_formed_code_has_a_description() -> None:
    hexdigits = "0123456789ABCDEF"
    count = 0
    for letter in "PCBU":
        for digit in "0123":
            for a in hexdigits:
                for b in hexdigits:
                    for c in hexdigits:
                        info = describe_dtc(f"{letter}{digit}{a}{b}{c}")
                        assert info.description and info.system
                        assert isinstance(info.category, Category) and isinstance(info.severity, Severity)
                        count += 1
    assert count == 4 * 4 * 16 ** 3


@pytest.mark.parametrize(("code", "words"), [
    ("P0301", "cylinder 1 misfire"),
    ("P0312", "cylinder 12 misfire"),
    ("P0300", "random/multiple cylinder misfire"),
    ("P0171", "system too lean bank 1"),
    ("P0174", "system too lean bank 2"),
    ("P0420", "catalyst system efficiency below threshold bank 1"),
    ("P0430", "catalyst system efficiency below threshold bank 2"),
    ("P0442", "small leak"),
    ("P0455", "large leak"),
    ("P0456", "very small leak"),
    ("P0128", "thermostat"),
    ("P0217", "over-temperature"),
    ("P0562", "system voltage low"),
    ("P0700", "transmission control system"),
    ("U0100", "lost communication with engine/powertrain control module"),
    ("U0101", "lost communication with transmission control module"),
    ("U0121", "anti-lock brake"),
    ("U0140", "body control module"),
    ("U0155", "instrument panel cluster"),
    ("P0135", "heater circuit malfunction (bank 1 sensor 1)"),
    ("P0161", "heater circuit malfunction (bank 2 sensor 2)"),
    ("P0205", "injector circuit malfunction, cylinder 5"),
    ("P0356", "ignition coil f"),
    ("P3417", "cylinder 3 deactivation/intake valve"),
])
def test_known_codes(code: str, words: str) -> None:
    info = describe_dtc(code)
    assert info.known
    assert words in info.description.lower()


def test_fallback_names_the_family_and_categories_rank_leads() -> None:
    assert describe_dtc("P0399").description == "P03xx: ignition system or misfire"
    assert describe_dtc("P0399").known is False
    assert describe_dtc("P1234").generic is False and "manufacturer-specific" in describe_dtc("P1234").description
    assert describe_dtc("P3000").generic is False and describe_dtc("P3499").generic is True
    assert describe_dtc(" p0301 ").code == "P0301"
    assert describe_dtc("P0300").severity is Severity.HIGH
    assert describe_dtc("P0456").severity is Severity.LOW and describe_dtc("P0456").category is Category.EMISSIONS
    assert describe_dtc("C0035").category is Category.SAFETY
    assert describe_dtc("U0100").system == "network"
    for bad in ("P4301", "X0301", "P030", "P03011", "", "P03G1"):
        assert not is_well_formed(bad)
        assert describe_dtc_or_none(bad) is None
        with pytest.raises(ValueError):
            describe_dtc(bad)


def test_open_episodes_get_descriptions_and_days_open() -> None:
    now = dt.datetime(2024, 3, 10, tzinfo=dt.UTC)
    df = pd.DataFrame({
        "device_key": [1, 1, 1, 2],
        "code": ["P0456", "P0301", "P0420", "P4000"],
        "dtc_type": ["stored", "stored", "pending", "stored"],
        "description": ["dev text", "", "", ""],
        "first_seen": pd.to_datetime(["2024-03-01", "2024-03-09", "2024-02-01", "2024-03-08"], utc=True),
        "last_seen": pd.to_datetime(["2024-03-09", "2024-03-09", "2024-02-10", "2024-03-08"], utc=True),
        "cleared_at": pd.to_datetime([None, None, "2024-02-11", None], utc=True),
        "mil_on": [False, True, False, False],
    })
    out = open_episodes_with_descriptions(df, now)
    assert list(out["code"]) == ["P0301", "P4000", "P0456"]  # P0420 is cleared; most severe first
    row = out.set_index("code").loc["P0301"]
    assert row["description"] == "Cylinder 1 misfire detected" and row["days_open"] == pytest.approx(1.0)
    assert out.set_index("code").loc["P0456", "device_description"] == "dev text"
    assert out.set_index("code").loc["P4000", "description"] == "unrecognised trouble-code format"


# ---------------------------------------------------------------------------------------------
# Kernels against references
# ---------------------------------------------------------------------------------------------

@HYP
@given(engine_tracks(), st.sampled_from([0.0, 5_000.0, 30_000.0]))
def test_engine_state_kernel_matches_reference(track, hold_ms: float) -> None:
    ts, rpm, speed, _, _ = track
    got = engine_state_kernel(tarr(ts), arr(rpm), arr(speed), hold_ms)
    assert got.tolist() == engine_state_reference(ts, rpm, speed, hold_ms)


@HYP
@given(engine_tracks(), st.sampled_from([0.0, 3000.0]), st.sampled_from([0.0, 3000.0]),
       st.sampled_from([0.0, 60_000.0, 3_600_000.0]))
def test_battery_kernel_matches_reference(track, pre_ms: float, post_ms: float, rest_ms: float) -> None:
    ts, rpm, speed, volts, _ = track
    on = engine_state_reference(ts, rpm, speed, 30_000.0)
    resting, starts, crank = battery_kernel(tarr(ts), np.array(on, dtype=np.int8), arr(volts), pre_ms, post_ms,
                                            rest_ms)
    ref_resting, ref_starts, ref_crank = battery_reference(ts, on, volts, pre_ms, post_ms, rest_ms)
    assert resting.tolist() == ref_resting
    assert starts.tolist() == ref_starts
    assert all(same_float(a, b) for a, b in zip(crank.tolist(), ref_crank, strict=True))


@HYP
@given(engine_tracks(), st.sampled_from([0.0, 2000.0, 30_000.0]), st.sampled_from([1000.0, 10_000.0]))
def test_overheat_kernel_matches_reference(track, min_ms: float, gap_ms: float) -> None:
    ts, _, _, _, coolant = track
    first, last, peak = overheat_kernel(tarr(ts), arr(coolant), 110.0, min_ms, gap_ms)
    got = list(zip(first.tolist(), last.tolist(), peak.tolist(), strict=True))
    assert got == overheat_reference(ts, coolant, 110.0, min_ms, gap_ms)


@HYP
@given(engine_tracks(), st.sampled_from([0.0, 3000.0, 20_000.0]), st.sampled_from([0.0, 5000.0]),
       st.integers(0, 3), st.sampled_from([1000.0, 50_000.0]))
def test_warmup_kernel_matches_reference(track, warmup_ms: float, confirm_ms: float, min_readings: int,
                                         reset_ms: float) -> None:
    ts, rpm, speed, _, coolant = track
    on = engine_state_reference(ts, rpm, speed, 30_000.0)
    args = (warmup_ms, confirm_ms, 70.0, min_readings, reset_ms, 10_000.0)
    sess, chk, warmest = warmup_kernel(tarr(ts), np.array(on, dtype=np.int8), arr(coolant), *args)
    got = list(zip(sess.tolist(), chk.tolist(), warmest.tolist(), strict=True))
    assert got == warmup_reference(ts, on, coolant, *args)


@HYP
@given(st.integers(0, 150).flatmap(lambda n: st.tuples(
    times(n), st.lists(st.sampled_from([-1, 0, 0, 1, 2, 2, 2]), min_size=n, max_size=n))),
    st.sampled_from([0.0, 1000.0, 30_000.0]), st.sampled_from([0.0, 2000.0, 60_000.0]),
    st.sampled_from([30_000.0, 86_400_000.0]))
def test_fence_visits_kernel_matches_reference(track, enter_ms: float, exit_ms: float, gap_ms: float) -> None:
    ts, codes = track
    enters, exits, ongoing = fence_visits_kernel(tarr(ts), np.array(codes, dtype=np.int8), enter_ms, exit_ms,
                                                 gap_ms)
    got = list(zip(enters.tolist(), exits.tolist(), ongoing.tolist(), strict=True))
    ref = fence_visits_reference(ts, codes, enter_ms, exit_ms, gap_ms)
    assert got == ref
    for a, b, _ in ref:  # visits are ordered, non-overlapping, and start at an inside fix
        assert a <= b and codes[a] == 2 and codes[b] >= 1
    assert all(ref[i][1] < ref[i + 1][0] for i in range(len(ref) - 1))


@HYP
@given(st.lists(st.tuples(maybe(st.floats(-90, 90)), maybe(st.floats(-180, 180))), max_size=80),
       st.sampled_from([50.0, 500.0, 5000.0]), st.floats(-80, 80))
def test_cell_keys_kernel_matches_reference(points, cell_m: float, ref_lat: float) -> None:
    grid = Grid.for_cell_size(cell_m, ref_lat)
    lat = [p[0] for p in points]
    lon = [p[1] for p in points]
    got = cell_keys_kernel(arr(lat), arr(lon), grid.dlat_deg, grid.dlon_deg, grid.ncols)
    ref = cell_keys_reference(lat, lon, grid.dlat_deg, grid.dlon_deg, grid.ncols)
    assert got.tolist() == ref
    for key, la, lo in zip(ref, lat, lon, strict=True):  # each point lies in its cell
        if key >= 0:
            lon0, lat0, lon1, lat1 = grid.bounds(key)
            assert lat0 - 1e-9 <= la <= lat1 + 1e-9 and lon0 - 1e-9 <= lo <= lon1 + 1e-9


@HYP
@given(st.lists(st.tuples(st.integers(-1, 6), st.integers(0, 7), st.booleans()), max_size=200))
def test_cell_counts_kernel_matches_reference(rows) -> None:
    keys = [r[0] for r in rows]
    vehicles = [r[1] for r in rows]
    stops = [r[2] for r in rows]
    got = cell_counts_kernel(np.array(keys, dtype=np.int64), np.array(vehicles, dtype=np.int64),
                             np.array(stops, dtype=np.bool_))
    assert list(zip(*(a.tolist() for a in got), strict=True)) == cell_counts_reference(keys, vehicles, stops)
    for _, fixes, n_stops, n_vehicles, fix_vehicles, stop_vehicles in cell_counts_reference(keys, vehicles, stops):
        assert fix_vehicles <= min(fixes, n_vehicles) and stop_vehicles <= min(n_stops, n_vehicles)
        assert max(fix_vehicles, stop_vehicles) <= n_vehicles <= fix_vehicles + stop_vehicles


# ---------------------------------------------------------------------------------------------
# Battery
# ---------------------------------------------------------------------------------------------

def day_trace(day: int, resting_v: float, crank_v: float, running_v: float = 14.1,
              rest_hours: float = 8.0) -> tuple[list[int], list[float], list[float]]:
    """One day: parked ``rest_hours`` with a reading a minute, a start with a cranking dip, 30 min of driving."""
    ts, rpm, volts = [], [], []
    t = MIDNIGHT + day * 86_400_000
    for m in range(int(rest_hours * 60)):  # engine off, ECU asleep (rpm absent), adapter reads ATRV
        ts.append(t + m * 60_000)
        rpm.append(math.nan if m else 0.0)
        volts.append(resting_v if m >= 60 else resting_v + 0.3)  # surface charge the first hour
    t = ts[-1] + 60_000
    for s, (r, v) in enumerate([(0.0, resting_v), (0.0, resting_v), (180.0, crank_v), (700.0, crank_v + 1.5)]
                               + [(800.0, running_v)] * 1800):
        ts.append(t + s * 1000)
        rpm.append(r)
        volts.append(v)
    t = ts[-1] + 1000
    ts.append(t)
    rpm.append(0.0)
    volts.append(12.9)
    return ts, rpm, volts


def days_trace(specs: list[tuple[float, float]], **kw: float) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    ts, rpm, volts = [], [], []
    for day, (rest, crank) in enumerate(specs):
        a, b, c = day_trace(day, rest, crank, **kw)
        ts += a
        rpm += b
        volts += c
    return tarr(ts), arr(rpm), np.full(len(ts), math.nan), arr(volts)


def test_healthy_battery_is_not_flagged() -> None:
    result = battery_health(*days_trace([(12.65, 10.6)] * 7))
    assert not result.weak and result.level == "ok"
    assert result.resting_v == pytest.approx(12.65)
    assert result.cranking_min_v == pytest.approx(10.6)
    assert result.charging_v == pytest.approx(14.1)
    daily = result.daily
    assert list(daily["starts"]) == [1] * 7
    # resting readings only after an hour off: on the first day the 60 surface-charge minutes are
    # excluded; later nights follow a drive that ended > 15 h earlier. (+2: the rpm-0 pre-start readings)
    assert list(daily["resting_samples"]) == [8 * 60 - 60 + 2] + [8 * 60 + 2] * 6


def test_low_resting_voltage_is_weak() -> None:
    result = battery_health(*days_trace([(12.1, 10.4)] * 3))
    assert result.weak and result.level == "low_resting"
    assert "12.10 V < 12.2 V" in result.reasons[0]


def test_cranking_dip_is_weak_and_most_urgent() -> None:
    result = battery_health(*days_trace([(12.5, 10.2), (12.5, 9.3)]))
    assert result.weak and result.level == "low_cranking"
    assert result.cranking_min_v == pytest.approx(9.3)
    summary = health_summary(7, dt.datetime.now(dt.UTC), battery=result)
    assert summary.leads[0].lead_type == "weak_battery" and summary.priority == 1


def test_falling_resting_voltage_trend_is_flagged() -> None:
    specs = [(12.75 - 0.03 * d, 10.5) for d in range(12)]  # 12.75 -> 12.42 V: still above 12.2
    result = battery_health(*days_trace(specs))
    assert result.weak and result.level == "trend"
    assert result.resting_slope_v_per_day == pytest.approx(-0.03, abs=1e-6)
    flat = battery_health(*days_trace([(12.6, 10.5)] * 12))
    assert not flat.weak and flat.resting_slope_v_per_day == pytest.approx(0.0, abs=1e-9)
    few = battery_health(*days_trace(specs[:4]))  # four days are not a trend
    assert few.resting_slope_v_per_day is None and not few.weak


def test_alternator_not_charging_is_flagged() -> None:
    result = battery_health(*days_trace([(12.6, 10.5)], running_v=11.9))
    assert result.weak and result.level == "low_charging"


def test_no_rest_reading_before_an_hour_off_and_start_needs_a_known_off() -> None:
    ts, rpm, speed, volts = days_trace([(12.6, 10.5)])
    daily = battery_daily(ts, rpm, speed, volts, HealthParams(rest_after_s=10 * 3600))
    assert daily["resting_samples"].iloc[0] == 0 and math.isnan(daily["resting_v"].iloc[0])
    # a log that begins mid-drive with rpm missing does not count as an engine start
    n = 100
    ts2 = T0 + np.arange(n, dtype=np.int64) * 1000
    rpm2 = np.r_[np.full(3, np.nan), np.full(n - 3, 800.0)]
    daily2 = battery_daily(ts2, rpm2, np.full(n, np.nan), np.full(n, 13.8))
    assert daily2["starts"].sum() == 0


# ---------------------------------------------------------------------------------------------
# Coolant
# ---------------------------------------------------------------------------------------------

def coolant_trace(values: list[float], speed: float = 40.0) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    n = len(values)
    return (T0 + np.arange(n, dtype=np.int64) * 1000, np.full(n, 1500.0), np.full(n, speed), arr(values))


def test_overheating_needs_thirty_seconds_above_110() -> None:
    hot = coolant_health(*coolant_trace([95.0] * 60 + [112.0] * 20 + [117.0] * 20 + [100.0] * 60))
    assert len(hot.overheating) == 1
    ep = hot.overheating[0]
    assert ep.value_c == 117.0 and ep.duration_s == pytest.approx(39.0)
    brief = coolant_health(*coolant_trace([95.0] * 60 + [115.0] * 25 + [100.0] * 60))
    assert brief.overheating == ()
    # missing readings inside the hot stretch do not split it
    gappy = [95.0] * 10 + [115.0, math.nan, math.nan] * 15 + [95.0] * 10
    assert len(coolant_health(*coolant_trace(gappy)).overheating) == 1
    lead = health_summary(3, dt.datetime.now(dt.UTC), coolant=hot).leads[0]
    assert lead.lead_type == "overheating" and lead.priority == 1


def test_stuck_open_thermostat_is_a_warmup_failure() -> None:
    minutes = 20
    cold = [20.0 + min(40.0, m * 4.0) for m in range(minutes) for _ in range(60)]  # stalls at 60 °C
    result = coolant_health(*coolant_trace(cold))
    assert len(result.warmup_failures) == 1
    ep = result.warmup_failures[0]
    assert ep.duration_s == pytest.approx(900.0) and ep.value_c == 60.0
    normal = [20.0 + min(70.0, m * 8.0) for m in range(minutes) for _ in range(60)]  # 90 °C after 9 min
    assert coolant_health(*coolant_trace(normal)).warmup_failures == ()
    # fifteen minutes of running time, not of wall time: after a parked hour the engine starts cold again
    ts, rpm, speed, cool = coolant_trace([40.0] * 600)
    ts2 = np.r_[ts, ts[-1] + 3_600_000 + np.arange(600, dtype=np.int64) * 1000]
    rpm2 = np.r_[rpm, rpm]
    speed2 = np.r_[speed, speed]
    cool2 = np.r_[cool, cool]
    assert coolant_health(ts2, rpm2, speed2, cool2).warmup_failures == ()  # two 10-minute sessions
    ts3 = np.r_[ts, ts[-1] + 600_000 + np.arange(400, dtype=np.int64) * 1000]
    assert coolant_health(ts3, np.r_[rpm, rpm[:400]], np.r_[speed, speed[:400]],
                          np.r_[cool, cool[:400]]).warmup_failures != ()  # 10-min stop: one 16.7-min session


# ---------------------------------------------------------------------------------------------
# Service
# ---------------------------------------------------------------------------------------------

def test_service_due_arithmetic() -> None:
    last = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    ok = service_due(dt.datetime(2024, 6, 1, tzinfo=dt.UTC), last, odometer_km=52_000,
                     last_service_odometer_km=45_000)
    assert not ok.due and not ok.due_soon and ok.km_left == 8_000 and ok.days_left == pytest.approx(365 - 152)
    assert ok.reason == "ok"
    by_km = service_due(dt.datetime(2024, 6, 1, tzinfo=dt.UTC), last, odometer_km=60_500,
                        last_service_odometer_km=45_000)
    assert by_km.due and by_km.km_left == -500 and "distance interval" in by_km.reason
    by_time = service_due(dt.datetime(2025, 1, 2, tzinfo=dt.UTC), last, distance_since_service_km=3_000)
    assert by_time.due and by_time.days_left == pytest.approx(-2) and by_time.km_left == 12_000
    assert "time interval" in by_time.reason
    soon = service_due(dt.datetime(2024, 6, 1, tzinfo=dt.UTC), last, distance_since_service_km=14_200)
    assert not soon.due and soon.due_soon and soon.km_left == pytest.approx(800)
    time_only = service_due(dt.datetime(2024, 12, 15, tzinfo=dt.UTC), last)
    assert time_only.km_left is None and time_only.due_soon and not time_only.due
    custom = service_due(dt.datetime(2024, 6, 1, tzinfo=dt.UTC), last, distance_since_service_km=10_500,
                         params=HealthParams(service_interval_km=10_000))
    assert custom.due
    with pytest.raises(ValueError):
        service_due(dt.datetime(2024, 6, 1), last)
    with pytest.raises(ValueError):
        service_due(dt.datetime(2024, 6, 1, tzinfo=dt.UTC), last, odometer_km=1, last_service_odometer_km=2)


def test_health_summary_orders_leads() -> None:
    now = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    episodes = pd.DataFrame({
        "device_key": [5, 5, 5, 9],
        "code": ["P0456", "P0300", "P0420", "P0301"],
        "dtc_type": ["stored"] * 4,
        "first_seen": pd.to_datetime(["2024-05-30", "2024-05-31", "2024-03-01", "2024-05-31"], utc=True),
        "last_seen": pd.to_datetime(["2024-05-31"] * 4, utc=True),
        "cleared_at": pd.to_datetime([None] * 4, utc=True),
        "mil_on": [False, True, False, False],
    })
    service = service_due(now, dt.datetime(2023, 5, 1, tzinfo=dt.UTC))
    summary = health_summary(5, now, episodes=episodes, service=service)
    types = [(lead.lead_type, lead.priority, lead.details.get("code")) for lead in summary.leads]
    # P0420 is open for three months: not new. P0300 (high, MIL) first; the EVAP leak is routine.
    assert types == [("new_dtc", 1, "P0300"), ("service_due", 2, None), ("new_dtc", 3, "P0456")]
    assert summary.priority == 1
    assert health_summary(5, now).leads == () and health_summary(5, now).priority is None


# ---------------------------------------------------------------------------------------------
# Geofences
# ---------------------------------------------------------------------------------------------

DEALER_LAT, DEALER_LON = -0.1800, -78.4800  # Quito


def square(lat: float, lon: float, half_m: float) -> shapely.Polygon:
    dlat = half_m / M_PER_DEG
    dlon = half_m / (M_PER_DEG * math.cos(math.radians(lat)))
    return shapely.box(lon - dlon, lat - dlat, lon + dlon, lat + dlat)


def fence_collection() -> dict:
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": shapely.geometry.mapping(square(DEALER_LAT, DEALER_LON, 50.0)),
         "properties": {"geofence_id": 11, "kind": "dealer", "name": "Dealer Norte"}},
        {"type": "Feature", "geometry": shapely.geometry.mapping(square(DEALER_LAT + 0.02, DEALER_LON, 40.0)),
         "properties": {"geofence_id": 12, "kind": "home", "name": "Home"}},
    ]}


def walk(points_m: list[tuple[float, float]], step_s: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixes at (north, east) metres from the dealer's centre, one per ``step_s``."""
    north = arr([p[0] for p in points_m])
    east = arr([p[1] for p in points_m])
    lat = DEALER_LAT + north / M_PER_DEG
    lon = DEALER_LON + east / (M_PER_DEG * math.cos(math.radians(DEALER_LAT)))
    ts = T0 + (np.arange(len(points_m)) * step_s * 1000).astype(np.int64)
    return ts, lat, lon


def service_visit_track(park_minutes: float, park_north_m: float = 45.0, jitter_m: float = 12.0,
                        seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drive in from 600 m south, park 5 m inside the northern border with GPS jitter, drive away north."""
    rng = np.random.default_rng(seed)
    approach = [(-600.0 + 10.0 * k, 0.0) for k in range(int((600 + park_north_m) / 10))]
    parked = [(park_north_m + rng.normal(0, jitter_m), rng.normal(0, jitter_m)) for _ in range(int(park_minutes * 60))]
    leave = [(park_north_m + 10.0 * k, 0.0) for k in range(1, 60)]
    return walk(approach + parked + leave)


def test_geofence_visit_with_border_jitter_does_not_flap() -> None:
    fences = load_geofences(fence_collection())
    ts, lat, lon = service_visit_track(park_minutes=30)
    visits = geofence_visits(ts, lat, lon, fences)
    assert len(visits) == 1
    visit = visits.iloc[0]
    assert visit["geofence_id"] == 11 and visit["kind"] == "dealer" and not visit["ongoing"]
    assert 29 * 60 <= visit["dwell_s"] <= 31.5 * 60
    # the same track without hysteresis and debounce flaps on every border crossing
    raw = GeofenceParams(hysteresis_m=0.0, enter_confirm_s=0.0, exit_confirm_s=0.0, min_dwell_s=0.0)
    flapping = geofence_visits(ts, lat, lon, load_geofences(fence_collection(), raw), params=raw)
    assert len(flapping) > 20
    events = geofence_events(visits)
    assert list(events["event"]) == ["enter", "exit"]
    assert list(dealer_visits(visits)["geofence_id"]) == [11]


def test_short_dealer_stop_is_not_a_service_visit_and_drive_through_is_no_visit() -> None:
    fences = load_geofences(fence_collection())
    ts, lat, lon = service_visit_track(park_minutes=5, park_north_m=0.0, jitter_m=5.0)
    visits = geofence_visits(ts, lat, lon, fences)
    assert len(visits) == 1 and dealer_visits(visits).empty
    ts, lat, lon = walk([(-300.0 + 10.0 * k, 0.0) for k in range(60)])  # straight through at 36 km/h
    assert geofence_visits(ts, lat, lon, fences).empty


def test_ongoing_visit_gap_and_bad_fixes() -> None:
    fences = load_geofences(fence_collection())
    ts, lat, lon = walk([(0.0, 0.0)] * 1200)  # 20 minutes parked when the data end
    visits = geofence_visits(ts, lat, lon, fences)
    assert len(visits) == 1 and bool(visits["ongoing"].iloc[0]) and len(dealer_visits(visits)) == 1
    assert list(geofence_events(visits)["event"]) == ["enter"]
    # a dongle asleep for two hours in the service bay: the dwell spans the silence
    ts2 = np.r_[ts[:120], ts[119] + 7_200_000 + np.arange(120, dtype=np.int64) * 1000]
    visits2 = geofence_visits(ts2, lat[:240], lon[:240], fences)
    assert len(visits2) == 1 and visits2["dwell_s"].iloc[0] > 7200
    # the same silence longer than max_gap_s closes the visit and opens a new one
    short_gap = GeofenceParams(max_gap_s=3600.0)
    assert len(geofence_visits(ts2, lat[:240], lon[:240], fences, params=short_gap)) == 2
    # fixes with a poor HDOP are ignored
    hdop = np.full(len(ts), 9.0)
    assert geofence_visits(ts, lat, lon, fences, hdop=hdop).empty


def test_geofences_load_from_table_rows_and_geodataframe() -> None:
    fc = fence_collection()
    rows = pd.DataFrame({"geofence_id": [f["properties"]["geofence_id"] for f in fc["features"]],
                         "kind": [f["properties"]["kind"] for f in fc["features"]],
                         "name": [f["properties"]["name"] for f in fc["features"]],
                         "geometry": [json.dumps(f["geometry"]) for f in fc["features"]]})
    gdf = gpd.GeoDataFrame.from_features(fc["features"], crs="EPSG:4326").to_crs("EPSG:32717")
    ts, lat, lon = service_visit_track(park_minutes=20)
    for source in (rows, gdf, json.dumps(fc)):
        visits = geofence_visits(ts, lat, lon, load_geofences(source))
        assert list(visits["geofence_id"]) == [11]
    with pytest.raises(ValueError):
        load_geofences({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]},
             "properties": {"geofence_id": 1, "kind": "dealer", "name": "x"}}]})
    with pytest.raises(ValueError):
        bad = json.loads(json.dumps(fc))
        bad["features"][0]["properties"]["kind"] = "office"
        load_geofences(bad)


# ---------------------------------------------------------------------------------------------
# Heatmaps
# ---------------------------------------------------------------------------------------------

def numbers_in(fc: dict) -> list[int]:
    return [v for f in fc["features"] for k, v in f["properties"].items() if k != "cell" and v is not None]


def test_k_anonymity_suppresses_cells_below_k() -> None:
    rng = np.random.default_rng(3)
    grid = Grid.for_cell_size(500.0, 0.0)
    key_a = cell_keys_reference([-0.1812], [-78.4800], grid.dlat_deg, grid.dlon_deg, grid.ncols)[0]
    lon0, lat0, lon1, lat1 = grid.bounds(key_a)
    centre_lat, centre_a = (lat0 + lat1) / 2, (lon0 + lon1) / 2
    centre_b = centre_a + 4 * grid.dlon_deg  # 2 km east
    vehicles, lat, lon = [], [], []
    # cell A: 5 vehicles; cell B: 4 vehicles, many fixes each, spread within 150 m of the cell centre
    for cell_lon, n_vehicles in ((centre_a, 5), (centre_b, 4)):
        for v in range(n_vehicles):
            vid = f"{cell_lon}-{v}"
            for _ in range(50):
                vehicles.append(vid)
                lat.append(centre_lat + rng.uniform(-0.0013, 0.0013))
                lon.append(cell_lon + rng.uniform(-0.0013, 0.0013))
    fc = fleet_heatmap(np.array(vehicles), arr(lat), arr(lon), params=HeatmapParams(reference_lat_deg=0.0))
    assert fc["metadata"]["released_cells"] == 1 and fc["metadata"]["suppressed_cells"] == 1
    (feature,) = fc["features"]
    assert feature["properties"]["vehicles"] == 5 and feature["properties"]["fixes"] == 250
    poly = shapely.geometry.shape(feature["geometry"])
    assert poly.contains(shapely.Point(centre_a, centre_lat)) and not poly.contains(shapely.Point(centre_b, centre_lat))
    assert all(v >= 5 for v in numbers_in(fc))
    # a fifth vehicle in cell B releases it
    fc2 = fleet_heatmap(np.r_[np.array(vehicles), ["extra"]], np.r_[arr(lat), centre_lat],
                        np.r_[arr(lon), centre_b], params=HeatmapParams(reference_lat_deg=0.0))
    assert fc2["metadata"]["released_cells"] == 2 and fc2["metadata"]["suppressed_cells"] == 0
    assert sorted(f["properties"]["vehicles"] for f in fc2["features"]) == [5, 5]
    assert sorted(f["properties"]["fixes"] for f in fc2["features"]) == [201, 250]


def test_stop_counts_need_k_stopping_vehicles() -> None:
    vehicles = np.repeat(np.arange(6), 10)
    lat = np.full(60, -0.1812)
    lon = np.full(60, -78.4800)
    # 3 vehicles stop in the cell: the cell is released (6 vehicles), its stop numbers are not
    fc = fleet_heatmap(vehicles, lat, lon, stop_vehicle=np.array([0, 1, 2, 2]), stop_lat=np.full(4, -0.1812),
                       stop_lon=np.full(4, -78.4800))
    props = fc["features"][0]["properties"]
    assert props["vehicles"] == 6 and props["stops"] is None and props["stop_vehicles"] is None
    assert props["fixes"] == 60 and props["fix_vehicles"] == 6
    fc = fleet_heatmap(vehicles, lat, lon, stop_vehicle=np.arange(5), stop_lat=np.full(5, -0.1812),
                       stop_lon=np.full(5, -78.4800))
    props = fc["features"][0]["properties"]
    assert props["stops"] == 5 and props["stop_vehicles"] == 5


@HYP
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 5), st.integers(0, 5)), max_size=300),
       st.integers(1, 7))
def test_no_released_number_is_below_k(rows, k: int) -> None:
    vehicle = np.array([r[0] for r in rows], dtype=np.int64)
    lat = -0.18 + np.array([r[1] for r in rows], dtype=np.float64) * 0.006
    lon = -78.48 + np.array([r[2] for r in rows], dtype=np.float64) * 0.006
    stops = np.arange(len(rows)) % 3 == 0
    fc = fleet_heatmap(vehicle[~stops], lat[~stops], lon[~stops], stop_vehicle=vehicle[stops],
                       stop_lat=lat[stops], stop_lon=lon[stops], params=HeatmapParams(k_min_vehicles=k))
    assert all(v >= k for v in numbers_in(fc))
    json.dumps(fc)  # serialisable as is


# ---------------------------------------------------------------------------------------------
# Real data (POLIDriving, Quito)
# ---------------------------------------------------------------------------------------------

def polidriving_arrays(path: Path) -> dict[str, np.ndarray]:
    from device_agent.replay import read_polidriving

    rows = list(read_polidriving(path))
    names = ("rpm", "speed", "battery_voltage", "coolant_temp", "latitude", "longitude")
    out = {name: arr([r.values.get(name, math.nan) for r in rows]) for name in names}
    out["ts_ms"] = tarr([r.ts_ms for r in rows])
    return out


POLIDRIVING_VEHICLE = {"alonso": 4, "andres": 2, "pablo": 1, "richard": 3, "yolanda": 2}  # id_vehicle (README)


def test_polidriving_health_and_heatmap(shared_data: Path) -> None:
    sessions = sorted((shared_data / "polidriving").glob("*/*/*_col.csv.gz"))
    assert len(sessions) == 7
    charging, starts, hot = {}, {}, 0
    fix_vehicle, fix_lat, fix_lon = [], [], []
    for path in sessions:
        a = polidriving_arrays(path)
        vehicle_id = POLIDRIVING_VEHICLE[path.parent.parent.name]
        battery = battery_health(a["ts_ms"], a["rpm"], a["speed"], a["battery_voltage"])
        coolant = coolant_health(a["ts_ms"], a["rpm"], a["speed"], a["coolant_temp"])
        charging[path.name] = battery.charging_v
        starts[path.name] = int(battery.daily["starts"].sum())
        hot += len(coolant.overheating)
        assert coolant.max_coolant_c is not None and coolant.max_coolant_c <= 109.0
        assert coolant.warmup_failures == ()  # every session starts with a warm engine
        fix_vehicle += [vehicle_id] * len(a["ts_ms"])
        fix_lat.append(a["latitude"])
        fix_lon.append(a["longitude"])
    assert hot == 0  # the hottest reading (109 °C) never exceeds 110 °C
    # vehicle 4 (alonso) restarts its engine repeatedly and charges at 11.7 / 12.7 V; the others at > 13 V
    assert starts["20240103_141959_col.csv.gz"] >= 10
    assert charging["20231229_151643_col.csv.gz"] < 12.5
    assert all(v > 13.0 for name, v in charging.items() if name not in {"20231229_151643_col.csv.gz",
                                                                        "20240103_141959_col.csv.gz"})
    # five drivers, four vehicles: at k = 5 nothing about these drives may be released
    lat, lon = np.concatenate(fix_lat), np.concatenate(fix_lon)
    fc = fleet_heatmap(np.array(fix_vehicle), lat, lon)
    assert fc["features"] == [] and fc["metadata"]["suppressed_cells"] > 100
    fc3 = fleet_heatmap(np.array(fix_vehicle), lat, lon, params=HeatmapParams(k_min_vehicles=3))
    assert fc3["features"] and all(v >= 3 for v in numbers_in(fc3))
