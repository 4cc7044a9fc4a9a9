"""Trips + events + scores over 10 million synthetic 1 Hz samples: the numba analytics against plain pandas.

Why: the analytics stages are numba kernels so that a fleet's day can be recomputed in seconds. This measures
that claim against what the same rules cost written the ordinary pandas way (``bench/_pandas_reference.py``),
on the same data, in the same run.

Data: ``vinsight.fleet_simulator.FleetSimulator`` drives (realistic trips, idling, stop-and-go, harsh events
for aggressive styles), engine-on samples at 1 Hz, ``--days`` per vehicle, as many vehicles as it takes to reach
``--samples`` (the last vehicle is cut). The simulator's receiver is perfect, so receiver faults are injected
(seeded) where the real data shows them, so that cleaning and the fall-backs have work to do: single OBD rows
missing (0.3 %), GNSS outages of 10–60 s (about one per hour), weak fixes (0.3 %: HDOP 8, 3 satellites),
two-fix jumps back to a fixed wrong position 2 km away (about one per 10 min, POLIDriving alonso 20231229), and
rare 8-fix excursions 3 km off (one per ~5 h) that force the cleaner to re-anchor twice. Generation is not timed
and nothing is cached on disk.

Numba path, per vehicle, the public API the pipeline calls: ``detect_trips`` (which runs ``clean_gps_fixes``),
``detect_events``, ``trip_score`` for every trip and ``period_score`` for the vehicle; warmed up first (compile
or cache load), median of ``--runs`` runs. Its per-stage times are printed, and, for information, the same
kernels called directly on the arrays (no DataFrames, no scores) to show how much of the path is wrapper cost.
Pandas path: ``_pandas_reference.run_pipeline`` on one DataFrame of all vehicles (built before timing). If one
full run would take longer than ``--pandas-budget-s`` (estimated from a first run on a ``--pandas-subset``
of whole vehicles), it is timed on that subset (3 runs, median) and its per-sample throughput is used as the
full run's; the output says which. An equivalence check on ``--check-vehicles`` vehicles compares the two paths
(usable fixes, trips, distances, events per kind, trip and period scores) and prints the differences.

    python bench/analytics_kernels.py [--quick] [--samples 10000000] [--days 2] [--runs 3]

Last line: ``numba_samples_per_s=<N> pandas_samples_per_s=<P> ratio=<N/P>``.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.cleaning import CleaningParams, clean_gps_fixes
from analytics.events import (
    EVENT_KINDS,
    EventParams,
    detect_events,
    idle_indicator_kernel,
    lateral_accel_kernel,
    longitudinal_accel_kernel,
    speeding_threshold_kernel,
    threshold_runs_kernel,
)
from analytics.scores import ScoreExplanation, period_score, trip_score
from analytics.trips import (
    DISTANCE_SOURCES,
    TripParams,
    detect_trips,
    local_offsets_s,
    movement_trips_kernel,
    trip_metrics_kernel,
)
from bench import _pandas_reference as ref
from vinsight.fleet_simulator import FleetSimulator

VehicleArrays = dict[str, np.ndarray]
"""One vehicle's track: ``ts_ms`` (int64) and the float64 signal columns below (NaN where absent)."""

SIGNALS: tuple[str, ...] = ("speed", "rpm", "latitude", "longitude", "gps_speed", "course", "hdop", "satellites",
                            "fix_mode", "fuel_rate", "maf", "throttle_pos")
GPS_SIGNALS: tuple[str, ...] = ("latitude", "longitude", "gps_speed", "course", "hdop", "satellites", "fix_mode")
OBD_SIGNALS: tuple[str, ...] = ("speed", "rpm", "fuel_rate", "maf", "throttle_pos")
START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
MIN_SAMPLES_PER_VEHICLE_DAY = 1500  # sizing the simulated fleet: the quietest styles drive about this much


# ----------------------------------------------------------------------------------------------------------------
# Data


def inject_receiver_faults(a: VehicleArrays, rng: np.random.Generator) -> None:
    """Add the faults real 1 Hz OBD + GNSS data shows (module doc), in place."""
    n = len(a["ts_ms"])
    if n < 20:
        return
    obd_miss = rng.random(n) < 0.003
    for name in OBD_SIGNALS:
        a[name][obd_miss] = np.nan
    for _ in range(rng.poisson(n / 3600)):
        k = int(rng.integers(0, n))
        for name in GPS_SIGNALS:
            a[name][k:k + int(rng.integers(10, 61))] = np.nan
    weak = rng.random(n) < 0.003
    a["hdop"][weak] = 8.0
    a["satellites"][weak] = 3.0
    wrong_lat, wrong_lon = np.nanmedian(a["latitude"]) + 0.018, np.nanmedian(a["longitude"])
    for k in rng.integers(0, n - 2, rng.poisson(n / 600)):
        a["latitude"][k:k + 2] = wrong_lat
        a["longitude"][k:k + 2] = wrong_lon
    for k in rng.integers(0, n - 8, rng.poisson(n / 18_000)):
        a["latitude"][k:k + 8] += 0.027


def generate_fleet(total_samples: int, days: float, seed: int) -> tuple[list[VehicleArrays], int]:
    """Simulated vehicles with faults until ``total_samples`` engine-on samples; (tracks, vehicles simulated)."""
    capacity = max(8, math.ceil(total_samples / (days * MIN_SAMPLES_PER_VEHICLE_DAY)))
    sim = FleetSimulator(capacity, 1.0, 60, seed=seed, signals=SIGNALS)
    tracks: list[VehicleArrays] = []
    have = 0
    index = 0
    while have < total_samples:
        if index >= capacity:
            raise RuntimeError("fleet capacity exhausted; raise --days")
        drive = sim.simulate_vehicle(index, days * 86_400, START_MS)
        index += 1
        n = min(len(drive.ts_ms), total_samples - have)
        if n == 0:
            continue
        a: VehicleArrays = {"ts_ms": drive.ts_ms[:n].copy()}
        for name in SIGNALS:
            a[name] = np.array(drive.columns[name][:n], dtype=np.float64)
        inject_receiver_faults(a, np.random.default_rng([seed, index, 0xFA17]))
        tracks.append(a)
        have += n
    return tracks, index


def fleet_frame(tracks: Sequence[VehicleArrays]) -> pd.DataFrame:
    """All tracks as one DataFrame (the pandas path's input), one row per sample, a ``vehicle`` column."""
    cols: dict[str, np.ndarray] = {"vehicle": np.repeat(np.arange(len(tracks)), [len(a["ts_ms"]) for a in tracks])}
    for name in ("ts_ms", *SIGNALS):
        cols[name] = np.concatenate([a[name] for a in tracks])
    return pd.DataFrame(cols)


# ----------------------------------------------------------------------------------------------------------------
# Numba path


TRIP_CHECK_COLUMNS: tuple[str, ...] = (
    "duration_s", "driving_s", "idle_s", "distance_m", "distance_speed_m", "distance_gps_m", "max_speed_kmh",
    "avg_speed_kmh", "fuel_l", "night_share", "urban_share", "rural_share", "motorway_share", "start_lat", "start_lon",
    "end_lat", "end_lon")
VehicleResult = tuple[pd.DataFrame, pd.DataFrame, list[ScoreExplanation], ScoreExplanation]


def numba_vehicle(a: VehicleArrays, stage_s: dict[str, float] | None = None) -> VehicleResult:
    """Cleaning + trips, events, trip scores and the period score of one vehicle through the public API."""
    t0 = time.perf_counter()
    trips = detect_trips(a["ts_ms"], lat=a["latitude"], lon=a["longitude"], speed=a["speed"],
                         gps_speed=a["gps_speed"], rpm=a["rpm"], fuel_rate=a["fuel_rate"], maf=a["maf"],
                         hdop=a["hdop"], satellites=a["satellites"], fix_mode=a["fix_mode"])
    t1 = time.perf_counter()
    events = detect_events(a["ts_ms"], a["speed"], a["rpm"], a["latitude"], a["longitude"], a["course"],
                           a["gps_speed"])
    t2 = time.perf_counter()
    # The scores read the trips table as stored (start_ms / end_ms, trip_id); detect_trips names them start_ts_ms.
    trips = trips.rename(columns={"start_ts_ms": "start_ms", "end_ts_ms": "end_ms"})
    trips["trip_id"] = np.arange(len(trips))
    trip_scores = [trip_score(row, events) for row in trips.to_dict("records")]
    t3 = time.perf_counter()
    vehicle_score = period_score(trips, events)
    t4 = time.perf_counter()
    if stage_s is not None:
        for name, dt in (("trips (incl. cleaning)", t1 - t0), ("events", t2 - t1), ("trip scores", t3 - t2),
                         ("period score", t4 - t3)):
            stage_s[name] = stage_s.get(name, 0.0) + dt
    return trips, events, trip_scores, vehicle_score


def numba_kernels_only(a: VehicleArrays, tp: TripParams = TripParams(), cp: CleaningParams = CleaningParams(),  # noqa: B008
                       ep: EventParams = EventParams()) -> int:  # noqa: B008
    """The same kernels as :func:`numba_vehicle` called directly on the arrays: no DataFrames, no scores.

    For information only: it shows what the array work costs against the DataFrame/score wrappers around it.
    Returns the number of trips + events (so nothing is optimised away).
    """
    ts, lat, lon = a["ts_ms"], a["latitude"], a["longitude"]
    n = len(ts)
    usable = clean_gps_fixes(ts, lat, lon, a["hdop"], a["satellites"], a["fix_mode"], cp)
    speed = np.where(np.isnan(a["speed"]), a["gps_speed"], a["speed"])
    starts, ends = movement_trips_kernel(ts, lat, lon, usable, speed, tp.moving_speed_kmh, tp.stop_radius_m,
                                         tp.stop_duration_s, tp.max_gap_s)
    order = np.array([DISTANCE_SOURCES.index(s) for s in tp.distance_source_order], dtype=np.int64)
    table = trip_metrics_kernel(ts, starts, ends, lat, lon, usable, speed, a["rpm"], np.full(n, np.nan),
                                a["fuel_rate"], a["maf"], local_offsets_s(ts, tp), cp.max_speed_mps, tp.max_hold_s,
                                tp.min_distance_coverage, order, tp.night_start_h * 3600.0, tp.night_end_h * 3600.0,
                                tp.urban_max_kmh, tp.rural_max_kmh, tp.motorway_min_s)
    found = len(table)
    gps = np.where(a["gps_speed"] > ep.max_plausible_speed_kmh, np.nan, a["gps_speed"])
    lt, la = ep.obd_longitudinal, ep.lateral
    accel, origin = longitudinal_accel_kernel(ts, a["speed"], lt.window_s, lt.max_gap_s,
                                              ep.max_plausible_longitudinal_ms2)
    for sign, thr in ((1.0, lt.accel_ms2), (-1.0, lt.brake_ms2)):
        found += len(threshold_runs_kernel(ts, accel, np.array([thr]), sign, origin, lt.release_fraction,
                                           lt.min_duration_s * 1000.0, lt.max_gap_s * 1000.0)[0])
    lateral, origin = lateral_accel_kernel(ts, a["course"], gps, a["speed"], la.window_s, la.max_gap_s,
                                           la.min_speed_kmh, la.max_plausible_ms2, ep.max_plausible_speed_kmh)
    found += len(threshold_runs_kernel(ts, np.abs(lateral), np.array([la.lateral_ms2]), 1.0, origin,
                                       la.release_fraction, la.min_duration_s * 1000.0, la.max_gap_s * 1000.0)[0])
    best = np.where(np.isnan(a["speed"]), gps, a["speed"])
    no_origin = np.empty(0, dtype=np.int64)
    threshold = speeding_threshold_kernel(np.full(n, np.nan), ep.speeding_relative_tolerance,
                                          ep.speeding_relative_below_kmh, ep.speeding_absolute_tolerance_kmh,
                                          ep.absolute_speed_bands_kmh[0])
    found += len(threshold_runs_kernel(ts, best, threshold, 1.0, no_origin, 1.0, ep.speeding_min_duration_s * 1000.0,
                                       ep.speeding_max_gap_s * 1000.0)[0])
    found += len(threshold_runs_kernel(ts, a["rpm"], np.array([ep.over_rev_rpm]), 1.0, no_origin, 1.0,
                                       ep.over_rev_min_duration_s * 1000.0, ep.state_max_gap_s * 1000.0)[0])
    idle = idle_indicator_kernel(a["rpm"], best, ep.idle_min_rpm, ep.idle_max_speed_kmh)
    found += len(threshold_runs_kernel(ts, idle, np.array([1.0]), 1.0, no_origin, 1.0,
                                       ep.idle_min_duration_s * 1000.0, ep.state_max_gap_s * 1000.0)[0])
    return found


def timed_runs(work: Callable[[], object], runs: int) -> list[float]:
    """Wall seconds of ``runs`` calls of ``work`` (garbage collected before each)."""
    out = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        work()
        out.append(time.perf_counter() - t0)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Equivalence check


def _score(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _max_abs_diff(a: Sequence[float], b: Sequence[float]) -> float:
    """Largest |a - b| where both are numbers; inf where only one of them is NaN."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if math.isnan(x) and math.isnan(y):
            continue
        worst = max(worst, math.inf if (math.isnan(x) or math.isnan(y)) else abs(x - y))
    return worst


def equivalence_check(tracks: Sequence[VehicleArrays]) -> list[str]:
    """Both paths on the same few vehicles; lines describing where they agree and where not."""
    df = fleet_frame(tracks)
    result = ref.run_pipeline(df)
    p_trips, p_events = result["trips"], result["events"]
    p_usable = result["usable"].to_numpy()
    lines = []
    usable_diff = trips_numba = trips_pandas = matched = 0
    distance_rel: list[float] = []
    column_rel = dict.fromkeys(TRIP_CHECK_COLUMNS, 0.0)
    trip_scores_n: list[float] = []
    trip_scores_p: list[float] = []
    period_n: list[float] = []
    period_p: list[float] = []
    counts = {kind: [0, 0, 0] for kind in EVENT_KINDS}  # numba, pandas, identical (start, end)
    offset = 0
    for v, a in enumerate(tracks):
        n = len(a["ts_ms"])
        mask = clean_gps_fixes(a["ts_ms"], a["latitude"], a["longitude"], a["hdop"], a["satellites"], a["fix_mode"])
        usable_diff += int((mask != p_usable[offset:offset + n]).sum())
        offset += n
        trips, events, scores, vehicle_score = numba_vehicle(a)
        pt = p_trips[p_trips["vehicle"] == v]
        trips_numba += len(trips)
        trips_pandas += len(pt)
        p_by_span = {(s, e): k for k, (s, e) in enumerate(zip(pt["start_idx"], pt["end_idx"], strict=True))}
        p_trip_scores = result["trip_scores"][pt.index].to_numpy()
        for k, (s, e) in enumerate(zip(trips["start_idx"], trips["end_idx"], strict=True)):
            j = p_by_span.get((s, e))
            if j is None:
                continue
            matched += 1
            dn, dp = float(trips["distance_m"].iat[k]), float(pt["distance_m"].iat[j])
            distance_rel.append(abs(dn - dp) / dn if dn > 0 else abs(dp))
            for col in TRIP_CHECK_COLUMNS:
                x, y = float(trips[col].iat[k]), float(pt[col].iat[j])
                if not (math.isnan(x) and math.isnan(y)):
                    rel = abs(x - y) / max(abs(x), 1e-9) if not (math.isnan(x) or math.isnan(y)) else math.inf
                    column_rel[col] = max(column_rel[col], rel)
            trip_scores_n.append(_score(scores[k].score))
            trip_scores_p.append(float(p_trip_scores[j]))
        period_n.append(_score(vehicle_score.score))
        period_p.append(float(result["period_scores"].get(v, math.nan)))
        pe = p_events[p_events["vehicle"] == v]
        for kind in EVENT_KINDS:
            ne, pk = events[events["kind"] == kind], pe[pe["kind"] == kind]
            counts[kind][0] += len(ne)
            counts[kind][1] += len(pk)
            counts[kind][2] += len(set(zip(ne["start_idx"], ne["end_idx"], strict=True))
                                   & set(zip(pk["start_idx"], pk["end_idx"], strict=True)))
    lines.append(f"  samples {len(df):,}; usable-fix masks differ on {usable_diff} samples")
    lines.append(f"  trips: numba {trips_numba}, pandas {trips_pandas}, identical start/end {matched}; "
                 f"distance max rel. diff {max(distance_rel, default=0.0):.2e} (limit 5e-3)")
    worst = max(column_rel, key=column_rel.__getitem__)
    lines.append(f"  matched trips, {len(TRIP_CHECK_COLUMNS)} metric columns (durations, driving/idle time, each "
                 f"distance source, max/avg speed, fuel, time shares, end points): max rel. diff "
                 f"{column_rel[worst]:.2e} ({worst})")
    lines.append("  events (numba / pandas / identical span): " + ", ".join(
        f"{kind} {c[0]}/{c[1]}/{c[2]}" for kind, c in counts.items()))
    lines.append(f"  trip scores max |diff| {_max_abs_diff(trip_scores_n, trip_scores_p):.2e} over {matched} trips "
                 f"({sum(not math.isnan(s) for s in trip_scores_n)} eligible); period scores max |diff| "
                 f"{_max_abs_diff(period_n, period_p):.2e} over {len(tracks)} vehicles "
                 f"({sum(not math.isnan(s) for s in period_n)} eligible)")
    same = (usable_diff == 0 and trips_numba == trips_pandas == matched
            and max(distance_rel, default=0.0) <= 5e-3 and max(column_rel.values()) <= 1e-6
            and all(c[0] == c[1] == c[2] for c in counts.values())
            and _max_abs_diff(trip_scores_n, trip_scores_p) < 1e-6 and _max_abs_diff(period_n, period_p) < 1e-6)
    lines.append("  -> " + ("EQUIVALENT" if same else "DIFFERENCES (see above)"))
    return lines


# ----------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 M samples, 1 run each")
    ap.add_argument("--samples", type=int, default=None, help="total samples (default 10 M, --quick 1 M)")
    ap.add_argument("--days", type=float, default=2.0, help="simulated days per vehicle (engine-on samples only)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--runs", type=int, default=None, help="numba runs (default 3, --quick 1)")
    ap.add_argument("--check-vehicles", type=int, default=5)
    ap.add_argument("--pandas-budget-s", type=float, default=300.0,
                    help="longest acceptable single full pandas run; beyond it, time a subset and extrapolate")
    ap.add_argument("--pandas-subset", type=int, default=1_000_000, help="samples (whole vehicles) in that subset")
    args = ap.parse_args(argv)
    total = args.samples or (1_000_000 if args.quick else 10_000_000)
    runs = args.runs or (1 if args.quick else 3)

    t0 = time.perf_counter()
    tracks, simulated = generate_fleet(total, args.days, args.seed)
    gen_s = time.perf_counter() - t0
    n = sum(len(a["ts_ms"]) for a in tracks)
    print(f"analytics kernel benchmark: {n:,} samples at 1 Hz, {len(tracks)} vehicles (FleetSimulator seed "
          f"{args.seed}, {args.days:g} days each, engine-on samples only, {simulated - len(tracks)} simulated vehicles "
          f"parked throughout; every vehicle distinct, none reused), receiver faults injected (module doc)")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start (other jobs may run); "
          f"generation {gen_s:.1f} s (not timed)")

    t0 = time.perf_counter()
    numba_vehicle(tracks[0])
    numba_kernels_only(tracks[0])
    print(f"numba warm-up (compile / cache load, one vehicle): {time.perf_counter() - t0:.2f} s (not timed)")

    check = tracks[: args.check_vehicles]
    print(f"equivalence check, numba vs pandas on {len(check)} vehicles:")
    for line in equivalence_check(check):
        print(line)

    stage_s: dict[str, float] = {}
    numba_s = timed_runs(lambda: [numba_vehicle(a, stage_s) for a in tracks], runs)
    numba_med = statistics.median(numba_s)
    numba_rate = n / numba_med
    stages = ", ".join(f"{k} {v / runs:.2f} s" for k, v in stage_s.items())
    print(f"numba path (public API, per vehicle): runs {', '.join(f'{s:.2f}' for s in numba_s)} s; median "
          f"{numba_med:.2f} s = {numba_rate:,.0f} samples/s; per run: {stages}")
    kernel_s = timed_runs(lambda: [numba_kernels_only(a) for a in tracks], runs)
    kernel_med = statistics.median(kernel_s)
    print(f"numba kernels alone (information: same kernels on the arrays, no DataFrames, no scores): median "
          f"{kernel_med:.2f} s = {n / kernel_med:,.0f} samples/s")

    df = fleet_frame(tracks)
    sub_vehicles = int(np.searchsorted(np.cumsum([len(a["ts_ms"]) for a in tracks]), args.pandas_subset) + 1)
    sub_df = fleet_frame(tracks[:sub_vehicles]) if sub_vehicles < len(tracks) else df
    sub_n = len(sub_df)
    sub_stage_s: dict[str, float] = {}
    full_stage_s: dict[str, float] = {}
    first = timed_runs(lambda: ref.run_pipeline(sub_df, sub_stage_s), 1)
    estimate_full = first[0] * n / sub_n
    if sub_n == n:
        pandas_s, pandas_n, how, stage_s = first, n, f"full {n:,} samples, 1 run", sub_stage_s
    elif estimate_full <= args.pandas_budget_s:
        pandas_s, pandas_n, stage_s = timed_runs(lambda: ref.run_pipeline(df, full_stage_s), 1), n, full_stage_s
        how = f"full {n:,} samples, 1 run (a {sub_n:,}-sample probe took {first[0]:.1f} s)"
    else:
        pandas_s = first + timed_runs(lambda: ref.run_pipeline(sub_df, sub_stage_s), 2)
        pandas_n, stage_s = sub_n, {k: v / 3 for k, v in sub_stage_s.items()}
        how = (f"EXTRAPOLATED: a full run would take ~{estimate_full:.0f} s > {args.pandas_budget_s:.0f} s budget, so "
               f"timed on the first {sub_vehicles} vehicles ({sub_n:,} samples), 3 runs, per-sample throughput used")
    pandas_med = statistics.median(pandas_s)
    pandas_rate = pandas_n / pandas_med
    print(f"pandas path ({how}): runs {', '.join(f'{s:.1f}' for s in pandas_s)} s; median {pandas_med:.1f} s = "
          f"{pandas_rate:,.0f} samples/s; per run: {', '.join(f'{k} {v:.1f} s' for k, v in stage_s.items())}")
    print(f"numba_samples_per_s={numba_rate:.0f} pandas_samples_per_s={pandas_rate:.0f} "
          f"ratio={numba_rate / pandas_rate:.1f}")


if __name__ == "__main__":
    main()
