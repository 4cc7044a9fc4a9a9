"""Explainable driving scores (0–100) per trip and per vehicle-period, and an eco score.

A score an insurer or a fleet manager can act on must say where every point went (platform-anchors §d.5:
"publish the component weights and thresholds"). Each score here returns its components — raw value, normalised
rate, sub-score — the weights, and the ids of the events behind each component; the score is exactly the
weighted sum of the sub-scores.

Safety score weights (``/work/shared/docs/scoring-and-trajectory-conventions.md`` §D)
-------------------------------------------------------------------------------------

==============  ======  ==================================================================================
component       weight  origin
==============  ======  ==================================================================================
braking         10 %    Geotab Safety Scorecard default (harsh braking 10 %)
acceleration    10 %    Geotab default (harsh acceleration 10 %)
cornering       10 %    Geotab default (harsh cornering 10 %)
speeding        50 %    Geotab default speeding 20 % + excessive speed 30 %, merged: our speeding events
                        carry the excess as severity
night driving   10 %    Geotab's seat-belt 20 % cannot be measured over OBD; it is reassigned in equal
mileage         10 %    halves to the two exposure components the platform design names (night, mileage).
                        **Project choice, not published.**
==============  ======  ==================================================================================

Sub-scores (each 0–100, floored at 0) follow Samsara's published formula, 100 − harsh events per 1 000 mi −
% of drive time over the limit:

* braking / acceleration / cornering: 100 − 16.09 × (events per 100 km) — one point per event per 1 000 mi
  (1 000 mi = 1 609.344 km, so one event per 100 km is 16.09 events per 1 000 mi),
* speeding: 100 − (% of driving time inside speeding events),
* night driving: 100 − (% of the trip at night), by analogy with the speeding term (project choice),
* mileage exposure (period only): 100 up to 15 000 km/year, falling linearly to 0 at 45 000 km/year (project
  choice; exposure raises crash risk independently of behaviour, which is why insurers price mileage).

Minimum exposure: short trips inflate per-distance rates (one brake on a 2 km trip is 50 events per 100 km), so a
trip under 10 km or 10 min gets no score of its own (``eligible = False``, components still shown). Its events and
kilometres still count in the period score, which pools all trips: the period's rate is Σ events / Σ km, i.e. the
distance-weighted mean of the trips' rates; speeding time is pooled over driving time and night share is
distance-weighted. A period under 50 km gets no score. Mileage exposure exists only for a period (a single trip
has no annual mileage): a trip score leaves it out and rescales the other weights, and says so.

On POLIDriving with the default event thresholds (1.4 harsh accelerations, 1.4 brakings and 2.4 cornerings per
100 km) the period score is in the 80s; see the smoke test.

Eco score (all bands and weights are project choices; no published eco weights were found)
-------------------------------------------------------------------------------------------

==================  ======  =============================  =====================================================
component           weight  full marks ≤ … zero at ≥ …     measured as
==================  ======  =============================  =====================================================
idle share          25 %    5 % … 40 %                     idle_s / duration_s
high-rpm share      25 %    1 % … 15 %                     time with rpm > 3 000 / time with rpm known
full-throttle       25 %    1 % … 15 %                     time with throttle > 80 % / time with throttle known
fuel vs reference   25 %    ≤ 1.0 × … 1.5 ×                (fuel_l / km × 100) / reference L/100 km (8.0)
==================  ======  =============================  =====================================================

A component without data (no fuel, no rpm) is left out and the other weights are rescaled. The 3 000 rpm bound is
the usual eco-driving "shift up by 2 500–3 000 rpm" advice; POLIDriving spends 2.6 % of its rpm samples above it.
Note that POLIDriving's throttle position is the raw sensor (12.5 % at rest, 9 % of samples > 80 %), so its
full-throttle share over-reads; deployments should set ``high_throttle_pct`` per vehicle make.

Trip fields used (the trips table's columns): ``trip_id, start_idx, end_idx, start_ms, end_ms, distance_m,
duration_s, driving_s, idle_s, fuel_l, night_share`` (0–1, NaN treated as 0); events are those of
:func:`analytics.events.detect_events`, matched to a trip by a ``trip_id`` column when present and otherwise by
``start_idx`` within [start_idx, end_idx]; event ids are an ``event_id`` column when present, else the index.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

import numba
import numpy as np
import pandas as pd

from analytics.events import KIND_HARSH_ACCELERATION, KIND_HARSH_BRAKING, KIND_HARSH_CORNERING, KIND_SPEEDING
from analytics.json_values import json_value

BRAKING = "braking"
ACCELERATION = "acceleration"
CORNERING = "cornering"
SPEEDING = "speeding"
NIGHT = "night_driving"
MILEAGE = "mileage_exposure"
IDLE = "idle_share"
HIGH_RPM = "high_rpm_share"
HIGH_THROTTLE = "high_throttle_share"
FUEL = "fuel_vs_reference"

HARSH_COMPONENTS: Mapping[str, str] = MappingProxyType({
    BRAKING: KIND_HARSH_BRAKING, ACCELERATION: KIND_HARSH_ACCELERATION, CORNERING: KIND_HARSH_CORNERING})
KM_PER_1000_MI = 1609.344
DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class ScoreParams:
    """Weights, sub-score slopes and exposure rules (module doc has the sources)."""

    weights: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({
        BRAKING: 10.0, ACCELERATION: 10.0, CORNERING: 10.0, SPEEDING: 50.0, NIGHT: 10.0, MILEAGE: 10.0}))
    """Safety weights in %: Geotab Safety Scorecard defaults, seat belt reassigned (module doc)."""
    points_per_event_per_100km: float = KM_PER_1000_MI / 100.0
    """Samsara: one point per harsh event per 1 000 mi = 16.09 points per event per 100 km."""
    speeding_points_per_pct: float = 1.0
    """Samsara: one point per % of drive time over the limit."""
    night_points_per_pct: float = 1.0
    """One point per % of the trip at night (project choice, mirrors the speeding term)."""
    mileage_full_km_per_year: float = 15_000.0
    mileage_zero_km_per_year: float = 45_000.0
    min_trip_distance_m: float = 10_000.0
    """Trips shorter than this get no score of their own (project choice; see module doc)."""
    min_trip_duration_s: float = 600.0
    min_period_distance_m: float = 50_000.0
    min_period_days: float = 7.0
    """Shortest period mileage is annualised over when the caller gives no period length."""

    eco_weights: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({
        IDLE: 25.0, HIGH_RPM: 25.0, HIGH_THROTTLE: 25.0, FUEL: 25.0}))
    high_rpm: float = 3000.0
    high_throttle_pct: float = 80.0
    fuel_reference_l_per_100km: float = 8.0
    idle_share_band: tuple[float, float] = (0.05, 0.40)
    high_rpm_share_band: tuple[float, float] = (0.01, 0.15)
    high_throttle_share_band: tuple[float, float] = (0.01, 0.15)
    fuel_ratio_band: tuple[float, float] = (1.0, 1.5)
    eco_max_gap_s: float = 10.0
    """A sample's time weight is the interval to the next sample, capped here so data gaps do not count."""


@dataclass
class ComponentScore:
    """One component of a score: what was measured, how it was normalised, and what it scored."""

    name: str
    value: float
    value_unit: str
    normalised: float
    normalised_unit: str
    sub_score: float
    weight: float
    """Effective weight (fraction; the applied components' weights sum to 1)."""
    contribution: float
    """weight × sub_score: the components' contributions sum to the score."""
    event_ids: list[int] = field(default_factory=list)
    applied: bool = True
    note: str = ""


@dataclass
class ScoreExplanation:
    """A score with everything needed to explain it; ``score`` is None when exposure is too small."""

    kind: str
    score: float | None
    eligible: bool
    reason: str
    distance_m: float
    duration_s: float
    trip_ids: list[Any]
    components: list[ComponentScore]
    weights: dict[str, float]
    """The configured weights in % (before any rescaling for components left out)."""

    def component(self, name: str) -> ComponentScore:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (NaN/inf → None, numpy scalars → Python)."""
        return json_value(asdict(self))


def _linear_sub_score(points: float) -> float:
    return max(0.0, 100.0 - points) if math.isfinite(points) else 0.0


def _band_sub_score(x: float, band: tuple[float, float]) -> float:
    """100 at or below band[0], 0 at or beyond band[1], linear between."""
    good, bad = band
    if x <= good:
        return 100.0
    if x >= bad:
        return 0.0
    return 100.0 * (bad - x) / (bad - good)


def _finish(kind: str, components: list[ComponentScore], configured: Mapping[str, float], eligible: bool,
            reason: str, distance_m: float, duration_s: float, trip_ids: list[Any]) -> ScoreExplanation:
    """Rescale the applied components' weights to sum 1, fill contributions and the score."""
    total = sum(configured.get(c.name, 0.0) for c in components if c.applied)
    for c in components:
        c.weight = configured.get(c.name, 0.0) / total if (c.applied and total > 0) else 0.0
        c.contribution = c.weight * c.sub_score
    score = sum(c.contribution for c in components) if (eligible and total > 0) else None
    return ScoreExplanation(kind, score, eligible and total > 0, reason, float(distance_m), float(duration_s),
                            trip_ids, components, dict(configured))


def _event_ids(events: pd.DataFrame) -> np.ndarray:
    return events["event_id"].to_numpy() if "event_id" in events.columns else events.index.to_numpy()


def _num(row: Mapping[str, Any], key: str, default: float = math.nan) -> float:
    v = row.get(key, default)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return default
    return v


def events_of_trip(trip_row: Mapping[str, Any], events: pd.DataFrame) -> pd.DataFrame:
    """The events belonging to a trip: by ``trip_id`` when the events carry it, else by start index."""
    if len(events) == 0:
        return events
    if "trip_id" in events.columns and "trip_id" in trip_row:
        return events[events["trip_id"] == trip_row["trip_id"]]
    start, end = int(trip_row["start_idx"]), int(trip_row["end_idx"])
    idx = events["start_idx"].to_numpy()
    return events[(idx >= start) & (idx <= end)]


def _behaviour_components(events: pd.DataFrame, distance_m: float, driving_s: float, night_share: float,
                          p: ScoreParams) -> list[ComponentScore]:
    km = distance_m / 1000.0
    ids = _event_ids(events)
    kinds = events["kind"].to_numpy() if len(events) else np.empty(0, dtype=object)
    out = []
    for name, kind in HARSH_COMPONENTS.items():
        mask = kinds == kind
        count = int(mask.sum())
        rate = count / km * 100.0 if km > 0 else (math.inf if count else 0.0)
        out.append(ComponentScore(name, float(count), "events", rate, "events/100 km",
                                  _linear_sub_score(p.points_per_event_per_100km * rate), 0.0, 0.0,
                                  [json_value(i) for i in ids[mask]]))
    mask = kinds == KIND_SPEEDING
    speeding_s = float(events["duration_s"].to_numpy()[mask].sum()) if mask.any() else 0.0
    pct = min(100.0, speeding_s / driving_s * 100.0) if driving_s > 0 else (100.0 if speeding_s > 0 else 0.0)
    out.append(ComponentScore(SPEEDING, speeding_s, "s", pct, "% of driving time",
                              _linear_sub_score(p.speeding_points_per_pct * pct), 0.0, 0.0,
                              [json_value(i) for i in ids[mask]],
                              note=f"{int(mask.sum())} speeding events, {mask.sum() / km * 100 if km > 0 else 0:.2f}"
                                   " per 100 km"))
    night_pct = 100.0 * min(1.0, max(0.0, night_share if math.isfinite(night_share) else 0.0))
    out.append(ComponentScore(NIGHT, night_pct / 100.0, "share", night_pct, "% of trip at night",
                              _linear_sub_score(p.night_points_per_pct * night_pct), 0.0, 0.0))
    return out


def trip_score(trip_row: Mapping[str, Any], events: pd.DataFrame, params: ScoreParams | None = None
               ) -> ScoreExplanation:
    """Safety score of one trip from its row of the trips table and the vehicle's events (module doc)."""
    p = params or ScoreParams()
    distance_m = _num(trip_row, "distance_m", 0.0)
    duration_s = _num(trip_row, "duration_s", 0.0)
    driving_s = _num(trip_row, "driving_s", duration_s)
    trip_events = events_of_trip(trip_row, events)
    components = _behaviour_components(trip_events, distance_m, driving_s, _num(trip_row, "night_share", 0.0), p)
    components.append(ComponentScore(MILEAGE, distance_m / 1000.0, "km", math.nan, "km/year", 100.0, 0.0, 0.0,
                                     applied=False, note="period-level only; weight rescaled over the others"))
    eligible = distance_m >= p.min_trip_distance_m and duration_s >= p.min_trip_duration_s
    reason = "ok" if eligible else (
        f"below minimum exposure ({distance_m / 1000:.1f} km < {p.min_trip_distance_m / 1000:g} km or "
        f"{duration_s / 60:.1f} min < {p.min_trip_duration_s / 60:g} min): pooled into the period score")
    return _finish("trip", components, p.weights, eligible, reason, distance_m, duration_s,
                   [json_value(trip_row.get("trip_id"))])


def period_score(trips: pd.DataFrame, events: pd.DataFrame, params: ScoreParams | None = None, *,
                 period_days: float | None = None) -> ScoreExplanation:
    """Safety score of one vehicle over a period: all its trips pooled, short ones included (module doc).

    ``period_days`` is the reporting period's length for annualising mileage; by default the span of the trips,
    at least ``min_period_days``.
    """
    p = params or ScoreParams()
    distance_m = float(trips["distance_m"].fillna(0).sum()) if len(trips) else 0.0
    duration_s = float(trips["duration_s"].fillna(0).sum()) if len(trips) else 0.0
    driving = trips["driving_s"] if "driving_s" in trips.columns else trips["duration_s"]
    driving_s = float(driving.fillna(0).sum()) if len(trips) else 0.0
    night = trips["night_share"].fillna(0).to_numpy() if "night_share" in trips.columns else np.zeros(len(trips))
    dist = trips["distance_m"].fillna(0).to_numpy() if len(trips) else np.zeros(0)
    night_share = float((night * dist).sum() / distance_m) if distance_m > 0 else 0.0
    period_events = pd.concat([events_of_trip(row, events) for row in trips.to_dict("records")]) \
        if len(trips) and len(events) else events.iloc[0:0]
    components = _behaviour_components(period_events, distance_m, driving_s, night_share, p)
    if period_days is None:
        span_ms = float(trips["end_ms"].max() - trips["start_ms"].min()) if len(trips) else 0.0
        period_days = max(p.min_period_days, span_ms / 86_400_000.0)
    km_per_year = distance_m / 1000.0 * DAYS_PER_YEAR / period_days
    full, zero = p.mileage_full_km_per_year, p.mileage_zero_km_per_year
    components.append(ComponentScore(MILEAGE, distance_m / 1000.0, "km", km_per_year, "km/year",
                                     _band_sub_score(km_per_year, (full, zero)), 0.0, 0.0,
                                     note=f"annualised over {period_days:g} days"))
    eligible = distance_m >= p.min_period_distance_m
    reason = "ok" if eligible else (f"below minimum exposure ({distance_m / 1000:.1f} km < "
                                    f"{p.min_period_distance_m / 1000:g} km)")
    trip_ids = [json_value(t) for t in trips["trip_id"].tolist()] if "trip_id" in trips.columns else []
    return _finish("period", components, p.weights, eligible, reason, distance_m, duration_s, trip_ids)


# --------------------------------------------------------------------------------------------------------------
# Eco score
# --------------------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def eco_time_shares_kernel(ts_ms: np.ndarray, rpm: np.ndarray, throttle: np.ndarray, start: int, end: int,
                           high_rpm: float, high_throttle: float, max_gap_ms: float) -> np.ndarray:
    """Seconds over samples start..end (inclusive) with [rpm known, rpm > high, throttle known, throttle > high].

    Each sample weighs the interval to the next sample (the last one none), capped at max_gap_ms: a sample holds
    until the next reading, and a data gap is not counted as time at that state.
    """
    out = np.zeros(4)
    for i in range(start, end):
        w = ts_ms[i + 1] - ts_ms[i]
        if w <= 0:
            continue
        w_s = min(float(w), max_gap_ms) / 1000.0
        if rpm[i] == rpm[i]:
            out[0] += w_s
            if rpm[i] > high_rpm:
                out[1] += w_s
        if throttle[i] == throttle[i]:
            out[2] += w_s
            if throttle[i] > high_throttle:
                out[3] += w_s
    return out


def eco_time_shares_reference(ts_ms: Sequence[int], rpm: Sequence[float], throttle: Sequence[float], start: int,
                              end: int, high_rpm: float, high_throttle: float, max_gap_ms: float) -> list[float]:
    """Plain-Python reference for :func:`eco_time_shares_kernel`."""
    rpm_known = rpm_high = thr_known = thr_high = 0.0
    for i in range(start, end):
        w = ts_ms[i + 1] - ts_ms[i]
        if w <= 0:
            continue
        w_s = min(float(w), max_gap_ms) / 1000.0
        if not math.isnan(rpm[i]):
            rpm_known += w_s
            rpm_high += w_s if rpm[i] > high_rpm else 0.0
        if not math.isnan(throttle[i]):
            thr_known += w_s
            thr_high += w_s if throttle[i] > high_throttle else 0.0
    return [rpm_known, rpm_high, thr_known, thr_high]


def eco_score(trip_row: Mapping[str, Any], ts_ms: np.ndarray, rpm: np.ndarray | None,
              throttle_pos: np.ndarray | None, params: ScoreParams | None = None) -> ScoreExplanation:
    """Eco score of one trip: idle share, high-rpm and full-throttle time shares, fuel vs a reference.

    ``ts_ms``, ``rpm`` and ``throttle_pos`` are the vehicle's sample arrays; the trip's ``start_idx``/``end_idx``
    select its samples.
    """
    p = params or ScoreParams()
    ts = np.ascontiguousarray(ts_ms, dtype=np.int64)
    n = len(ts)
    rpm_a = np.full(n, np.nan) if rpm is None else np.ascontiguousarray(rpm, dtype=np.float64)
    thr_a = np.full(n, np.nan) if throttle_pos is None else np.ascontiguousarray(throttle_pos, dtype=np.float64)
    start, end = int(trip_row["start_idx"]), int(trip_row["end_idx"])
    rpm_known, rpm_high, thr_known, thr_high = eco_time_shares_kernel(
        ts, rpm_a, thr_a, start, end, p.high_rpm, p.high_throttle_pct, p.eco_max_gap_s * 1000.0)
    distance_m = _num(trip_row, "distance_m", 0.0)
    duration_s = _num(trip_row, "duration_s", 0.0)
    idle_s = _num(trip_row, "idle_s")
    fuel_l = _num(trip_row, "fuel_l")
    components = []
    idle_share = idle_s / duration_s if duration_s > 0 and math.isfinite(idle_s) else math.nan
    components.append(ComponentScore(IDLE, idle_s, "s", idle_share, "share of trip time",
                                     _band_sub_score(idle_share, p.idle_share_band) if math.isfinite(idle_share)
                                     else 0.0, 0.0, 0.0, applied=math.isfinite(idle_share)))
    rpm_share = rpm_high / rpm_known if rpm_known > 0 else math.nan
    components.append(ComponentScore(HIGH_RPM, float(rpm_high), "s", rpm_share,
                                     f"share of rpm-known time above {p.high_rpm:g} rpm",
                                     _band_sub_score(rpm_share, p.high_rpm_share_band) if rpm_known > 0 else 0.0,
                                     0.0, 0.0, applied=rpm_known > 0))
    thr_share = thr_high / thr_known if thr_known > 0 else math.nan
    components.append(ComponentScore(HIGH_THROTTLE, float(thr_high), "s", thr_share,
                                     f"share of throttle-known time above {p.high_throttle_pct:g} %",
                                     _band_sub_score(thr_share, p.high_throttle_share_band) if thr_known > 0
                                     else 0.0, 0.0, 0.0, applied=thr_known > 0))
    has_fuel = math.isfinite(fuel_l) and fuel_l > 0 and distance_m > 0
    l_per_100 = fuel_l / (distance_m / 1000.0) * 100.0 if has_fuel else math.nan
    ratio = l_per_100 / p.fuel_reference_l_per_100km if has_fuel else math.nan
    components.append(ComponentScore(FUEL, fuel_l, "L", ratio,
                                     f"L/100 km over the {p.fuel_reference_l_per_100km:g} L/100 km reference",
                                     _band_sub_score(ratio, p.fuel_ratio_band) if has_fuel else 0.0, 0.0, 0.0,
                                     applied=has_fuel,
                                     note=f"{l_per_100:.2f} L/100 km" if has_fuel else "no fuel data"))
    eligible = distance_m >= p.min_trip_distance_m and duration_s >= p.min_trip_duration_s
    reason = "ok" if eligible else "below minimum exposure"
    return _finish("eco", components, p.eco_weights, eligible, reason, distance_m, duration_s,
                   [json_value(trip_row.get("trip_id"))])
