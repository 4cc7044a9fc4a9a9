"""Request and response shapes (the OpenAPI schema clients and schemathesis read)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .access import Scope

Json = dict[str, Any]


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the token expires")


class Me(BaseModel):
    kind: Literal["user", "api_key"]
    id: int
    label: str
    role: str
    audience: Literal["dealer", "insurer", "driver"]
    org_id: int | None = None
    organisation: str | None = None
    owner_id: int | None = None


class Organisation(BaseModel):
    org_id: int
    kind: Literal["dealer", "insurer"]
    name: str


class DtcOpen(BaseModel):
    code: str
    dtc_type: str
    first_seen: str
    last_seen: str
    mil_on: bool
    description: str
    category: str | None = None
    severity: str | None = None


class ServiceStatus(BaseModel):
    due: bool
    due_soon: bool
    km_left: float | None = None
    days_left: float | None = None
    reason: str
    last_service_at: str | None = None
    baseline_assumed: bool = Field(description="No service recorded: the clock starts at the first data")


class VehicleHealth(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "vehicle_id": 12, "vin": "WVWZZZ1KZAW000123", "make": "VW", "model": "Golf", "model_year": 2017,
        "last_seen": "2026-11-20T08:12:00+00:00", "online": False, "distance_recorded_km": 12873.4,
        "open_dtcs": [{"code": "P0301", "dtc_type": "stored", "first_seen": "2026-11-18T07:00:00+00:00",
                       "last_seen": "2026-11-20T08:00:00+00:00", "mil_on": True,
                       "description": "Cylinder 1 misfire detected", "category": "misfire", "severity": "high"}],
        "mil_on": True, "battery": {"level": "ok", "resting_v": 12.6}, "coolant": None,
        "service": {"due": False, "due_soon": True, "km_left": 800.0, "days_left": 120.0,
                    "reason": "due within 800 km", "last_service_at": None, "baseline_assumed": True},
        "health_leads": [], "health_computed_at": "2026-11-20T09:00:00+00:00"}]})

    vehicle_id: int
    vin: str | None = None
    make: str | None = None
    model: str | None = None
    model_year: int | None = None
    last_seen: str | None = None
    online: bool
    distance_recorded_km: float
    open_dtcs: list[DtcOpen]
    mil_on: bool
    battery: Json | None = None
    coolant: Json | None = None
    service: ServiceStatus | None = None
    health_leads: list[Json]
    health_computed_at: str | None = None
    summary_computed_at: str | None = Field(None, description="When distance_recorded_km and the service figures "
                                            "were computed (after each analytics run and each recorded service)")


class Owner(BaseModel):
    owner_id: int
    display_name: str
    email: str | None = None


class CustomerVehicle(VehicleHealth):
    owner: Owner | None = Field(None, description="Present when the owner granted service_contact")


class Lead(BaseModel):
    lead_id: int
    vehicle_id: int
    kind: str
    priority: int
    reason: str
    detail: Json
    state: Literal["new", "contacted", "appointment", "visited", "lost"]
    lost_reason: str | None = None
    assigned_to: int | None = None
    created_at: str
    updated_at: str
    closed_at: str | None = None


class LeadChange(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"state": "contacted", "note": "left a voicemail"},
        {"state": "lost", "lost_reason": "went_elsewhere"}, {"assigned_to": 7}]})

    state: Literal["new", "contacted", "appointment", "visited", "lost"] | None = None
    lost_reason: Literal["not_reachable", "declined", "went_elsewhere", "already_fixed", "sold_vehicle",
                         "other"] | None = None
    assigned_to: int | None = Field(None, description="A user id of your organisation; null to unassign")
    note: str = Field("", max_length=2000)


class FunnelRow(BaseModel):
    month: str
    kind: str
    created: int
    contacted: int
    appointment: int
    visited: int
    lost: int
    conversion_to_visit: float | None


class ServiceRecordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    serviced_at: dt.datetime
    odometer_km: float | None = Field(None, ge=0, le=3_000_000)
    note: str = Field("", max_length=2000)


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://crm.example.com/hooks/vinsight", "events": ["lead.created", "lead.updated"]}]})
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)
    events: list[Literal["lead.created", "lead.updated"]] = Field(default=["lead.created", "lead.updated"],
                                                                 min_length=1)


class Webhook(BaseModel):
    webhook_id: int
    url: str
    events: list[str]
    active: bool
    created_at: str
    secret: str | None = Field(None, description="Only in the response that created the webhook")


class WebhookDelivery(BaseModel):
    delivery_id: int
    event: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None = None
    last_error: str | None = None
    created_at: str
    delivered_at: str | None = None
    next_attempt_at: str


class Trip(BaseModel):
    trip_id: int
    vehicle_id: int
    kind: str
    start_ts: str
    end_ts: str
    is_open: bool
    distance_m: float
    distance_source: str
    duration_s: float
    driving_s: float
    idle_s: float
    max_speed_kmh: float | None = None
    avg_speed_kmh: float | None = None
    fuel_l: float | None = None
    night_share: float | None = None
    urban_share: float | None = None
    rural_share: float | None = None
    motorway_share: float | None = None
    score: float | None = None
    start: Json | None = Field(None, description="GeoJSON Point; only with location_history")
    end: Json | None = Field(None, description="GeoJSON Point; only with location_history")


class DrivingEvent(BaseModel):
    event_id: int
    vehicle_id: int
    trip_id: int | None = None
    kind: str
    ts: str
    end_ts: str
    severity: int
    peak: float | None = None
    peak_unit: str | None = None
    duration_s: float | None = None
    location: Json | None = Field(None, description="GeoJSON Point; only with location_history")


class ScorePeriod(BaseModel):
    period_start: str
    period: Literal["day", "week", "month"]
    days: int
    distance_km: float
    score: float | None = None
    components: dict[str, float]


class MileagePeriod(BaseModel):
    period_start: str
    period: Literal["day", "week", "month"]
    distance_km: float
    driving_h: float
    days_with_data: int


class Policyholder(BaseModel):
    vehicle_id: int
    owner_id: int
    display_name: str
    vin: str | None = None
    make: str | None = None
    model: str | None = None
    score_30d: float | None = None
    distance_km_30d: float
    scored_days_30d: int
    events_30d: dict[str, int]
    scores_as_of: str | None = Field(None, description="When the 30-day figures were computed (analytics "
                                             "refreshes them after each run, at least every six hours); the 30 "
                                             "days end then. Null before the first analytics run.")


class ScoreDistribution(BaseModel):
    policyholders: int
    scored: int
    suppressed: bool = Field(description="True when fewer than k policyholders are scored (k-anonymity)")
    k: int
    buckets: list[Json]
    mean: float | None = None
    median: float | None = None


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"org_id": 2, "scopes": ["driving_score", "mileage"], "purpose": "pay-as-you-drive premium",
         "expires_at": "2027-12-31T00:00:00Z"}]})
    org_id: int
    scopes: list[Scope] = Field(min_length=1)
    purpose: str = Field(min_length=3, max_length=500)
    starts_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None


class Consent(BaseModel):
    consent_id: int
    org_id: int
    organisation: str
    organisation_kind: str
    scopes: list[str]
    purpose: str
    starts_at: str
    expires_at: str | None = None
    revoked_at: str | None = None
    active: bool


class AccessRecord(BaseModel):
    at: str
    who: str
    organisation: str | None = None
    vehicle_id: int | None = None
    scope: str
    purpose: str
    action: str
    records: int


class ScoreExplanation(BaseModel):
    vehicle_id: int
    score_30d: float | None = None
    distance_km_30d: float
    latest_day: Json | None = Field(None, description="The newest day score with components, weights and events")
    components_30d: dict[str, float]
    tips: list[str]


class Erasure(BaseModel):
    erased: bool
    rows_deleted: dict[str, int]


class ErasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    confirm: Literal["ERASE"] = Field(description="Must be the word ERASE: erasure cannot be undone")


class FeedChange(BaseModel):
    version: int
    kind: Literal["trip", "event", "lead", "consent"]
    op: Literal["upsert", "delete"]
    id: int
    data: Json | None = None


class FeedPage(BaseModel):
    from_version: int
    to_version: int = Field(description="Pass as fromVersion next time")
    has_more: bool
    changes: list[FeedChange]


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)
    password: str = Field(min_length=12, max_length=256)
    role: Literal["admin", "analyst", "service_advisor", "sales", "underwriter"]
    display_name: str = Field("", max_length=200)


class User(BaseModel):
    user_id: int
    email: str
    role: str
    display_name: str
    active: bool


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    role: Literal["admin", "analyst", "service_advisor", "sales", "underwriter"]


class ApiKey(BaseModel):
    key_id: int
    name: str
    prefix: str
    role: str
    created_at: str
    revoked_at: str | None = None
    key: str | None = Field(None, description="The full key; only in the response that created it")


class SiteIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "Workshop Nord", "geometry": {"type": "Polygon", "coordinates": [[
            [7.600, 45.070], [7.604, 45.070], [7.604, 45.073], [7.600, 45.073], [7.600, 45.070]]]}}]})
    name: str = Field(min_length=1, max_length=200)
    geometry: Json = Field(description="GeoJSON Polygon or MultiPolygon (WGS84) around the site")


class Site(BaseModel):
    site_id: int
    name: str
    geometry: Json
    area_m2: float
