"""The daily analytics job for a fleet: time reading samples from the database vs time computing.

1,000 simulated vehicles (realistic drives, calm / aggressive / night-commuter styles) x one day
at 1 Hz are loaded into a fresh database with ingest's own binary COPY, then ``analytics.runner``
runs once over all of them, in batches of 200 vehicles: it reads the batch's samples by binary COPY
(analytics.reader), analyses them with the fleet-wide batch path (analytics.batch: cleaning, trips,
events, trip and eco scores in one numba pass; battery health in one kernel; coolant, tracks) and
writes trips, events, scores, day scores, health and marks with COPY / set-based statements, one
transaction per batch. The runner times its phases itself; the target is compute <= 20 % of read
time (single-threaded kernels; ``--threads`` to try more). Median of ``--runs`` runs (the derived
tables and marks are cleared between runs).

    python bench/analytics_fleet.py [--vehicles 1000] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analytics.runner import run_once  # noqa: E402
from ingest.maintenance import apply_storage_policies  # noqa: E402
from ingest.migrate import migrate  # noqa: E402
from ingest.partitions import ensure_partitions, utc_day  # noqa: E402
from ingest.pipeline import Delivery, process_delivery  # noqa: E402
from ingest.settings import IngestSettings  # noqa: E402
from ingest.store import samples_copy_buffer  # noqa: E402
from vinsight.contract import codec  # noqa: E402
from vinsight.fleet_simulator import FleetSimulator  # noqa: E402

ADMIN_DSN = os.environ.get("VINSIGHT_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
DAY_S = 86_400


def load_fleet(db_url: str, vehicles: int, seconds: int) -> int:
    fleet = FleetSimulator(vehicles, 1.0, 600, seed=11, device_prefix="day")
    start_ms = int(time.time() * 1000) - (seconds + 3600) * 1000
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO devices (device_id, status) SELECT d, 'auto' FROM unnest(%s::text[]) d",
                     (fleet.device_ids,))
        keys = dict(conn.execute("SELECT device_id, device_key FROM devices").fetchall())
        days = {utc_day(start_ms + k * 3_600_000) for k in range(seconds // 3600 + 3)}
        ensure_partitions(conn, days, 1)
        now = int(time.time() * 1000)
        total, group, size = 0, [], 0
        for topic, payload, _n in fleet.payloads(seconds, start_ms, drive_at_start=True):
            out = process_delivery(Delivery(topic, payload, codec.CT_SAMPLES_BINARY, now), now)
            if out.samples is None:
                continue
            group.append((keys[out.device_id], out.samples))
            size += len(out.samples)
            if size >= 50_000:
                total += _copy(conn, group)
                group, size = [], 0
        if group:
            total += _copy(conn, group)
        conn.execute("INSERT INTO rollup_invalidations SELECT device_key, date_bin('1 hour', ts, '2000-01-01')"
                     " FROM samples GROUP BY 1, 2")
        conn.execute("SELECT vinsight_refresh_rollups()")
        conn.execute("VACUUM ANALYZE samples")
    return total


def _copy(conn: psycopg.Connection, group: list) -> int:
    names, buf = samples_copy_buffer(group)
    with conn.cursor() as cur, cur.copy(f"COPY samples ({', '.join(names)}) FROM STDIN (FORMAT BINARY)") as cp:
        cp.write(buf)
    return sum(len(r) for _, r in group)


def clear_derived(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE analytics_marks, trips, driving_events, scores, geofence_visits, vehicle_health")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vehicles", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=DAY_S)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="100 vehicles, 1 run")
    ap.add_argument("--threads", type=int, default=1, help="threads for the batch kernels")
    args = ap.parse_args()
    if args.quick:
        args.vehicles, args.runs = 100, 1
    name = "vinsight_bench_" + uuid.uuid4().hex[:8]
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = re.sub(r"/[^/]*$", f"/{name}", ADMIN_DSN)
    try:
        migrate(db_url)
        apply_storage_policies(db_url, IngestSettings(db_url=db_url))
        t = time.perf_counter()
        total = load_fleet(db_url, args.vehicles, args.seconds)
        print(f"loaded {total:,} samples of {args.vehicles} vehicles x {args.seconds} s "
              f"in {time.perf_counter() - t:.1f} s", flush=True)
        run_once(db_url, vehicles_per_batch=50, place_horizon_days=0)  # warm-up: kernels loaded, caches filled
        reads, computes, writes = [], [], []
        for run in range(args.runs):
            clear_derived(db_url)
            r = run_once(db_url, vehicles_per_batch=200, place_horizon_days=0, threads=args.threads)
            reads.append(r.read_s)
            computes.append(r.compute_s)
            writes.append(r.write_s)
            print(f"run {run + 1}: {r.vehicles} vehicles, {r.samples:,} samples, {r.trips} trips, {r.events} events;"
                  f" read {r.read_s:.2f} s, compute {r.compute_s:.2f} s, write {r.write_s:.2f} s", flush=True)
        read, compute, write = (statistics.median(x) for x in (reads, computes, writes))
        shares = ", ".join(f"{c / r:.3f}" for c, r in zip(computes, reads, strict=True))
        print(f"compute/read per run: {shares}")
        print(f"read_s={read:.2f} compute_s={compute:.2f} write_s={write:.2f} "
              f"compute_share_of_read={compute / read:.2f}")
        return 0
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
