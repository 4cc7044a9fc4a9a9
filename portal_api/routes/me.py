"""Mobile-app backend: the owner's own vehicles, trips, score, health, consents, access log,
export and erasure. Everything here is scoped to the signed-in driver's owner id."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Path, Query, Response

from .. import queries
from ..access import Access, GuardedRoute, Scope
from ..erasure import erase_owner, export_owner
from ..geojson import collection, feature
from ..models import AccessRecord, Consent, ConsentIn, Erasure, ErasureIn, ScoreExplanation, Trip, VehicleHealth
from ..pagination import Page, decode_cursor, json_page_response, keyset_page, page_of, page_response
from ..problems import Problem, responses
from .common import allow

router = APIRouter(prefix="/v1/me", tags=["driver"], route_class=GuardedRoute)
ERR = responses(400, 401, 403, 422, 429)
ERR404 = responses(400, 401, 403, 404, 422, 429)
LIMIT = Query(50, ge=1, le=500, description="Items per page")
CURSOR = Query(None, max_length=200, description="next_cursor of the previous page")

# Why each tip: the component with the lowest sub-score is what would raise the score most.
TIPS = {
    "braking": "Brake earlier and more gently: leave a bigger gap to the car ahead.",
    "acceleration": "Accelerate smoothly; full throttle from lights costs fuel and points.",
    "cornering": "Slow down before bends rather than in them.",
    "speeding": "Keep to the limit: speeding weighs most in your score.",
    "night": "Fewer trips between midnight and 5 am lower your risk.",
    "mileage": "Your yearly distance is high; combining trips helps.",
}


@router.get("/vehicles", response_model=list[VehicleHealth], operation_id="me_vehicles", responses=ERR,
            summary="My vehicles with their health")
def me_vehicles(access: Access = allow("me", Scope.VEHICLE_HEALTH)) -> list[dict[str, Any]]:
    return [i.as_dict() for i in queries.vehicles_health(access, after=None, limit=1000)]


@router.get("/vehicles/{vehicle_id}/health", response_model=VehicleHealth, operation_id="me_vehicle_health",
            responses=ERR404, summary="One of my vehicles' health: trouble codes, battery, service due")
def me_vehicle_health(vehicle_id: int = Path(ge=1, le=2**62),
                      access: Access = allow("me", Scope.VEHICLE_HEALTH)) -> dict[str, Any]:
    items = queries.vehicles_health(access, after=None, limit=1, vehicle_id=vehicle_id)
    if not items:
        access.require_vehicle(vehicle_id)
    return items[0].as_dict()


@router.get("/vehicles/{vehicle_id}/trips", response_model=Page[Trip], operation_id="me_trips", responses=ERR404,
            summary="My trips, newest first, with start and end points")
def me_trips(vehicle_id: int = Path(ge=1, le=2**62),
                  since: dt.datetime | None = None, until: dt.datetime | None = None,
             limit: int = LIMIT, cursor: str | None = CURSOR,
             access: Access = allow("me", Scope.TRIP_SUMMARY)) -> Response:
    items = queries.trip_items(access, vehicle_id=vehicle_id, since=since, until=until,
                               cursor=decode_cursor(cursor, 2), limit=limit, with_places=True, with_score=True)
    if not items:  # none, or not my vehicle (404): only then the extra question
        access.require_vehicle(vehicle_id)
    items, nxt = keyset_page(items, limit, lambda t: t.key)
    return json_page_response([t.json for t in items], nxt, Trip)


@router.get("/trips/{trip_id}", operation_id="me_trip", responses=ERR404,
            summary="One trip as a GeoJSON Feature (the track) with its events as a FeatureCollection",
            response_model=dict[str, Any])
def me_trip(trip_id: int = Path(ge=1, le=2**62),
            access: Access = allow("me", Scope.LOCATION_HISTORY)) -> dict[str, Any]:
    rows = queries.trips(access, vehicle_id=None, since=None, until=None, cursor=None, limit=1, with_places=True,
                         trip_id=trip_id, with_track=True)
    if not rows:
        raise Problem(404, "trip-not-found", f"No trip {trip_id} of yours.")
    trip = rows[0]
    track = trip.pop("track", None)
    evs = queries.events(access, vehicle_id=None, trip_id=trip_id, since=None, until=None, kinds=None, cursor=None,
                         limit=1000, with_places=True)
    score = queries.trip_scores(access, [trip_id]).get(trip_id)
    trip["score"] = score["score"] if score else None
    trip["score_explanation"] = score["explanation"] if score else None
    trip["eco_score"] = score["eco_score"] if score else None
    events = collection([feature(e.pop("location"), e, e["event_id"]) for e in evs])
    return {**feature(track, trip, trip_id), "events": events}


@router.get("/vehicles/{vehicle_id}/score", response_model=ScoreExplanation, operation_id="me_score",
            responses=ERR404, summary="My score over 30 days, how it is made, and what would raise it")
def me_score(vehicle_id: int = Path(ge=1, le=2**62),
             access: Access = allow("me", Scope.DRIVING_SCORE)) -> dict[str, Any]:
    access.require_vehicle(vehicle_id)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    months = queries.score_periods(access, vehicle_id, "day", since, None)
    total_w = sum(max(p["distance_km"], 0.001) for p in months if p["score"] is not None)
    score = (sum(p["score"] * max(p["distance_km"], 0.001) for p in months if p["score"] is not None) / total_w
             if total_w else None)
    comps: dict[str, tuple[float, float]] = {}
    for p in months:
        if p["score"] is None:
            continue
        for name, sub in p["components"].items():
            w, s = comps.get(name, (0.0, 0.0))
            comps[name] = (w + max(p["distance_km"], 0.001), s + sub * max(p["distance_km"], 0.001))
    components = {n: round(s / w, 1) for n, (w, s) in comps.items()}
    latest = access.fetch(
        "SELECT vis.vehicle_id, s.period_start, s.score, s.explanation FROM visible vis"
        " JOIN devices d ON d.vehicle_id = vis.vehicle_id JOIN scores s ON s.device_key = d.device_key"
        " AND s.scope = 'day' WHERE vis.vehicle_id = %(vid)s ORDER BY s.period_start DESC LIMIT 1",
        {"vid": vehicle_id}, scope=Scope.DRIVING_SCORE)
    weakest = sorted((v, n) for n, v in components.items() if v < 90)
    tips = [TIPS[n] for _, n in weakest if n in TIPS][:3] or ["Keep it up: no component is below 90."]
    return {"vehicle_id": vehicle_id, "score_30d": round(score, 1) if score is not None else None,
            "distance_km_30d": round(sum(p["distance_km"] for p in months), 3),
            "latest_day": ({"period_start": latest[0]["period_start"].isoformat(), "score": latest[0]["score"],
                            "explanation": latest[0]["explanation"]} if latest else None),
            "components_30d": components, "tips": tips}


# --- consents ----------------------------------------------------------------------------------------

def _consent(r: dict[str, Any]) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    active = (r["revoked_at"] is None and r["starts_at"] <= now and (r["expires_at"] is None or r["expires_at"] > now))
    iso = (lambda v: v.isoformat() if v is not None else None)  # noqa: E731
    return {"consent_id": r["consent_id"], "org_id": r["org_id"], "organisation": r["name"],
            "organisation_kind": r["kind"], "scopes": list(r["scopes"]), "purpose": r["purpose"],
            "starts_at": r["starts_at"].isoformat(), "expires_at": iso(r["expires_at"]),
            "revoked_at": iso(r["revoked_at"]), "active": active}


CONSENT_SQL = ("SELECT c.*, o.name, o.kind FROM consents c JOIN organisations o ON o.org_id = c.org_id"
               " WHERE c.owner_id = %s")


@router.get("/consents", response_model=list[Consent], operation_id="me_consents", responses=ERR,
            summary="Everything I granted, active or not")
def me_consents(access: Access = allow("me")) -> list[dict[str, Any]]:
    rows = access.conn.execute(CONSENT_SQL + " ORDER BY c.consent_id", (access.caller.owner_id,)).fetchall()
    return [_consent(r) for r in rows]


@router.post("/consents", response_model=Consent, status_code=201, operation_id="me_grant_consent",
             responses=ERR404, summary="Grant an organisation some scopes of my data for a purpose")
def me_grant_consent(body: ConsentIn, access: Access = allow("me")) -> dict[str, Any]:
    org = access.conn.execute("SELECT org_id, kind FROM organisations WHERE org_id = %s", (body.org_id,)).fetchone()
    if org is None:
        raise Problem(404, "organisation-not-found", f"No organisation {body.org_id}.")
    now = dt.datetime.now(dt.UTC)
    starts = body.starts_at or now
    starts = starts if starts.tzinfo else starts.replace(tzinfo=dt.UTC)
    expires = body.expires_at if body.expires_at is None or body.expires_at.tzinfo else \
        body.expires_at.replace(tzinfo=dt.UTC)
    if expires is not None and expires <= max(starts, now):
        raise Problem(422, "consent-expired", "expires_at must lie in the future and after starts_at.")
    if starts.year > 9000 or (expires is not None and expires.year > 9000):
        raise Problem(422, "date-out-of-range", "Dates must be before the year 9000.")
    row = access.conn.execute(
        "INSERT INTO consents (owner_id, org_id, scopes, purpose, starts_at, expires_at) VALUES (%s, %s, %s, %s, %s,"
        " %s) RETURNING consent_id", (access.caller.owner_id, body.org_id, sorted({str(s) for s in body.scopes}),
                                      body.purpose, starts, expires)).fetchone()
    full = access.conn.execute(CONSENT_SQL + " AND c.consent_id = %s", (access.caller.owner_id,
                                                                       row["consent_id"])).fetchone()
    return _consent(full)


@router.delete("/consents/{consent_id}", response_model=Consent, operation_id="me_revoke_consent",
               responses=ERR404, summary="Revoke a consent; effective for the organisation's next request")
def me_revoke_consent(consent_id: int = Path(ge=1, le=2**62), access: Access = allow("me")) -> dict[str, Any]:
    cur = access.conn.execute("UPDATE consents SET revoked_at = coalesce(revoked_at, now()) WHERE consent_id = %s"
                              " AND owner_id = %s", (consent_id, access.caller.owner_id))
    if cur.rowcount == 0:
        raise Problem(404, "consent-not-found", f"No consent {consent_id} of yours.")
    row = access.conn.execute(CONSENT_SQL + " AND c.consent_id = %s", (access.caller.owner_id, consent_id)).fetchone()
    return _consent(row)


# Newest first through audit_log_owner_recent_idx (owner_id, audit_id), migration 0012.
ACCESS_LOG_SQL = ("SELECT a.*, o.name FROM audit_log a LEFT JOIN organisations o ON o.org_id = a.org_id"
                  " WHERE {where} ORDER BY a.audit_id DESC LIMIT %(lim)s")


@router.get("/access-log", response_model=Page[AccessRecord], operation_id="me_access_log", responses=ERR,
            summary="Who read my data, when, which scope and for what purpose (newest first)")
def me_access_log(limit: int = LIMIT, cursor: str | None = CURSOR, since: dt.datetime | None = None,
                  access: Access = allow("me")) -> Response:
    key = decode_cursor(cursor, 1)
    params: dict[str, Any] = {"oid": access.caller.owner_id, "lim": limit + 1}
    where = ["a.owner_id = %(oid)s"]
    if key:
        where.append("a.audit_id < %(after)s")
        params["after"] = int(key[0])
    if since:
        where.append("a.at >= %(since)s")
        params["since"] = since
    rows = access.conn.execute(ACCESS_LOG_SQL.format(where=" AND ".join(where)), params).fetchall()
    rows, nxt = page_of(rows, limit, lambda r: [r["audit_id"]])
    return page_response([{"at": r["at"].isoformat(), "who": r["actor_label"], "organisation": r["name"],
                           "vehicle_id": r["vehicle_id"], "scope": r["scope"], "purpose": r["purpose"],
                           "action": r["action"], "records": r["records"]} for r in rows], nxt, AccessRecord)


@router.get("/export", operation_id="me_export", responses=ERR, response_class=Response,
            summary="Everything stored about me as a zip (JSON, CSV samples, GeoJSON trips)",
            openapi_extra={"responses": {"200": {"content": {"application/zip": {"schema": {"type": "string",
                                                                                             "format": "binary"}}}}}})
def me_export(access: Access = allow("me")) -> Response:
    data = export_owner(access.conn, access.caller.owner_id or 0)
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": 'attachment; filename="vinsight-export.zip"'})


@router.post("/erasure", response_model=Erasure, operation_id="me_erase", responses=ERR,
             summary="Erase everything about me and my vehicles (cannot be undone); signs me out")
def me_erase(body: ErasureIn, access: Access = allow("me")) -> dict[str, Any]:
    counts = erase_owner(access.conn, access.caller.owner_id or 0, "owner")
    return {"erased": True, "rows_deleted": counts}
