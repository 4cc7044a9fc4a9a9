"""Erasure (right to be forgotten) and export (right of access) of everything about one owner.

Erasure deletes, for the owner's vehicles and devices: raw samples (positions included), device
events, trouble-code episodes, rollups, analytics marks and every derived table, dead letters the
devices caused, leads and their history, webhook deliveries that carried them, service records,
consents, the audit trail of reads of this owner's data, the driver's login, the vehicles and the
owner; the devices stay registered (hardware identities, holding nothing personal) but are revoked
and unlinked, so nothing new arrives under the erased identity. One ``erasures`` row keeps the fact
and the row counts, nothing that identifies the person.

On TimescaleDB the continuous aggregates are refreshed over the erased range after the delete
commits (a refresh cannot run inside a transaction); on plain PostgreSQL the rollup tables are
deleted from directly.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import zipfile
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from analytics.json_values import json_value

# (table, SQL predicate) in delete order; %(dk)s = device keys, %(vid)s = vehicle ids, %(oid)s = owner.
ERASE_STEPS: tuple[tuple[str, str], ...] = (
    ("driving_events", "device_key = ANY (%(dk)s)"),
    ("scores", "device_key = ANY (%(dk)s)"),
    ("geofence_visits", "device_key = ANY (%(dk)s)"),
    ("routes", "device_key = ANY (%(dk)s)"),
    ("staypoints", "device_key = ANY (%(dk)s)"),
    ("trips", "device_key = ANY (%(dk)s)"),
    ("places", "device_key = ANY (%(dk)s)"),
    ("vehicle_health", "device_key = ANY (%(dk)s)"),
    ("analytics_marks", "device_key = ANY (%(dk)s)"),
    ("samples", "device_key = ANY (%(dk)s)"),
    ("device_events", "device_key = ANY (%(dk)s)"),
    ("dtc_episodes", "device_key = ANY (%(dk)s)"),
    ("device_status", "device_key = ANY (%(dk)s)"),
    ("dead_letters", "device_id = ANY (%(dids)s)"),
    ("webhook_deliveries", "(payload->>'vehicle_id')::bigint = ANY (%(vid)s)"),
    ("lead_events", "lead_id IN (SELECT lead_id FROM leads WHERE vehicle_id = ANY (%(vid)s))"),
    ("leads", "vehicle_id = ANY (%(vid)s)"),
    ("service_records", "vehicle_id = ANY (%(vid)s)"),
    # Every audit row names the vehicle's owner, and a vehicle never changes owner (provisioning
    # refuses to reassign one), so owner_id finds them all, through its index; an added
    # "OR vehicle_id = ANY (...)" made this a scan of the whole log (1.4 s at 400 k rows).
    ("audit_log", "owner_id = %(oid)s"),
    ("consents", "owner_id = %(oid)s"),
    ("portal_users", "owner_id = %(oid)s"),
)
NATIVE_ROLLUP_STEPS: tuple[tuple[str, str], ...] = (
    ("samples_hourly", "device_key = ANY (%(dk)s)"),
    ("samples_daily", "device_key = ANY (%(dk)s)"),
    ("rollup_invalidations", "device_key = ANY (%(dk)s)"),
)
# Derived tables analytics may add later are found by their device_key column (see _extra_tables).


def _tuples(conn: psycopg.Connection) -> psycopg.Cursor[tuple[Any, ...]]:
    """A cursor returning tuples, whatever row factory the caller's connection has (the portal's
    pool hands out dict-row connections, the CLI plain ones)."""
    return conn.cursor(row_factory=tuple_row)


def _backend(cur: psycopg.Cursor[tuple[Any, ...]]) -> str:
    row = cur.execute("SELECT value FROM vinsight_meta WHERE key = 'backend'").fetchone()
    return row[0] if row else "native"


def _extra_tables(cur: psycopg.Cursor[tuple[Any, ...]], known: set[str]) -> list[str]:
    """Other base tables with a device_key column (derived tables added by later migrations)."""
    rows = cur.execute(
        "SELECT c.table_name FROM information_schema.columns c JOIN information_schema.tables t"
        " ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
        " WHERE c.table_schema = current_schema() AND c.column_name = 'device_key' AND t.table_type = 'BASE TABLE'"
        " AND c.table_name NOT IN ('devices', 'feed_tombstones')"
        " AND NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class k ON k.oid = i.inhrelid"
        "                 WHERE k.relname = c.table_name)").fetchall()
    return sorted(r[0] for r in rows if r[0] not in known)


def erase_owner(conn: psycopg.Connection, owner_id: int, requested_by: str = "owner") -> dict[str, int]:
    """Erase everything about ``owner_id``; returns rows deleted per table. Idempotent."""
    with conn.transaction(), _tuples(conn) as cur:
        vids = [r[0] for r in
                cur.execute("SELECT vehicle_id FROM vehicles WHERE owner_id = %s FOR UPDATE", (owner_id,)).fetchall()]
        devs = cur.execute("SELECT device_key, device_id FROM devices WHERE vehicle_id = ANY (%s) FOR UPDATE",
                           (vids,)).fetchall()
        dk = [r[0] for r in devs]
        dids = [r[1] for r in devs]
        span = cur.execute("SELECT min(ts), max(ts) FROM samples WHERE device_key = ANY (%s)", (dk,)).fetchone()
        params = {"dk": dk, "vid": vids, "oid": owner_id, "dids": dids}
        # Organisations that were ever granted anything may hold copies: their feeds carry the deletions.
        recipients = [r[0] for r in cur.execute(
            "SELECT DISTINCT org_id FROM consents WHERE owner_id = %s", (owner_id,)).fetchall()]
        mark = cur.execute("SELECT coalesce(max(change_version), 0) FROM feed_tombstones").fetchone()
        backend = _backend(cur)
        steps = list(ERASE_STEPS)
        if backend != "timescaledb":
            steps[10:10] = NATIVE_ROLLUP_STEPS
        known = {t for t, _ in steps}
        steps = steps[:9] + [(t, "device_key = ANY (%(dk)s)") for t in _extra_tables(cur, known)] + steps[9:]
        counts: dict[str, int] = {}
        for table, predicate in steps:
            counts[table] = conn.execute(f"DELETE FROM {table} WHERE {predicate}", params).rowcount
        conn.execute("UPDATE feed_tombstones SET recipients = %s WHERE device_key = ANY (%s) AND change_version > %s",
                     (recipients, dk, mark[0] if mark else 0))
        counts["devices_revoked"] = conn.execute(
            "UPDATE devices SET vehicle_id = NULL, status = 'revoked', revoked_at = coalesce(revoked_at, now()),"
            " password_hash = NULL, note = '' WHERE device_key = ANY (%s)", (dk,)).rowcount
        counts["vehicles"] = conn.execute("DELETE FROM vehicles WHERE owner_id = %s", (owner_id,)).rowcount
        counts["owners"] = conn.execute("DELETE FROM owners WHERE owner_id = %s", (owner_id,)).rowcount
        conn.execute("INSERT INTO erasures (requested_by, rows_deleted) VALUES (%s, %s)",
                     (requested_by, Jsonb(counts)))
    lo, hi = span if span else (None, None)
    if backend == "timescaledb" and lo is not None:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.commit()  # the refresh below must see the delete
        # Outside any transaction: refresh_continuous_aggregate refuses to run inside one.
        with psycopg.connect(conn.info.dsn, autocommit=True) as ac:
            start = lo.replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=1)
            end = hi + dt.timedelta(days=1)
            ac.execute("CALL refresh_continuous_aggregate('samples_hourly', %s, %s)", (start, end))
            ac.execute("CALL refresh_continuous_aggregate('samples_daily', %s, %s)", (start, end))
    return counts


# --- export -----------------------------------------------------------------------------------------

def _rows(conn: psycopg.Connection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [{n: json_value(v) for n, v in r.items()} for r in cur.execute(sql, params).fetchall()]


SAMPLE_EXPORT_COLUMNS = ("ts", "speed", "rpm", "engine_load", "throttle_pos", "coolant_temp", "fuel_level",
                         "fuel_rate", "maf", "battery_voltage", "odometer", "latitude", "longitude", "altitude",
                         "gps_speed", "course", "hdop", "satellites")


def export_owner(conn: psycopg.Connection, owner_id: int) -> bytes:
    """Everything stored about ``owner_id`` as a zip: JSON tables, samples as CSV per device, and
    trips as GeoJSON. Built in memory: one owner's data is a few vehicles."""
    buf = io.BytesIO()
    p: dict[str, Any] = {"oid": owner_id}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        owner = _rows(conn, "SELECT owner_id, external_ref, display_name, email, created_at FROM owners"
                            " WHERE owner_id = %(oid)s", p)
        vehicles = _rows(conn, "SELECT * FROM vehicles WHERE owner_id = %(oid)s ORDER BY vehicle_id", p)
        devices = _rows(conn, "SELECT d.device_key, d.device_id, d.vehicle_id, d.status, d.created_at FROM devices d"
                              " JOIN vehicles v ON v.vehicle_id = d.vehicle_id WHERE v.owner_id = %(oid)s", p)
        p["dk"] = [d["device_key"] for d in devices]
        tables = {
            "owner.json": owner,
            "vehicles.json": vehicles,
            "devices.json": devices,
            "consents.json": _rows(conn, "SELECT c.*, o.name AS organisation FROM consents c JOIN organisations o"
                                         " USING (org_id) WHERE c.owner_id = %(oid)s ORDER BY consent_id", p),
            "access_log.json": _rows(conn, "SELECT a.at, a.actor_label, o.name AS organisation, a.vehicle_id, a.scope,"
                                           " a.purpose, a.action, a.records FROM audit_log a LEFT JOIN organisations"
                                           " o USING (org_id) WHERE a.owner_id = %(oid)s ORDER BY a.at", p),
            "driving_events.json": _rows(conn, "SELECT * FROM driving_events WHERE device_key = ANY (%(dk)s)"
                                               " ORDER BY ts", p),
            "scores.json": _rows(conn, "SELECT * FROM scores WHERE device_key = ANY (%(dk)s) ORDER BY period_start", p),
            "trouble_codes.json": _rows(conn, "SELECT * FROM dtc_episodes WHERE device_key = ANY (%(dk)s)"
                                              " ORDER BY first_seen", p),
            "vehicle_health.json": _rows(conn, "SELECT * FROM vehicle_health WHERE device_key = ANY (%(dk)s)", p),
            "places.json": _rows(conn, "SELECT * FROM places WHERE device_key = ANY (%(dk)s)", p),
            "staypoints.json": _rows(conn, "SELECT * FROM staypoints WHERE device_key = ANY (%(dk)s)"
                                           " ORDER BY started_at", p),
            "device_events.json": _rows(conn, "SELECT * FROM device_events WHERE device_key = ANY (%(dk)s)"
                                              " ORDER BY ts", p),
            "daily_rollups.json": _rows(conn, "SELECT * FROM samples_daily WHERE device_key = ANY (%(dk)s)"
                                              " ORDER BY bucket", p),
            "service_records.json": _rows(conn, "SELECT s.* FROM service_records s JOIN vehicles v USING (vehicle_id)"
                                                " WHERE v.owner_id = %(oid)s", p),
            "leads.json": _rows(conn, "SELECT l.lead_id, o.name AS organisation, l.vehicle_id, l.kind, l.reason,"
                                      " l.state, l.created_at, l.updated_at FROM leads l JOIN organisations o"
                                      " USING (org_id) JOIN vehicles v ON v.vehicle_id = l.vehicle_id"
                                      " WHERE v.owner_id = %(oid)s", p),
        }
        for name, rows in tables.items():
            z.writestr(name, json.dumps(rows, indent=1, default=str))
        trips = _rows(conn, "SELECT * FROM trips WHERE device_key = ANY (%(dk)s) ORDER BY start_ts", p)
        features = [{"type": "Feature", "id": t["trip_id"], "geometry": t.pop("track", None),
                     "properties": t} for t in trips]
        z.writestr("trips.geojson", json.dumps({"type": "FeatureCollection", "features": features}, default=str))
        for d in devices:
            out = io.StringIO()
            w = csv.writer(out)
            w.writerow(SAMPLE_EXPORT_COLUMNS)
            with _tuples(conn) as cur:
                cur.execute(f"SELECT {', '.join(SAMPLE_EXPORT_COLUMNS)} FROM samples WHERE device_key = %s"
                            " ORDER BY ts", (d["device_key"],))
                for r in cur:
                    w.writerow(["" if v is None else (v.isoformat() if isinstance(v, dt.datetime) else v) for v in r])
            z.writestr(f"samples/{d['device_id']}.csv", out.getvalue())
        z.writestr("README.txt", "Everything VINsight stores about you, exported on "
                   f"{dt.datetime.now(dt.UTC).isoformat()}.\nJSON files are tables; trips.geojson holds your trips "
                   "with their tracks; samples/<device>.csv holds every recorded sample (time in UTC, SI units).\n")
    return buf.getvalue()
