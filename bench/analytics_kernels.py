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

Numba path: the fleet-wide batch path (``analytics.batch.analyse_fleet``): every vehicle's samples as one set of
concatenated arrays with per-vehicle offsets (built before timing, as the pandas path's DataFrame is), one numba
pass over all vehicles (cleaning, trips, events, eco shares), then every trip's and vehicle's safety score in a
second kernel; Python objects are not built at all. Single thread for the headline figure (the pandas path runs
on one core too); for information, the same on ``--threads`` threads, and the per-vehicle public API
(``detect_trips``, ``detect_events``, ``trip_score`` per trip, ``period_score``: the path this replaced, one run).
Warmed up first (compile or cache load), median of ``--runs`` runs.
Pandas path: ``_pandas_reference.run_pipeline`` on one DataFrame of all vehicles (built before timing). If one
full run would take longer than ``--pandas-budget-s`` (estimated from a first run on a ``--pandas-subset``
of whole vehicles), it is timed on that subset (3 runs, median) and its per-sample throughput is used as the
full run's; the output says which. Two equivalence checks on ``--check-vehicles`` vehicles: batch against the
per-vehicle public API (must be identical: trips and events DataFrames, every score explanation), and numba
against pandas (usable fixes, trips, distances, events per kind, trip and period scores); differences are printed.

    python bench/analytics_kernels.py [--quick] [--samples 10000000] [--days 2] [--runs 3] [--threads 2]

Last line, the headline (numba on one thread, as the pandas path): ``numba_samples_per_s=<N>
pandas_samples_per_s=<P> threads=1 ratio=<N/P>``; the line before it gives the same for ``--threads`` threads
(information; omitted with ``--threads 1``).
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

from analytics.batch import (
    FleetAnalysis,
    analyse_fleet,
    events_frame,
    period_explanation,
    trip_safety_explanation,
    trips_frame,
)
from analytics.cleaning import clean_gps_fixes
from analytics.events import EVENT_KINDS, detect_events
from analytics.scores import ScoreExplanation, period_score, trip_score
from analytics.trips import detect_trips
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


FleetArrays = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]


def fleet_arrays(tracks: Sequence[VehicleArrays]) -> FleetArrays:
    """All tracks as the batch path's input: (ts_ms, per-vehicle offsets, signal columns), concatenated."""
    bounds = np.concatenate(([0], np.cumsum([len(a["ts_ms"]) for a in tracks]))).astype(np.int64)
    return (np.concatenate([a["ts_ms"] for a in tracks]), bounds,
            {name: np.concatenate([a[name] for a in tracks]) for name in SIGNALS})


def numba_batch(fleet: FleetArrays, threads: int = 1) -> FleetAnalysis:
    """Cleaning, trips, events, trip scores and period scores of every vehicle: the fleet-wide batch path."""
    ts, bounds, columns = fleet
    return analyse_fleet(ts, bounds, columns, threads=threads)


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


def batch_equivalence_check(tracks: Sequence[VehicleArrays]) -> list[str]:
    """The batch path against the per-vehicle public API on the same vehicles: must be identical."""
    fa = numba_batch(fleet_arrays(tracks))
    differ: list[str] = []
    trips_n = events_n = scores_n = 0
    for v, a in enumerate(tracks):
        trips, events, scores, vehicle_score = numba_vehicle(a)
        bt = trips_frame(fa, v).rename(columns={"start_ts_ms": "start_ms", "end_ts_ms": "end_ms"})
        be = events_frame(fa, v).drop(columns=["trip_index"])
        trips_n += len(trips)
        events_n += len(events)
        if not bt.equals(trips):
            differ.append(f"vehicle {v}: trips")
        if not be.equals(events):
            differ.append(f"vehicle {v}: events")
        for t, score in enumerate(scores):
            scores_n += 1
            if trip_safety_explanation(fa, v, t) != score.as_dict():
                differ.append(f"vehicle {v}: trip {t} score")
        scores_n += 1
        if period_explanation(fa, v) != vehicle_score.as_dict():
            differ.append(f"vehicle {v}: period score")
    lines = [f"  {len(tracks)} vehicles, {trips_n} trips, {events_n} events, {scores_n} score explanations compared "
             "exactly (every column, every component)"]
    lines.append("  -> " + ("IDENTICAL" if not differ else "DIFFERENCES: " + ", ".join(differ[:10])))
    return lines


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
    ap.add_argument("--threads", type=int, default=2, help="threads for the informational parallel batch run")
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

    fleet = fleet_arrays(tracks)
    t0 = time.perf_counter()
    numba_vehicle(tracks[0])
    numba_batch(fleet_arrays(tracks[:2]), threads=1)
    numba_batch(fleet_arrays(tracks[:2]), threads=2)
    print(f"numba warm-up (compile / cache load, two vehicles): {time.perf_counter() - t0:.2f} s (not timed)")

    check = tracks[: args.check_vehicles]
    print(f"equivalence check, batch path vs per-vehicle public API on {len(check)} vehicles:")
    for line in batch_equivalence_check(check):
        print(line)
    print(f"equivalence check, numba vs pandas on {len(check)} vehicles:")
    for line in equivalence_check(check):
        print(line)

    numba_s = timed_runs(lambda: numba_batch(fleet, 1), runs)
    numba_med = statistics.median(numba_s)
    numba_rate = n / numba_med
    result = numba_batch(fleet, 1)
    print(f"numba batch path (1 thread; load average {os.getloadavg()[0]:.2f}): runs "
          f"{', '.join(f'{s:.2f}' for s in numba_s)} s; median {numba_med:.2f} s = "
          f"{numba_rate:,.0f} samples/s ({len(result.trips):,} trips, {len(result.events):,} events, "
          f"{len(result.trip_scores):,} trip scores, {result.vehicles} period scores)")
    par_rate = None
    if args.threads > 1:
        par_s = timed_runs(lambda: numba_batch(fleet, args.threads), runs)
        par_med = statistics.median(par_s)
        par_rate = n / par_med
        print(f"numba batch path on {args.threads} threads (information; the machine has {os.cpu_count()} cores, "
              f"shared; load average {os.getloadavg()[0]:.2f}): runs {', '.join(f'{s:.2f}' for s in par_s)} s; "
              f"median {par_med:.2f} s = {par_rate:,.0f} samples/s")
    stage_s: dict[str, float] = {}
    per_vehicle_s = timed_runs(lambda: [numba_vehicle(a, stage_s) for a in tracks], 1)[0]
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in stage_s.items())
    print(f"numba per-vehicle public API (information: the path the batch replaces; 1 run): {per_vehicle_s:.2f} s = "
          f"{n / per_vehicle_s:,.0f} samples/s; {stages}")

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
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if par_rate is not None:
        print(f"information, {args.threads} threads: numba_samples_per_s={par_rate:.0f} "
              f"pandas_samples_per_s={pandas_rate:.0f} threads={args.threads} ratio={par_rate / pandas_rate:.1f}")
    print(f"numba_samples_per_s={numba_rate:.0f} pandas_samples_per_s={pandas_rate:.0f} threads=1 "
          f"ratio={numba_rate / pandas_rate:.1f}")


if __name__ == "__main__":
    main()
