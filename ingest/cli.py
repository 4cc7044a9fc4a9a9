"""``vinsight db ...`` and ``vinsight ingest ...``: the schema and the workers that fill it.

Settings come from ``VINSIGHT_INGEST_*`` (and the shared ``VINSIGHT_DB_URL`` / ``VINSIGHT_MQTT_*``);
options given here override them. Run ``vinsight ingest run --help`` for the full list.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from typing import Any

log = logging.getLogger(__name__)


def _settings(args: argparse.Namespace) -> Any:
    from .settings import IngestSettings

    overrides = {k: v for k, v in {
        "db_url": getattr(args, "db_url", None),
        "mqtt_host": getattr(args, "mqtt_host", None),
        "mqtt_port": getattr(args, "mqtt_port", None),
        "share_group": getattr(args, "share_group", None),
        "metrics_port": getattr(args, "metrics_port", None),
        "backend": getattr(args, "backend", None),
        "flush_rows": getattr(args, "flush_rows", None),
        "flush_age_s": getattr(args, "flush_age_s", None),
        "client_id_prefix": getattr(args, "client_id_prefix", None),
    }.items() if v is not None}
    return IngestSettings(**overrides)


def register(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser("db", help="database schema: migrate, status, maintain",
                               description="The storage schema (TimescaleDB when available, else native "
                                           "PostgreSQL partitioning) and its upkeep.")
    db.add_argument("--db-url", help="PostgreSQL URL (default: VINSIGHT_DB_URL)")
    dsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    m = dsub.add_parser("migrate", help="apply pending migrations, then the storage policies (idempotent)")
    m.add_argument("--backend", choices=("auto", "timescaledb", "native"),
                   help="backend at the first migrate (default: VINSIGHT_INGEST_BACKEND or auto)")
    m.set_defaults(func=_db_migrate)
    st = dsub.add_parser("status", help="backend, applied and pending migrations")
    st.set_defaults(func=_db_status)
    mt = dsub.add_parser("maintain", help="partitions ahead, retention and rollup refresh (native backend)")
    mt.add_argument("--loop", action="store_true", help="repeat every maintenance_interval_s until Ctrl-C")
    mt.set_defaults(func=_db_maintain)

    ing = subparsers.add_parser("ingest", help="MQTT to database workers",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    isub = ing.add_subparsers(dest="ingest_command", metavar="ACTION", required=True)
    for name, helptext, func in (
        ("run", "run N worker processes (restarted if they die) plus native-backend maintenance", _ingest_run),
        ("worker", "run one worker in this process (what `run` starts N of)", _ingest_worker),
    ):
        p = isub.add_parser(name, help=helptext, description=helptext)
        p.add_argument("--db-url", help="PostgreSQL URL (default: VINSIGHT_DB_URL)")
        p.add_argument("--mqtt-host", help="broker host (default: VINSIGHT_MQTT_HOST or 127.0.0.1)")
        p.add_argument("--mqtt-port", type=int, help="broker port (default: VINSIGHT_MQTT_PORT or 1883)")
        p.add_argument("--share-group", help="shared-subscription group (default ingest)")
        p.add_argument("--client-id-prefix", help="worker i connects as <prefix>-<i>")
        p.add_argument("--metrics-port", type=int, help="worker i serves /metrics on this + i (0 = off)")
        p.add_argument("--flush-rows", type=int, help="samples per transaction (default 20000)")
        p.add_argument("--flush-age-s", type=float, help="longest a message waits for its commit (default 0.25)")
        p.set_defaults(func=func)
        if name == "run":
            p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
            p.add_argument("--no-maintenance", action="store_true", help="do not run the maintenance loop here")
        else:
            p.add_argument("--index", type=int, default=0, help="worker index: client id and metrics port offset")


def _db_migrate(args: argparse.Namespace) -> int:
    from .maintenance import apply_storage_policies
    from .migrate import migrate

    s = _settings(args)
    report = migrate(s.db_url, s.backend)
    apply_storage_policies(s.db_url, s)
    print(f"backend: {report.backend.value}")
    print(f"applied: {', '.join(report.applied) or 'nothing (up to date)'}")
    return 0


def _db_status(args: argparse.Namespace) -> int:
    from .migrate import schema_status

    print(json.dumps(schema_status(_settings(args).db_url), indent=2))
    return 0


def _db_maintain(args: argparse.Namespace) -> int:
    from .maintenance import run_maintenance

    s = _settings(args)
    while True:
        report = run_maintenance(s.db_url)
        print(f"maintenance ({report.backend.value}): created {report.partitions_created}, "
              f"dropped {report.partitions_dropped}, rollup buckets refreshed {report.rollup_buckets_refreshed}",
              flush=True)
        if not args.loop:
            return 0
        time.sleep(s.maintenance_interval_s)


def _ingest_worker(args: argparse.Namespace) -> int:
    from .worker import IngestWorker

    worker = IngestWorker(_settings(args), args.index)
    stop = threading.Event()

    def _stop(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.run(stop)
    return 0


def _worker_command(args: argparse.Namespace, index: int) -> list[str]:
    cmd = [sys.executable, "-m", "ingest", "ingest", "worker", "--index", str(index)]  # = vinsight ingest worker
    for opt in ("db_url", "mqtt_host", "mqtt_port", "share_group", "client_id_prefix", "metrics_port",
                "flush_rows", "flush_age_s"):
        value = getattr(args, opt, None)
        if value is not None:
            cmd += [f"--{opt.replace('_', '-')}", str(value)]
    return cmd


def _ingest_run(args: argparse.Namespace) -> int:
    """Supervise N worker processes: restart any that exits, stop all on SIGTERM / Ctrl-C."""
    from .maintenance import run_maintenance

    s = _settings(args)
    stop = threading.Event()

    def _stop(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    procs: dict[int, subprocess.Popen[bytes]] = {}
    for i in range(args.workers):
        procs[i] = subprocess.Popen(_worker_command(args, i))
    print(f"ingest: {args.workers} worker(s) started; share group {s.share_group}", flush=True)
    next_maintenance = 0.0
    try:
        while not stop.is_set():
            for i, p in list(procs.items()):
                if p.poll() is not None:
                    log.warning("worker %d exited with %s; restarting it", i, p.returncode)
                    procs[i] = subprocess.Popen(_worker_command(args, i))
            if not args.no_maintenance and time.monotonic() >= next_maintenance:
                try:
                    run_maintenance(s.db_url)
                except Exception as exc:
                    log.warning("maintenance failed: %s", exc)
                next_maintenance = time.monotonic() + s.maintenance_interval_s
            stop.wait(1.0)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0
