"""Reads shared by the audiences, each through :meth:`Access.fetch` (the visible relation).

What differs per audience is the scope a query runs under and which columns it may return: trip
coordinates only with ``location_history``, owner contact details only with ``service_contact``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson

from analytics.dtc_descriptions import describe_dtc_or_none
from analytics.health import HealthParams, service_due

from .access import Access, Scope
from .geojson import point

# A page of vehicles' health: the aggregates (distance recorded, the last service and the distance
# since) come precomputed from vehicle_summaries (migration 0009); what changes between analytics
# runs is read live: last seen and online, the newest health assessment, open trouble codes
# (through the partial index of open episodes).
HEALTH_SQL = """
SELECT v.vehicle_id, v.vin, v.make, v.model, v.model_year, vis.owner_id, vis.purpose,
       dev.device_keys, dev.last_seen, dev.online,
       coalesce(sm.distance_recorded_km, 0) AS distance_recorded_km, sm.first_day,
       sm.serviced_at, sm.service_odometer_km,
       coalesce(sm.distance_since_service_km, 0) AS distance_since_service_km, sm.computed_at AS summary_computed_at,
       h.battery, h.coolant, h.leads AS health_leads, h.computed_at AS health_computed_at,
       coalesce(dtc.open_dtcs, '[]'::jsonb) AS open_dtcs,
       json_build_object('vehicle_id', v.vehicle_id, 'vin', v.vin, 'make', v.make, 'model', v.model,
                         'model_year', v.model_year, 'last_seen', dev.last_seen, 'online', coalesce(dev.online, false),
                         'distance_recorded_km', round(coalesce(sm.distance_recorded_km, 0)::numeric, 1),
                         'battery', nullif(h.battery, 'null'::jsonb), 'coolant', nullif(h.coolant, 'null'::jsonb),
                         'health_leads', coalesce(h.leads, '[]'::jsonb), 'health_computed_at', h.computed_at,
                         'summary_computed_at', sm.computed_at)::text AS item
FROM visible vis
JOIN vehicles v ON v.vehicle_id = vis.vehicle_id
LEFT JOIN vehicle_summaries sm ON sm.vehicle_id = v.vehicle_id
LEFT JOIN LATERAL (
    SELECT array_agg(d.device_key) AS device_keys, max(ds.last_seen) AS last_seen,
           bool_or(ds.state = 'online') AS online
    FROM devices d LEFT JOIN device_status ds ON ds.device_key = d.device_key
    WHERE d.vehicle_id = v.vehicle_id) dev ON true
LEFT JOIN LATERAL (
    SELECT hh.* FROM vehicle_health hh WHERE hh.device_key = ANY (dev.device_keys)
    ORDER BY hh.computed_at DESC LIMIT 1) h ON true
LEFT JOIN LATERAL (
    SELECT jsonb_agg(jsonb_build_object('code', e.code, 'dtc_type', e.dtc_type, 'first_seen', e.first_seen,
                                        'last_seen', e.last_seen, 'mil_on', e.mil_on)
                     ORDER BY e.first_seen) AS open_dtcs
    FROM dtc_episodes e WHERE e.device_key = ANY (dev.device_keys) AND e.cleared_at IS NULL) dtc ON true
"""

# The owner's contact details beside a page of HEALTH_SQL rows, where the owner granted the contact
# scope (a second visible relation in the same statement).
_CONTACT_SQL = """
SELECT hv.*, con.owner_id AS contact_owner_id, con.purpose AS contact_purpose, o.display_name AS contact_name,
       o.email AS contact_email
FROM ({health}) hv
LEFT JOIN ({visible}) con ON con.vehicle_id = hv.vehicle_id
LEFT JOIN owners o ON o.owner_id = con.owner_id
ORDER BY hv.vehicle_id
"""


_DATES = (dt.datetime, dt.date)  # a tuple: isinstance is quicker with it than with a union, per value


def iso(value: Any) -> Any:
    """Dates and times as ISO 8601 text for JSON; anything else unchanged."""
    return value.isoformat() if isinstance(value, _DATES) else value


def time_range(where: list[str], params: dict[str, Any], column: str, since: dt.datetime | None,
               until: dt.datetime | None) -> None:
    """The API's since/until filter (half-open: since <= column < until) on ``column``."""
    if since is not None:
        where.append(f"{column} >= %(since)s")
        params["since"] = since
    if until is not None:
        where.append(f"{column} < %(until)s")
        params["until"] = until


DEFAULT_HEALTH = HealthParams()


def _open_dtcs(row: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for e in row["open_dtcs"] or []:
        d = describe_dtc_or_none(e["code"])
        out.append({**e, "description": d.description if d else "unknown code",
                    "category": str(d.category) if d else None, "severity": str(d.severity) if d else None})
    return out


def _service(row: dict[str, Any], now: dt.datetime, params: HealthParams) -> dict[str, Any] | None:
    baseline = row["serviced_at"]
    assumed = False
    if baseline is None and row["first_day"] is not None:
        baseline, assumed = row["first_day"], True
    if baseline is None:
        return None
    driven = row["distance_since_service_km"] if row["serviced_at"] is not None else row["distance_recorded_km"]
    st = service_due(now, baseline, distance_since_service_km=float(driven or 0.0), params=params)
    return {"due": st.due, "due_soon": st.due_soon, "km_left": st.km_left, "days_left": st.days_left,
            "reason": st.reason, "last_service_at": iso(row["serviced_at"]), "baseline_assumed": assumed}


_NO_OWNER = object()


def health_item_json(row: dict[str, Any], now: dt.datetime, params: HealthParams = DEFAULT_HEALTH,
                     owner: Any = _NO_OWNER) -> bytes:
    """One vehicle's health as a dealer (or the owner) reads it, as JSON.

    PostgreSQL builds the plain fields (HEALTH_SQL's ``item``); what needs this project's own
    logic is added here: trouble-code descriptions, the service-due verdict, and (``owner``) the
    owner's contact details. Splicing them into the text costs a fraction of building the whole
    item in Python, which was most of a dealer page's CPU."""
    dtcs = _open_dtcs(row)
    item: str = row["item"]
    return b"".join((item[:-1].encode(), b',"open_dtcs":', orjson.dumps(dtcs),
                     b',"mil_on":', b"true" if any(e.get("mil_on") for e in dtcs) else b"false",
                     b',"service":', orjson.dumps(_service(row, now, params)),
                     b"" if owner is _NO_OWNER else b',"owner":' + orjson.dumps(owner), b"}"))


def health_overview(row: dict[str, Any], now: dt.datetime, params: HealthParams = DEFAULT_HEALTH) -> dict[str, Any]:
    """One vehicle's health as a dict (:func:`health_item_json`, parsed)."""
    out: dict[str, Any] = orjson.loads(health_item_json(row, now, params))
    return out


@dataclass(frozen=True, slots=True)
class HealthItem:
    vehicle_id: int
    json: bytes  # a VehicleHealth (CustomerVehicle with ``contact``) as JSON

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = orjson.loads(self.json)
        return out


def vehicles_health(access: Access, *, after: int | None, limit: int, vehicle_id: int | None = None,
                    scope: Scope = Scope.VEHICLE_HEALTH, contact: Scope | None = None) -> list[HealthItem]:
    """Health of the visible vehicles in id order (``limit`` + 1 rows fetched, the first ``limit`` audited).

    With ``contact``, each item also has ``owner``: the owner's id, name and e-mail where the owner
    granted ``contact`` to the caller, else None; read in the same statement and audited under
    ``contact`` for the first ``limit`` items (the page)."""
    where, params = [], {"limit": limit + 1}
    if after is not None:
        where.append("v.vehicle_id > %(after)s")
        params["after"] = after
    if vehicle_id is not None:
        where.append("v.vehicle_id = %(vid)s")
        params["vid"] = vehicle_id
    sql = HEALTH_SQL + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY v.vehicle_id LIMIT %(limit)s"
    if contact is not None:
        vis_c, params_c = access.visible_sql(contact, tag="_c")
        sql = _CONTACT_SQL.format(health=sql, visible=vis_c)
        params.update(params_c)
    rows = access.fetch(sql, params, scope=scope, audit=False)
    access.audit_rows(rows[:limit], scope)  # the page; the look-ahead row is not shown
    now = dt.datetime.now(dt.UTC)
    if contact is None:
        return [HealthItem(r["vehicle_id"], health_item_json(r, now)) for r in rows]
    access.audit_rows([{"vehicle_id": r["vehicle_id"], "owner_id": r["contact_owner_id"],
                        "purpose": r["contact_purpose"]} for r in rows[:limit]
                       if r["contact_owner_id"] is not None], contact)
    return [HealthItem(r["vehicle_id"], health_item_json(r, now, owner=None if r["contact_owner_id"] is None else {
        "owner_id": r["contact_owner_id"], "display_name": r["contact_name"], "email": r["contact_email"]}))
        for r in rows]


TRIP_COLUMNS = ("trip_id", "vehicle_id", "kind", "start_ts", "end_ts", "is_open", "distance_m", "distance_source",
                "duration_s", "driving_s", "idle_s", "max_speed_kmh", "avg_speed_kmh", "fuel_l", "night_share",
                "urban_share", "rural_share", "motorway_share")


def _geojson_point(lat: str, lon: str) -> str:
    return (f"CASE WHEN {lat} IS NULL OR {lon} IS NULL THEN NULL ELSE json_build_object('type', 'Point',"
            f" 'coordinates', json_build_array({lon}, {lat})) END")


@dataclass(frozen=True, slots=True)
class TripItem:
    json: str  # a Trip as JSON, built by PostgreSQL
    start_ts: dt.datetime
    trip_id: int

    @property
    def key(self) -> list[Any]:
        """The page cursor's key."""
        return [self.start_ts.isoformat(), self.trip_id]


def trip_items(access: Access, *, vehicle_id: int | None, since: dt.datetime | None, until: dt.datetime | None,
               cursor: list[Any] | None, limit: int, with_places: bool, scope: Scope = Scope.TRIP_SUMMARY,
               trip_id: int | None = None, with_track: bool = False, with_score: bool = False) -> list[TripItem]:
    """Trips newest first (keyset on start_ts, trip_id), each as JSON text; coordinates only when
    ``with_places``, the track only when ``with_track``, the trip's score when ``with_score``.

    Each visible device contributes its newest ``limit`` + 1 matching trips (an ordered index scan,
    not a sort of its whole history); the first ``limit`` are audited. PostgreSQL writes the JSON:
    a page of trips costs the API one text value per trip instead of a row of Python objects."""
    where = ["t.kind = 'movement'"]
    outer: list[str] = []
    params: dict[str, Any] = {"limit": limit + 1}
    if vehicle_id is not None:
        outer.append("vis.vehicle_id = %(vid)s")
        params["vid"] = vehicle_id
    if trip_id is not None:
        where.append("t.trip_id = %(tid)s")
        params["tid"] = trip_id
    time_range(where, params, "t.start_ts", since, until)
    if cursor is not None:
        where.append("(t.start_ts, t.trip_id) < (%(c_ts)s::timestamptz, %(c_id)s)")
        params["c_ts"], params["c_id"] = cursor
    fields = [f"'{c}', {'vis' if c == 'vehicle_id' else 't'}.{c}" for c in TRIP_COLUMNS]
    fields.append("'score', " + ("s.score" if with_score else "NULL"))
    if with_places:
        fields += [f"'start', {_geojson_point('t.start_lat', 't.start_lon')}",
                   f"'end', {_geojson_point('t.end_lat', 't.end_lon')}"]
        if with_track:
            fields.append("'track', t.track")
    else:
        fields.append("'start', NULL, 'end', NULL")
    sql = (f"SELECT vis.vehicle_id, vis.owner_id, vis.purpose, t.start_ts, t.trip_id,"
           f" json_build_object({', '.join(fields)})::text AS item"
           f" FROM visible vis JOIN devices d ON d.vehicle_id = vis.vehicle_id"
           f" CROSS JOIN LATERAL (SELECT * FROM trips t WHERE t.device_key = d.device_key"
           f" AND {' AND '.join(where)} ORDER BY t.start_ts DESC, t.trip_id DESC LIMIT %(limit)s) t"
           + (" LEFT JOIN scores s ON s.trip_id = t.trip_id AND s.scope = 'trip'" if with_score else "")
           + (f" WHERE {' AND '.join(outer)}" if outer else "")
           + " ORDER BY t.start_ts DESC, t.trip_id DESC LIMIT %(limit)s")
    rows = access.fetch(sql, params, scope=scope, audit=False)
    access.audit_rows(rows[:limit], scope)
    return [TripItem(r["item"], r["start_ts"], r["trip_id"]) for r in rows]


def trips(access: Access, **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`trip_items` as dicts."""
    return [orjson.loads(t.json) for t in trip_items(access, **kwargs)]


def trip_scores(access: Access, trip_ids: list[int], *, explanation: bool | None = None) -> dict[int, dict[str, Any]]:
    """Score rows (trip_id, score, eco_score, explanation) of visible trips, by trip id.

    An explanation is a few kB of JSON per trip, most of a trip list's cost to read and parse: it
    is read when asked for, and by default only for a single trip (the trip view); otherwise the
    rows carry ``explanation`` None."""
    if not trip_ids:
        return {}
    if explanation is None:
        explanation = len(trip_ids) == 1
    rows = access.fetch(
        "SELECT s.trip_id, s.score, s.eco_score, " + ("s.explanation" if explanation else "NULL::jsonb AS explanation")
        + ", vis.vehicle_id, vis.owner_id, vis.purpose"
        " FROM visible vis JOIN devices d ON d.vehicle_id = vis.vehicle_id"
        " JOIN scores s ON s.device_key = d.device_key AND s.scope = 'trip' WHERE s.trip_id = ANY (%(ids)s)",
        {"ids": trip_ids}, scope=Scope.DRIVING_SCORE, audit=False)
    return {r["trip_id"]: r for r in rows}


EVENT_KINDS = ("harsh_acceleration", "harsh_braking", "harsh_cornering", "speeding", "over_revving", "long_idling",
               "night_driving")


def events(access: Access, *, vehicle_id: int | None, trip_id: int | None, since: dt.datetime | None,
           until: dt.datetime | None, kinds: list[str] | None, cursor: list[Any] | None, limit: int,
           with_places: bool, scope: Scope = Scope.DRIVING_SCORE) -> list[dict[str, Any]]:
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit + 1}
    if vehicle_id is not None:
        where.append("vis.vehicle_id = %(vid)s")
        params["vid"] = vehicle_id
    if trip_id is not None:
        where.append("e.trip_id = %(tid)s")
        params["tid"] = trip_id
    time_range(where, params, "e.ts", since, until)
    if kinds:
        where.append("e.kind = ANY (%(kinds)s)")
        params["kinds"] = kinds
    if cursor is not None:
        where.append("(e.ts, e.event_id) < (%(c_ts)s::timestamptz, %(c_id)s)")
        params["c_ts"], params["c_id"] = cursor
    sql = ("SELECT vis.vehicle_id, vis.owner_id, vis.purpose, e.* FROM visible vis"
           " JOIN devices d ON d.vehicle_id = vis.vehicle_id JOIN driving_events e ON e.device_key = d.device_key"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY e.ts DESC, e.event_id DESC LIMIT %(limit)s")
    rows = access.fetch(sql, params, scope=scope)
    out = []
    for r in rows:
        item = {"event_id": r["event_id"], "vehicle_id": r["vehicle_id"], "trip_id": r["trip_id"], "kind": r["kind"],
                "ts": iso(r["ts"]), "end_ts": iso(r["end_ts"]), "severity": r["severity"], "peak": r["peak"],
                "peak_unit": r["peak_unit"], "duration_s": r["duration_s"]}
        item["location"] = point(r["lat"], r["lon"]) if with_places else None
        out.append(item)
    return out


def score_periods(access: Access, vehicle_id: int, period: str, since: dt.datetime | None,
                  until: dt.datetime | None) -> list[dict[str, Any]]:
    """Day scores rolled up to ``period`` (day/week/month): distance-weighted, as the issue's insurers
    price per distance driven. Components are averaged the same way."""
    params: dict[str, Any] = {"vid": vehicle_id, "period": period}
    where = ["vis.vehicle_id = %(vid)s", "s.scope = 'day'"]
    time_range(where, params, "s.period_start", since, until)
    rows = access.fetch(
        "SELECT vis.vehicle_id, vis.owner_id, vis.purpose, s.period_start, s.score, s.distance_m, s.explanation"
        " FROM visible vis JOIN devices d ON d.vehicle_id = vis.vehicle_id"
        " JOIN scores s ON s.device_key = d.device_key WHERE " + " AND ".join(where) + " ORDER BY s.period_start",
        params, scope=Scope.DRIVING_SCORE)
    buckets: dict[dt.datetime, dict[str, Any]] = {}
    for r in rows:
        start = r["period_start"]
        if period == "week":
            start = (start - dt.timedelta(days=start.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
        elif period == "month":
            start = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        b = buckets.setdefault(start, {"w": 0.0, "sum": 0.0, "distance_m": 0.0, "days": 0, "comp": {}})
        b["days"] += 1
        b["distance_m"] += float(r["distance_m"] or 0.0)
        if r["score"] is None:
            continue
        w = max(float(r["distance_m"] or 0.0), 1.0)
        b["w"] += w
        b["sum"] += w * float(r["score"])
        for c in (r["explanation"] or {}).get("components", []):
            if c.get("applied") and c.get("sub_score") is not None:
                cw, cs = b["comp"].get(c["name"], (0.0, 0.0))
                b["comp"][c["name"]] = (cw + w, cs + w * float(c["sub_score"]))
    return [{"period_start": k.isoformat(), "period": period, "days": b["days"],
             "distance_km": round(b["distance_m"] / 1000.0, 3),
             "score": round(b["sum"] / b["w"], 1) if b["w"] else None,
             "components": {n: round(s / w, 1) for n, (w, s) in sorted(b["comp"].items())}}
            for k, b in sorted(buckets.items())]


def mileage(access: Access, vehicle_id: int, period: str, since: dt.datetime | None,
            until: dt.datetime | None) -> list[dict[str, Any]]:
    """Distance per day/week/month from the daily rollups (pay-as-you-drive statements)."""
    params: dict[str, Any] = {"vid": vehicle_id, "period": period}
    where = ["vis.vehicle_id = %(vid)s"]
    time_range(where, params, "r.bucket", since, until)
    rows = access.fetch(
        "SELECT vis.vehicle_id, vis.owner_id, vis.purpose, date_trunc(%(period)s, r.bucket, 'UTC') AS period_start,"
        " sum(r.distance_km) AS distance_km, sum(r.driving_s) AS driving_s, count(*) AS days_with_data"
        " FROM visible vis JOIN devices d ON d.vehicle_id = vis.vehicle_id"
        " JOIN samples_daily r ON r.device_key = d.device_key WHERE " + " AND ".join(where)
        + " GROUP BY 1, 2, 3, 4 ORDER BY period_start", params, scope=Scope.MILEAGE)
    return [{"period_start": iso(r["period_start"]), "period": period,
             "distance_km": round(float(r["distance_km"] or 0.0), 3),
             "driving_h": round(float(r["driving_s"] or 0.0) / 3600.0, 3),
             "days_with_data": int(r["days_with_data"])} for r in rows]
