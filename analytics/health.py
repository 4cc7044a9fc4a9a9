"""Vehicle health for dealer leads: trouble-code episodes, 12 V battery, coolant, service interval.

What a dealer wants from the telematics stream is a reason to call the customer before the car
breaks down: a new trouble code, a battery that will not start the car next winter morning, an
engine that overheats or never warms up, a service that is due. This module turns the stored data
into exactly those four kinds of lead, each with a priority, and says why.

Inputs follow the project's conventions: a vehicle's samples as equal-length numpy arrays sorted
by time (``ts_ms`` int64 Unix ms, float64 signals with NaN where absent), trouble-code episodes as
rows of the ``dtc_episodes`` table. The numeric passes are numba kernels, each with a plain-Python
reference that the tests hold it to; I/O stays with the caller.

Engine state (shared by the battery and coolant passes): the engine runs when ``rpm > 0`` or the
vehicle moves (``speed > 0``); it is off when ``rpm == 0`` and the vehicle is not moving. When rpm
is absent the last definite state is held for ``rpm_hold_s``; absent for longer means off (an ECU
that stops answering is an ECU that is asleep). POLIDriving's 1 Hz logs have rpm gaps of up to
22 s while driving, hence the 30 s default.

Battery, following common lead-acid practice (BCI / battery-maker load-test guidance):

* resting (open-circuit) voltage, read only after the engine has been off for ``rest_after_s``
  (1 h, so the surface charge left by the alternator has dissipated): 12.6 V ≈ full, 12.4 V ≈
  75 %, 12.2 V ≈ 50 %. Below 12.2 V a battery is discharged enough to sulphate and is flagged;
* cranking voltage: the minimum in the seconds around an engine start. A healthy battery stays
  above ~9.6–10 V while the starter turns (the 9.6 V criterion of the load test at 21 °C). The
  adapter reads ATRV at the OBD port about once a second, so the observed minimum is an *upper
  bound* of the true dip (the dip lasts 0.2–1 s): the rule can miss a weak battery, it cannot
  invent one;
* a downward trend of the daily resting voltage (or daily cranking minimum) by least squares over
  the last ``trend_window_days``;
* charging: the median voltage with the engine running. Below ``charging_low_v`` the alternator
  is not keeping up and the battery is being drained while driving.

What the real data show: POLIDriving vehicle 4 (alonso) idles at 12.6–12.7 V with the engine
running (a healthy alternator charges at 13.5–14.7 V) and falls to 11.4–11.8 V within 20 s of
switching off; vehicles 1–3 run at 13.2–13.6 V. None of the sessions has an hour of engine-off
data, so resting voltage needs the agent's parked health readings.

Coolant: overheating is coolant above ``overheat_c`` (110 °C) for ``overheat_min_s`` (30 s):
a pressurised cooling system runs at 90–105 °C and the thermostat opens at 82–95 °C, so a
sustained 110 °C means the fan, pump or coolant level has failed. POLIDriving's hottest reading
is 109 °C (vehicle 4, just after a restart), the others stay at 83–96 °C. Failure to warm up
(thermostat stuck open, J2012's P0128 condition) is coolant still below ``warmup_c`` (70 °C)
throughout the ``warmup_confirm_s`` before ``warmup_running_s`` (15 min) of engine running time.

Service: due at whichever of ``service_interval_km`` (15,000 km) and ``service_interval_days``
(365 d) comes first, the common "whichever comes first" schedule; Traccar's ``Maintenance`` has
the same start + period model.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pandas as pd

from analytics.dtc_descriptions import SEVERITY_RANK, Severity, describe_dtc_or_none

MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True)
class HealthParams:
    """Thresholds of the health checks; every field is overridable per deployment."""

    # Engine state
    rpm_hold_s: float = 30.0  # hold the last rpm state this long through gaps (POLIDriving: rpm gaps ≤ 22 s)
    # Battery (12 V lead-acid; state-of-charge table 12.6 / 12.4 / 12.2 V = 100 / 75 / 50 %)
    rest_after_s: float = 3600.0  # engine off this long before a reading counts as resting (surface charge gone)
    resting_weak_v: float = 12.2  # ≈ 50 % state of charge: below it the battery sulphates; flag it
    crank_pre_s: float = 3.0  # cranking window: seconds before the first running sample ...
    crank_post_s: float = 3.0  # ... and after it (1 Hz ATRV: the dip falls on one or two samples)
    cranking_weak_v: float = 9.6  # load-test criterion: ≥ 9.6 V while cranking at 21 °C
    trend_window_days: int = 30  # days of daily values the trend regression uses
    trend_min_days: int = 5  # fewer daily values than this: no trend claimed
    resting_slope_weak_v_per_day: float = -0.02  # 0.28 V in 14 days: full to ≈ 60 % in two weeks
    cranking_slope_weak_v_per_day: float = -0.05  # cranking minima are noisier (temperature, 1 Hz sampling)
    charging_low_v: float = 12.5  # daily median with the engine running below this: alternator not charging
    # (a conventional alternator holds 13.5–14.7 V; ECU-controlled "smart" alternators dip to 12.4–12.8 V
    # in cruise, hence 12.5 rather than 13.0; POLIDriving vehicle 4 ran a whole session at 11.7 V)
    charging_min_samples: int = 300  # running-voltage readings a day needs for a charging verdict (5 min at 1 Hz)
    day_utc_offset_h: float = 0.0  # where a "day" starts; set to the fleet's local offset
    # Coolant
    overheat_c: float = 110.0  # pressurised systems run 90–105 °C; sustained 110 °C is a cooling failure
    overheat_min_s: float = 30.0  # shorter excursions happen at hot restarts (heat soak)
    coolant_gap_s: float = 10.0  # a run of hot readings survives missing readings up to this gap
    warmup_c: float = 70.0  # still below this after warm-up time: thermostat stuck open (P0128 condition)
    warmup_running_s: float = 900.0  # engine running time after which a healthy engine is warm (15 min)
    warmup_confirm_s: float = 120.0  # every reading in this window before the check must be cold
    warmup_min_readings: int = 3  # fewer coolant readings in the window: no verdict
    cool_down_reset_s: float = 1800.0  # engine off this long: the engine is cold again, warm-up restarts
    running_max_step_s: float = 60.0  # a gap longer than this between running samples adds no running time
    # Service interval ("whichever comes first")
    service_interval_km: float = 15_000.0
    service_interval_days: float = 365.0
    service_soon_km: float = 1_000.0  # lead "service due soon" this far ahead ...
    service_soon_days: float = 30.0  # ... or this many days ahead
    # Leads
    new_dtc_window_days: float = 7.0  # an open episode first seen this recently is a "new_dtc" lead


# --------------------------------------------------------------------------------------------
# Trouble-code episodes
# --------------------------------------------------------------------------------------------

def open_episodes_with_descriptions(df: pd.DataFrame, now: dt.datetime | None = None) -> pd.DataFrame:
    """Open rows of ``dtc_episodes`` (``cleared_at`` null) with description, category, severity, days open.

    ``df`` has the table's columns (device_key, code, dtc_type, first_seen, last_seen, cleared_at,
    mil_on; ``description`` optional). The device's own description, if any, is kept as
    ``device_description``; ``description`` is ours, so every dealer sees the same words. Malformed
    codes (the table accepts ``[PCBU][0-9A-F]{4}``, J2012 only ``[PCBU][0-3]...``) get an explicit
    "unrecognised" description rather than failing the run. Sorted most severe, then oldest, first.
    """
    now_ts = pd.Timestamp(now if now is not None else dt.datetime.now(dt.UTC))
    if now_ts.tzinfo is None:
        now_ts = now_ts.tz_localize("UTC")
    out = df.copy()
    if "cleared_at" in out.columns:
        out = out[out["cleared_at"].isna()].copy()
    if "description" in out.columns:
        out = out.rename(columns={"description": "device_description"})
    infos = [describe_dtc_or_none(str(code)) for code in out["code"]]
    out["description"] = [i.description if i else "unrecognised trouble-code format" for i in infos]
    out["system"] = [i.system if i else "unknown" for i in infos]
    out["category"] = [str(i.category) if i else "unknown" for i in infos]
    out["severity"] = [str(i.severity) if i else str(Severity.MEDIUM) for i in infos]
    out["severity_rank"] = [SEVERITY_RANK[i.severity] if i else SEVERITY_RANK[Severity.MEDIUM] for i in infos]
    first_seen = pd.to_datetime(out["first_seen"], utc=True)
    out["days_open"] = (now_ts - first_seen).dt.total_seconds() / 86400.0
    if "mil_on" not in out.columns:
        out["mil_on"] = False
    return out.sort_values(["severity_rank", "mil_on", "days_open"], ascending=[False, False, False],
                           kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Engine state
# --------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def engine_state_kernel(ts_ms: np.ndarray, rpm: np.ndarray, speed: np.ndarray, hold_ms: float) -> np.ndarray:
    """Per sample 1 = engine running, 0 = off, -1 = not known yet (rules in the module docstring).

    Unknown only happens at the start of the data: before the first definite reading and within
    ``hold_ms`` of the first sample (a log that starts with rpm missing may start mid-drive).
    """
    n = len(ts_ms)
    out = np.zeros(n, dtype=np.int8)
    state = -1
    have_last = False
    last_ms = ts_ms[0] if n > 0 else 0  # before any definite reading: time since the data began
    for i in range(n):
        r = rpm[i]
        v = speed[i]
        if (r == r and r > 0.0) or (v == v and v > 0.0):
            state = 1
            have_last = True
            last_ms = ts_ms[i]
        elif r == r:
            state = 0
            have_last = True
            last_ms = ts_ms[i]
        elif ts_ms[i] - last_ms > hold_ms:
            state = 0
        elif not have_last:
            state = -1
        out[i] = state
    return out


def engine_state_reference(ts_ms: list[int], rpm: list[float], speed: list[float], hold_ms: float) -> list[int]:
    out: list[int] = []
    state, last_definite = -1, None
    for t, r, v in zip(ts_ms, rpm, speed, strict=True):
        if (not math.isnan(r) and r > 0) or (not math.isnan(v) and v > 0):
            state, last_definite = 1, t
        elif not math.isnan(r):
            state, last_definite = 0, t
        elif t - (last_definite if last_definite is not None else ts_ms[0]) > hold_ms:
            state = 0
        out.append(state)
    return out


# --------------------------------------------------------------------------------------------
# Battery
# --------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def battery_kernel(ts_ms: np.ndarray, on: np.ndarray, voltage: np.ndarray, pre_ms: float, post_ms: float,
                   rest_ms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(resting mask, engine-start indices, cranking minimum per start).

    A start is a running sample whose predecessor was definitely off (a start before the data
    began, or hidden by the unknown state at its start, is not seen). Its cranking minimum is the
    lowest voltage with ``ts`` in [start - pre, start + post]; NaN when no voltage was read there.
    A sample is resting when the engine is off, a voltage was read, and the engine has been off
    for ≥ ``rest_ms`` counted from the first off sample (a lower bound of the true rest).
    """
    n = len(ts_ms)
    resting = np.zeros(n, dtype=np.bool_)
    starts = np.empty(n, dtype=np.int64)
    crank = np.empty(n, dtype=np.float64)
    k = 0
    off_since = 0
    for i in range(n):
        if on[i] == 0:
            if i == 0 or on[i - 1] != 0:
                off_since = ts_ms[i]
            if voltage[i] == voltage[i] and ts_ms[i] - off_since >= rest_ms:
                resting[i] = True
        elif on[i] == 1 and i > 0 and on[i - 1] == 0:
            lo = np.inf
            j = i
            while j >= 0 and ts_ms[j] >= ts_ms[i] - pre_ms:
                if voltage[j] == voltage[j] and voltage[j] < lo:
                    lo = voltage[j]
                j -= 1
            j = i + 1
            while j < n and ts_ms[j] <= ts_ms[i] + post_ms:
                if voltage[j] == voltage[j] and voltage[j] < lo:
                    lo = voltage[j]
                j += 1
            starts[k] = i
            crank[k] = lo if lo < np.inf else np.nan
            k += 1
    return resting, starts[:k].copy(), crank[:k].copy()


def battery_reference(ts_ms: list[int], on: list[int], voltage: list[float], pre_ms: float, post_ms: float,
                      rest_ms: float) -> tuple[list[bool], list[int], list[float]]:
    n = len(ts_ms)
    resting = [False] * n
    starts: list[int] = []
    crank: list[float] = []
    off_since = 0
    for i in range(n):
        if on[i] == 0:
            if i == 0 or on[i - 1] != 0:
                off_since = ts_ms[i]
            resting[i] = not math.isnan(voltage[i]) and ts_ms[i] - off_since >= rest_ms
        elif on[i] == 1 and i > 0 and on[i - 1] == 0:
            window = [voltage[j] for j in range(n)
                      if ts_ms[i] - pre_ms <= ts_ms[j] <= ts_ms[i] + post_ms and not math.isnan(voltage[j])]
            starts.append(i)
            crank.append(min(window) if window else math.nan)
    return resting, starts, crank


@dataclass(frozen=True, slots=True)
class BatteryAssessment:
    weak: bool
    reasons: tuple[str, ...]
    level: str  # the worst finding: "ok" < "trend" < "low_resting" < "low_charging" < "low_cranking"
    resting_v: float | None  # latest day's median resting voltage
    cranking_min_v: float | None  # lowest cranking minimum in the trend window
    resting_slope_v_per_day: float | None
    cranking_slope_v_per_day: float | None
    charging_v: float | None  # latest day's median running voltage (with enough readings)
    daily: pd.DataFrame = field(repr=False)  # see battery_daily


def _slope_per_day(days: np.ndarray, values: np.ndarray, min_days: int) -> float | None:
    ok = ~np.isnan(values)
    if ok.sum() < min_days:
        return None
    x = days[ok].astype(np.float64)
    if np.ptp(x) == 0:
        return None
    return float(np.polyfit(x, values[ok], 1)[0])


def battery_daily(ts_ms: np.ndarray, rpm: np.ndarray, speed: np.ndarray, voltage: np.ndarray,
                  params: HealthParams = HealthParams()) -> pd.DataFrame:
    """Per day: median resting voltage, lowest cranking voltage, number of starts, median running voltage."""
    ts_ms = np.ascontiguousarray(ts_ms, dtype=np.int64)
    voltage = np.ascontiguousarray(voltage, dtype=np.float64)
    on = engine_state_kernel(ts_ms, np.ascontiguousarray(rpm, dtype=np.float64),
                             np.ascontiguousarray(speed, dtype=np.float64), params.rpm_hold_s * 1000.0)
    resting, starts, crank = battery_kernel(ts_ms, on, voltage, params.crank_pre_s * 1000.0,
                                            params.crank_post_s * 1000.0, params.rest_after_s * 1000.0)
    offset_ms = int(params.day_utc_offset_h * 3_600_000)
    day_of = (ts_ms + offset_ms) // MS_PER_DAY
    epoch = dt.date(1970, 1, 1)
    rows: dict[int, dict[str, Any]] = {}

    def row(d: int) -> dict[str, Any]:
        return rows.setdefault(int(d), {"day": epoch + dt.timedelta(days=int(d)), "resting": [], "crank": [],
                                        "starts": 0, "running": []})

    for i in np.flatnonzero(resting):
        row(day_of[i])["resting"].append(voltage[i])
    for i, v in zip(starts, crank, strict=True):
        r = row(day_of[i])
        r["starts"] += 1
        if not math.isnan(v):
            r["crank"].append(v)
    running = (on == 1) & ~np.isnan(voltage)
    if running.any():
        run_days = day_of[running]
        run_v = voltage[running]
        for d in np.unique(run_days):
            row(d)["running"] = run_v[run_days == d]
    records = [{
        "day": r["day"],
        "day_index": d,
        "resting_v": float(np.median(r["resting"])) if r["resting"] else math.nan,
        "resting_samples": len(r["resting"]),
        "crank_min_v": float(min(r["crank"])) if r["crank"] else math.nan,
        "starts": r["starts"],
        "running_v": float(np.median(r["running"])) if len(r["running"]) else math.nan,
        "running_samples": len(r["running"]),
    } for d, r in sorted(rows.items())]
    columns = ["day", "day_index", "resting_v", "resting_samples", "crank_min_v", "starts", "running_v",
               "running_samples"]
    return pd.DataFrame.from_records(records, columns=columns)


def assess_battery(daily: pd.DataFrame, params: HealthParams = HealthParams()) -> BatteryAssessment:
    """Weak-battery verdict from :func:`battery_daily` rows (use many days for the trend)."""
    if daily.empty:
        return BatteryAssessment(False, (), "ok", None, None, None, None, None, daily)
    return _assess_days(daily["day_index"].to_numpy(), daily["resting_v"].to_numpy(dtype=np.float64),
                        daily["crank_min_v"].to_numpy(dtype=np.float64), daily["running_v"].to_numpy(dtype=np.float64),
                        daily["running_samples"].to_numpy(), params, daily)


def _assess_days(day_index: np.ndarray, resting_all: np.ndarray, crank_all: np.ndarray, running_v: np.ndarray,
                 running_samples: np.ndarray, params: HealthParams, daily: pd.DataFrame) -> BatteryAssessment:
    """:func:`assess_battery` on the daily columns as arrays (shared by the per-vehicle and fleet paths)."""
    last_day = int(day_index.max())
    window = day_index > last_day - params.trend_window_days
    days = day_index[window]
    resting = resting_all[window]
    crank = crank_all[window]
    resting_known = resting[~np.isnan(resting)]
    crank_known = crank[~np.isnan(crank)]
    resting_v = float(resting_known[-1]) if len(resting_known) else None
    crank_min = float(crank_known.min()) if len(crank_known) else None
    charging = running_v[window][running_samples[window] >= params.charging_min_samples]
    charging_v = float(charging[-1]) if len(charging) else None
    rest_slope = _slope_per_day(days, resting, params.trend_min_days)
    crank_slope = _slope_per_day(days, crank, params.trend_min_days)
    reasons: list[str] = []
    level = "ok"
    if rest_slope is not None and rest_slope < params.resting_slope_weak_v_per_day:
        reasons.append(f"resting voltage falling {rest_slope:+.3f} V/day over {len(resting_known)} days")
        level = "trend"
    if crank_slope is not None and crank_slope < params.cranking_slope_weak_v_per_day:
        reasons.append(f"cranking voltage falling {crank_slope:+.3f} V/day over {len(crank_known)} days")
        level = "trend"
    if resting_v is not None and resting_v < params.resting_weak_v:
        reasons.append(f"resting voltage {resting_v:.2f} V < {params.resting_weak_v} V (≈ 50 % charge)")
        level = "low_resting"
    if charging_v is not None and charging_v < params.charging_low_v:
        reasons.append(f"voltage with the engine running only {charging_v:.2f} V < {params.charging_low_v} V "
                       "(alternator not charging)")
        level = "low_charging"
    if crank_min is not None and crank_min < params.cranking_weak_v:
        reasons.append(f"cranking voltage dipped to {crank_min:.2f} V < {params.cranking_weak_v} V")
        level = "low_cranking"
    return BatteryAssessment(bool(reasons), tuple(reasons), level, resting_v, crank_min, rest_slope, crank_slope,
                             charging_v, daily)


def battery_health(ts_ms: np.ndarray, rpm: np.ndarray, speed: np.ndarray, voltage: np.ndarray,
                   params: HealthParams = HealthParams()) -> BatteryAssessment:
    """:func:`battery_daily` then :func:`assess_battery` over one vehicle's samples (days to weeks)."""
    return assess_battery(battery_daily(ts_ms, rpm, speed, voltage, params), params)


@numba.njit(cache=True)
def battery_days_kernel(ts_ms: np.ndarray, bounds: np.ndarray, rpm: np.ndarray, speed: np.ndarray,
                        voltage: np.ndarray, hold_ms: float, pre_ms: float, post_ms: float, rest_ms: float,
                        offset_ms: int) -> np.ndarray:
    """:func:`battery_daily` of many vehicles at once, as one float matrix.

    Why: ``battery_daily`` groups a vehicle's readings by day with Python dicts and builds a DataFrame, ~4 ms
    per vehicle, more than reading its day from the database. Rows ``bounds[v]:bounds[v + 1]`` are vehicle
    ``v``'s samples; per vehicle this runs the same engine-state and battery kernels. Returns one row per
    (vehicle, day) with a reading, by vehicle then day: (vehicle, day_index, resting_v, resting_samples,
    crank_min_v, starts, running_v, running_samples), medians and minima as ``battery_daily`` computes them.
    """
    out = np.empty((len(ts_ms), 8))
    k = 0
    for v in range(len(bounds) - 1):
        a, b = bounds[v], bounds[v + 1]
        if b == a:
            continue
        ts = ts_ms[a:b]
        volt = voltage[a:b]
        on = engine_state_kernel(ts, rpm[a:b], speed[a:b], hold_ms)
        resting, starts, crank = battery_kernel(ts, on, volt, pre_ms, post_ms, rest_ms)
        n = b - a
        day = (ts + offset_ms) // MS_PER_DAY
        i = 0
        s = 0
        values = np.empty(n)
        while i < n:
            j = i
            while j < n and day[j] == day[i]:
                j += 1
            n_rest = 0
            for q in range(i, j):
                if resting[q]:
                    values[n_rest] = volt[q]
                    n_rest += 1
            rest_med = np.median(values[:n_rest]) if n_rest else np.nan
            n_starts = 0
            lo = np.inf
            while s < len(starts) and starts[s] < j:
                n_starts += 1
                if crank[s] == crank[s] and crank[s] < lo:
                    lo = crank[s]
                s += 1
            n_run = 0
            for q in range(i, j):
                if on[q] == 1 and volt[q] == volt[q]:
                    values[n_run] = volt[q]
                    n_run += 1
            run_med = np.median(values[:n_run]) if n_run else np.nan
            if n_rest or n_starts or n_run:
                row = out[k]
                row[0] = v
                row[1] = day[i]
                row[2] = rest_med
                row[3] = n_rest
                row[4] = lo if lo < np.inf else np.nan
                row[5] = n_starts
                row[6] = run_med
                row[7] = n_run
                k += 1
            i = j
    return out[:k].copy()


def battery_health_fleet(ts_ms: np.ndarray, bounds: np.ndarray, rpm: np.ndarray, speed: np.ndarray,
                         voltage: np.ndarray, params: HealthParams = HealthParams()) -> list[BatteryAssessment]:
    """:func:`battery_health` of every vehicle (rows ``bounds[v]:bounds[v + 1]``), one kernel call for all.

    The reference is :func:`battery_health` per vehicle: same verdicts, same ``daily`` rows.
    """
    bounds = np.ascontiguousarray(bounds, dtype=np.int64)
    f64 = np.float64
    rows = battery_days_kernel(np.ascontiguousarray(ts_ms, dtype=np.int64), bounds,
                               np.ascontiguousarray(rpm, dtype=f64), np.ascontiguousarray(speed, dtype=f64),
                               np.ascontiguousarray(voltage, dtype=f64), params.rpm_hold_s * 1000.0,
                               params.crank_pre_s * 1000.0, params.crank_post_s * 1000.0, params.rest_after_s * 1000.0,
                               int(params.day_utc_offset_h * 3_600_000))
    epoch = dt.date(1970, 1, 1)
    day_index = rows[:, 1].astype(np.int64)
    fleet = pd.DataFrame({
        "day": [epoch + dt.timedelta(days=int(d)) for d in day_index], "day_index": day_index,
        "resting_v": rows[:, 2], "resting_samples": rows[:, 3].astype(np.int64), "crank_min_v": rows[:, 4],
        "starts": rows[:, 5].astype(np.int64), "running_v": rows[:, 6], "running_samples": rows[:, 7].astype(np.int64),
    })
    cuts = np.searchsorted(rows[:, 0], np.arange(len(bounds)), side="left")
    running_samples = fleet["running_samples"].to_numpy()
    out = []
    for v in range(len(bounds) - 1):
        a, b = int(cuts[v]), int(cuts[v + 1])
        daily = fleet.iloc[a:b]
        daily.index = pd.RangeIndex(b - a)  # battery_daily's index, without reset_index's copy
        if a == b:
            out.append(BatteryAssessment(False, (), "ok", None, None, None, None, None, daily))
        else:
            out.append(_assess_days(day_index[a:b], rows[a:b, 2], rows[a:b, 4], rows[a:b, 6], running_samples[a:b],
                                    params, daily))
    return out


# --------------------------------------------------------------------------------------------
# Coolant
# --------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def overheat_kernel(ts_ms: np.ndarray, coolant: np.ndarray, hot_c: float, min_ms: float,
                    gap_ms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of coolant > ``hot_c`` lasting ≥ ``min_ms``: (first hot index, last hot index, peak °C).

    A reading at or below ``hot_c`` ends a run; missing readings do not, unless the time from the
    last hot reading exceeds ``gap_ms``. Duration is last minus first hot reading.
    """
    n = len(ts_ms)
    first = np.empty(n, dtype=np.int64)
    last = np.empty(n, dtype=np.int64)
    peak = np.empty(n, dtype=np.float64)
    k = 0
    in_run = False
    start = 0
    last_hot = 0
    top = 0.0
    for i in range(n):
        c = coolant[i]
        if in_run and ts_ms[i] - ts_ms[last_hot] > gap_ms and (c != c or c > hot_c):
            if ts_ms[last_hot] - ts_ms[start] >= min_ms:
                first[k] = start
                last[k] = last_hot
                peak[k] = top
                k += 1
            in_run = False
        if c != c:
            continue
        if c > hot_c:
            if not in_run:
                in_run = True
                start = i
                top = c
            last_hot = i
            if c > top:
                top = c
        elif in_run:
            if ts_ms[last_hot] - ts_ms[start] >= min_ms:
                first[k] = start
                last[k] = last_hot
                peak[k] = top
                k += 1
            in_run = False
    if in_run and ts_ms[last_hot] - ts_ms[start] >= min_ms:
        first[k] = start
        last[k] = last_hot
        peak[k] = top
        k += 1
    return first[:k].copy(), last[:k].copy(), peak[:k].copy()


def overheat_reference(ts_ms: list[int], coolant: list[float], hot_c: float, min_ms: float,
                       gap_ms: float) -> list[tuple[int, int, float]]:
    """Split the hot readings into runs (broken by a cool reading or a gap), keep the long ones."""
    runs: list[list[int]] = []
    current: list[int] = []
    for i, c in enumerate(coolant):
        if current and ts_ms[i] - ts_ms[current[-1]] > gap_ms and (math.isnan(c) or c > hot_c):
            runs.append(current)
            current = []
        if math.isnan(c):
            continue
        if c > hot_c:
            current.append(i)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [(r[0], r[-1], max(coolant[j] for j in r)) for r in runs if ts_ms[r[-1]] - ts_ms[r[0]] >= min_ms]


@numba.njit(cache=True)
def warmup_kernel(ts_ms: np.ndarray, on: np.ndarray, coolant: np.ndarray, warmup_ms: float, confirm_ms: float,
                  cold_c: float, min_readings: int, reset_ms: float,
                  max_step_ms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Engine sessions that failed to warm up: (session start index, check index, warmest reading °C).

    Running time accumulates between consecutive running samples no more than ``max_step_ms``
    apart. A session starts at a running sample after ≥ ``reset_ms`` of not running (or the first
    running sample); shorter stops keep the session and its running time. When running time first
    reaches ``warmup_ms`` the coolant readings in [check - confirm_ms, check] are examined: at least
    ``min_readings`` of them (and at least one), all below ``cold_c``, make a failure.
    """
    n = len(ts_ms)
    sess = np.empty(n, dtype=np.int64)
    chk = np.empty(n, dtype=np.int64)
    warmest = np.empty(n, dtype=np.float64)
    k = 0
    have_on = False
    last_on_ms = 0
    session_start = 0
    running = 0.0
    checked = False
    for i in range(n):
        if on[i] != 1:
            continue
        if not have_on or ts_ms[i] - last_on_ms >= reset_ms:
            session_start = i
            running = 0.0
            checked = False
        elif i > 0 and on[i - 1] == 1 and ts_ms[i] - ts_ms[i - 1] <= max_step_ms:
            running += ts_ms[i] - ts_ms[i - 1]
        have_on = True
        last_on_ms = ts_ms[i]
        if not checked and running >= warmup_ms:
            checked = True
            count = 0
            top = -np.inf
            j = i
            while j >= 0 and ts_ms[j] >= ts_ms[i] - confirm_ms:
                c = coolant[j]
                if c == c:
                    count += 1
                    if c > top:
                        top = c
                j -= 1
            if count >= min_readings and count > 0 and top < cold_c:
                sess[k] = session_start
                chk[k] = i
                warmest[k] = top
                k += 1
    return sess[:k].copy(), chk[:k].copy(), warmest[:k].copy()


def warmup_reference(ts_ms: list[int], on: list[int], coolant: list[float], warmup_ms: float, confirm_ms: float,
                     cold_c: float, min_readings: int, reset_ms: float,
                     max_step_ms: float) -> list[tuple[int, int, float]]:
    out: list[tuple[int, int, float]] = []
    last_on: int | None = None
    session_start, running, checked = 0, 0.0, False
    for i in range(len(ts_ms)):
        if on[i] != 1:
            continue
        if last_on is None or ts_ms[i] - last_on >= reset_ms:
            session_start, running, checked = i, 0.0, False
        elif i > 0 and on[i - 1] == 1 and ts_ms[i] - ts_ms[i - 1] <= max_step_ms:
            running += ts_ms[i] - ts_ms[i - 1]
        last_on = ts_ms[i]
        if not checked and running >= warmup_ms:
            checked = True
            window = [coolant[j] for j in range(i + 1)
                      if ts_ms[j] >= ts_ms[i] - confirm_ms and not math.isnan(coolant[j])]
            if len(window) >= max(min_readings, 1) and max(window) < cold_c:
                out.append((session_start, i, max(window)))
    return out


@dataclass(frozen=True, slots=True)
class CoolantEpisode:
    kind: str  # "overheating" or "warmup_failure"
    start_ms: int
    end_ms: int  # overheating: last hot reading; warm-up failure: the moment of the check
    value_c: float  # overheating: peak; warm-up failure: warmest reading in the confirmation window

    @property
    def duration_s(self) -> float:
        return (self.end_ms - self.start_ms) / 1000.0


@dataclass(frozen=True, slots=True)
class CoolantAssessment:
    overheating: tuple[CoolantEpisode, ...]
    warmup_failures: tuple[CoolantEpisode, ...]
    max_coolant_c: float | None


def coolant_health(ts_ms: np.ndarray, rpm: np.ndarray, speed: np.ndarray, coolant: np.ndarray,
                   params: HealthParams = HealthParams()) -> CoolantAssessment:
    """Overheating episodes and warm-up failures over one vehicle's samples."""
    ts_ms = np.ascontiguousarray(ts_ms, dtype=np.int64)
    coolant = np.ascontiguousarray(coolant, dtype=np.float64)
    on = engine_state_kernel(ts_ms, np.ascontiguousarray(rpm, dtype=np.float64),
                             np.ascontiguousarray(speed, dtype=np.float64), params.rpm_hold_s * 1000.0)
    first, last, peak = overheat_kernel(ts_ms, coolant, params.overheat_c, params.overheat_min_s * 1000.0,
                                        params.coolant_gap_s * 1000.0)
    hot = tuple(CoolantEpisode("overheating", int(ts_ms[a]), int(ts_ms[b]), float(p))
                for a, b, p in zip(first, last, peak, strict=True))
    sess, chk, warmest = warmup_kernel(ts_ms, on, coolant, params.warmup_running_s * 1000.0,
                                       params.warmup_confirm_s * 1000.0, params.warmup_c,
                                       params.warmup_min_readings, params.cool_down_reset_s * 1000.0,
                                       params.running_max_step_s * 1000.0)
    cold = tuple(CoolantEpisode("warmup_failure", int(ts_ms[a]), int(ts_ms[b]), float(w))
                 for a, b, w in zip(sess, chk, warmest, strict=True))
    known = coolant[~np.isnan(coolant)]
    return CoolantAssessment(hot, cold, float(known.max()) if len(known) else None)


# --------------------------------------------------------------------------------------------
# Service interval
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ServiceStatus:
    due: bool  # an interval is reached or passed
    km_left: float | None  # negative when overdue; None when distance is unknown
    days_left: float  # negative when overdue
    reason: str
    due_soon: bool = False  # within service_soon_km / service_soon_days (a lead, not yet due)


def service_due(now: dt.datetime, last_service_at: dt.datetime, *, odometer_km: float | None = None,
                last_service_odometer_km: float | None = None, distance_since_service_km: float | None = None,
                params: HealthParams = HealthParams()) -> ServiceStatus:
    """Service status by distance and time since the last service, whichever comes first.

    Distance is ``odometer_km - last_service_odometer_km`` when both are known, else
    ``distance_since_service_km`` (accumulated by the trips stage), else unknown (time only).
    """
    if (now.tzinfo is None) != (last_service_at.tzinfo is None):
        raise ValueError("now and last_service_at must both be timezone-aware or both naive")
    days_since = (now - last_service_at).total_seconds() / 86400.0
    days_left = params.service_interval_days - days_since
    driven: float | None = None
    if odometer_km is not None and last_service_odometer_km is not None:
        driven = odometer_km - last_service_odometer_km
        if driven < 0:
            raise ValueError(f"odometer {odometer_km} km is below the last service's {last_service_odometer_km} km")
    elif distance_since_service_km is not None:
        driven = distance_since_service_km
    km_left = params.service_interval_km - driven if driven is not None else None
    km_due = km_left is not None and km_left <= 0
    time_due = days_left <= 0
    if km_due or time_due:
        parts = []
        if km_due:
            parts.append(f"distance interval reached ({driven:,.0f} km of {params.service_interval_km:,.0f} km)")
        if time_due:
            parts.append(f"time interval reached ({days_since:.0f} d of {params.service_interval_days:.0f} d)")
        return ServiceStatus(True, km_left, days_left, "; ".join(parts), False)
    soon_parts = []
    if km_left is not None and km_left <= params.service_soon_km:
        soon_parts.append(f"due within {km_left:,.0f} km")
    if days_left <= params.service_soon_days:
        soon_parts.append(f"due within {days_left:.0f} days")
    if soon_parts:
        return ServiceStatus(False, km_left, days_left, "; ".join(soon_parts), True)
    return ServiceStatus(False, km_left, days_left, "ok", False)


# --------------------------------------------------------------------------------------------
# Dealer leads
# --------------------------------------------------------------------------------------------

LEAD_TYPES = ("new_dtc", "overheating", "weak_battery", "warmup_failure", "service_due")
# Priority 1 = call today (safety or damage), 2 = call this week, 3 = routine reminder.


@dataclass(frozen=True, slots=True)
class Lead:
    device_key: int
    lead_type: str  # one of LEAD_TYPES
    priority: int  # 1 (urgent) .. 3 (routine)
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HealthSummary:
    device_key: int
    leads: tuple[Lead, ...]  # most urgent first

    @property
    def priority(self) -> int | None:
        """The most urgent lead's priority; None when there is nothing to call about."""
        return min((lead.priority for lead in self.leads), default=None)


def _dtc_priority(severity: str, mil_on: bool) -> int:
    base = {"high": 1, "medium": 2, "low": 3}.get(severity, 2)
    return max(1, base - 1) if mil_on else base


def health_summary(device_key: int, now: dt.datetime, *, episodes: pd.DataFrame | None = None,
                   battery: BatteryAssessment | None = None, coolant: CoolantAssessment | None = None,
                   service: ServiceStatus | None = None, params: HealthParams = HealthParams()) -> HealthSummary:
    """The dealer leads for one vehicle from whichever assessments are available.

    * ``new_dtc``: an open episode first seen within ``new_dtc_window_days``; priority from the
      code's severity (high 1, medium 2, low 3), one step more urgent with the MIL on;
    * ``overheating``: any episode, priority 1 (engine damage follows);
    * ``weak_battery``: cranking dip 1 (the next cold start may fail), not charging or low
      resting voltage 2, falling trend only 3;
    * ``warmup_failure``: priority 3 (fuel economy, heater, emissions; not urgent);
    * ``service_due``: overdue 2, due soon 3.
    """
    leads: list[Lead] = []
    if episodes is not None and not episodes.empty:
        rows = episodes[episodes["device_key"] == device_key] if "device_key" in episodes.columns else episodes
        described = open_episodes_with_descriptions(rows, now)
        recent = described[described["days_open"] <= params.new_dtc_window_days]
        for rec in recent.itertuples(index=False):
            leads.append(Lead(device_key, "new_dtc", _dtc_priority(rec.severity, bool(rec.mil_on)),
                              f"{rec.code}: {rec.description}",
                              {"code": rec.code, "dtc_type": getattr(rec, "dtc_type", None),
                               "category": rec.category, "severity": rec.severity, "mil_on": bool(rec.mil_on),
                               "days_open": float(rec.days_open)}))
    if coolant is not None and coolant.overheating:
        worst = max(coolant.overheating, key=lambda e: e.value_c)
        leads.append(Lead(device_key, "overheating", 1,
                          f"coolant reached {worst.value_c:.0f} °C (> {params.overheat_c:.0f} °C for "
                          f"{worst.duration_s:.0f} s); {len(coolant.overheating)} episode(s)",
                          {"episodes": len(coolant.overheating), "peak_c": worst.value_c,
                           "start_ms": worst.start_ms}))
    if battery is not None and battery.weak:
        priority = {"low_cranking": 1, "low_charging": 2, "low_resting": 2}.get(battery.level, 3)
        leads.append(Lead(device_key, "weak_battery", priority, "; ".join(battery.reasons),
                          {"level": battery.level, "resting_v": battery.resting_v,
                           "cranking_min_v": battery.cranking_min_v, "charging_v": battery.charging_v,
                           "resting_slope_v_per_day": battery.resting_slope_v_per_day}))
    if coolant is not None and coolant.warmup_failures:
        ep = coolant.warmup_failures[-1]
        leads.append(Lead(device_key, "warmup_failure", 3,
                          f"coolant only {ep.value_c:.0f} °C after {params.warmup_running_s / 60:.0f} min running "
                          f"(thermostat stuck open?); {len(coolant.warmup_failures)} session(s)",
                          {"sessions": len(coolant.warmup_failures), "warmest_c": ep.value_c,
                           "start_ms": ep.start_ms}))
    if service is not None and (service.due or service.due_soon):
        leads.append(Lead(device_key, "service_due", 2 if service.due else 3, service.reason,
                          {"km_left": service.km_left, "days_left": service.days_left, "due": service.due}))
    order = {t: i for i, t in enumerate(LEAD_TYPES)}
    leads.sort(key=lambda lead: (lead.priority, order[lead.lead_type]))
    return HealthSummary(device_key, tuple(leads))
