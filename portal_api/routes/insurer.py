"""Insurer API: consented policyholders' scores, mileage, trip summaries and risk events.

Data minimisation: scores and events come without places, trips without coordinates, unless the
owner also granted ``location_history`` to this insurer.
"""

from __future__ import annotations

import datetime as dt
import statistics
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Response

from .. import queries
from ..access import Access, GuardedRoute, Scope
from ..models import DrivingEvent, MileagePeriod, Policyholder, ScoreDistribution, ScorePeriod, Trip
from ..pagination import Page, decode_cursor, json_page_response, keyset_page, page_of, page_response
from ..problems import responses
from .common import allow

router = APIRouter(prefix="/v1/insurer", tags=["insurer"], route_class=GuardedRoute)
ERR = responses(400, 401, 403, 422, 429)
ERR404 = responses(400, 401, 403, 404, 422, 429)
LIMIT = Query(50, ge=1, le=500, description="Items per page")
CURSOR = Query(None, max_length=200, description="next_cursor of the previous page")
K_ANONYMITY = 5

# The 30-day figures come precomputed from vehicle_summaries (migration 0009; refreshed by every
# analytics run, and at least every six hours), as of ``scores_as_of``.
POLICYHOLDERS_SQL = """
SELECT vis.vehicle_id, vis.owner_id, vis.purpose, o.display_name, v.vin, v.make, v.model,
       sm.score_30d, coalesce(sm.distance_m_30d, 0) AS distance_m, coalesce(sm.scored_days_30d, 0) AS scored_days,
       coalesce(sm.events_30d, '{}'::jsonb) AS events, sm.computed_at AS scores_as_of,
       json_build_object('vehicle_id', vis.vehicle_id, 'owner_id', vis.owner_id, 'display_name', o.display_name,
                         'vin', v.vin, 'make', v.make, 'model', v.model,
                         'score_30d', round(sm.score_30d::numeric, 1),
                         'distance_km_30d', round((coalesce(sm.distance_m_30d, 0) / 1000.0)::numeric, 3),
                         'scored_days_30d', coalesce(sm.scored_days_30d, 0),
                         'events_30d', coalesce(sm.events_30d, '{}'::jsonb),
                         'scores_as_of', sm.computed_at)::text AS item
FROM visible vis
JOIN vehicles v ON v.vehicle_id = vis.vehicle_id
JOIN owners o ON o.owner_id = vis.owner_id
LEFT JOIN vehicle_summaries sm ON sm.vehicle_id = v.vehicle_id
"""


@router.get("/policyholders", response_model=Page[Policyholder], operation_id="insurer_policyholders",
            responses=ERR, summary="Policyholders who consented to driving_score, with their 30-day score")
def insurer_policyholders(access: Access = allow("insurer.policyholders", Scope.DRIVING_SCORE), limit: int = LIMIT,
                          cursor: str | None = CURSOR) -> Response:
    key = decode_cursor(cursor, 1)
    where = " WHERE vis.vehicle_id > %(after)s" if key else ""
    rows = access.fetch(POLICYHOLDERS_SQL + where + " ORDER BY vis.vehicle_id LIMIT %(lim)s",
                        {"after": int(key[0]) if key else None, "lim": limit + 1}, audit=False)
    rows, nxt = page_of(rows, limit, lambda r: [r["vehicle_id"]])
    access.audit_rows(rows, Scope.DRIVING_SCORE)  # the page; the look-ahead row is not shown
    return json_page_response([r["item"] for r in rows], nxt, Policyholder)


@router.get("/policyholders/{vehicle_id}", response_model=Policyholder, operation_id="insurer_policyholder",
            responses=ERR404)
def insurer_policyholder(vehicle_id: int = Path(ge=1, le=2**62),
                         access: Access = allow("insurer.policyholders", Scope.DRIVING_SCORE)) -> dict[str, Any]:
    access.require_vehicle(vehicle_id)
    rows = access.fetch(POLICYHOLDERS_SQL + " WHERE vis.vehicle_id = %(vid)s", {"vid": vehicle_id})
    out: dict[str, Any] = orjson.loads(rows[0]["item"])
    return out


Period = Literal["day", "week", "month"]


@router.get("/policyholders/{vehicle_id}/scores", response_model=list[ScorePeriod], operation_id="insurer_scores",
            responses=ERR404, summary="Score trend per period with component sub-scores (distance-weighted)")
def insurer_scores(vehicle_id: int = Path(ge=1, le=2**62), period: Period = "week", since: dt.datetime | None = None,
                   until: dt.datetime | None = None,
                   access: Access = allow("insurer.policyholders", Scope.DRIVING_SCORE)) -> list[dict[str, Any]]:
    access.require_vehicle(vehicle_id)
    return queries.score_periods(access, vehicle_id, period, since, until)


@router.get("/policyholders/{vehicle_id}/mileage", response_model=list[MileagePeriod],
            operation_id="insurer_mileage", responses=ERR404,
            summary="Mileage statement per period (pay as you drive), from the daily rollups")
def insurer_mileage(vehicle_id: int = Path(ge=1, le=2**62), period: Period = "month", since: dt.datetime | None = None,
                    until: dt.datetime | None = None,
                    access: Access = allow("insurer.policyholders", Scope.MILEAGE)) -> list[dict[str, Any]]:
    access.require_vehicle(vehicle_id)
    return queries.mileage(access, vehicle_id, period, since, until)


@router.get("/policyholders/{vehicle_id}/trips", response_model=Page[Trip], operation_id="insurer_trips",
            responses=ERR404, summary="Trip summaries; start/end points only with location_history")
def insurer_trips(vehicle_id: int = Path(ge=1, le=2**62),
                  since: dt.datetime | None = None, until: dt.datetime | None = None,
                  limit: int = LIMIT, cursor: str | None = CURSOR,
                  access: Access = allow("insurer.policyholders", Scope.TRIP_SUMMARY)) -> Response:
    access.require_vehicle(vehicle_id)
    places = access.can_see(vehicle_id, Scope.LOCATION_HISTORY)
    items = queries.trip_items(access, vehicle_id=vehicle_id, since=since, until=until,
                               cursor=decode_cursor(cursor, 2), limit=limit, with_places=places is not None)
    items, nxt = keyset_page(items, limit, lambda t: t.key)
    if places:
        access.audit_rows([places] * len(items), Scope.LOCATION_HISTORY)
    return json_page_response([t.json for t in items], nxt, Trip)


@router.get("/policyholders/{vehicle_id}/events", response_model=Page[DrivingEvent], operation_id="insurer_events",
            responses=ERR404, summary="Risk events (harsh, speeding, over-revving, idling); places only with "
                                      "location_history")
def insurer_events(vehicle_id: int = Path(ge=1, le=2**62),
                  since: dt.datetime | None = None, until: dt.datetime | None = None,
                   kind: list[Literal["harsh_acceleration", "harsh_braking", "harsh_cornering", "speeding",
                                      "over_revving", "long_idling"]] | None = Query(None),
                   limit: int = LIMIT, cursor: str | None = CURSOR,
                   access: Access = allow("insurer.policyholders", Scope.DRIVING_SCORE)) -> Response:
    access.require_vehicle(vehicle_id)
    places = access.can_see(vehicle_id, Scope.LOCATION_HISTORY)
    rows = queries.events(access, vehicle_id=vehicle_id, trip_id=None, since=since, until=until,
                          kinds=list(kind) if kind else None, cursor=decode_cursor(cursor, 2), limit=limit,
                          with_places=places is not None)
    if places:
        access.audit_rows([places] * len(rows), Scope.LOCATION_HISTORY)
    rows, nxt = page_of(rows, limit, lambda r: [r["ts"], r["event_id"]])
    return page_response(rows, nxt, DrivingEvent)


@router.get("/portfolio/score-distribution", response_model=ScoreDistribution,
            operation_id="insurer_score_distribution", responses=ERR,
            summary="30-day scores of the whole consented portfolio in 10-point buckets (k-anonymous)")
def insurer_score_distribution(
        access: Access = allow("insurer.portfolio", Scope.DRIVING_SCORE)) -> dict[str, Any]:
    rows = access.fetch(
        "SELECT vis.vehicle_id, (SELECT sum(s.score * greatest(s.distance_m, 1))"
        " / nullif(sum(greatest(s.distance_m, 1)) FILTER (WHERE s.score IS NOT NULL), 0)"
        " FROM devices d JOIN scores s ON s.device_key = d.device_key AND s.scope = 'day'"
        " AND s.period_start >= now() - interval '30 days' WHERE d.vehicle_id = vis.vehicle_id) AS score"
        " FROM visible vis", audit=False)
    scores = [float(r["score"]) for r in rows if r["score"] is not None]
    suppressed = len(scores) < K_ANONYMITY
    buckets = []
    for lo in range(0, 100, 10):
        hi = lo + 10
        n = sum(1 for s in scores if lo <= s < hi or (hi == 100 and s == 100))
        buckets.append({"from": lo, "to": hi, "count": None if suppressed else n})
    return {"policyholders": len(rows), "scored": len(scores), "suppressed": suppressed, "k": K_ANONYMITY,
            "buckets": buckets, "mean": None if suppressed else round(statistics.fmean(scores), 1),
            "median": None if suppressed else round(statistics.median(scores), 1)}
