"""``vinsight analytics run``: trips, events, scores, health and visits from the stored samples.

Incremental: each run analyses only what arrived since the last one (late data included) and
replaces the derived rows it touches. ``--loop`` repeats every VINSIGHT_ANALYTICS_INTERVAL_S.
"""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    a = subparsers.add_parser("analytics", help="derive trips, driving events, scores and vehicle health",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = a.add_subparsers(dest="analytics_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="analyse what is new (once, or --loop)")
    run.add_argument("--db-url", help="PostgreSQL URL (default: VINSIGHT_DB_URL)")
    run.add_argument("--loop", action="store_true", help="repeat every interval_s until Ctrl-C")
    run.add_argument("--device", action="append", default=None, metavar="DEVICE_ID",
                     help="only these devices (repeatable)")
    run.add_argument("--heatmap", action="store_true",
                     help="also recompute the k-anonymous fleet heatmap cells of the days touched (daily job)")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import psycopg

    from .runner import run_once
    from .settings import AnalyticsSettings

    s = AnalyticsSettings(**({"db_url": args.db_url} if args.db_url else {}))
    keys = None
    if args.device:
        with psycopg.connect(s.db_url) as conn:
            keys = [k for (k,) in conn.execute("SELECT device_key FROM devices WHERE device_id = ANY(%s)",
                                               (args.device,)).fetchall()]
    while True:
        r = run_once(s.db_url, device_keys=keys, vehicles_per_batch=s.vehicles_per_batch,
                     max_window_days=s.max_window_days, place_horizon_days=s.place_horizon_days, tz=s.timezone,
                     heatmap=args.heatmap)
        print(f"analytics: {r.vehicles} vehicle(s), {r.samples} samples, {r.trips} trips, {r.events} events "
              f"(read {r.read_s:.2f} s, compute {r.compute_s:.2f} s, write {r.write_s:.2f} s, "
              f"places {r.places_s:.2f} s)", flush=True)
        if not args.loop:
            return 0
        time.sleep(s.interval_s)
