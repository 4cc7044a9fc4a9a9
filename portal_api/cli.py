"""``vinsight portal ...``: serve the API and web portals, run its jobs, manage organisations and drivers."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from typing import Any

import psycopg
from psycopg.rows import dict_row

from .settings import PortalSettings

HELP = "Portal API and web portals: dealers, insurers, the driver's app (consent-scoped)"


def register(sub: Any) -> None:
    p = sub.add_parser("portal", help=HELP, description=HELP)
    p.add_argument("--db-url", help="PostgreSQL URL (default: VINSIGHT_PORTAL_DB_URL / VINSIGHT_DB_URL)")
    ps = p.add_subparsers(dest="portal_cmd", required=True, metavar="command")

    s = ps.add_parser("serve", help="Serve the API (/api/docs) and the web portals on --host:--port")
    s.add_argument("--host", help="Listen address (default VINSIGHT_PORTAL_HOST or 127.0.0.1)")
    s.add_argument("--port", type=int, help="Port (default VINSIGHT_PORTAL_PORT or 8000)")
    s.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (set VINSIGHT_PORTAL_JWT_SECRET "
                   "so they accept each other's tokens)")
    s.add_argument("--no-jobs", action="store_true", help="Do not run lead generation / webhook delivery here")
    s.set_defaults(func=_serve)

    j = ps.add_parser("jobs", help="Generate leads and deliver webhooks once (or --loop)")
    j.add_argument("--loop", action="store_true")
    j.set_defaults(func=_jobs)

    o = ps.add_parser("add-org", help="Create a dealer or insurer with its first admin")
    o.add_argument("--kind", choices=("dealer", "insurer"), required=True)
    o.add_argument("--name", required=True)
    o.add_argument("--admin-email", required=True)
    o.add_argument("--admin-password", help="(prompted when omitted)")
    o.set_defaults(func=_add_org)

    d = ps.add_parser("add-driver", help="Create a vehicle owner with an app login, and link their vehicles")
    d.add_argument("--email", required=True)
    d.add_argument("--name", default="")
    d.add_argument("--password", help="(prompted when omitted)")
    d.add_argument("--device", action="append", default=[], help="Device id in the owner's vehicle (repeatable)")
    d.add_argument("--vin", action="append", default=[], help="VIN of the vehicle, same order as --device")
    d.set_defaults(func=_add_driver)

    e = ps.add_parser("erase-owner", help="Erase everything about an owner (operator-initiated right to be forgotten)")
    e.add_argument("--owner-id", type=int, required=True)
    e.add_argument("--yes", action="store_true", help="Confirm: erasure cannot be undone")
    e.set_defaults(func=_erase)


def _settings(args: argparse.Namespace) -> PortalSettings:
    overrides: dict[str, Any] = {}
    if getattr(args, "db_url", None):
        overrides["db_url"] = args.db_url
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None):
        overrides["port"] = args.port
    return PortalSettings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app

    settings = _settings(args)
    if args.no_jobs:
        settings = settings.model_copy(update={"background_jobs": False})
    logging.basicConfig(level=logging.INFO)
    print(f"portal on http://{settings.host}:{settings.port}/  (API docs: /api/docs)", flush=True)
    if args.workers > 1:
        # Worker processes build their own app from the environment: hand them the overrides.
        import os

        os.environ["VINSIGHT_PORTAL_DB_URL"] = settings.db_url
        if args.no_jobs:
            os.environ["VINSIGHT_PORTAL_BACKGROUND_JOBS"] = "false"
        # One signing key for all workers (tokens from one must work on the others): the configured
        # one, else the random one this process drew, valid until the portal restarts.
        os.environ["VINSIGHT_PORTAL_JWT_SECRET"] = settings.jwt_secret
        uvicorn.run("portal_api.app:create_app", factory=True, workers=args.workers, host=settings.host,
                    port=settings.port, log_level="warning", access_log=False)
        return 0
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                access_log=False)
    return 0


def _jobs(args: argparse.Namespace) -> int:
    import time

    from psycopg_pool import ConnectionPool

    from .app import BackgroundJobs

    settings = _settings(args)
    with ConnectionPool(settings.db_url, min_size=1, max_size=2) as pool:
        jobs = BackgroundJobs(settings, pool)
        while True:
            print(json.dumps(jobs.run_once(), default=str), flush=True)
            if not args.loop:
                return 0
            time.sleep(settings.jobs_interval_s)


def _password(given: str | None) -> str:
    pw = given or getpass.getpass("password: ")
    if len(pw) < 12:
        raise SystemExit("passwords need at least 12 characters")
    return pw


def _add_org(args: argparse.Namespace) -> int:
    from .security import hash_password

    with psycopg.connect(_settings(args).db_url, row_factory=dict_row) as conn:
        org = conn.execute("INSERT INTO organisations (kind, name) VALUES (%s, %s) RETURNING org_id",
                           (args.kind, args.name)).fetchone()
        conn.execute("INSERT INTO portal_users (email, password_hash, org_id, role) VALUES (%s, %s, %s, 'admin')",
                     (args.admin_email, hash_password(_password(args.admin_password)), org["org_id"]))
    print(json.dumps({"org_id": org["org_id"], "kind": args.kind, "name": args.name}))
    return 0


def create_driver(conn: psycopg.Connection, email: str, name: str, password_hash: str,
                  vehicles: list[tuple[str, str | None]]) -> dict[str, Any]:
    """Owner + driver login + each (device id, VIN) linked as one of the owner's vehicles."""
    owner = conn.execute("INSERT INTO owners (display_name, email) VALUES (%s, %s) RETURNING owner_id",
                         (name, email)).fetchone()
    oid = owner["owner_id"] if isinstance(owner, dict) else owner[0]
    conn.execute("INSERT INTO portal_users (email, password_hash, owner_id, role, display_name)"
                 " VALUES (%s, %s, %s, 'driver', %s)", (email, password_hash, oid, name))
    linked = []
    for device_id, vin in vehicles:
        dev = conn.execute("SELECT device_key, vehicle_id FROM devices WHERE device_id = %s", (device_id,)).fetchone()
        if dev is None:
            dev = conn.execute("INSERT INTO devices (device_id, status) VALUES (%s, 'auto') RETURNING device_key,"
                               " vehicle_id", (device_id,)).fetchone()
        dkey = dev["device_key"] if isinstance(dev, dict) else dev[0]
        vrow = conn.execute("INSERT INTO vehicles (vin, owner_id) VALUES (%s, %s) ON CONFLICT (vin) DO UPDATE"
                            " SET owner_id = EXCLUDED.owner_id RETURNING vehicle_id", (vin, oid)).fetchone()
        vid = vrow["vehicle_id"] if isinstance(vrow, dict) else vrow[0]
        conn.execute("UPDATE devices SET vehicle_id = %s WHERE device_key = %s", (vid, dkey))
        linked.append({"device_id": device_id, "vehicle_id": vid})
    return {"owner_id": oid, "vehicles": linked}


def _add_driver(args: argparse.Namespace) -> int:
    from .security import hash_password

    vins = args.vin + [None] * (len(args.device) - len(args.vin))
    with psycopg.connect(_settings(args).db_url, row_factory=dict_row) as conn:
        out = create_driver(conn, args.email, args.name, hash_password(_password(args.password)),
                            list(zip(args.device, vins, strict=True)))
    print(json.dumps(out))
    return 0


def _erase(args: argparse.Namespace) -> int:
    from .erasure import erase_owner

    if not args.yes:
        print("erasure cannot be undone: add --yes", file=sys.stderr)
        return 2
    with psycopg.connect(_settings(args).db_url, row_factory=dict_row) as conn:
        counts = erase_owner(conn, args.owner_id, "operator")
    print(json.dumps(counts))
    return 0
