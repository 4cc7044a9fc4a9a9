"""Partner feed: new and changed trips, events and leads since a version, resumable.

Versions come from one sequence drawn in commit order (migration 0007 explains the lock that makes
it so): a client that stores ``to_version`` and passes it back as ``fromVersion`` neither misses
nor repeats a change. Rows the caller may not see (no consent for the scope) are skipped, but the
version still advances past them. Deletions arrive as ``op: delete``.

Consents to the caller's organisation are changes too (``kind: consent``, migration 0011): a grant
(or a change of scopes) arrives as an upsert with the owner's vehicles, at the point it took
effect, so the partner knows to backfill that owner's earlier trips from the list endpoints (the
feed skipped them while there was no consent, and does not replay them); a revocation arrives as an
upsert with ``revoked_at``, an erased owner's consents as deletions.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from ..access import Access, Audience, GuardedRoute, Scope
from ..models import FeedPage
from ..problems import responses
from ..queries import iso
from .common import allow

router = APIRouter(prefix="/v1", tags=["partner feed"], route_class=GuardedRoute)

TRIP_FIELDS = ("trip_id", "kind", "start_ts", "end_ts", "is_open", "distance_m", "duration_s", "driving_s", "idle_s",
               "max_speed_kmh", "avg_speed_kmh", "fuel_l", "night_share", "urban_share", "rural_share",
               "motorway_share")
EVENT_FIELDS = ("event_id", "trip_id", "kind", "ts", "end_ts", "severity", "peak", "peak_unit", "duration_s")
CONSENT_FIELDS = ("consent_id", "owner_id", "scopes", "purpose", "starts_at", "expires_at", "revoked_at")
LEAD_FIELDS = ("lead_id", "kind", "priority", "reason", "state", "lost_reason", "assigned_to", "created_at",
               "updated_at", "closed_at")


@router.get("/feed", response_model=FeedPage, operation_id="partner_feed",
            responses=responses(400, 401, 403, 422, 429),
            summary="Changes since fromVersion (exclusive), oldest first, at most `limit`")
def partner_feed(from_version: int = Query(0, alias="fromVersion", ge=0, le=2**62),
                 limit: int = Query(500, ge=1, le=1000),
                 access: Access = allow("org.feed")) -> dict[str, Any]:
    c = access.caller
    dealer = c.audience is Audience.DEALER
    # The newest version that has committed: everything up to it is final (commit-ordered versions).
    head = access.conn.execute(
        "SELECT greatest(coalesce((SELECT max(change_version) FROM trips), 0),"
        " coalesce((SELECT max(change_version) FROM driving_events), 0),"
        " coalesce((SELECT max(change_version) FROM leads), 0),"
        # this organisation's consents only: an index probe (consents_feed_idx), and still a committed
        # version, which is all that head needs to be
        " coalesce((SELECT max(change_version) FROM consents WHERE org_id = %s), 0),"
        " coalesce((SELECT max(change_version) FROM feed_tombstones), 0)) AS head", (c.org_id,)).fetchone()["head"]
    p = {"v": from_version, "lim": limit + 1, "org": c.org_id, "head": head}
    changes: list[dict[str, Any]] = []
    trip_scope = Scope.TRIP_SUMMARY
    places_vis, places_params = access.visible_sql(Scope.LOCATION_HISTORY, tag="_lh")
    if not dealer:
        rows = access.fetch(
            "SELECT vis.vehicle_id, vis.owner_id, vis.purpose, t.*,"
            f" EXISTS (SELECT 1 FROM ({places_vis}) lh WHERE lh.vehicle_id = vis.vehicle_id) AS places"
            " FROM visible vis JOIN devices d ON d.vehicle_id = vis.vehicle_id JOIN trips t ON t.device_key ="
            " d.device_key WHERE t.change_version > %(v)s AND t.change_version <= %(head)s"
            " ORDER BY t.change_version LIMIT %(lim)s",
            {**p, **places_params}, scope=trip_scope)
        for r in rows:
            data = {k: iso(r[k]) for k in TRIP_FIELDS} | {"vehicle_id": r["vehicle_id"]}
            if r["places"]:
                data |= {"start_lat": r["start_lat"], "start_lon": r["start_lon"], "end_lat": r["end_lat"],
                         "end_lon": r["end_lon"]}
            changes.append({"version": r["change_version"], "kind": "trip", "op": "upsert", "id": r["trip_id"],
                            "data": data})
        rows = access.fetch(
            "SELECT vis.vehicle_id, vis.owner_id, vis.purpose, e.* FROM visible vis JOIN devices d"
            " ON d.vehicle_id = vis.vehicle_id JOIN driving_events e ON e.device_key = d.device_key"
            " WHERE e.change_version > %(v)s AND e.change_version <= %(head)s ORDER BY e.change_version LIMIT %(lim)s",
            p, scope=Scope.DRIVING_SCORE)
        for r in rows:
            changes.append({"version": r["change_version"], "kind": "event", "op": "upsert", "id": r["event_id"],
                            "data": {k: iso(r[k]) for k in EVENT_FIELDS} | {"vehicle_id": r["vehicle_id"]}})
        # Deletions of what the caller may see now, and of everything erased about an owner who had
        # granted this organisation anything (the vehicle is gone, so it is no longer "visible").
        vis, vis_params = access.visible_sql(trip_scope, tag="_t")
        changes += deletions(access, "t.kind IN ('trip', 'event') AND (%(org)s = ANY (t.recipients) OR EXISTS"
                             f" (SELECT 1 FROM ({vis}) x JOIN devices d ON d.vehicle_id = x.vehicle_id"
                             " WHERE d.device_key = t.device_key))", {**p, **vis_params})
    else:
        rows = access.fetch(
            "SELECT vis.vehicle_id, vis.owner_id, vis.purpose, l.* FROM visible vis JOIN leads l"
            " ON l.vehicle_id = vis.vehicle_id AND l.org_id = %(org)s"
            " WHERE l.change_version > %(v)s AND l.change_version <= %(head)s"
            " ORDER BY l.change_version LIMIT %(lim)s", p, scope=Scope.SERVICE_CONTACT)
        for r in rows:
            changes.append({"version": r["change_version"], "kind": "lead", "op": "upsert", "id": r["lead_id"],
                            "data": {k: iso(r[k]) for k in LEAD_FIELDS} | {"vehicle_id": r["vehicle_id"]}})
        changes += deletions(access, "t.kind = 'lead' AND (t.org_id = %(org)s OR %(org)s = ANY (t.recipients))", p)
    changes += consent_changes(access, p)
    changes.sort(key=lambda ch: ch["version"])
    has_more = len(changes) > limit
    changes = changes[:limit]
    # Full page: resume after its last change. Otherwise every visible change up to head was sent.
    to_version = changes[-1]["version"] if has_more else max(head, from_version)
    return {"from_version": from_version, "to_version": to_version, "has_more": has_more, "changes": changes}


def consent_changes(access: Access, p: dict[str, Any]) -> list[dict[str, Any]]:
    """The caller's organisation's consents granted, changed, revoked or erased in (v, head].

    What an organisation learns here is its own relationship with the owner (which scopes, which
    vehicles they cover, until when), nothing of the vehicles' data; deleted consents (erasure)
    carry only their id."""
    rows = access.conn.execute(
        "SELECT c.consent_id, c.owner_id, c.scopes, c.purpose, c.starts_at, c.expires_at, c.revoked_at,"
        " c.change_version, ARRAY(SELECT v.vehicle_id FROM vehicles v WHERE v.owner_id = c.owner_id"
        " ORDER BY v.vehicle_id) AS vehicle_ids"
        " FROM consents c WHERE c.org_id = %(org)s AND c.change_version > %(v)s AND c.change_version <= %(head)s"
        " ORDER BY c.change_version LIMIT %(lim)s", p).fetchall()
    changes = [{"version": r["change_version"], "kind": "consent", "op": "upsert", "id": r["consent_id"],
                "data": {k: iso(r[k]) for k in CONSENT_FIELDS} | {"vehicle_ids": r["vehicle_ids"]}} for r in rows]
    return changes + deletions(access, "t.kind = 'consent' AND t.org_id = %(org)s", p)


def deletions(access: Access, which: str, p: dict[str, Any]) -> list[dict[str, Any]]:
    """``op: delete`` changes from the tombstones (``t``) matching ``which`` in (v, head]."""
    rows = access.conn.execute(
        f"SELECT t.kind, t.id, t.change_version FROM feed_tombstones t WHERE ({which})"
        " AND t.change_version > %(v)s AND t.change_version <= %(head)s ORDER BY t.change_version LIMIT %(lim)s",
        p).fetchall()
    return [{"version": r["change_version"], "kind": r["kind"], "op": "delete", "id": r["id"], "data": None}
            for r in rows]
