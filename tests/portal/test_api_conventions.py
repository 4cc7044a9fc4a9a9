"""API conventions: problem+json everywhere, cursor pagination, time filters, rate limits, OpenAPI."""

from __future__ import annotations

import datetime as dt

from .conftest import make_portal
from .world import PASSWORD


def _problem(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert {"type", "title", "status", "detail"} <= set(body) and body["status"] == status and body["detail"]
    if code:
        assert body["type"].endswith("/" + code), body
    return body


def test_errors_are_problem_details(portal, world):
    h = portal.as_(world.user("insurer_a", "analyst"))
    _problem(portal.client.get("/v1/no-such-thing", headers=h), 404)
    _problem(portal.client.delete("/v1/whoami", headers=h), 405)
    body = _problem(portal.client.get("/v1/insurer/policyholders", headers=h, params={"limit": 0}), 422,
                    "invalid-request")
    assert body["errors"][0]["location"] == ["query", "limit"]
    _problem(portal.client.get("/v1/insurer/policyholders", headers=h, params={"cursor": "%%%"}), 400, "bad-cursor")
    _problem(portal.client.get("/v1/insurer/policyholders", headers=h, params={"cursor": "WzEsMl0"}), 400, "bad-cursor")
    _problem(portal.client.get("/v1/insurer/policyholders/abc/trips", headers=h), 422)
    _problem(portal.client.get("/v1/insurer/policyholders/1/scores", headers=h, params={"period": "year"}), 422)
    _problem(portal.client.get("/v1/insurer/policyholders/1/trips", headers=h, params={"since": "yesterday"}), 422)
    _problem(portal.client.post("/v1/auth/token", data={"username": "x@y.z", "password": "wrong"}), 401,
             "bad-credentials")
    dealer = portal.as_(world.user("dealer_a", "service_advisor"))
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat()
    _problem(portal.client.post(f"/v1/dealer/vehicles/{world.vehicle_ids['alice']}/service-records", headers=dealer,
                                json={"serviced_at": future}), 422, "service-in-future")
    _problem(portal.client.post("/v1/dealer/vehicles/1/service-records", headers=dealer, content=b"{not json",
                                ), 422)


def test_cursor_pagination_walks_every_item_once(portal, world):
    h = portal.as_(world.user("insurer_a", "analyst"))
    seen, cursor = [], None
    for _ in range(10):
        params = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = portal.client.get("/v1/insurer/policyholders", headers=h, params=params).json()
        seen += [i["vehicle_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted({world.vehicle_ids["alice"], world.vehicle_ids["carol"]})
    driver = portal.as_(world.driver("carol"))
    url = f"/v1/me/vehicles/{world.vehicle_ids['carol']}/trips"
    first = portal.client.get(url, headers=driver, params={"limit": 1}).json()
    second = portal.client.get(url, headers=driver, params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert [t["trip_id"] for t in first["items"] + second["items"]] == sorted(world.trip_ids["carol"])[::-1] or \
        len({t["trip_id"] for t in first["items"] + second["items"]}) == 2
    assert second["next_cursor"] is None


def test_time_range_filters(portal, world):
    driver = portal.as_(world.driver("alice"))
    url = f"/v1/me/vehicles/{world.vehicle_ids['alice']}/trips"
    all_trips = portal.client.get(url, headers=driver).json()["items"]
    assert len(all_trips) == 2
    cut = dt.datetime.now(dt.UTC) - dt.timedelta(hours=12)
    recent = portal.client.get(url, headers=driver, params={"since": cut.isoformat()}).json()["items"]
    older = portal.client.get(url, headers=driver, params={"until": cut.isoformat()}).json()["items"]
    assert len(recent) == 1 and len(older) == 1 and recent[0]["trip_id"] != older[0]["trip_id"]
    assert dt.datetime.fromisoformat(recent[0]["start_ts"]) >= cut > dt.datetime.fromisoformat(older[0]["start_ts"])


def test_rate_limits_answer_429_with_retry_after(world):
    for p in make_portal(world, rate_limit_per_min=5, login_rate_limit_per_min=3):
        statuses = [p.client.post("/v1/auth/token", data={"username": "nobody@x.test", "password": "bad"}).status_code
                    for _ in range(5)]
        assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429]
        # the client address is limited too: guessing across many e-mails from one place stops as well
        _problem(p.client.post("/v1/auth/token", data={"username": world.user("dealer_a", "admin"),
                                                       "password": PASSWORD}), 429, "rate-limited")
    for p in make_portal(world, rate_limit_per_min=5, login_rate_limit_per_min=100):
        token = p.client.post("/v1/auth/token", data={"username": world.user("dealer_a", "admin"),
                                                      "password": PASSWORD}).json()["access_token"]
        h = {"Authorization": f"Bearer {token}"}
        codes = [p.client.get("/v1/whoami", headers=h).status_code for _ in range(7)]
        assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
        r = p.client.get("/v1/whoami", headers=h)
        assert int(r.headers["retry-after"]) >= 1
        _problem(r, 429, "rate-limited")
        # another client is not affected
        other = p.client.post("/v1/auth/token", data={"username": world.user("dealer_b", "admin"),
                                                      "password": PASSWORD}).json()["access_token"]
        assert p.client.get("/v1/whoami", headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_openapi_documents_examples_problems_and_security(portal):
    spec = portal.client.get("/api/openapi.json").json()
    assert "Problem" in spec["components"]["schemas"]
    ops = [op for path in spec["paths"].values() for op in path.values()]
    assert all("operationId" in op for op in ops)
    assert all(any(str(s).startswith("4") for s in op["responses"]) for op in ops)
    schemas = spec["components"]["schemas"]
    assert schemas["VehicleHealth"].get("examples") and schemas["ConsentIn"].get("examples")
    assert portal.client.get("/api/docs").status_code == 200


def test_security_headers(portal, world):
    r = portal.client.get("/v1/whoami", headers=portal.as_(world.driver("alice")))
    assert r.status_code == 200 and r.json()["audience"] == "driver"  # one whoami for every audience
    assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
    page = portal.client.get("/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
