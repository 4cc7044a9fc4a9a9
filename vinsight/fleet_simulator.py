"""A fleet simulator: many vehicles' believable drives, encoded and published like real agents'.

Why it exists: ingest, analytics and the portal need load and test data that behaves like a fleet
(trips, parked gaps, stop-and-go, warm-ups, gear changes, GPS tracks that join up), at rates no
recorded data set reaches. Noise would pass the codec but teach nothing about trip detection,
harsh-event analytics or ingest under realistic delta-coding sizes, so every signal here follows
from a small physical model:

* **Schedule.** Each vehicle alternates parked periods and trips. Departures follow a per-style
  hourly hazard (trips per hour) evaluated on the **UTC** hour of the simulated timestamps, so a
  night commuter drives between 21:00 and 05:00 UTC whatever the machine's time zone.
* **Speed.** A trip is urban, rural and motorway segments; a segment is legs (junction to junction)
  with a trapezoid speed profile: accelerate at ``a`` to a target speed, cruise, then brake at ``b``
  to a red light (and idle), to a turning speed, or carry on. Limits per driver style bound ``a``
  and ``b`` (aggressive drivers get occasional harsh events); a slow cruise fluctuation is added
  whose slope keeps the bounds.
* **Engine.** A five-gear model turns speed into RPM (style-dependent shift points; idle with a
  cold-engine bump; cranking and start flare). Road-load physics (mass, rolling resistance, drag)
  turns speed and acceleration into power, engine load and throttle; MAF and fuel rate follow from
  RPM and load with the same speed-density physics as ``bench/_drive.py``. Coolant warms from the
  parked temperature toward its thermostat; the battery reads ~14.2 V charging after a cranking dip.
* **GPS.** Position integrates speed along a heading that turns at urban junctions and curves
  gently on open roads; altitude is a smooth function of position, so the same place has the same
  altitude on every trip. Consecutive trips start where the previous one ended.

Everything is numpy over arrays per (vehicle, chunk of a trip); a trip's plan (its knots) is small,
so a large fleet can be streamed window by window. Output values are quantised to each signal's
catalog resolution and clipped to its range, so ingest's validation accepts every sample.

Timing model: the data of vehicle ``i`` is cut into batch windows of ``batch_seconds``; with
``stagger`` the vehicle's window grid is shifted by a phase in ``[0, batch_seconds)`` so a fleet's
batches are spread over each window the way independent agents' are (and a live run sees the first
batches within a second or two). Trips start on a window boundary and last whole windows, so every
batch holds exactly ``batch_seconds * rate_hz`` samples; a parked vehicle sends nothing, as the real
agent does while the engine is off.

Everything is deterministic for a seed: the same arguments give the same bytes.
"""

from __future__ import annotations

import enum
import hashlib
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .contract import SampleBatch, topics
from .contract.codec import CT_SAMPLES_BINARY, MAX_SAMPLES, encode_samples_binary
from .contract.signals import BY_NAME

if TYPE_CHECKING:  # paho is only needed at the MQTT edge
    import paho.mqtt.client as mqtt

DEFAULT_CENTER: tuple[float, float] = (45.07, 7.69)  # Turin, Italy
EARTH_RADIUS_M = 6_371_000.0
G = 9.81

# Signals a simulated car reports, every sample (a subset may be requested).
DEFAULT_SIGNALS: tuple[str, ...] = (
    "speed", "rpm", "engine_load", "throttle_pos", "coolant_temp", "intake_temp", "maf", "intake_pressure",
    "fuel_level", "fuel_rate", "run_time", "battery_voltage",
    "latitude", "longitude", "altitude", "gps_speed", "course", "hdop", "satellites", "fix_mode",
)

# km/h at 1000 rpm in gears 1..5 (a typical 1.6 l hatchback: 130 km/h ≈ 3,500 rpm in 5th).
GEAR_KMH_PER_KRPM = np.array([7.8, 14.0, 21.5, 29.5, 37.5])


class DriverStyle(enum.StrEnum):
    """How a vehicle is driven; sets speeds, accelerations, shift points and when trips happen."""

    CALM = "calm"
    AGGRESSIVE = "aggressive"
    NIGHT_COMMUTER = "night_commuter"


def _hazard(pairs: Mapping[tuple[int, int], float], default: float) -> tuple[float, ...]:
    out = [default] * 24
    for (lo, hi), rate in pairs.items():
        for h in range(lo, hi):
            out[h % 24] = rate
    return tuple(out)


@dataclass(frozen=True, slots=True)
class StyleParams:
    """The numbers behind a :class:`DriverStyle`. Speeds in km/h, accelerations in m/s².

    ``max_accel``/``max_brake`` are hard bounds the generated speed profile never exceeds (tests
    hold it to them); ``departures_per_hour`` is indexed by UTC hour.
    """

    accel: tuple[float, float]
    brake: tuple[float, float]
    harsh_probability: float
    harsh_accel: tuple[float, float]
    harsh_brake: tuple[float, float]
    max_accel: float
    max_brake: float
    urban_kmh: tuple[float, float]
    rural_kmh: tuple[float, float]
    motorway_kmh: tuple[float, float]
    shift_up_rpm: float
    cruise_rpm: float
    trip_median_min: float
    motorway_probability: float
    departures_per_hour: tuple[float, ...]


_DAY_HAZARD = {(5, 6): 0.05, (6, 7): 0.25, (7, 9): 0.5, (9, 12): 0.18, (12, 14): 0.3, (14, 16): 0.18,
               (16, 19): 0.5, (19, 20): 0.25, (20, 21): 0.12, (21, 22): 0.06, (22, 24): 0.02}

STYLE_PARAMS: dict[DriverStyle, StyleParams] = {
    DriverStyle.CALM: StyleParams(
        accel=(0.8, 1.7), brake=(1.2, 2.6), harsh_probability=0.0, harsh_accel=(1.7, 1.7), harsh_brake=(2.6, 2.6),
        max_accel=2.0, max_brake=3.0, urban_kmh=(30, 52), rural_kmh=(60, 88), motorway_kmh=(105, 128),
        shift_up_rpm=2400, cruise_rpm=2100, trip_median_min=18, motorway_probability=0.25,
        departures_per_hour=_hazard(_DAY_HAZARD, 0.01)),
    DriverStyle.AGGRESSIVE: StyleParams(
        accel=(1.6, 3.2), brake=(2.2, 4.5), harsh_probability=0.06, harsh_accel=(3.4, 3.8), harsh_brake=(5.0, 5.8),
        max_accel=4.0, max_brake=6.0, urban_kmh=(45, 72), rural_kmh=(80, 115), motorway_kmh=(130, 150),
        shift_up_rpm=3800, cruise_rpm=2800, trip_median_min=22, motorway_probability=0.4,
        departures_per_hour=_hazard({**_DAY_HAZARD, (21, 23): 0.2, (23, 24): 0.1, (0, 2): 0.05}, 0.01)),
    DriverStyle.NIGHT_COMMUTER: StyleParams(
        accel=(0.9, 1.8), brake=(1.3, 2.7), harsh_probability=0.0, harsh_accel=(1.8, 1.8), harsh_brake=(2.7, 2.7),
        max_accel=2.0, max_brake=3.0, urban_kmh=(35, 58), rural_kmh=(65, 95), motorway_kmh=(110, 132),
        shift_up_rpm=2600, cruise_rpm=2300, trip_median_min=28, motorway_probability=0.4,
        departures_per_hour=_hazard({(21, 29): 0.5, (5, 6): 0.02}, 0.004)),
}

DEFAULT_STYLE_MIX: dict[DriverStyle, float] = {
    DriverStyle.CALM: 0.60, DriverStyle.AGGRESSIVE: 0.25, DriverStyle.NIGHT_COMMUTER: 0.15,
}

_GOLDEN = (math.sqrt(5) - 1) / 2


def _low_discrepancy(index: int) -> float:
    """A fraction in [0, 1) that spreads consecutive indices evenly (golden-ratio sequence), so any
    prefix of a fleet has close to the requested style mix and batch phases."""
    return (index * _GOLDEN) % 1.0


def parse_style_mix(text: str) -> dict[DriverStyle, float]:
    """Parse ``calm=0.6,aggressive=0.25,night_commuter=0.15`` (weights are normalised)."""
    mix: dict[DriverStyle, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, weight = part.partition("=")
        if not sep:
            raise ValueError(f"style weight {part!r} is not name=weight")
        try:
            style = DriverStyle(name.strip())
        except ValueError:
            raise ValueError(f"unknown driver style {name.strip()!r}; use {[s.value for s in DriverStyle]}") from None
        mix[style] = float(weight)
    return _normalise_mix(mix)


def _normalise_mix(mix: Mapping[DriverStyle | str, float]) -> dict[DriverStyle, float]:
    out = {DriverStyle(k): float(v) for k, v in mix.items()}
    if any(v < 0 or not math.isfinite(v) for v in out.values()) or sum(out.values()) <= 0:
        raise ValueError("style weights must be non-negative with a positive sum")
    total = sum(out.values())
    return {s: out[s] / total for s in DriverStyle if out.get(s, 0) > 0}


def style_for_index(index: int, mix: Mapping[DriverStyle | str, float] | None = None) -> DriverStyle:
    """The style of vehicle ``index``: deterministic, independent of the seed, and close to ``mix``
    for any number of vehicles."""
    weights = _normalise_mix(mix or DEFAULT_STYLE_MIX)
    u = _low_discrepancy(index)
    acc = 0.0
    for style, w in weights.items():
        acc += w
        if u < acc:
            return style
    return next(reversed(weights))


# --- small numeric helpers (pure, vectorised) --------------------------------------------------------


def _white(j: np.ndarray, salt: float) -> np.ndarray:
    """Deterministic white noise in [-1, 1] as a function of the sample index, so a trip evaluated
    in different chunks gives identical values."""
    x = np.sin(j * 12.9898 + salt * 78.233) * 43758.5453
    return (x - np.floor(x)) * 2.0 - 1.0


def _smooth(t: np.ndarray, periods: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Smooth noise in [-1, 1]: a sum of sines; its slope is at most 2π / min(periods) per second."""
    w = 2 * np.pi / periods
    return np.sin(np.multiply.outer(t, w) + phases).sum(axis=-1) / len(periods)


def quantise(name: str, values: np.ndarray) -> np.ndarray:
    """Clip to the catalog range and round to the catalog resolution, as the codec would carry it
    (and to the decimals the decoder rounds to, so a round trip compares equal)."""
    sig = BY_NAME[name]
    q = np.round(np.clip(values, sig.minimum, sig.maximum) / sig.resolution) * sig.resolution
    return np.round(q, _decimals(sig.resolution))


def _decimals(resolution: float) -> int:
    """Decimal places of a resolution step, by the decoder's rule (0.25 -> 2, 0.1 -> 1, 1 -> 0)."""
    exponent = math.log10(resolution)
    return max(0, -math.floor(exponent) + (0 if round(exponent) == exponent else 1))


def haversine_m(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Great-circle distance in metres (used by tests and by the home-bearing of a new trip)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))


def ambient_temp_c(ts_ms: float) -> float:
    """A plausible north-Italian air temperature for a UTC instant: seasonal plus diurnal swing."""
    days = ts_ms / 86_400_000
    doy = days % 365.25  # near enough to the day of the year for a seasonal swing
    hour = (days % 1.0) * 24
    return 13 + 9 * math.cos(2 * math.pi * (doy - 200) / 365.25) + 5 * math.sin(2 * math.pi * (hour - 9) / 24)


def _altitude_m(lat: np.ndarray, lon: np.ndarray, center: tuple[float, float]) -> np.ndarray:
    """Terrain as a smooth function of position: the same place has the same height on every trip."""
    north = (lat - center[0]) * (math.pi / 180) * EARTH_RADIUS_M
    east = (lon - center[1]) * (math.pi / 180) * EARTH_RADIUS_M * math.cos(math.radians(center[0]))
    return 240 + 35 * np.sin(east / 5200) + 25 * np.cos(north / 3700) + 15 * np.sin((east + north) / 9000)


# --- vehicles, trips ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VehicleSpec:
    """What does not change about a vehicle during a run."""

    index: int
    device_id: str
    style: DriverStyle
    home_lat: float
    home_lon: float
    mass_kg: float
    idle_rpm: float
    tank_l: float
    salt: float  # seeds the closed-form noise of this vehicle


@dataclass(slots=True)
class _VehicleState:
    """What a vehicle carries from one trip to the next (continuity of position, heat and fuel)."""

    lat: float
    lon: float
    heading_deg: float
    coolant_c: float
    fuel_pct: float
    end_ms: int


@dataclass(slots=True)
class _Carry:
    """Integration state between two chunks of the same trip."""

    lat: float
    lon: float
    v_prev: float
    h_prev: float
    curv_deg: float
    fuel_pct: float


@dataclass(slots=True)
class _TripPlan:
    """A trip in closed form: speed and heading knots plus what the noise needs."""

    start_ms: int
    n: int  # samples while the engine runs (whole windows)
    rate_hz: float
    knot_t: np.ndarray
    knot_v: np.ndarray
    turn_t: np.ndarray
    turn_h: np.ndarray
    seg_t: np.ndarray  # segment start times
    seg_kappa: np.ndarray  # max curvature per segment (1/m)
    idle_start_s: float
    heading0: float
    coolant0: float
    ambient: float
    params: StyleParams
    noise: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


_URBAN, _RURAL, _MOTORWAY = 0, 1, 2


def _legs(rng: np.random.Generator, p: StyleParams, kind: int, budget_s: float, v_in: float) -> dict[str, np.ndarray]:
    """Junction-to-junction legs of one road segment filling about ``budget_s`` of driving.

    Every leg reaches its target speed (a short leg is lengthened instead), which keeps the legs
    independent of each other, hence vectorisable: leg ``k`` starts at leg ``k-1``'s end speed.
    """
    lo_kmh, hi_kmh = (p.urban_kmh, p.rural_kmh, p.motorway_kmh)[kind]
    length_range = ((150, 600), (800, 4000), (2000, 12000))[kind]
    stop_p, junction_p = ((0.4, 0.3), (0.08, 0.25), (0.0, 0.0))[kind]
    m = int(budget_s / (length_range[0] / (hi_kmh / 3.6))) + 2
    v = rng.uniform(lo_kmh, hi_kmh, m) / 3.6
    a = rng.uniform(*p.accel, m)
    b = rng.uniform(*p.brake, m)
    if p.harsh_probability:
        harsh_a, harsh_b = rng.random(m) < p.harsh_probability, rng.random(m) < p.harsh_probability
        a = np.where(harsh_a, rng.uniform(*p.harsh_accel, m), a)
        b = np.where(harsh_b, rng.uniform(*p.harsh_brake, m), b)
    a = np.minimum(a, p.max_accel * 0.95)
    b = np.minimum(b, p.max_brake * 0.95)
    length = rng.uniform(*length_range, m)
    u = rng.random(m)
    stop = u < stop_p
    junction = (~stop) & (u < stop_p + junction_p)
    junction_kmh = ((12, 22), (25, 45), (60, 60))[kind]
    ve = np.where(stop, 0.0, np.where(junction, np.minimum(rng.uniform(*junction_kmh, m) / 3.6, v), v))
    stop_s = np.where(stop, rng.uniform(*((8, 50), (3, 15), (0, 0))[kind], m), 0.0)
    turn_deg = np.zeros(m)
    if kind != _MOTORWAY:
        sign = np.where(rng.random(m) < 0.5, -1.0, 1.0)
        turn_range = ((60, 110), (20, 90))[kind]
        turns = junction | (stop & (rng.random(m) < 0.4))
        turn_deg = np.where(turns, sign * rng.uniform(*turn_range, m), 0.0)
    v0 = np.concatenate(([v_in], ve[:-1]))
    legs = {"v0": v0, "v": v, "ve": ve, "a": a, "b": b, "length": length, "stop_s": stop_s, "turn": turn_deg,
            "kind": np.full(m, kind)}
    _leg_times(legs)
    keep = max(1, int(np.searchsorted(np.cumsum(legs["duration"]), budget_s)))
    return {k: arr[:keep] for k, arr in legs.items()}


def _leg_times(legs: dict[str, np.ndarray]) -> None:
    """Phase durations of each trapezoid leg (in place): ramp to ``v``, cruise, ramp to ``ve``, stop."""
    v0, v, ve, a, b = legs["v0"], legs["v"], legs["ve"], legs["a"], legs["b"]
    rate1 = np.where(v >= v0, a, b)
    t1 = np.abs(v - v0) / rate1
    d1 = np.abs(v * v - v0 * v0) / (2 * rate1)
    t3 = (v - ve) / b
    d3 = (v * v - ve * ve) / (2 * b)
    length = np.maximum(legs["length"], d1 + d3 + 2 * v)
    tc = (length - d1 - d3) / v
    legs["length"], legs["t1"], legs["tc"], legs["t3"] = length, t1, tc, t3
    legs["duration"] = t1 + tc + t3 + legs["stop_s"]


def plan_trip(rng: np.random.Generator, spec: VehicleSpec, state: _VehicleState, start_ms: int, rate_hz: float,
              window_samples: int, center: tuple[float, float]) -> _TripPlan:
    """Plan one trip starting (engine on) at ``start_ms``; it lasts a whole number of windows."""
    p = STYLE_PARAMS[spec.style]
    drive_s = float(np.clip(rng.lognormal(math.log(p.trip_median_min * 60), 0.45), 5 * 60, 75 * 60))
    r = rng.random()
    if drive_s > 15 * 60 and r < p.motorway_probability:
        kinds, shares = [_URBAN, _MOTORWAY, _URBAN], [0.3, 0.55, 0.15]
    elif drive_s > 10 * 60 and r < p.motorway_probability + 0.35:
        kinds, shares = [_URBAN, _RURAL, _URBAN], [0.35, 0.45, 0.2]
    else:
        kinds, shares = [_URBAN], [1.0]
    parts: list[dict[str, np.ndarray]] = []
    v_in = 0.0
    for kind, share in zip(kinds, shares, strict=True):
        seg = _legs(rng, p, kind, drive_s * share, v_in)
        parts.append(seg)
        v_in = float(seg["ve"][-1])
    legs = {k: np.concatenate([seg[k] for seg in parts]) for k in parts[0]}
    # The trip ends parked: the last leg brakes to a standstill.
    legs["ve"][-1] = 0.0
    legs["stop_s"][-1] = 0.0
    legs["turn"][-1] = 0.0
    _leg_times(legs)

    idle_start = 3.0 + float(rng.uniform(2, 25))
    driving = float(legs["duration"].sum())
    window_s = window_samples / rate_hz
    n_windows = max(1, math.ceil((idle_start + driving + 5.0) / window_s))
    slack = n_windows * window_s - (idle_start + driving + 5.0)
    idle_start += slack * float(rng.uniform(0, 0.5))

    t0 = idle_start + np.concatenate(([0.0], np.cumsum(legs["duration"])[:-1]))
    t_a = t0 + legs["t1"]
    t_b = t_a + legs["tc"]
    t_c = t_b + legs["t3"]
    t_d = t_c + legs["stop_s"]
    knot_t = np.concatenate(([0.0], np.column_stack((t0, t_a, t_b, t_c, t_d)).ravel(), [n_windows * window_s + 1]))
    knot_v = np.concatenate(([0.0], np.column_stack((legs["v0"], legs["v"], legs["v"], legs["ve"], legs["ve"]))
                             .ravel(), [0.0]))

    # Turns: the heading ramps by the leg's angle from 1 s before to 5 s after the leg boundary.
    turning = legs["turn"] != 0
    tb = t_d[turning]
    cum = np.cumsum(legs["turn"][turning])
    turn_t = np.column_stack((tb - 1.0, tb + 5.0)).ravel()
    turn_h = np.column_stack((np.concatenate(([0.0], cum))[:-1], cum)).ravel()  # (before, after) per turn
    turn_t = np.maximum.accumulate(np.concatenate(([-1.0], turn_t))) + np.arange(len(turn_t) + 1) * 1e-6
    turn_h = np.concatenate(([0.0], turn_h))

    kinds_per_leg = legs["kind"]
    first_leg = np.flatnonzero(np.concatenate(([True], kinds_per_leg[1:] != kinds_per_leg[:-1])))
    seg_t = np.concatenate(([0.0], t0[first_leg][1:]))
    seg_kappa = np.array([1 / 600, 1 / 250, 1 / 1500])[kinds_per_leg[first_leg]]

    # Leave heading: towards home when far from it (keeps the fleet around its city), else as parked.
    heading0 = state.heading_deg
    away = float(haversine_m(np.float64(state.lat), np.float64(state.lon), np.float64(spec.home_lat),
                             np.float64(spec.home_lon)))
    if away > 3000 and rng.random() < 0.7:
        y = math.sin(math.radians(spec.home_lon - state.lon)) * math.cos(math.radians(spec.home_lat))
        x = (math.cos(math.radians(state.lat)) * math.sin(math.radians(spec.home_lat))
             - math.sin(math.radians(state.lat)) * math.cos(math.radians(spec.home_lat))
             * math.cos(math.radians(spec.home_lon - state.lon)))
        heading0 = math.degrees(math.atan2(y, x)) + float(rng.uniform(-30, 30))
    elif rng.random() < 0.3:
        heading0 += 180.0

    noise = {k: (rng.uniform(lo, hi, 3), rng.uniform(0, 2 * np.pi, 3))
             for k, (lo, hi) in {"cruise": (60, 240), "curve": (40, 200), "battery": (30, 300),
                                 "thermo": (200, 600), "hdop": (60, 400), "sats": (90, 600),
                                 "alt": (20, 90), "gps": (5, 30)}.items()}
    return _TripPlan(start_ms, round(n_windows * window_samples), rate_hz, knot_t, knot_v, turn_t, turn_h,
                     seg_t, seg_kappa, idle_start, heading0, state.coolant_c, ambient_temp_c(start_ms), p, noise)


def evaluate_trip(plan: _TripPlan, spec: VehicleSpec, j0: int, j1: int, carry: _Carry,
                  center: tuple[float, float] = DEFAULT_CENTER) -> tuple[dict[str, np.ndarray], _Carry]:
    """Samples ``j0 <= j < j1`` of a trip as quantised catalog columns (plus ``_v``, the exact speed
    in m/s), and the carry for the next chunk. Pure: the same plan and range give the same arrays,
    whatever the chunking."""
    j = np.arange(j0, j1, dtype=np.float64)
    n = len(j)
    dt = 1.0 / plan.rate_hz
    t = j * dt
    nz = plan.noise
    base_v = np.interp(t, plan.knot_t, plan.knot_v)
    v = base_v * (1 + 0.02 * _smooth(t, *nz["cruise"]))
    accel = (np.interp(t + 0.5, plan.knot_t, plan.knot_v) - np.interp(t - 0.5, plan.knot_t, plan.knot_v))
    v_kmh = v * 3.6

    # Heading: junction turns (knots) + gentle curvature integrated along the road.
    kappa = plan.seg_kappa[np.searchsorted(plan.seg_t, t, side="right") - 1] * _smooth(t, *nz["curve"])
    dh = np.degrees(v * kappa * dt)
    curv = carry.curv_deg + np.cumsum(dh) - dh
    heading = plan.heading0 + np.interp(t, plan.turn_t, plan.turn_h) + curv

    # Position: trapezoid steps from the previous sample (the first sample of a trip does not move).
    v_prev = np.concatenate(([carry.v_prev if j0 > 0 else v[0]], v[:-1]))
    h_prev = np.concatenate(([carry.h_prev if j0 > 0 else heading[0]], heading[:-1]))
    ds = 0.5 * (v + v_prev) * dt
    bearing = np.radians(0.5 * (heading + h_prev))
    lat = carry.lat + np.cumsum(ds * np.cos(bearing)) * (180 / math.pi / EARTH_RADIUS_M)
    lat_mid = np.radians(lat - 0.5 * ds * np.cos(bearing) * (180 / math.pi / EARTH_RADIUS_M))
    lon = carry.lon + np.cumsum(ds * np.sin(bearing) / np.cos(lat_mid)) * (180 / math.pi / EARTH_RADIUS_M)

    # Engine temperature: warm-up toward the thermostat, then regulated.
    warm = 95 - (95 - plan.coolant0) * np.exp(-t / 300)
    coolant = np.minimum(warm, 89.5 + 1.5 * _smooth(t, *nz["thermo"]))

    # Gear and RPM.
    p = plan.params
    rpm_g = np.multiply.outer(v_kmh, 1000 / GEAR_KMH_PER_KRPM)
    limit = np.where(accel > 0.3, p.shift_up_rpm, p.cruise_rpm)
    fits = rpm_g <= limit[:, None]
    gear = np.where(fits.any(axis=1), fits.argmax(axis=1), len(GEAR_KMH_PER_KRPM) - 1)
    rpm = rpm_g[np.arange(n), gear]
    idle = spec.idle_rpm + 250 * np.clip((40 - coolant) / 40, 0, 1) + 10 * _white(j, spec.salt + 1)
    rpm = np.where(v_kmh < 7, np.maximum(rpm, idle + np.where(accel > 0.2, 450, 0)), np.maximum(rpm, idle + 50))
    rpm = np.where(v < 0.05, idle, rpm)
    cranking = t < 0.8
    flare = (t >= 0.8) & (t < 2.5)
    rpm = np.where(cranking, 220 + 30 * _white(j, spec.salt + 2), np.where(flare, np.maximum(rpm, 1250), rpm))

    # Road load -> engine power -> load %, throttle, MAF, fuel.
    p_wheel = spec.mass_kg * v * (accel + G * 0.012) + 0.5 * 1.2 * 0.65 * v ** 3
    p_engine = p_wheel / 0.9 + 1500.0
    torque_max = 150 * (0.6 + 0.4 * np.minimum(rpm, 3000) / 3000)
    p_max = torque_max * np.maximum(rpm, 200) * (2 * math.pi / 60)
    load = 15 + 85 * p_engine / p_max
    overrun = (p_wheel < 0) & (v > 2) & (rpm > idle + 150)
    load = np.where(overrun, 5 + 2 * _white(j, spec.salt + 3), load)
    load = np.clip(np.where(cranking, 35.0, load), 0, 100)
    throttle = np.where(overrun, 13.5, 14 + 0.85 * np.maximum(load - 22, 0))
    maf = 1.6 * rpm / 120 * (load / 100) * 1.06
    fuel_rate = maf / 14.7 / 745 * 3600
    fuel_used = np.cumsum(fuel_rate) * (dt / 3600)
    fuel_pct = carry.fuel_pct - fuel_used / spec.tank_l * 100

    battery = 14.2 + 0.08 * _smooth(t, *nz["battery"]) - 0.1 * (v < 0.05)
    battery = np.where(cranking, 10.6 + 0.2 * _white(j, spec.salt + 4),
                       np.where(flare, 13.5 + 0.3 * (t - 0.8) / 1.7, battery))

    gps_speed = np.abs(v_kmh + 0.3 * _smooth(t, *nz["gps"]) + 0.15 * _white(j, spec.salt + 5))
    cols: dict[str, np.ndarray] = {
        "speed": v_kmh,
        "rpm": rpm,
        "engine_load": load,
        "throttle_pos": np.clip(throttle, 0, 100),
        "coolant_temp": coolant,
        "intake_temp": plan.ambient + 3 + 0.12 * (coolant - plan.ambient) + 6 * np.exp(-v / 8),
        "maf": maf,
        "intake_pressure": np.minimum(20 + load * 0.78, 98),
        "fuel_level": fuel_pct,
        "fuel_rate": fuel_rate,
        "run_time": np.floor(t),
        "battery_voltage": battery,
        "latitude": lat,
        "longitude": lon,
        "altitude": _altitude_m(lat, lon, center) + 0.4 * _smooth(t, *nz["alt"]),
        "gps_speed": gps_speed,
        "course": np.mod(heading, 360.0),
        "hdop": 1.1 + 0.35 * _smooth(t, *nz["hdop"]),
        "satellites": np.round(9.5 + 2.4 * _smooth(t, *nz["sats"])),
        "fix_mode": np.full(n, 3.0),
    }
    out = {name: quantise(name, col) for name, col in cols.items()}
    out["course"] = np.where(out["course"] >= 360.0, 0.0, out["course"])
    out["_v"] = v
    new_carry = _Carry(float(lat[-1]), float(lon[-1]), float(v[-1]), float(heading[-1]), float(curv[-1] + dh[-1]),
                       float(fuel_pct[-1]))
    return out, new_carry


def next_departure_ms(rng: np.random.Generator, after_ms: int, departures_per_hour: Sequence[float]) -> int:
    """When a parked vehicle leaves next: a piecewise-constant hazard per UTC hour (trips/hour)."""
    need = float(rng.exponential())
    hours = after_ms / 3_600_000
    for _ in range(24 * 60):
        hour = math.floor(hours)
        step = (hour + 1) - hours
        lam = departures_per_hour[hour % 24]
        if lam * step >= need:
            return round((hours + need / lam) * 3_600_000)
        need -= lam * step
        hours = hour + 1
    return round(hours * 3_600_000)


# --- one vehicle's stream of windows -----------------------------------------------------------------


class _VehicleStream:
    """One vehicle's windows in order: ``window(k)`` gives the samples of window ``k`` or None
    while parked. Holds one trip plan and one evaluated chunk at a time, so memory stays small."""

    def __init__(self, spec: VehicleSpec, rng: np.random.Generator, origin_ms: int, rate_hz: float,
                 window_samples: int, n_windows: int | None, chunk_windows: int, drive_at_start: bool,
                 center: tuple[float, float]) -> None:
        self.spec = spec
        self.rng = rng
        self.origin_ms = origin_ms
        self.rate_hz = rate_hz
        self.ws = window_samples
        self.window_ms = window_samples / rate_hz * 1000
        self.n_windows = n_windows
        self.chunk_windows = chunk_windows
        self.center = center
        ambient = ambient_temp_c(origin_ms)
        self.state = _VehicleState(spec.home_lat, spec.home_lon, float(rng.uniform(0, 360)), ambient,
                                   float(rng.uniform(30, 95)), origin_ms)
        self.plan: _TripPlan | None = None
        self.trip_w0 = 0
        self.trip_windows = 0
        self.trip_no = -1
        self.carry: _Carry | None = None
        self.buf: dict[str, np.ndarray] | None = None
        self.buf_j0 = 0
        self.buf_j1 = 0
        self._schedule(0 if drive_at_start else None)

    def _schedule(self, window: int | None) -> None:
        """Plan the next trip, at ``window`` or after a parked period drawn from the style's hazard."""
        p = STYLE_PARAMS[self.spec.style]
        if window is None:
            park_ms = int(self.rng.uniform(10, 45) * 60_000)
            dep = next_departure_ms(self.rng, self.state.end_ms + park_ms, p.departures_per_hour)
            window = max(self.trip_w0 + self.trip_windows, math.ceil((dep - self.origin_ms) / self.window_ms))
        start_ms = self.origin_ms + round(window * self.window_ms)
        parked_s = max(0.0, (start_ms - self.state.end_ms) / 1000)
        ambient = ambient_temp_c(start_ms)
        self.state.coolant_c = ambient + (self.state.coolant_c - ambient) * math.exp(-parked_s / 7200)
        if self.state.fuel_pct < 12:
            self.state.fuel_pct = float(self.rng.uniform(85, 98))  # filled up before leaving
        self.plan = plan_trip(self.rng, self.spec, self.state, start_ms, self.rate_hz, self.ws, self.center)
        self.trip_w0 = window
        self.trip_windows = self.plan.n // self.ws
        self.trip_no += 1
        self.carry = _Carry(self.state.lat, self.state.lon, 0.0, self.plan.heading0, 0.0, self.state.fuel_pct)
        self.buf, self.buf_j0, self.buf_j1 = None, 0, 0

    def _finish_trip(self) -> None:
        plan, carry = self.plan, self.carry
        assert plan is not None and carry is not None
        if self.buf_j1 < plan.n:  # evaluate the rest so the vehicle parks where the trip ends
            _, carry = evaluate_trip(plan, self.spec, self.buf_j1, plan.n, carry, self.center)
        # Coolant at engine off: the warm-up curve's value at the end of the trip.
        t_end = plan.n / plan.rate_hz
        coolant = float(min(95 - (95 - plan.coolant0) * math.exp(-t_end / 300), 90.0))
        self.state = _VehicleState(carry.lat, carry.lon, carry.h_prev % 360, coolant, carry.fuel_pct,
                                   plan.start_ms + round(t_end * 1000))

    def window(self, k: int) -> tuple[dict[str, np.ndarray], int] | None:
        """Columns of window ``k`` (numpy, quantised) and the trip number, or None when parked."""
        while k >= self.trip_w0 + self.trip_windows:
            self._finish_trip()
            self._schedule(None)
        if k < self.trip_w0:
            return None
        plan = self.plan
        assert plan is not None and self.carry is not None
        j = (k - self.trip_w0) * self.ws
        if self.buf is None or not self.buf_j0 <= j < self.buf_j1:
            end = min(plan.n, j + self.chunk_windows * self.ws)
            if self.n_windows is not None:
                end = min(end, (self.n_windows - self.trip_w0) * self.ws)
            if j != self.buf_j1:  # not contiguous (never happens in order, but stay correct)
                raise RuntimeError("windows must be requested in order")
            self.buf, self.carry = evaluate_trip(plan, self.spec, j, end, self.carry, self.center)
            self.buf_j0, self.buf_j1 = j, end
        lo = j - self.buf_j0
        return {name: col[lo:lo + self.ws] for name, col in self.buf.items()}, self.trip_no


# --- the fleet ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class VehicleDrive:
    """One vehicle's samples over a time range (engine-on samples only)."""

    spec: VehicleSpec
    ts_ms: np.ndarray
    columns: dict[str, np.ndarray]
    speed_ms: np.ndarray  # exact speed before quantisation, for physics checks
    trip: np.ndarray  # trip number of each sample


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class PublishStats:
    """Counters of a publishing run; ``seconds`` is the publish phase (first publish to last PUBACK)."""

    messages: int = 0
    samples: int = 0
    acked_messages: int = 0
    acked_samples: int = 0
    refused: int = 0
    bytes: int = 0
    seconds: float = 0.0
    encode_seconds: float = 0.0
    last_error: str = ""

    @property
    def msgs_per_s(self) -> float:
        return self.acked_messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def samples_per_s(self) -> float:
        return self.acked_samples / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "samples": self.samples, "acked_messages": self.acked_messages,
                "acked_samples": self.acked_samples, "refused": self.refused, "bytes": self.bytes,
                "seconds": round(self.seconds, 3), "encode_seconds": round(self.encode_seconds, 3),
                "msgs_per_s": round(self.msgs_per_s, 1), "samples_per_s": round(self.samples_per_s, 1),
                "last_error": self.last_error}


@dataclass(slots=True)
class MqttTarget:
    """Where ``run_live`` publishes. One connection carries every simulated vehicle, so its user
    must be allowed to write every device's data topics (a device's own ACL would refuse others)."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    client_id: str = ""
    keepalive_s: int = 60


class FleetSimulator:
    """A deterministic fleet of simulated vehicles producing sample batches and MQTT payloads.

    ``styles`` sets the mix of driver styles (by weight); ``style_override`` forces one style for
    every vehicle (or per index). ``unique_boots`` gives each run fresh random boot ids: ingest
    de-duplicates on (device, boot, seq), so without it two runs with the same seed and start are
    (correctly) the same records.
    """

    def __init__(self, vehicles: int, rate_hz: float = 1.0, batch_seconds: float = 60, seed: int = 0,
                 device_prefix: str = "sim", start_ms: int | None = None, *,
                 styles: Mapping[DriverStyle | str, float] | None = None,
                 style_override: DriverStyle | str | Mapping[int, DriverStyle | str] | None = None,
                 center: tuple[float, float] = DEFAULT_CENTER, spread_km: float = 8.0,
                 signals: Sequence[str] | None = None, stagger: bool = True, unique_boots: bool = False,
                 chunk_seconds: float = 900) -> None:
        if vehicles < 1:
            raise ValueError("vehicles must be at least 1")
        if not (rate_hz > 0 and batch_seconds > 0):
            raise ValueError("rate_hz and batch_seconds must be positive")
        ws = batch_seconds * rate_hz
        if abs(ws - round(ws)) > 1e-9 or not 1 <= round(ws) <= MAX_SAMPLES:
            raise ValueError(f"batch_seconds * rate_hz must be a whole number of samples in 1..{MAX_SAMPLES}")
        self.vehicles = vehicles
        self.rate_hz = float(rate_hz)
        self.batch_seconds = float(batch_seconds)
        self.samples_per_batch = round(ws)
        self.seed = seed
        self.device_prefix = device_prefix
        self.start_ms = start_ms
        self.center = center
        self.stagger = stagger
        self.unique_boots = unique_boots
        self.signals = tuple(signals) if signals is not None else DEFAULT_SIGNALS
        unknown = [s for s in self.signals if s not in DEFAULT_SIGNALS]
        if unknown:
            raise ValueError(f"the simulator does not produce {unknown}; it produces {list(DEFAULT_SIGNALS)}")
        self.device_ids = [f"{device_prefix}-{i:04d}" for i in range(vehicles)]
        for dev in self.device_ids:
            topics.check_device_id(dev)
        mix = _normalise_mix(styles or DEFAULT_STYLE_MIX)
        self.styles: list[DriverStyle] = []
        for i in range(vehicles):
            forced = style_override.get(i) if isinstance(style_override, Mapping) else style_override
            self.styles.append(DriverStyle(forced) if forced is not None else style_for_index(i, mix))
        self.specs = [self._spec(i, spread_km) for i in range(vehicles)]
        self.chunk_windows = max(1, int(chunk_seconds // self.batch_seconds))
        # Phases spread each window's batches evenly; a phase is a whole number of samples.
        self.phase_samples = [int(_low_discrepancy(i + 1) * self.samples_per_batch) if stagger else 0
                              for i in range(vehicles)]
        # Publishing order within a window: the batch whose last sample comes first goes first.
        self.order = sorted(range(vehicles), key=lambda i: (-self.phase_samples[i], i))
        self._only: frozenset[int] | None = None  # a worker's share of the fleet (parallel prebuild)

    def _spec(self, i: int, spread_km: float) -> VehicleSpec:
        """A vehicle's fixed traits, from its own random stream (independent of the fleet size)."""
        rng = np.random.default_rng([self.seed, i, 0x5EED])
        radius = spread_km * 1000 * math.sqrt(rng.random())
        angle = rng.uniform(0, 2 * math.pi)
        lat0 = self.center[0]
        return VehicleSpec(
            index=i, device_id=self.device_ids[i], style=self.styles[i],
            home_lat=lat0 + radius * math.cos(angle) / EARTH_RADIUS_M * 180 / math.pi,
            home_lon=self.center[1] + radius * math.sin(angle) / (EARTH_RADIUS_M * math.cos(math.radians(lat0)))
            * 180 / math.pi,
            mass_kg=float(rng.uniform(1150, 1550)), idle_rpm=float(rng.uniform(760, 840)),
            tank_l=float(rng.uniform(40, 60)), salt=float(rng.uniform(0, 1000)))

    # --- identities ---------------------------------------------------------------------------------

    def boot_id(self, index: int, start_ms: int) -> uuid.UUID:
        """The boot id of vehicle ``index`` for a run starting at ``start_ms`` (stable for the run)."""
        if self.unique_boots:
            return uuid.uuid4()
        digest = hashlib.blake2b(f"{self.seed}/{index}/{start_ms}".encode(), digest_size=16).digest()
        return uuid.UUID(bytes=digest, version=4)

    def origin_ms(self, index: int, start_ms: int) -> int:
        """Where vehicle ``index``'s window grid starts: up to one window before ``start_ms``."""
        return start_ms - round(self.phase_samples[index] / self.rate_hz * 1000)

    # --- generation ---------------------------------------------------------------------------------

    def _streams(self, n_windows: int | None, start_ms: int, drive_at_start: bool) -> dict[int, _VehicleStream]:
        chunk = self.chunk_windows
        # Bound the buffered samples of a big fleet (~2M samples of float64 columns at once).
        chunk = max(1, min(chunk, 2_000_000 // (self.vehicles * self.samples_per_batch) or 1))
        return {i: _VehicleStream(spec, np.random.default_rng([self.seed, spec.index]), self.origin_ms(i, start_ms),
                                  self.rate_hz, self.samples_per_batch, n_windows, chunk, drive_at_start, self.center)
                for i, spec in enumerate(self.specs) if self._only is None or i in self._only}

    def _windows(self, duration_s: float | None) -> int | None:
        if duration_s is None or duration_s <= 0 or math.isinf(duration_s):
            return None
        return max(1, math.ceil(duration_s / self.batch_seconds - 1e-9))

    def _raw(self, duration_s: float | None, start_ms: int | None, drive_at_start: bool
             ) -> Iterator[tuple[int, int, dict[str, np.ndarray], np.ndarray]]:
        """(window, vehicle index, columns, ts_ms) in publishing order: window by window, and within
        a window by the time its last sample was taken."""
        start = self._start(start_ms)
        n_windows = self._windows(duration_s)
        streams = self._streams(n_windows, start, drive_at_start)
        order = [i for i in self.order if i in streams]
        step = np.arange(self.samples_per_batch, dtype=np.float64) * (1000.0 / self.rate_hz)
        k = 0
        while n_windows is None or k < n_windows:
            for i in order:
                got = streams[i].window(k)
                if got is None:
                    continue
                w0 = streams[i].origin_ms + k * streams[i].window_ms
                yield k, i, got[0], np.round(w0 + step).astype(np.int64)
            k += 1

    def _start(self, start_ms: int | None) -> int:
        if start_ms is not None:
            return int(start_ms)
        return int(self.start_ms) if self.start_ms is not None else _now_ms()

    def batches(self, duration_s: float | None, start_ms: int | None = None, *, drive_at_start: bool = False
                ) -> Iterator[tuple[str, SampleBatch]]:
        """``(device_id, SampleBatch)`` in time order, every vehicle's window ``k`` before ``k + 1``.

        Covers ``duration_s`` (rounded up to whole windows; None = forever) from ``start_ms`` (default:
        the constructor's, else now). ``drive_at_start`` starts every vehicle's first trip in its
        first window instead of waiting for its first departure (what a live demo wants).
        Columns are Python lists (the encoder iterates lists fastest)."""
        for _k, dev, batch in self._batches(duration_s, start_ms, drive_at_start):
            yield dev, batch

    def _batches(self, duration_s: float | None, start_ms: int | None = None, drive_at_start: bool = False
                 ) -> Iterator[tuple[int, str, SampleBatch]]:
        """:meth:`batches` with the window number of each batch (for merging parallel work)."""
        start = self._start(start_ms)
        boots = [self.boot_id(i, start) for i in range(self.vehicles)]
        seqs = [0] * self.vehicles
        n = self.samples_per_batch
        for k, i, cols, ts in self._raw(duration_s, start, drive_at_start):
            s0 = seqs[i]
            seqs[i] = s0 + n
            yield k, self.device_ids[i], SampleBatch(
                self.device_ids[i], boots[i], range(s0, s0 + n), ts.tolist(),
                {name: cols[name].tolist() for name in self.signals})

    def _encoded(self, duration_s: float | None, start_ms: int | None, drive_at_start: bool
                 ) -> Iterator[tuple[str, bytes, int, int]]:
        """(topic, payload, samples, ms of the batch's last sample + one period)."""
        for _k, _i, topic, payload, n, end in self._encoded_keyed(duration_s, start_ms, drive_at_start):
            yield topic, payload, n, end

    def _encoded_keyed(self, duration_s: float | None, start_ms: int | None, drive_at_start: bool
                       ) -> Iterator[tuple[int, int, str, bytes, int, int]]:
        period = 1000.0 / self.rate_hz
        index = {d: i for i, d in enumerate(self.device_ids)}
        for k, dev, batch in self._batches(duration_s, start_ms, drive_at_start):
            i = index[dev]
            yield (k, i, topics.samples(dev), encode_samples_binary(batch), len(batch),
                   int(batch.ts_ms[-1] + period))

    def payloads(self, duration_s: float | None, start_ms: int | None = None, *, drive_at_start: bool = False
                 ) -> Iterator[tuple[str, bytes, str]]:
        """``(topic, payload, content_type)`` ready to publish, binary codec, in time order."""
        for topic, payload, _n, _end in self._encoded(duration_s, start_ms, drive_at_start):
            yield topic, payload, CT_SAMPLES_BINARY

    def simulate_vehicle(self, index: int, duration_s: float, start_ms: int | None = None, *,
                         drive_at_start: bool = False) -> VehicleDrive:
        """One vehicle's drive arrays for a time range (same values as its batches)."""
        start = self._start(start_ms)
        n_windows = self._windows(duration_s)
        assert n_windows is not None
        saved, self._only = self._only, frozenset([index])
        try:
            stream = self._streams(n_windows, start, drive_at_start)[index]
        finally:
            self._only = saved
        step = np.arange(self.samples_per_batch, dtype=np.float64) * (1000.0 / self.rate_hz)
        parts: list[tuple[dict[str, np.ndarray], np.ndarray, int]] = []
        for k in range(n_windows):
            got = stream.window(k)
            if got is not None:
                ts = np.round(stream.origin_ms + k * stream.window_ms + step).astype(np.int64)
                parts.append((got[0], ts, got[1]))  # columns, timestamps, trip number
        names = [*self.signals, "_v"]
        if not parts:
            empty = np.zeros(0)
            return VehicleDrive(self.specs[index], np.zeros(0, dtype=np.int64), {n: empty for n in self.signals},
                                empty, np.zeros(0, dtype=np.int64))
        cols = {name: np.concatenate([p[0][name] for p in parts]) for name in names}
        speed = cols.pop("_v")
        trip = np.concatenate([np.full(len(p[1]), p[2]) for p in parts])
        return VehicleDrive(self.specs[index], np.concatenate([p[1] for p in parts]), cols, speed, trip)

    def prebuild(self, duration_s: float, start_ms: int | None = None, *, drive_at_start: bool = True,
                 workers: int = 1) -> list[tuple[str, bytes, int]]:
        """Every payload of a run, encoded up front: ``(topic, payload, samples)`` in publishing order.

        Encoding (the codec's pure-Python varint loop) is the slow part, so ``workers`` > 1 splits
        the fleet over processes; vehicles are independent, so the bytes are the same either way
        (except that ``unique_boots`` draws fresh boot ids on every call)."""
        start = self._start(start_ms)
        workers = max(1, min(workers, self.vehicles))
        if workers == 1:
            return [(t, p, n) for t, p, n, _ in self._encoded(duration_s, start, drive_at_start)]
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        shards = [self.order[w::workers] for w in range(workers)]
        rank = {i: r for r, i in enumerate(self.order)}
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            parts = list(pool.map(_prebuild_shard, [(self, shard, duration_s, start, drive_at_start)
                                                    for shard in shards]))
        merged = sorted((item for part in parts for item in part), key=lambda it: (it[0], rank[it[1]]))
        return [(t, p, n) for _k, _i, t, p, n in merged]

    # --- MQTT edge ----------------------------------------------------------------------------------

    def run_live(self, target: MqttTarget | mqtt.Client, duration_s: float | None, *, speed: float = 1.0,
                 max_rate: bool = False, start_ms: int | None = None, max_inflight: int = 10_000,
                 progress: Callable[[PublishStats], None] | None = None, progress_interval_s: float = 5.0,
                 stop: threading.Event | None = None, ack_timeout_s: float = 60.0, workers: int = 1) -> PublishStats:
        """Publish the fleet over MQTT v5, QoS 1, content type set as the agent sets it, each message
        with a ``sent_ms`` user property (Unix ms at publish) for publish-to-commit latency.

        Live (default): every vehicle drives from its first window; a batch goes out when the
        simulated clock passes its last sample (timestamps are the wall clock from ``start_ms`` =
        now; ``speed`` > 1 runs the simulated clock faster, so timestamps run ahead of the wall
        clock by (speed - 1) x elapsed: ingest refuses samples more than 5 min in the future).
        ``duration_s`` None or 0 runs until ``stop`` is set.

        ``max_rate``: encode every payload of ``duration_s`` first (timestamps ending now), then
        publish as fast as the broker acknowledges, at most ``max_inflight`` unacknowledged
        (``workers`` processes encode; see :meth:`prebuild`).
        Returns the counters; waits (up to ``ack_timeout_s``) for every PUBACK before returning."""
        stop = stop or threading.Event()
        stats = PublishStats()
        if max_rate:
            if not duration_s:
                raise ValueError("max_rate needs a duration")
            t0 = time.perf_counter()
            start = start_ms if start_ms is not None else _now_ms() - int(duration_s * 1000)
            prebuilt = self.prebuild(duration_s, start, drive_at_start=True, workers=workers)
            stats.encode_seconds = time.perf_counter() - t0
            source: Iterator[tuple[str, bytes, int, int | None]] = ((t, p, n, None) for t, p, n in prebuilt)
            sim_start = 0
        else:
            sim_start = start_ms if start_ms is not None else _now_ms()
            source = ((t, p, n, end) for t, p, n, end in self._encoded(None, sim_start, True))
        with _Connection(target, max_inflight) as conn:
            publish_t0 = time.perf_counter()
            wall0 = time.time()
            next_progress = time.monotonic() + progress_interval_s
            try:
                for topic, payload, n, end_ms in source:
                    if stop.is_set():
                        break
                    if end_ms is not None:  # live pacing: wait for the simulated clock
                        if duration_s and end_ms - sim_start > duration_s * 1000:
                            break  # batches come in end order: everything after is later still
                        due = wall0 + (end_ms - sim_start) / 1000 / speed
                        while not stop.is_set():
                            now = time.time()
                            if now >= due:
                                break
                            conn.service(min(due - now, 0.25))
                            if progress and time.monotonic() >= next_progress:
                                conn.fill(stats)
                                progress(stats)
                                next_progress = time.monotonic() + progress_interval_s
                        if stop.is_set():
                            break
                    conn.publish(topic, payload, n, stats)
                    if progress and time.monotonic() >= next_progress:
                        conn.fill(stats)
                        progress(stats)
                        next_progress = time.monotonic() + progress_interval_s
            except KeyboardInterrupt:
                stats.last_error = "interrupted"
            conn.wait_acks(ack_timeout_s)
            stats.seconds = time.perf_counter() - publish_t0
            conn.fill(stats)
        return stats


def publish_prebuilt(target: MqttTarget | mqtt.Client, prebuilt: Sequence[tuple[str, bytes, int]], *,
                     samples_per_s: float | None = None, max_inflight: int = 10_000,
                     ack_timeout_s: float = 120.0) -> PublishStats:
    """Publish payloads from :meth:`FleetSimulator.prebuild`: as fast as the broker acknowledges, or
    paced to ``samples_per_s`` (for latency at a chosen load). Each message carries ``sent_ms``."""
    stats = PublishStats()
    with _Connection(target, max_inflight) as conn:
        t0 = time.perf_counter()
        sent = 0
        for topic, payload, n in prebuilt:
            if samples_per_s:
                due = t0 + sent / samples_per_s
                while (now := time.perf_counter()) < due:
                    conn.service(min(due - now, 0.05))
            conn.publish(topic, payload, n, stats)
            sent += n
        conn.wait_acks(ack_timeout_s)
        stats.seconds = time.perf_counter() - t0
        conn.fill(stats)
    return stats


def _prebuild_shard(args: tuple[FleetSimulator, list[int], float, int, bool]
                    ) -> list[tuple[int, int, str, bytes, int]]:
    """A worker process's share of :meth:`FleetSimulator.prebuild`, keyed for the merge."""
    fleet, indices, duration_s, start_ms, drive_at_start = args
    fleet._only = frozenset(indices)
    return [(k, i, t, p, n) for k, i, t, p, n, _ in fleet._encoded_keyed(duration_s, start_ms, drive_at_start)]


class _Connection:
    """One paho MQTT v5 client with PUBACK accounting and a cap on unacknowledged messages.

    An owned client runs paho's network loop in the publishing thread (``loop()`` between
    publishes) instead of ``loop_start()``: with one thread there is no GIL ping-pong between the
    publisher and paho's network thread, which measured about five times faster. A client passed in
    by the caller must already be connected with its own loop running (``loop_start``).
    """

    def __init__(self, target: MqttTarget | mqtt.Client, max_inflight: int) -> None:
        import paho.mqtt.client as mqtt_mod
        from paho.mqtt.enums import CallbackAPIVersion

        self._mqtt = mqtt_mod
        self.max_inflight = max_inflight
        self.cond = threading.Condition()
        self.acked = 0
        self.acked_samples = 0
        self.refused = 0
        self.published = 0
        self.pending: dict[int, int] = {}  # mid -> samples
        self.early: dict[int, bool] = {}  # PUBACKs that beat publish() returning (threaded client)
        self.connected = threading.Event()
        self.error = ""
        self._props: Any = None
        self._props_ms = -1
        self._since_service = 0
        self._next_reconnect = 0.0
        self.owned = not isinstance(target, mqtt_mod.Client)
        if isinstance(target, mqtt_mod.Client):
            self.client = target
            self.connected.set()
        else:
            self.target = target
            client_id = target.client_id or f"vinsight-sim-{uuid.uuid4().hex[:8]}"
            self.client = mqtt_mod.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                          protocol=mqtt_mod.MQTTv5)
            if target.username is not None or target.password is not None:
                self.client.username_pw_set(target.username, target.password)
            if target.tls_ca:
                import ssl

                self.client.tls_set(ca_certs=target.tls_ca, cert_reqs=ssl.CERT_REQUIRED,
                                    tls_version=ssl.PROTOCOL_TLS_CLIENT)
            self.client.on_connect = self._on_connect
            self.client.on_disconnect = self._on_disconnect
            self.client.max_inflight_messages_set(max_inflight + 100)
            self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish

    def __enter__(self) -> _Connection:
        if self.owned:
            self.client.connect(self.target.host, self.target.port, keepalive=self.target.keepalive_s)
            deadline = time.monotonic() + 15
            while not self.connected.is_set() and time.monotonic() < deadline and not self.error:
                self.client.loop(0.1)
            if not self.connected.is_set():
                self.client.disconnect()
                raise ConnectionError(f"no CONNACK from {self.target.host}:{self.target.port}: {self.error}")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.owned:
            self.client.disconnect()
            self.client.loop(0.1)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
        if reason_code.is_failure:
            self.error = f"connect refused: {reason_code}"
            return
        self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
        self.connected.clear()
        self.error = f"disconnected: {reason_code}"

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason_code: Any, _p: Any) -> None:
        with self.cond:
            ok = not reason_code.is_failure
            n = self.pending.pop(mid, None)
            if n is None:
                self.early[mid] = ok
            elif ok:
                self.acked += 1
                self.acked_samples += n
            else:
                self.refused += 1
                self.error = f"publish refused: {reason_code}"
            self.cond.notify_all()

    def service(self, timeout_s: float) -> None:
        """Let PUBACKs in (and keep-alives out) for up to ``timeout_s``; reconnect if the link dropped."""
        if not self.owned:
            with self.cond:
                self.cond.wait(timeout_s)
            return
        rc = self.client.loop(timeout_s)
        lost = rc in (self._mqtt.MQTT_ERR_NO_CONN, self._mqtt.MQTT_ERR_CONN_LOST)
        if lost and time.monotonic() > self._next_reconnect:
            self._next_reconnect = time.monotonic() + 1.0
            try:  # paho re-sends the unacknowledged messages of the session on reconnect
                self.client.reconnect()
            except OSError as exc:
                self.error = f"reconnect failed: {exc}"
        elif lost:
            time.sleep(min(timeout_s, 0.1))

    def _unacked(self) -> int:
        return self.published - self.acked - self.refused

    def publish(self, topic: str, payload: bytes, samples: int, stats: PublishStats) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        while self._unacked() >= self.max_inflight:
            self.service(0.05)
        now = _now_ms()
        if now != self._props_ms:  # building Properties is paho's slowest step: one per millisecond
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = CT_SAMPLES_BINARY
            props.UserProperty = ("sent_ms", str(now))
            self._props, self._props_ms = props, now
        info = self.client.publish(topic, payload, qos=1, properties=self._props)
        if info.rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
            stats.last_error = f"publish failed: {self._mqtt.error_string(info.rc)}"
            return
        with self.cond:
            self.published += 1
            ok = self.early.pop(info.mid, None)
            if ok is None:
                self.pending[info.mid] = samples
            elif ok:
                self.acked += 1
                self.acked_samples += samples
            else:
                self.refused += 1
        stats.messages += 1
        stats.samples += samples
        stats.bytes += len(payload)
        self._since_service += 1
        if self._since_service >= 32:
            self._since_service = 0
            self.service(0)

    def wait_acks(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._unacked() > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.service(min(left, 0.1))
        return True

    def fill(self, stats: PublishStats) -> None:
        with self.cond:
            stats.acked_messages, stats.acked_samples, stats.refused = self.acked, self.acked_samples, self.refused
            if self.error and not stats.last_error and self.error.startswith(("publish", "reconnect")):
                stats.last_error = self.error


def simulate_vehicle(index: int, duration_s: float, start_ms: int, *, seed: int = 0, rate_hz: float = 1.0,
                     style: DriverStyle | str | None = None, batch_seconds: float = 60,
                     drive_at_start: bool = False, device_prefix: str = "sim") -> VehicleDrive:
    """Drive arrays of vehicle ``index`` of a fleet (as :class:`FleetSimulator` would make them),
    e.g. a day: ``simulate_vehicle(3, 86_400, day_start_ms)``."""
    fleet = FleetSimulator(index + 1, rate_hz, batch_seconds, seed, device_prefix, start_ms,
                           style_override={index: style} if style is not None else None)
    return fleet.simulate_vehicle(index, duration_s, start_ms, drive_at_start=drive_at_start)
