"""Our stay points against trackintel's ``generate_staypoints(method="sliding")`` on the same fixes.

Workloads
  1. every real POLIDriving session (1 Hz drives in Quito; one track per session);
  2. a synthetic multi-day track for one vehicle built from those sessions: the drives are chained day after day,
     each preceded by a stationary period (3 min to 2 h at 1 Hz, GPS jitter sigma 8 m, 1 % outliers 150 m away,
     about what a parked phone or an idling tracker reports), a tracker-off gap before 30 % of the drives, 2 % of
     fixes dropped and 0.5 % exact duplicates. Drives contain few stays; this is where the thresholds, the gap
     reset and duplicate removal are exercised.

Both sides get identical fixes (trackintel: a ``Positionfixes`` GeoDataFrame with user_id / tracked_at / geom,
EPSG:4326) and the same parameters (100 m, 5 min, gap 15 min, include_last=False, exclude_duplicate_pfs=True).
A trackintel stay point is *matched* when one of ours starts and ends within 1 fix of it. Timing is the wall time
of the computation only (data loading and GeoDataFrame construction excluded; our numba kernel warmed up), the
median of 3 runs. Last line: ``match=<fraction of trackintel's stay points matched> ratio=<trackintel time / ours>``
over all workloads together.

    python bench/staypoints_vs_trackintel.py [--days 10] [--dist 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.geo import haversine_m_reference
from analytics.staypoints import StaypointParams, staypoints
from bench._drive import drive_files
from device_agent.replay import read_polidriving

Track = tuple[np.ndarray, np.ndarray, np.ndarray]


def load_session(path: Path) -> Track:
    rows = list(read_polidriving(path))
    ts = np.array([r.ts_ms for r in rows], dtype=np.int64)
    lat = np.array([r.values.get("latitude", np.nan) for r in rows])
    lon = np.array([r.values.get("longitude", np.nan) for r in rows])
    return ts, lat, lon


def synthetic_days(sessions: list[Track], days: int, seed: int = 7) -> Track:
    """One vehicle's multi-day track: real drives separated by noisy stationary periods and tracker gaps."""
    rng = np.random.default_rng(seed)
    ts_parts, lat_parts, lon_parts = [], [], []
    t = int(sessions[0][0][0])
    k = 0
    for _day in range(days):
        for _ in range(3):
            ts, lat, lon = sessions[k % len(sessions)]
            k += 1
            ok = ~np.isnan(lat)
            ts, lat, lon = ts[ok], lat[ok], lon[ok]
            if rng.random() < 0.3:
                t += int(rng.uniform(20 * 60_000, 10 * 3_600_000))  # tracker off
            n_dwell = int(rng.uniform(180, 7200))
            jitter = rng.normal(0.0, 8.0, size=(n_dwell, 2))
            outlier = rng.random(n_dwell) < 0.01
            jitter[outlier] += 150.0
            m_per_deg = 111_195.0
            ts_parts.append(t + 1000 * np.arange(n_dwell, dtype=np.int64))
            lat_parts.append(lat[0] + jitter[:, 0] / m_per_deg)
            lon_parts.append(lon[0] + jitter[:, 1] / (m_per_deg * np.cos(np.radians(lat[0]))))
            t += 1000 * n_dwell
            ts_parts.append(t + (ts - ts[0]))
            lat_parts.append(lat)
            lon_parts.append(lon)
            t += int(ts[-1] - ts[0]) + 1000
    ts, lat, lon = np.concatenate(ts_parts), np.concatenate(lat_parts), np.concatenate(lon_parts)
    keep = rng.random(len(ts)) >= 0.02
    ts, lat, lon = ts[keep], lat[keep], lon[keep]
    dup = np.sort(rng.choice(len(ts), size=len(ts) // 200, replace=False))
    idx = np.sort(np.concatenate([np.arange(len(ts)), dup]))
    return ts[idx], lat[idx], lon[idx]


def trackintel_positionfixes(track: Track):
    import geopandas as gpd
    import trackintel as ti

    ts, lat, lon = track
    ok = ~(np.isnan(lat) | np.isnan(lon))
    gdf = gpd.GeoDataFrame({"user_id": np.ones(int(ok.sum()), dtype=np.int64),
                            "tracked_at": pd.to_datetime(ts[ok], unit="ms", utc=True)},
                           geometry=gpd.points_from_xy(lon[ok], lat[ok]), crs="EPSG:4326", index=np.nonzero(ok)[0])
    gdf = gdf.rename_geometry("geom")
    gdf.index.name = "id"
    return ti.Positionfixes(gdf)


def run_trackintel(pfs, params: StaypointParams):
    import trackintel as ti

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ti.preprocessing.generate_staypoints(
            pfs, method="sliding", dist_threshold=params.dist_threshold_m, time_threshold=params.time_threshold_s / 60,
            gap_threshold=params.gap_threshold_s / 60, include_last=params.include_last,
            exclude_duplicate_pfs=params.exclude_duplicate_pfs)


def trackintel_spans(pfs_out) -> pd.DataFrame:
    """First and last member fix (caller's index) and centroid of each trackintel stay point."""
    members = pfs_out.dropna(subset=["staypoint_id"])
    return members.reset_index().groupby("staypoint_id")["id"].agg(["min", "max"])


def median_time(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare(name: str, track: Track, params: StaypointParams) -> tuple[int, int, float, float]:
    ts, lat, lon = track
    position_rank = np.cumsum(~(np.isnan(lat) | np.isnan(lon))) - 1  # "within 1 fix" counts position fixes
    ours = staypoints(ts, lat, lon, params)  # warm-up (numba cache) and the result compared
    t_ours = median_time(lambda: staypoints(ts, lat, lon, params))
    pfs = trackintel_positionfixes(track)
    pfs_out, ti_sp = run_trackintel(pfs, params)
    t_ti = median_time(lambda: run_trackintel(pfs, params))
    spans = trackintel_spans(pfs_out)
    o_start = position_rank[ours["start_idx"].to_numpy()]
    o_end = position_rank[ours["end_idx"].to_numpy()]
    matched = 0
    offsets = []
    for sp_id, (lo_i, hi_i) in spans.iterrows():
        hit = np.nonzero((np.abs(o_start - position_rank[lo_i]) <= 1) & (np.abs(o_end - position_rank[hi_i]) <= 1))[0]
        if len(hit):
            matched += 1
            g = ti_sp.geometry.loc[int(sp_id)]
            offsets.append(haversine_m_reference(g.y, g.x, ours["lat"].iat[hit[0]], ours["lon"].iat[hit[0]]))
    n_fix = len(ts)
    print(f"{name}: {n_fix} fixes, trackintel {len(spans)} stay points, ours {len(ours)}, matched {matched}; "
          f"time trackintel {t_ti * 1000:.1f} ms, ours {t_ours * 1000:.2f} ms, ratio {t_ti / t_ours:.0f}x "
          f"({n_fix / t_ours / 1e6:.1f} M fixes/s vs {n_fix / t_ti / 1e3:.0f} k fixes/s)"
          + (f"; centroid offset median {statistics.median(offsets):.1f} m, max {max(offsets):.1f} m"
             if offsets else ""))
    return matched, len(spans), t_ours, t_ti


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=10, help="days in the synthetic multi-day track")
    ap.add_argument("--dist", type=float, default=100.0, help="dist_threshold in m (trackintel's ASV uses 25)")
    args = ap.parse_args()
    params = StaypointParams(dist_threshold_m=args.dist)
    files = drive_files()
    sessions = [load_session(p) for p in files]
    totals = np.zeros(4)
    real = np.zeros(4)
    for path, track in zip(files, sessions, strict=True):
        r = compare(f"POLIDriving {path.name.split('_col')[0]}", track, params)
        real += r
        totals += r
    print(f"POLIDriving all sessions: matched {int(real[0])}/{int(real[1])}, "
          f"time trackintel {real[3]:.3f} s, ours {real[2] * 1000:.2f} ms, ratio {real[3] / real[2]:.0f}x")
    totals += compare(f"synthetic {args.days}-day track", synthetic_days(sessions, args.days), params)
    match = totals[0] / totals[1] if totals[1] else float("nan")
    print(f"match={match:.4f} ratio={totals[3] / totals[2]:.0f}")


if __name__ == "__main__":
    main()
