"""Dealer API: consented customers' vehicle health, service and sales leads, CRM webhooks."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any, Literal

from fastapi import APIRouter, Path, Query, Response
from psycopg.types.json import Jsonb

from .. import leads as lead_logic
from .. import queries, webhooks
from ..access import Access, GuardedRoute, Scope
from ..models import (
    CustomerVehicle,
    FunnelRow,
    Lead,
    LeadChange,
    ServiceRecordIn,
    Site,
    SiteIn,
    Webhook,
    WebhookDelivery,
    WebhookIn,
)
from ..pagination import Page, decode_cursor, json_page_response, keyset_page, page_of, page_response
from ..problems import Problem, responses
from ..queries import iso
from .common import allow

router = APIRouter(prefix="/v1/dealer", tags=["dealer"], route_class=GuardedRoute)
ERR = responses(400, 401, 403, 422, 429)
ERR404 = responses(400, 401, 403, 404, 422, 429)
LIMIT = Query(50, ge=1, le=500, description="Items per page")
CURSOR = Query(None, max_length=200, description="next_cursor of the previous page")


def _with_owner(access: Access, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the owner's contact details where the owner granted ``service_contact`` (else null)."""
    if not items:
        return items
    rows = access.fetch("SELECT vis.vehicle_id, vis.owner_id, vis.purpose, o.display_name, o.email FROM visible vis"
                        " JOIN owners o ON o.owner_id = vis.owner_id WHERE vis.vehicle_id = ANY (%(ids)s)",
                        {"ids": [i["vehicle_id"] for i in items]}, scope=Scope.SERVICE_CONTACT)
    owners = {r["vehicle_id"]: {"owner_id": r["owner_id"], "display_name": r["display_name"], "email": r["email"]}
              for r in rows}
    return [{**i, "owner": owners.get(i["vehicle_id"])} for i in items]


@router.get("/vehicles", response_model=Page[CustomerVehicle], operation_id="dealer_vehicles", responses=ERR,
            summary="Customers' vehicles (consented to vehicle_health) with a health overview")
def dealer_vehicles(access: Access = allow("dealer.vehicles", Scope.VEHICLE_HEALTH), limit: int = LIMIT,
                    cursor: str | None = CURSOR) -> Response:
    key = decode_cursor(cursor, 1)
    # the owners' contact details (service_contact) come in the same statement as the health page
    items = queries.vehicles_health(access, after=int(key[0]) if key else None, limit=limit,
                                    contact=Scope.SERVICE_CONTACT)
    items, nxt = keyset_page(items, limit, lambda i: [i.vehicle_id])
    return json_page_response([i.json for i in items], nxt, CustomerVehicle)


@router.get("/vehicles/{vehicle_id}", response_model=CustomerVehicle, operation_id="dealer_vehicle",
            responses=ERR404, summary="One customer vehicle's health")
def dealer_vehicle(vehicle_id: int = Path(ge=1, le=2**62),
                   access: Access = allow("dealer.vehicles", Scope.VEHICLE_HEALTH)) -> dict[str, Any]:
    items = queries.vehicles_health(access, after=None, limit=1, vehicle_id=vehicle_id)
    if not items:
        access.require_vehicle(vehicle_id)
    return _with_owner(access, [items[0].as_dict()])[0]


@router.post("/vehicles/{vehicle_id}/service-records", status_code=201, operation_id="dealer_record_service",
             responses=ERR404, summary="Record a service (restarts the service-due clock)")
def dealer_record_service(body: ServiceRecordIn, vehicle_id: int = Path(ge=1, le=2**62),
                          access: Access = allow("dealer.service.write", Scope.VEHICLE_HEALTH)) -> dict[str, Any]:
    access.require_vehicle(vehicle_id)
    serviced_at = body.serviced_at if body.serviced_at.tzinfo else body.serviced_at.replace(tzinfo=dt.UTC)
    if serviced_at > dt.datetime.now(dt.UTC) + dt.timedelta(hours=1):
        raise Problem(422, "service-in-future", "serviced_at lies in the future.")
    if "\x00" in body.note:  # PostgreSQL text cannot hold NUL: a 500 otherwise
        raise Problem(422, "bad-note", "The note contains a NUL character.")
    row = access.conn.execute(
        "INSERT INTO service_records (vehicle_id, org_id, serviced_at, odometer_km, note) VALUES (%s, %s, %s, %s, %s)"
        " RETURNING service_id", (vehicle_id, access.caller.org_id, serviced_at, body.odometer_km, body.note)
    ).fetchone()
    return {"service_id": row["service_id"], "vehicle_id": vehicle_id, "serviced_at": serviced_at.isoformat()}


# --- leads -----------------------------------------------------------------------------------------

LEAD_SQL = ("SELECT vis.vehicle_id, vis.owner_id, vis.purpose, l.* FROM visible vis"
            " JOIN leads l ON l.vehicle_id = vis.vehicle_id AND l.org_id = %(org)s")


def _lead(r: dict[str, Any]) -> dict[str, Any]:
    return {k: iso(r[k]) for k in ("lead_id", "vehicle_id", "kind", "priority", "reason", "detail", "state",
                                   "lost_reason", "assigned_to", "created_at", "updated_at", "closed_at")}


def _lead_filters(state: str | None, kind: str | None, assigned_to: int | None, since: dt.datetime | None,
                  until: dt.datetime | None) -> tuple[list[str], dict[str, Any]]:
    where, params = [], {}
    for col, val in (("state", state), ("kind", kind), ("assigned_to", assigned_to)):
        if val is not None:
            where.append(f"l.{col} = %({col})s")
            params[col] = val
    queries.time_range(where, params, "l.created_at", since, until)
    return where, params


LeadState = Literal["new", "contacted", "appointment", "visited", "lost"]
LeadKind = Literal["new_dtc", "overheating", "weak_battery", "warmup_failure", "service_due", "trade_in"]


@router.get("/leads", response_model=Page[Lead], operation_id="dealer_leads", responses=ERR,
            summary="Service and sales leads (customers who consented to be contacted), newest first")
def dealer_leads(access: Access = allow("dealer.leads.read", Scope.SERVICE_CONTACT), state: LeadState | None = None,
                 kind: LeadKind | None = None, assigned_to: int | None = Query(None, ge=1, le=2**62),
                 since: dt.datetime | None = None, until: dt.datetime | None = None,
                 limit: int = LIMIT, cursor: str | None = CURSOR) -> Response:
    where, params = _lead_filters(state, kind, assigned_to, since, until)
    key = decode_cursor(cursor, 1)
    if key:
        where.append("l.lead_id < %(after)s")
        params["after"] = int(key[0])
    sql = LEAD_SQL + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY l.lead_id DESC LIMIT %(lim)s"
    rows = access.fetch(sql, {**params, "org": access.caller.org_id, "lim": limit + 1})
    rows, nxt = page_of(rows, limit, lambda r: [r["lead_id"]])
    return page_response([_lead(r) for r in rows], nxt, Lead)


def _csv_cell(value: Any) -> Any:
    """A cell a spreadsheet will not run: text starting with = + - @ (or tab/CR) gets a leading quote
    (OWASP CSV injection), since names and reasons come from outside."""
    if value is None:
        return ""
    value = iso(value)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@router.get("/leads.csv", operation_id="dealer_leads_csv", responses=ERR,
            response_class=Response, summary="All matching leads as CSV for call-centre campaigns",
            openapi_extra={"responses": {"200": {"content": {"text/csv": {"schema": {"type": "string"}}}}}})
def dealer_leads_csv(access: Access = allow("dealer.leads.read", Scope.SERVICE_CONTACT),
                     state: LeadState | None = None, kind: LeadKind | None = None,
                     since: dt.datetime | None = None, until: dt.datetime | None = None) -> Response:
    where, params = _lead_filters(state, kind, None, since, until)
    sql = ("SELECT vis.vehicle_id, vis.owner_id, vis.purpose, l.*, o.display_name, o.email, v.vin, v.make, v.model"
           " FROM visible vis JOIN leads l ON l.vehicle_id = vis.vehicle_id AND l.org_id = %(org)s"
           " JOIN vehicles v ON v.vehicle_id = vis.vehicle_id JOIN owners o ON o.owner_id = vis.owner_id"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY l.priority, l.created_at")
    rows = access.fetch(sql, {**params, "org": access.caller.org_id})
    out = io.StringIO()
    w = csv.writer(out)
    cols = ("lead_id", "priority", "kind", "state", "reason", "created_at", "display_name", "email", "vin", "make",
            "model", "assigned_to")
    w.writerow(cols)
    for r in rows:
        w.writerow([_csv_cell(r[c]) for c in cols])
    return Response(out.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="leads.csv"'})


@router.get("/leads/funnel", response_model=list[FunnelRow], operation_id="dealer_funnel", responses=ERR,
            summary="Lead funnel per month and lead type: how many reached each stage, conversion to visit")
def dealer_funnel(access: Access = allow("dealer.leads.read", Scope.SERVICE_CONTACT),
                  since: dt.datetime | None = None, until: dt.datetime | None = None) -> list[dict[str, Any]]:
    where, params = _lead_filters(None, None, None, since, until)
    sql = ("SELECT vis.vehicle_id, vis.owner_id, vis.purpose, l.lead_id, l.kind, l.state,"
           " to_char(date_trunc('month', l.created_at, 'UTC'), 'YYYY-MM') AS month,"
           " coalesce(array_agg(ev.to_state) FILTER (WHERE ev.to_state IS NOT NULL), '{}') AS reached"
           " FROM visible vis JOIN leads l ON l.vehicle_id = vis.vehicle_id AND l.org_id = %(org)s"
           " LEFT JOIN lead_events ev ON ev.lead_id = l.lead_id"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " GROUP BY vis.vehicle_id, vis.owner_id, vis.purpose, l.lead_id")
    rows = access.fetch(sql, {**params, "org": access.caller.org_id}, audit=False)
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        t = table.setdefault((r["month"], r["kind"]), {"month": r["month"], "kind": r["kind"], "created": 0,
                                                        "contacted": 0, "appointment": 0, "visited": 0, "lost": 0})
        t["created"] += 1
        reached = set(r["reached"]) | {r["state"]}
        for stage in ("contacted", "appointment", "visited", "lost"):
            if stage in reached:
                t[stage] += 1
        if "visited" in reached:  # a visit implies the earlier stages happened, even if skipped in the log
            t["contacted"] += "contacted" not in reached
            t["appointment"] += "appointment" not in reached
    return [{**t, "conversion_to_visit": round(t["visited"] / t["created"], 4) if t["created"] else None}
            for _, t in sorted(table.items())]


def _one_lead(access: Access, lead_id: int) -> dict[str, Any]:
    rows = access.fetch(LEAD_SQL + " WHERE l.lead_id = %(lid)s", {"org": access.caller.org_id, "lid": lead_id})
    if not rows:
        raise Problem(404, "lead-not-found", f"No lead {lead_id} is visible to you.")
    return rows[0]


@router.get("/leads/{lead_id}", response_model=Lead, operation_id="dealer_lead", responses=ERR404)
def dealer_lead(lead_id: int = Path(ge=1, le=2**62),
                access: Access = allow("dealer.leads.read", Scope.SERVICE_CONTACT)) -> dict[str, Any]:
    return _lead(_one_lead(access, lead_id))


@router.patch("/leads/{lead_id}", response_model=Lead, operation_id="dealer_update_lead",
              responses=responses(400, 401, 403, 404, 409, 422, 429),
              summary="Move a lead along the pipeline, record why it was lost, or assign it")
def dealer_update_lead(change: LeadChange, lead_id: int = Path(ge=1, le=2**62),
                       access: Access = allow("dealer.leads.write", Scope.SERVICE_CONTACT)) -> dict[str, Any]:
    lead = _one_lead(access, lead_id)
    row = lead_logic.move(access, lead, state=change.state, lost_reason=change.lost_reason,
                          assigned_to=change.assigned_to, assign="assigned_to" in change.model_fields_set,
                          note=change.note)
    return _lead({**lead, **row})


@router.post("/leads/refresh", operation_id="dealer_refresh_leads", responses=ERR,
             summary="Generate leads from the latest analytics now (also runs in the background)")
def dealer_refresh_leads(access: Access = allow("dealer.leads.write", Scope.SERVICE_CONTACT)) -> dict[str, int]:
    return {"created": lead_logic.generate_leads(access.conn, access.caller.org_id or 0)}


# --- webhooks --------------------------------------------------------------------------------------

def _hook(r: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
    return {"webhook_id": r["webhook_id"], "url": r["url"], "events": list(r["events"]), "active": r["active"],
            "created_at": iso(r["created_at"]), "secret": secret}


@router.get("/webhooks", response_model=list[Webhook], operation_id="dealer_webhooks", responses=ERR)
def dealer_webhooks(access: Access = allow("dealer.admin")) -> list[dict[str, Any]]:
    rows = access.conn.execute("SELECT * FROM webhooks WHERE org_id = %s ORDER BY webhook_id",
                               (access.caller.org_id,)).fetchall()
    return [_hook(r) for r in rows]


@router.post("/webhooks", response_model=Webhook, status_code=201, operation_id="dealer_create_webhook",
             responses=ERR, summary="Subscribe a CRM URL; the response carries the signing secret, once")
def dealer_create_webhook(body: WebhookIn, access: Access = allow("dealer.admin")) -> dict[str, Any]:
    if "\x00" in body.url:  # PostgreSQL text cannot hold NUL: a 500 otherwise (found by schemathesis)
        raise Problem(422, "bad-url", "The URL contains a NUL character.")
    secret = webhooks.new_secret()
    row = access.conn.execute("INSERT INTO webhooks (org_id, url, secret, events) VALUES (%s, %s, %s, %s) RETURNING *",
                              (access.caller.org_id, body.url, secret, list(body.events))).fetchone()
    return _hook(row, secret)


@router.delete("/webhooks/{webhook_id}", status_code=204, operation_id="dealer_delete_webhook", responses=ERR404)
def dealer_delete_webhook(webhook_id: int = Path(ge=1, le=2**62), access: Access = allow("dealer.admin")) -> Response:
    cur = access.conn.execute("UPDATE webhooks SET active = false WHERE webhook_id = %s AND org_id = %s",
                              (webhook_id, access.caller.org_id))
    if cur.rowcount == 0:
        raise Problem(404, "webhook-not-found", f"No webhook {webhook_id} in your organisation.")
    return Response(status_code=204)


@router.get("/webhooks/{webhook_id}/deliveries", response_model=list[WebhookDelivery],
            operation_id="dealer_webhook_deliveries", responses=ERR404, summary="The delivery log, newest first")
def dealer_webhook_deliveries(webhook_id: int = Path(ge=1, le=2**62), limit: int = LIMIT,
                              access: Access = allow("dealer.admin")) -> list[dict[str, Any]]:
    if access.conn.execute("SELECT 1 FROM webhooks WHERE webhook_id = %s AND org_id = %s",
                           (webhook_id, access.caller.org_id)).fetchone() is None:
        raise Problem(404, "webhook-not-found", f"No webhook {webhook_id} in your organisation.")
    rows = access.conn.execute("SELECT * FROM webhook_deliveries WHERE webhook_id = %s ORDER BY delivery_id DESC"
                               " LIMIT %s", (webhook_id, limit)).fetchall()
    keys = ("delivery_id", "event", "state", "attempts", "last_status", "last_error", "created_at", "delivered_at",
            "next_attempt_at")
    return [{k: iso(r[k]) for k in keys} for r in rows]




# --- sites (geofences): analytics detects visits, the leads job closes leads that turned up -------

MAX_SITE_AREA_M2 = 2_000_000.0  # a dealer site, not a town: larger polygons would "detect" every drive


def _site_area_m2(geometry: dict[str, Any]) -> float:
    import shapely.geometry
    from pyproj import Geod

    try:
        shape = shapely.geometry.shape(geometry)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise Problem(422, "bad-geometry", f"geometry is not GeoJSON: {exc}") from exc
    if shape.geom_type not in ("Polygon", "MultiPolygon"):
        raise Problem(422, "bad-geometry", f"a site is a Polygon or MultiPolygon, not {shape.geom_type}.")
    if shape.is_empty or not shape.is_valid:
        raise Problem(422, "bad-geometry", "the polygon is empty or self-intersecting.")
    minx, miny, maxx, maxy = shape.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise Problem(422, "bad-geometry", "coordinates must be longitude, latitude in WGS84.")
    area = abs(Geod(ellps="WGS84").geometry_area_perimeter(shape)[0])
    if not 10.0 <= area <= MAX_SITE_AREA_M2:
        raise Problem(422, "bad-geometry", f"the site covers {area:,.0f} m²; allowed 10 to {MAX_SITE_AREA_M2:,.0f} m².")
    return area


@router.get("/sites", response_model=list[Site], operation_id="dealer_sites", responses=ERR)
def dealer_sites(access: Access = allow("dealer.vehicles")) -> list[dict[str, Any]]:
    rows = access.conn.execute("SELECT geofence_id, name, geometry FROM geofences WHERE kind = 'dealer'"
                               " AND owner_org = %s ORDER BY geofence_id", (str(access.caller.org_id),)).fetchall()
    return [{"site_id": r["geofence_id"], "name": r["name"], "geometry": r["geometry"],
             "area_m2": round(_site_area_m2(r["geometry"]), 1)} for r in rows]


@router.post("/sites", response_model=Site, status_code=201, operation_id="dealer_create_site", responses=ERR,
             summary="Define a site; visits of consenting customers close their open leads as visited")
def dealer_create_site(body: SiteIn, access: Access = allow("dealer.admin")) -> dict[str, Any]:
    area = _site_area_m2(body.geometry)
    row = access.conn.execute("INSERT INTO geofences (kind, name, owner_org, geometry) VALUES ('dealer', %s, %s, %s)"
                              " RETURNING geofence_id", (body.name, str(access.caller.org_id),
                                                         Jsonb(body.geometry))).fetchone()
    return {"site_id": row["geofence_id"], "name": body.name, "geometry": body.geometry, "area_m2": round(area, 1)}


@router.delete("/sites/{site_id}", status_code=204, operation_id="dealer_delete_site", responses=ERR404)
def dealer_delete_site(site_id: int = Path(ge=1, le=2**62), access: Access = allow("dealer.admin")) -> Response:
    cur = access.conn.execute("DELETE FROM geofences WHERE geofence_id = %s AND kind = 'dealer' AND owner_org = %s",
                              (site_id, str(access.caller.org_id)))
    if cur.rowcount == 0:
        raise Problem(404, "site-not-found", f"No site {site_id} of yours.")
    return Response(status_code=204)
