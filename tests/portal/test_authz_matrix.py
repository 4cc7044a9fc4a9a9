"""The authorisation matrix: every endpoint × every role × own/other organisation × consent
granted / absent / revoked / expired / not yet started / for another scope.

Expectations come from two declarations, never from the SQL under test: the permission table
(portal_api.access.PERMISSIONS, which the guard enforces) and the consent oracle
(tests/portal/world.visible). A vehicle the caller may not see must answer 404 (its existence does
not leak), a role without the permission 403, missing or bad credentials 401.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import jwt
import psycopg
import pytest
from fastapi.routing import APIRoute

from portal_api.access import PERMISSIONS, ROLES_BY_AUDIENCE, Audience
from portal_api.app import API_ROUTERS
from portal_api.security import api_key_hash, new_api_key

from .world import CONSENTS, OWNERS, ROLES, World, visible

STAFF = [(org, role) for org in ("dealer_a", "dealer_b", "insurer_a", "insurer_b")
         for role in ROLES["dealer" if org.startswith("dealer") else "insurer"]]
AUDIENCE = {"dealer_a": Audience.DEALER, "dealer_b": Audience.DEALER, "insurer_a": Audience.INSURER,
            "insurer_b": Audience.INSURER}


def _guarded_routes(app: Any) -> list[tuple[APIRoute, str, str | None]]:
    """(route, permission, scope) for every API route, read off its guard dependency."""
    out = []
    routes = [r for router in API_ROUTERS for r in router.routes]
    assert {r.path for r in routes} == set(app.openapi()["paths"]), "a route outside API_ROUTERS"
    for route in routes:
        if not isinstance(route, APIRoute) or route.path == "/v1/auth/token":
            continue
        guards = [d.call for d in route.dependant.dependencies if hasattr(d.call, "permission")]
        assert len(guards) == 1, f"{route.path} must go through exactly one guard"
        scope = guards[0].scope
        out.append((route, guards[0].permission, str(scope) if scope else None))
    return out


def test_every_api_route_is_guarded(portal):
    routes = _guarded_routes(portal.client.app)
    assert len(routes) >= 35
    assert {p for _, p, _ in routes} <= set(PERMISSIONS)


def _fill(path: str, world: World, owner: str) -> str:
    ids = {"vehicle_id": world.vehicle_ids[owner], "trip_id": world.trip_ids[owner][0],
           "consent_id": world.consent_ids.get((owner, "dealer_a"), 999_999), "lead_id": 999_999,
           "webhook_id": 999_999, "user_id": 999_999, "key_id": 999_999, "site_id": 999_999}
    return re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), path)


def _call(portal, method: str, path: str, headers: dict[str, str]) -> Any:
    kwargs: dict[str, Any] = {"headers": headers}
    if method in ("POST", "PATCH"):
        kwargs["json"] = {}
    return portal.client.request(method, path, **kwargs)


def test_no_credentials_bad_token_expired_token_and_revoked_key_are_401(portal, world):
    secret = portal.client.app.state.portal.settings.jwt_secret
    now = int(dt.datetime.now(dt.UTC).timestamp())
    expired = jwt.encode({"sub": "1", "iat": now - 7200, "exp": now - 3600, "typ": "access"}, secret, "HS256")
    forged = jwt.encode({"sub": "1", "iat": now, "exp": now + 3600, "typ": "access"}, "not-the-secret", "HS256")
    k = new_api_key()
    with psycopg.connect(world.dsn) as conn:
        conn.execute("INSERT INTO api_keys (org_id, name, prefix, key_hash, role, revoked_at) VALUES (%s, 'old', %s,"
                     " %s, 'admin', now())", (world.org_ids["dealer_a"], k.prefix, api_key_hash(k.secret)))
    bad = [{}, {"Authorization": "Bearer " + expired}, {"Authorization": "Bearer " + forged},
           {"Authorization": "Bearer garbage"}, {"X-API-Key": k.token}, {"X-API-Key": "vsk_nope.nope"},
           {"Authorization": "Basic YTpi"}]
    for route, _, _ in _guarded_routes(portal.client.app):
        for method in route.methods:
            for headers in bad:
                r = _call(portal, method, _fill(route.path, world, "alice"), headers)
                assert r.status_code == 401, (method, route.path, headers, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
                assert "www-authenticate" in r.headers


def test_roles_without_the_permission_get_403_on_every_endpoint(portal, world):
    callers = [(world.user(org, role), AUDIENCE[org], role) for org, role in STAFF]
    callers += [(world.driver(o), Audience.DRIVER, "driver") for o in ("alice", "bob")]
    checked = 0
    for route, permission, _ in _guarded_routes(portal.client.app):
        allowed = PERMISSIONS[permission]
        for email, audience, role in callers:
            if (audience, role) in allowed:
                continue
            for method in route.methods:
                r = _call(portal, method, _fill(route.path, world, "alice"), portal.as_(email))
                assert r.status_code == 403, (method, route.path, email, r.status_code, r.text)
                assert r.json()["type"].endswith("/forbidden")
                checked += 1
    assert checked > 200


def _read_routes(app: Any, prefix: str) -> list[tuple[str, str | None]]:
    return [(route.path, scope) for route, _, scope in _guarded_routes(app)
            if route.path.startswith(prefix) and "{vehicle_id}" in route.path and route.methods == {"GET"}]


@pytest.mark.parametrize("org", ["dealer_a", "dealer_b", "insurer_a", "insurer_b"])
def test_vehicle_endpoints_follow_consent_for_every_permitted_role(portal, world, org):
    """Granted → 200; absent, revoked, expired, not yet started, other scope → 404, per scope."""
    audience = AUDIENCE[org]
    prefix = "/v1/dealer/" if audience is Audience.DEALER else "/v1/insurer/"
    routes = _read_routes(portal.client.app, prefix)
    assert routes
    for role in ROLES_BY_AUDIENCE[audience]:
        headers = portal.as_(world.user(org, role))
        for path, scope in routes:
            guard_perm = next(p for r, p, _ in _guarded_routes(portal.client.app) if r.path == path)
            if (audience, role) not in PERMISSIONS[guard_perm]:
                continue
            for owner in OWNERS:
                r = portal.client.get(_fill(path, world, owner), headers=headers)
                expected = 200 if visible(owner, org, scope) else 404
                assert r.status_code == expected, (org, role, path, owner, CONSENTS.get((owner, org)), r.text)
                if expected == 404:
                    assert r.json()["type"].endswith("/vehicle-not-found")


def _ids(items: list[dict[str, Any]]) -> set[int]:
    return {i["vehicle_id"] for i in items}


@pytest.mark.parametrize("org", ["dealer_a", "dealer_b", "insurer_a", "insurer_b"])
def test_lists_hold_exactly_the_consented_vehicles(portal, world, org):
    audience = AUDIENCE[org]
    if audience is Audience.DEALER:
        path, scope, role = "/v1/dealer/vehicles", "vehicle_health", "sales"
    else:
        path, scope, role = "/v1/insurer/policyholders", "driving_score", "analyst"
    r = portal.client.get(path, headers=portal.as_(world.user(org, role)))
    assert r.status_code == 200, r.text
    expected = {world.vehicle_ids[o] for o in OWNERS if visible(o, org, scope)}
    assert _ids(r.json()["items"]) == expected


def test_drivers_see_only_their_own_vehicles_and_trips(portal, world):
    for owner in OWNERS:
        h = portal.as_(world.driver(owner))
        assert _ids(portal.client.get("/v1/me/vehicles", headers=h).json()) == {world.vehicle_ids[owner]}
        for other in OWNERS:
            expected = 200 if other == owner else 404
            for path in ("/v1/me/vehicles/{vehicle_id}/trips", "/v1/me/vehicles/{vehicle_id}/score",
                         "/v1/me/vehicles/{vehicle_id}/health", "/v1/me/trips/{trip_id}"):
                r = portal.client.get(_fill(path, world, other), headers=h)
                assert r.status_code == expected, (owner, other, path, r.text)


def test_insurers_get_places_only_with_location_history(portal, world):
    h = portal.as_(world.user("insurer_a", "underwriter"))
    for owner, places in (("alice", False), ("carol", True)):
        vid = world.vehicle_ids[owner]
        trips = portal.client.get(f"/v1/insurer/policyholders/{vid}/trips", headers=h).json()["items"]
        events = portal.client.get(f"/v1/insurer/policyholders/{vid}/events", headers=h).json()["items"]
        assert trips and events
        assert all((t["start"] is not None) == places and (t["end"] is not None) == places for t in trips)
        assert all((e["location"] is not None) == places for e in events)
        feed = portal.client.get("/v1/feed", headers=h).json()["changes"]
        trip_changes = [c for c in feed if c["kind"] == "trip" and c["data"]["vehicle_id"] == vid]
        assert trip_changes and all(("start_lat" in c["data"]) == places for c in trip_changes)


def test_dealers_get_owner_contact_only_with_service_contact(fresh_portal, fresh_world):
    world = fresh_world
    with psycopg.connect(world.dsn) as conn:  # alice keeps vehicle_health, drops service_contact
        conn.execute("UPDATE consents SET scopes = ARRAY['vehicle_health'] WHERE consent_id = %s",
                     (world.consent_ids[("alice", "dealer_a")],))
    items = fresh_portal.client.get("/v1/dealer/vehicles",
                                    headers=fresh_portal.as_(world.user("dealer_a", "sales"))).json()["items"]
    assert [i["vehicle_id"] for i in items] == [world.vehicle_ids["alice"]]
    assert items[0]["owner"] is None
    items = fresh_portal.client.get("/v1/dealer/vehicles",
                                    headers=fresh_portal.as_(world.user("dealer_b", "sales"))).json()["items"]
    assert items[0]["owner"]["display_name"] == "Carol"


def test_api_keys_act_for_their_organisation_with_their_role(portal, world):
    k = new_api_key()
    with psycopg.connect(world.dsn) as conn:
        conn.execute("INSERT INTO api_keys (org_id, name, prefix, key_hash, role) VALUES (%s, 'crm', %s, %s,"
                     " 'underwriter')", (world.org_ids["insurer_a"], k.prefix, api_key_hash(k.secret)))
    h = {"X-API-Key": k.token}
    r = portal.client.get("/v1/insurer/policyholders", headers=h)
    assert r.status_code == 200
    assert _ids(r.json()["items"]) == {world.vehicle_ids[o] for o in OWNERS if visible(o, "insurer_a", "driving_score")}
    assert portal.client.get("/v1/org/users", headers=h).status_code == 403  # underwriter, not admin
    assert portal.client.get("/v1/dealer/vehicles", headers=h).status_code == 403
    assert portal.client.get("/v1/insurer/policyholders", headers={"Authorization": f"ApiKey {k.token}"}
                             ).status_code == 200
