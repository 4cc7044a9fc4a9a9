"""Dealer leads: generated from analytics, moved along a sales pipeline, announced by webhook.

Generation (:func:`generate_leads`) runs per dealer over the vehicles whose owners granted it
``service_contact`` (to be called about their car) together with ``vehicle_health``. Sources:

* ``new_dtc``: an open trouble-code episode first seen within ``new_dtc_window_days`` (one lead per code);
* ``overheating`` / ``weak_battery`` / ``warmup_failure``: the health leads analytics wrote;
* ``service_due``: due or due soon by distance or time since the last recorded service;
* ``trade_in``: odometer (recorded distance) or vehicle age past the configured thresholds.

One open lead per (dealer, vehicle, kind, key); a closed lead (visited or lost) is not reopened for
``cooldown_days``. The pipeline is ``new → contacted → appointment → visited``, or ``lost`` with a
reason from any open state; each move is logged in ``lead_events``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from analytics.dtc_descriptions import describe_dtc_or_none
from analytics.health import HealthParams

from . import webhooks
from .access import Access
from .problems import Problem
from .queries import HEALTH_SQL, health_overview

STATES = ("new", "contacted", "appointment", "visited", "lost")
TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"contacted", "appointment", "lost"}),
    "contacted": frozenset({"appointment", "lost"}),
    "appointment": frozenset({"visited", "lost", "contacted"}),
    "visited": frozenset(),
    "lost": frozenset(),
}
LOST_REASONS = ("not_reachable", "declined", "went_elsewhere", "already_fixed", "sold_vehicle", "other")


@dataclass(frozen=True)
class LeadRules:
    new_dtc_window_days: float = 30.0
    cooldown_days: float = 30.0
    trade_in_km: float = 150_000.0
    trade_in_age_years: float = 8.0


@dataclass(frozen=True)
class Candidate:
    vehicle_id: int
    kind: str
    dedupe_key: str
    priority: int
    reason: str
    detail: dict[str, Any]


def candidates(overview: dict[str, Any], now: dt.datetime, rules: LeadRules) -> list[Candidate]:
    """The leads one vehicle's health overview calls for (pure; the tests drive it directly)."""
    vid = overview["vehicle_id"]
    out: list[Candidate] = []
    for e in overview["open_dtcs"]:
        first = dt.datetime.fromisoformat(e["first_seen"])
        if (now - first).total_seconds() > rules.new_dtc_window_days * 86400:
            continue
        info = describe_dtc_or_none(e["code"])
        severity = str(info.severity) if info else "medium"
        prio = {"high": 1, "medium": 2, "low": 3}.get(severity, 2)
        if e.get("mil_on"):
            prio = max(1, prio - 1)
        out.append(Candidate(vid, "new_dtc", e["code"], prio, f"{e['code']}: {e['description']}",
                             {"code": e["code"], "severity": severity, "mil_on": bool(e.get("mil_on")),
                              "first_seen": e["first_seen"]}))
    for lead in overview["health_leads"]:
        kind = lead.get("lead_type")
        if kind in ("overheating", "weak_battery", "warmup_failure"):
            out.append(Candidate(vid, kind, kind, int(lead.get("priority", 3)), str(lead.get("reason", kind)),
                                 dict(lead.get("details") or {})))
    svc = overview["service"]
    if svc is not None and (svc["due"] or svc["due_soon"]):
        out.append(Candidate(vid, "service_due", "service", 2 if svc["due"] else 3, svc["reason"],
                             {"km_left": svc["km_left"], "days_left": svc["days_left"], "due": svc["due"]}))
    km = overview["distance_recorded_km"]
    year = overview["model_year"]
    age = now.year - year if year else None
    if km >= rules.trade_in_km or (age is not None and age >= rules.trade_in_age_years):
        why = []
        if km >= rules.trade_in_km:
            why.append(f"{km:,.0f} km recorded")
        if age is not None and age >= rules.trade_in_age_years:
            why.append(f"{age} years old")
        out.append(Candidate(vid, "trade_in", "trade_in", 3, "trade-in candidate: " + ", ".join(why),
                             {"distance_recorded_km": km, "age_years": age}))
    return out


def lead_payload(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("lead_id", "vehicle_id", "kind", "priority", "reason", "detail", "state", "lost_reason", "assigned_to",
            "created_at", "updated_at", "closed_at", "change_version")
    return {k: (row[k].isoformat() if isinstance(row.get(k), dt.datetime) else row.get(k)) for k in keys}


def generate_leads(conn: psycopg.Connection, org_id: int, rules: LeadRules = LeadRules(),
                   now: dt.datetime | None = None) -> int:
    """Create the leads dealer ``org_id`` should see now; returns how many were new."""
    now = now or dt.datetime.now(dt.UTC)
    sql = ("WITH visible AS MATERIALIZED ("
           " SELECT DISTINCT v.vehicle_id, v.owner_id, ''::text AS purpose FROM vehicles v"
           " JOIN consents c ON c.owner_id = v.owner_id WHERE c.org_id = %(_org)s"
           " AND c.scopes @> ARRAY['service_contact', 'vehicle_health'] AND c.revoked_at IS NULL"
           " AND c.starts_at <= now() AND (c.expires_at IS NULL OR c.expires_at > now()))"
           + HEALTH_SQL + " ORDER BY v.vehicle_id")
    with _dict_rows(conn), conn.transaction():
        return _generate(conn, org_id, sql, rules, now)


@contextlib.contextmanager
def _dict_rows(conn: psycopg.Connection) -> Iterator[None]:
    """Dict rows on ``conn`` for the block, its own row factory back after it: the background jobs
    share the portal's pooled connections, which keep whatever factory their last user set."""
    factory = conn.row_factory
    conn.row_factory = dict_row
    try:
        yield
    finally:
        conn.row_factory = factory


def _generate(conn: psycopg.Connection, org_id: int, sql: str, rules: LeadRules, now: dt.datetime) -> int:
    created = 0
    rows = conn.execute(sql, {"_org": org_id}).fetchall()
    for r in rows:
        overview = health_overview(r, now, HealthParams())
        for c in candidates(overview, now, rules):
            recent = conn.execute(
                "SELECT 1 FROM leads WHERE org_id = %s AND vehicle_id = %s AND kind = %s AND dedupe_key = %s"
                " AND (state NOT IN ('visited', 'lost') OR closed_at > %s) LIMIT 1",
                (org_id, c.vehicle_id, c.kind, c.dedupe_key,
                 now - dt.timedelta(days=rules.cooldown_days))).fetchone()
            if recent is not None:
                continue
            row = conn.execute(
                "INSERT INTO leads (org_id, vehicle_id, kind, dedupe_key, priority, reason, detail)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING *",
                (org_id, c.vehicle_id, c.kind, c.dedupe_key, c.priority, c.reason, Jsonb(c.detail))).fetchone()
            if row is None:
                continue
            conn.execute("INSERT INTO lead_events (lead_id, from_state, to_state, actor) VALUES (%s, NULL, 'new',"
                         " 'analytics')", (row["lead_id"],))
            webhooks.enqueue(conn, org_id, "lead.created", lead_payload(row))
            created += 1
    return created


def close_visited(conn: psycopg.Connection, min_dwell_s: float = 600.0) -> int:
    """Open leads whose vehicle then stayed at one of the dealer's sites: moved to ``visited``.

    The visit is a fact analytics derived (``geofence_visits``, dwell at least ``min_dwell_s`` after
    the lead was created); the dealer learns only that the customer came, which is what the lead's
    ``service_contact`` consent was for. Still requires that consent to be active now.
    """
    closed = 0
    with _dict_rows(conn), conn.transaction():
        rows = conn.execute(
            "SELECT l.*, vis.site, vis.entered_at FROM leads l"
            " JOIN vehicles v ON v.vehicle_id = l.vehicle_id"
            " JOIN LATERAL (SELECT g.name AS site, gv.entered_at FROM devices d"
            "   JOIN geofence_visits gv ON gv.device_key = d.device_key AND gv.entered_at >= l.created_at"
            "    AND gv.dwell_s >= %s"
            "   JOIN geofences g ON g.geofence_id = gv.geofence_id AND g.kind = 'dealer'"
            "    AND g.owner_org = l.org_id::text"
            "   WHERE d.vehicle_id = l.vehicle_id ORDER BY gv.entered_at LIMIT 1) vis ON true"
            " WHERE l.state IN ('new', 'contacted', 'appointment') AND EXISTS ("
            "   SELECT 1 FROM consents c WHERE c.owner_id = v.owner_id AND c.org_id = l.org_id"
            "   AND 'service_contact' = ANY (c.scopes) AND c.revoked_at IS NULL AND c.starts_at <= now()"
            "   AND (c.expires_at IS NULL OR c.expires_at > now()))"
            " ORDER BY l.lead_id FOR UPDATE OF l", (min_dwell_s,)).fetchall()
        for lead in rows:
            row = conn.execute("UPDATE leads SET state = 'visited', closed_at = now(), updated_at = now()"
                               " WHERE lead_id = %s RETURNING *", (lead["lead_id"],)).fetchone()
            conn.execute("INSERT INTO lead_events (lead_id, from_state, to_state, actor, note)"
                         " VALUES (%s, %s, 'visited', 'geofence', %s)",
                         (lead["lead_id"], lead["state"],
                          f"at {lead['site']} from {lead['entered_at']:%Y-%m-%d %H:%M}"))
            webhooks.enqueue(conn, lead["org_id"], "lead.updated", lead_payload(row))
            closed += 1
    return closed


def generate_all(conn: psycopg.Connection, rules: LeadRules = LeadRules()) -> dict[int, int]:
    orgs = [r[0] for r in conn.cursor(row_factory=tuple_row).execute(
        "SELECT org_id FROM organisations WHERE kind = 'dealer' ORDER BY org_id").fetchall()]
    return {org: generate_leads(conn, org, rules) for org in orgs}


def move(access: Access, lead: dict[str, Any], *, state: str | None, lost_reason: str | None,
         assigned_to: int | None, assign: bool, note: str) -> dict[str, Any]:
    """Apply a pipeline change by ``access.caller``; 409 for a move the pipeline does not allow."""
    conn, caller = access.conn, access.caller
    current = lead["state"]
    sets: dict[str, Any] = {}
    if state is not None and state != current:
        if state not in TRANSITIONS[current]:
            allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (the lead is closed)"
            raise Problem(409, "invalid-transition", f"A lead in '{current}' cannot move to '{state}'; "
                          f"allowed: {allowed}.")
        if state == "lost" and not lost_reason:
            raise Problem(422, "lost-reason-required", f"Moving a lead to 'lost' needs lost_reason, one of "
                          f"{', '.join(LOST_REASONS)}.")
        sets["state"] = state
        sets["lost_reason"] = lost_reason if state == "lost" else None
        if state in ("visited", "lost"):
            sets["closed_at"] = dt.datetime.now(dt.UTC)
    elif lost_reason is not None and current != "lost":
        raise Problem(422, "lost-reason-without-lost", "lost_reason is only accepted together with state 'lost'.")
    if assign:
        if assigned_to is not None:
            ok = conn.execute("SELECT 1 FROM portal_users WHERE user_id = %s AND org_id = %s AND active"
                              " AND role IN ('admin', 'service_advisor', 'sales')",
                              (assigned_to, caller.org_id)).fetchone()
            if ok is None:
                raise Problem(422, "unknown-assignee", f"User {assigned_to} is not an active advisor or sales "
                              "person of your organisation.")
        sets["assigned_to"] = assigned_to
    if not sets and not note:
        return lead
    sets["updated_at"] = dt.datetime.now(dt.UTC)
    assignments = ", ".join(f"{k} = %({k})s" for k in sets)
    row = conn.execute(f"UPDATE leads SET {assignments} WHERE lead_id = %(lead_id)s RETURNING *",
                       {**sets, "lead_id": lead["lead_id"]}).fetchone()
    assert row is not None
    conn.execute("INSERT INTO lead_events (lead_id, from_state, to_state, actor, note) VALUES (%s, %s, %s, %s, %s)",
                 (lead["lead_id"], current, row["state"], f"{caller.kind}:{caller.label}", note))
    webhooks.enqueue(conn, caller.org_id or 0, "lead.updated", lead_payload(row))
    return row
