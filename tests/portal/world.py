"""A small, fully known world for portal tests: two dealers, two insurers, four owners, their
vehicles, devices, samples, rollups, trips, events, scores, trouble codes and consents in every
state (active, absent, revoked, expired, future, wrong scope).

Derived rows are written directly (these tests are about access, not analytics); the end-to-end
test in test_portal_e2e.py derives them with the real pipeline instead.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ingest.partitions import ensure_partitions
from portal_api.cli import create_driver
from portal_api.security import hash_password

PASSWORD = "correct horse battery staple"
ORGS = {"dealer_a": ("dealer", "Autohaus Nord"), "dealer_b": ("dealer", "Garage Sud"),
        "insurer_a": ("insurer", "SafeDrive Mutual"), "insurer_b": ("insurer", "Other Assurance")}
ROLES = {"dealer": ("admin", "analyst", "service_advisor", "sales"), "insurer": ("admin", "analyst", "underwriter")}
OWNERS = ("alice", "bob", "carol", "dave")
ALL_SCOPES = ["vehicle_health", "service_contact", "driving_score", "mileage", "trip_summary", "location_history"]

# (owner, organisation) -> (scopes, state): every consent state the authorisation matrix needs.
# state: active, expired (expires_at passed), revoked, future (starts_at not reached).
CONSENTS: dict[tuple[str, str], tuple[list[str], str]] = {
    ("alice", "dealer_a"): (["vehicle_health", "service_contact"], "active"),
    ("alice", "insurer_a"): (["driving_score", "mileage", "trip_summary"], "active"),
    ("bob", "dealer_a"): (["vehicle_health", "service_contact"], "expired"),
    ("bob", "insurer_a"): (ALL_SCOPES, "revoked"),
    ("carol", "insurer_a"): (["driving_score", "mileage", "trip_summary", "location_history"], "active"),
    ("carol", "dealer_b"): (["vehicle_health", "service_contact"], "active"),
    ("carol", "dealer_a"): (["driving_score"], "active"),   # a scope no dealer endpoint reads
    ("dave", "insurer_b"): (["driving_score"], "future"),
}


def visible(owner: str, org: str, scope: str) -> bool:
    """The oracle: may ``org`` read ``owner``'s vehicle under ``scope``? (Independent of the SQL.)"""
    scopes, state = CONSENTS.get((owner, org), ([], "absent"))
    return state == "active" and scope in scopes


@dataclass
class World:
    dsn: str
    org_ids: dict[str, int] = field(default_factory=dict)
    owner_ids: dict[str, int] = field(default_factory=dict)
    vehicle_ids: dict[str, int] = field(default_factory=dict)
    device_keys: dict[str, int] = field(default_factory=dict)
    trip_ids: dict[str, list[int]] = field(default_factory=dict)
    consent_ids: dict[tuple[str, str], int] = field(default_factory=dict)

    def user(self, org: str, role: str) -> str:
        return f"{role}@{org}.test"

    @staticmethod
    def driver(owner: str) -> str:
        return f"{owner}@drivers.test"


def _vin(i: int) -> str:
    return f"WVWZZZ1KZAW{i:06d}"


def grant(conn: psycopg.Connection, world: World, owner: str, org: str, scopes: list[str], *,
          starts: dt.datetime | None = None, expires: dt.datetime | None = None, revoked: bool = False) -> int:
    now = dt.datetime.now(dt.UTC)
    row = conn.execute(
        "INSERT INTO consents (owner_id, org_id, scopes, purpose, starts_at, expires_at, revoked_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING consent_id",
        (world.owner_ids[owner], world.org_ids[org], scopes, f"{org} programme", starts or now - dt.timedelta(days=60),
         expires, now - dt.timedelta(minutes=1) if revoked else None)).fetchone()
    cid = row["consent_id"]
    world.consent_ids[(owner, org)] = cid
    return cid


def build_world(dsn: str) -> World:
    world = World(dsn)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    pw = hash_password(PASSWORD)
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        for key, (kind, name) in ORGS.items():
            world.org_ids[key] = conn.execute("INSERT INTO organisations (kind, name) VALUES (%s, %s) RETURNING org_id",
                                              (kind, name)).fetchone()["org_id"]
            for role in ROLES[kind]:
                conn.execute("INSERT INTO portal_users (email, password_hash, org_id, role, display_name)"
                             " VALUES (%s, %s, %s, %s, %s)", (world.user(key, role), pw, world.org_ids[key], role,
                                                              f"{role} of {name}"))
        ensure_partitions(conn, [(now - dt.timedelta(days=d)).date() for d in range(0, 4)], 1)
        for i, owner in enumerate(OWNERS, start=1):
            out = create_driver(conn, world.driver(owner), owner.title(), pw, [(f"dev-{owner}", _vin(i))])
            world.owner_ids[owner] = out["owner_id"]
            vid = out["vehicles"][0]["vehicle_id"]
            world.vehicle_ids[owner] = vid
            dk = conn.execute("SELECT device_key FROM devices WHERE device_id = %s", (f"dev-{owner}",)).fetchone()
            dk = dk["device_key"]
            world.device_keys[owner] = dk
            conn.execute("UPDATE vehicles SET make = 'VW', model = 'Golf', model_year = %s WHERE vehicle_id = %s",
                         (2012 + i, vid))
            _seed_vehicle(conn, world, owner, dk, now, i)
        # what an analytics run does after writing results: the portal's per-vehicle summaries
        conn.execute("SELECT vinsight_refresh_vehicle_summaries()")
        for (owner, org), (scopes, state) in CONSENTS.items():
            day = dt.timedelta(days=1)
            grant(conn, world, owner, org, scopes, expires=now - day if state == "expired" else None,
                  starts=now + day if state == "future" else None, revoked=state == "revoked")
    return world


def _seed_vehicle(conn: psycopg.Connection, world: World, owner: str, dk: int, now: dt.datetime, i: int) -> None:
    boot = uuid.uuid4()
    start = now - dt.timedelta(hours=2)
    rows = []
    for s in range(0, 600, 10):
        ts = start + dt.timedelta(seconds=s)
        rows.append((dk, ts, boot, s, 10_000, 50.0 + i, 2000.0, 45.0 + i * 0.01, 7.0 + i * 0.01, 12.4))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO samples (device_key, ts, boot_id, seq, interval_ms, speed, rpm, latitude,"
                        " longitude, battery_voltage) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
    conn.execute("INSERT INTO device_status (device_key, state, last_seen, last_sample_ts)"
                 " VALUES (%s, 'online', %s, %s)", (dk, now, start + dt.timedelta(seconds=590)))
    for d in range(3):
        bucket = (now - dt.timedelta(days=d)).replace(hour=0, minute=0, second=0)
        for table in ("samples_daily", "samples_hourly"):
            conn.execute(f"INSERT INTO {table} (device_key, bucket, samples, distance_km, driving_s, idle_s,"
                         " max_speed_kmh, fuel_l, first_ts, last_ts)"
                         " VALUES (%s, %s, 600, %s, 3600, 60, 120, 4, %s, %s)",
                         (dk, bucket, 40.0 + i, bucket, bucket + dt.timedelta(hours=1)))
    trips = []
    for t in range(2):
        ts0 = now - dt.timedelta(days=t, hours=1)
        track = {"type": "LineString", "coordinates": [[7.0 + i * 0.01, 45.0], [7.01 + i * 0.01, 45.01]]}
        row = conn.execute(
            "INSERT INTO trips (device_key, start_ts, end_ts, start_lat, start_lon, end_lat, end_lon, distance_m,"
            " duration_s, driving_s, idle_s, max_speed_kmh, avg_speed_kmh, night_share, urban_share, rural_share,"
            " motorway_share, track) VALUES (%s, %s, %s, 45.0, %s, 45.01, %s, 20000, 1200, 1100, 100, 110, 60, 0,"
            " 0.5, 0.3, 0.2, %s) RETURNING trip_id",
            (dk, ts0, ts0 + dt.timedelta(minutes=20), 7.0 + i * 0.01, 7.01 + i * 0.01, Jsonb(track))).fetchone()
        tid = row["trip_id"]
        trips.append(tid)
        conn.execute("INSERT INTO driving_events (device_key, trip_id, kind, ts, end_ts, lat, lon, severity, peak,"
                     " peak_unit, duration_s)"
                     " VALUES (%s, %s, 'harsh_braking', %s, %s, 45.005, 7.005, 2, -4.1, 'm/s2', 2)",
                     (dk, tid, ts0 + dt.timedelta(minutes=5), ts0 + dt.timedelta(minutes=5, seconds=2)))
        expl = {"score": 70 + i, "components": [
            {"name": "braking", "sub_score": 60.0, "applied": True, "weight": 0.5},
            {"name": "speeding", "sub_score": 90.0, "applied": True, "weight": 0.5}]}
        conn.execute("INSERT INTO scores (device_key, scope, trip_id, period_start, period_end, score, distance_m,"
                     " explanation) VALUES (%s, 'trip', %s, %s, %s, %s, 20000, %s)",
                     (dk, tid, ts0, ts0 + dt.timedelta(minutes=20), 70 + i, Jsonb(expl)))
        day = ts0.replace(hour=0, minute=0, second=0)
        conn.execute("INSERT INTO scores (device_key, scope, period_start, period_end, score, distance_m, explanation)"
                     " VALUES (%s, 'day', %s, %s, %s, 20000, %s) ON CONFLICT DO NOTHING",
                     (dk, day, day + dt.timedelta(days=1), 70 + i, Jsonb(expl)))
    world.trip_ids[owner] = trips
    conn.execute("INSERT INTO dtc_episodes (device_key, code, dtc_type, first_seen, last_seen, mil_on)"
                 " VALUES (%s, 'P0301', 'stored', %s, %s, true)", (dk, now - dt.timedelta(days=2), now))
    conn.execute("INSERT INTO device_events (device_key, boot_id, seq, ts, kind, data) VALUES (%s, %s, 1, %s,"
                 " 'dtc_new', '{\"code\": \"P0301\"}')", (dk, boot, now - dt.timedelta(days=2)))
    conn.execute("INSERT INTO vehicle_health (device_key, battery, leads) VALUES (%s, %s, %s)",
                 (dk, Jsonb({"level": "weak", "resting_v": 11.9}),
                  Jsonb([{"device_key": dk, "lead_type": "weak_battery", "priority": 2, "reason": "resting 11.9 V",
                          "details": {"resting_v": 11.9}}])))
    conn.execute("INSERT INTO dead_letters (topic, device_id, reason, payload) VALUES (%s, %s, 'bad_magic', %s)",
                 (f"vinsight/v1/data/dev-{owner}/samples", f"dev-{owner}", b"\x00garbage"))


def table_counts(dsn: str) -> dict[str, int]:
    """Rows in every base table of the schema (partitions counted through their parent)."""
    with psycopg.connect(dsn) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
            " ORDER BY 1").fetchall()]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def rows_mentioning(dsn: str, world: World, owner: str) -> dict[str, int]:
    """Rows in any table that still refer to ``owner`` by owner, vehicle, device key or device id."""
    ids: dict[str, Any] = {"owner_id": world.owner_ids[owner], "vehicle_id": world.vehicle_ids[owner],
                           "device_key": world.device_keys[owner], "device_id": f"dev-{owner}"}
    found: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        cols = conn.execute(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c JOIN pg_class k"
            " ON k.relname = c.table_name JOIN pg_namespace n ON n.oid = k.relnamespace AND n.nspname = c.table_schema"
            " WHERE c.table_schema = current_schema() AND k.relkind IN ('r', 'p') AND NOT k.relispartition"
            " AND c.column_name = ANY (%s)", (list(ids),)).fetchall()
        for table, col in cols:
            if table in ("devices", "feed_tombstones"):
                continue  # the device stays registered (revoked); tombstones carry only the number
            n = conn.execute(f'SELECT count(*) FROM "{table}" WHERE "{col}" = %s', (ids[col],)).fetchone()[0]
            if n:
                found[f"{table}.{col}"] = n
    return found
