"""Dealer leads from analytics through the pipeline, signed CRM webhooks with retries, and the
partner feed's no-gap, no-repeat guarantee."""

from __future__ import annotations

import csv
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import psycopg
import pytest

from portal_api import webhooks
from portal_api.app import BackgroundJobs

from .conftest import portal_settings


def test_leads_come_from_health_for_consenting_customers_only(fresh_portal, fresh_world):
    p, w = fresh_portal, fresh_world
    admin = p.as_(w.user("dealer_a", "admin"))
    assert p.client.post("/v1/dealer/leads/refresh", headers=admin).status_code == 200
    leads = p.client.get("/v1/dealer/leads", headers=admin).json()["items"]
    kinds = {(lead["vehicle_id"], lead["kind"]) for lead in leads}
    alice = w.vehicle_ids["alice"]
    # alice: P0301 two days old (MIL on), weak battery from analytics, a 2013 car (trade-in at 8 years)
    assert kinds == {(alice, "new_dtc"), (alice, "weak_battery"), (alice, "trade_in")}
    dtc = next(lead for lead in leads if lead["kind"] == "new_dtc")
    assert dtc["priority"] == 1 and dtc["detail"]["code"] == "P0301" and "misfire" in dtc["reason"].lower()
    # generating again creates nothing new (one open lead per vehicle, kind and key)
    assert p.client.post("/v1/dealer/leads/refresh", headers=admin).json()["created"] == 0
    # dealer_b sees carol's, not alice's
    b = p.as_(w.user("dealer_b", "admin"))
    p.client.post("/v1/dealer/leads/refresh", headers=b)
    assert {lead["vehicle_id"] for lead in p.client.get("/v1/dealer/leads", headers=b).json()["items"]} == {
        w.vehicle_ids["carol"]}


def test_pipeline_moves_assignment_funnel_and_csv(fresh_portal, fresh_world):
    p, w = fresh_portal, fresh_world
    admin = p.as_(w.user("dealer_a", "admin"))
    sales = p.as_(w.user("dealer_a", "sales"))
    analyst = p.as_(w.user("dealer_a", "analyst"))
    p.client.post("/v1/dealer/leads/refresh", headers=admin)
    leads = {lead["kind"]: lead for lead in p.client.get("/v1/dealer/leads", headers=admin).json()["items"]}
    lid = leads["new_dtc"]["lead_id"]
    url = f"/v1/dealer/leads/{lid}"
    assert p.client.patch(url, headers=analyst, json={"state": "contacted"}).status_code == 403  # read-only role
    assert p.client.patch(url, headers=sales, json={"state": "visited"}).status_code == 409      # skips stages
    r = p.client.patch(url, headers=sales, json={"state": "contacted", "note": "called, booked"})
    assert r.status_code == 200 and r.json()["state"] == "contacted"
    users = {u["email"]: u["user_id"] for u in p.client.get("/v1/org/users", headers=admin).json()}
    advisor = users["service_advisor@dealer_a.test"]
    r = p.client.patch(url, headers=sales, json={"state": "appointment", "assigned_to": advisor})
    assert r.json()["assigned_to"] == advisor and r.json()["state"] == "appointment"
    other_org_user = 1  # admin@dealer_a is user 1; an insurer's user must be refused
    with psycopg.connect(w.dsn) as conn:
        insurer_user = conn.execute("SELECT user_id FROM portal_users WHERE email = 'admin@insurer_a.test'"
                                    ).fetchone()[0]
    assert p.client.patch(url, headers=sales, json={"assigned_to": insurer_user}).status_code == 422
    assert other_org_user != insurer_user
    assert p.client.patch(url, headers=sales, json={"state": "visited"}).json()["closed_at"]
    assert p.client.patch(url, headers=sales, json={"state": "contacted"}).status_code == 409  # closed
    battery = f"/v1/dealer/leads/{leads['weak_battery']['lead_id']}"
    assert p.client.patch(battery, headers=sales, json={"state": "lost"}).status_code == 422   # needs a reason
    r = p.client.patch(battery, headers=sales, json={"state": "lost", "lost_reason": "went_elsewhere"})
    assert r.json()["lost_reason"] == "went_elsewhere"
    assert p.client.get("/v1/dealer/leads", headers=admin, params={"state": "new"}).json()["items"][0]["kind"] == \
        "trade_in"
    funnel = {row["kind"]: row for row in p.client.get("/v1/dealer/leads/funnel", headers=analyst).json()}
    assert funnel["new_dtc"]["created"] == 1 and funnel["new_dtc"]["visited"] == 1
    assert funnel["new_dtc"]["conversion_to_visit"] == 1.0
    assert funnel["weak_battery"]["lost"] == 1 and funnel["weak_battery"]["conversion_to_visit"] == 0.0
    with psycopg.connect(w.dsn) as conn:  # a name crafted to run in the call centre's spreadsheet
        conn.execute("UPDATE owners SET display_name = '=HYPERLINK(\"http://evil\")' WHERE owner_id = %s",
                     (w.owner_ids["alice"],))
    r = p.client.get("/v1/dealer/leads.csv", headers=sales)
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 3 and {row["email"] for row in rows} == {"alice@drivers.test"}
    assert {row["display_name"] for row in rows} == {"'=HYPERLINK(\"http://evil\")"}
    # revoking service_contact hides the customer's leads at once
    p.client.delete(f"/v1/me/consents/{w.consent_ids[('alice', 'dealer_a')]}", headers=p.as_(w.driver("alice")))
    assert p.client.get("/v1/dealer/leads", headers=admin).json()["items"] == []
    assert p.client.get(url, headers=admin).status_code == 404


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    fail_first: ClassVar[int] = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        cls.received.append({"body": body, "signature": self.headers[webhooks.SIGNATURE_HEADER],
                             "event": self.headers[webhooks.EVENT_HEADER]})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver():
    _Receiver.received, _Receiver.fail_first = [], 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, _Receiver
    server.shutdown()


def test_webhooks_are_signed_retried_and_logged(fresh_portal, fresh_world, receiver):
    p, w = fresh_portal, fresh_world
    server, handler = receiver
    admin = p.as_(w.user("dealer_a", "admin"))
    r = p.client.post("/v1/dealer/webhooks", headers=admin,
                      json={"url": f"http://127.0.0.1:{server.server_port}/hook"})
    assert r.status_code == 201
    hook = r.json()
    secret = hook["secret"]
    assert secret and p.client.get("/v1/dealer/webhooks", headers=admin).json()[0]["secret"] is None
    handler.fail_first = 2  # the CRM is down for the first two attempts
    p.client.post("/v1/dealer/leads/refresh", headers=admin)
    settings = portal_settings(w.dsn, webhook_backoff_s=0.05)
    jobs = BackgroundJobs(settings, p.client.app.state.portal.pool)
    for _ in range(40):
        jobs.run_once()
        if len(handler.received) == 3:
            break
        threading.Event().wait(0.1)
    assert len(handler.received) == 3
    for msg in handler.received:
        assert webhooks.verify(secret, msg["signature"], msg["body"])
        assert not webhooks.verify(secret, msg["signature"], msg["body"] + b" ")
        assert not webhooks.verify("whsec_other", msg["signature"], msg["body"])
        assert msg["event"] == "lead.created"
        assert json.loads(msg["body"])["data"]["vehicle_id"] == w.vehicle_ids["alice"]
    log = p.client.get(f"/v1/dealer/webhooks/{hook['webhook_id']}/deliveries", headers=admin).json()
    assert len(log) == 3 and all(d["state"] == "delivered" for d in log)
    assert sum(d["attempts"] for d in log) == 3 + 2 and any(d["last_status"] == 204 for d in log)
    # a lead update is announced too
    lid = json.loads(handler.received[0]["body"])["data"]["lead_id"]
    p.client.patch(f"/v1/dealer/leads/{lid}", headers=admin, json={"state": "contacted"})
    jobs.run_once()
    assert handler.received[-1]["event"] == "lead.updated"
    assert json.loads(handler.received[-1]["body"])["data"]["state"] == "contacted"


def test_unreachable_webhooks_give_up_after_max_attempts(fresh_portal, fresh_world):
    p, w = fresh_portal, fresh_world
    admin = p.as_(w.user("dealer_a", "admin"))
    hook = p.client.post("/v1/dealer/webhooks", headers=admin, json={"url": "http://127.0.0.1:9/closed"}).json()
    p.client.post("/v1/dealer/leads/refresh", headers=admin)
    with psycopg.connect(w.dsn) as conn:
        for _ in range(3):
            conn.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")
            conn.commit()
            webhooks.deliver_due(conn, timeout_s=1, max_attempts=3, backoff_s=0.01)
    log = p.client.get(f"/v1/dealer/webhooks/{hook['webhook_id']}/deliveries", headers=admin).json()
    assert log and all(d["state"] == "failed" and d["attempts"] == 3 and d["last_error"] for d in log)


def _drain(p, headers: dict[str, str], start: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    changes, version = [], start
    for _ in range(100):
        page = p.client.get("/v1/feed", headers=headers, params={"fromVersion": version, "limit": limit}).json()
        changes += page["changes"]
        assert page["to_version"] >= version
        version = page["to_version"]
        if not page["has_more"]:
            return changes, version
    raise AssertionError("feed did not end")


def test_feed_pages_without_gaps_or_repeats_and_carries_deletions(fresh_portal, fresh_world):
    p, w = fresh_portal, fresh_world
    h = p.as_(w.user("insurer_a", "analyst"))
    everything, head = _drain(p, h, 0, 1000)
    paged, head2 = _drain(p, h, 0, 3)
    assert head == head2 and [c["version"] for c in paged] == [c["version"] for c in everything]
    assert len({(c["kind"], c["id"]) for c in paged}) == len(paged)
    vids = {w.vehicle_ids["alice"], w.vehicle_ids["carol"]}
    data = [c for c in everything if c["kind"] != "consent"]
    assert {c["data"]["vehicle_id"] for c in data} == vids  # bob revoked, dave elsewhere
    # the organisation's own consents, each once, bob's as revoked; none of another organisation's
    consents = {c["id"]: c["data"] for c in everything if c["kind"] == "consent"}
    assert set(consents) == {cid for (_o, org), cid in w.consent_ids.items() if org == "insurer_a"}
    bob = consents[w.consent_ids[("bob", "insurer_a")]]
    assert bob["revoked_at"] and bob["vehicle_ids"] == [w.vehicle_ids["bob"]]
    # new trip and a deleted one arrive after the stored version
    with psycopg.connect(w.dsn) as conn:
        conn.execute("INSERT INTO trips (device_key, start_ts, end_ts) VALUES (%s, now(), now())",
                     (w.device_keys["carol"],))
        conn.execute("DELETE FROM trips WHERE trip_id = %s", (w.trip_ids["alice"][1],))
    more, _ = _drain(p, h, head, 2)
    ops = [(c["kind"], c["op"]) for c in more]
    assert ("trip", "upsert") in ops and ("trip", "delete") in ops and ("event", "delete") in ops
    assert all(c["version"] > head for c in more)
    # nothing new: an empty page that keeps the version
    page = p.client.get("/v1/feed", headers=h, params={"fromVersion": _drain(p, h, head, 2)[1]}).json()
    assert page["changes"] == [] and not page["has_more"]


def test_feed_versions_follow_commit_order(fresh_world):
    """A transaction that started writing first blocks later writers until it commits, so a reader
    can never see version v+1 without v (the gap that would make a client skip a row)."""
    w = fresh_world
    first = psycopg.connect(w.dsn)
    first.execute("INSERT INTO trips (device_key, start_ts, end_ts) VALUES (%s, now(), now())",
                  (w.device_keys["alice"],))
    done = threading.Event()

    def second() -> None:
        with psycopg.connect(w.dsn) as conn:
            conn.execute("INSERT INTO trips (device_key, start_ts, end_ts) VALUES (%s, now(), now())",
                         (w.device_keys["carol"],))
        done.set()

    t = threading.Thread(target=second)
    t.start()
    assert not done.wait(1.0), "the second writer must wait for the first to commit"
    first.commit()
    assert done.wait(10)
    t.join()
    with psycopg.connect(w.dsn) as conn:
        rows = conn.execute("SELECT device_key, change_version FROM trips ORDER BY trip_id DESC LIMIT 2").fetchall()
    (dk2, v2), (dk1, v1) = rows
    assert dk1 == w.device_keys["alice"] and dk2 == w.device_keys["carol"] and v1 < v2
    first.close()


def test_a_late_consent_and_its_revocation_reach_the_feed_once_each(fresh_portal, fresh_world):
    """Trips recorded before the owner consented were skipped while there was no consent; the feed
    announces the grant, in version order, so the partner knows whose history to backfill."""
    p, w = fresh_portal, fresh_world
    insurer = p.as_(w.user("insurer_b", "analyst"))
    _, head = _drain(p, insurer, 0, 1000)
    assert all(c["kind"] != "trip" for c in _drain(p, insurer, 0, 1000)[0])  # dave's consent is not yet active
    dave = p.as_(w.driver("dave"))
    granted = p.client.post("/v1/me/consents", headers=dave, json={
        "org_id": w.org_ids["insurer_b"], "scopes": ["driving_score", "trip_summary"], "purpose": "pay as you drive"})
    assert granted.status_code == 201, granted.text
    cid = granted.json()["consent_id"]
    with psycopg.connect(w.dsn) as conn:  # a trip after the grant
        conn.execute("INSERT INTO trips (device_key, start_ts, end_ts) VALUES (%s, now(), now())",
                     (w.device_keys["dave"],))
    after_grant, head2 = _drain(p, insurer, head, 1)
    kinds = [(c["kind"], c["op"]) for c in after_grant]
    assert kinds == [("consent", "upsert"), ("trip", "upsert")], kinds  # the grant first, then the new trip
    grant = after_grant[0]
    assert grant["id"] == cid and grant["data"]["vehicle_ids"] == [w.vehicle_ids["dave"]]
    assert grant["data"]["scopes"] == ["driving_score", "trip_summary"] and grant["data"]["revoked_at"] is None
    # the history before the grant is where the announcement points: the list endpoint has it
    trips = p.client.get(f"/v1/insurer/policyholders/{w.vehicle_ids['dave']}/trips", headers=insurer).json()
    assert {t["trip_id"] for t in trips["items"]} >= set(w.trip_ids["dave"])
    # revoked (twice: the second changes nothing and announces nothing)
    for _ in range(2):
        assert p.client.delete(f"/v1/me/consents/{cid}", headers=dave).status_code == 200
    revoked, _ = _drain(p, insurer, head2, 1000)
    assert [(c["kind"], c["id"]) for c in revoked] == [("consent", cid)] and revoked[0]["data"]["revoked_at"]
    # insurer_a, which dave never consented to, saw none of it
    other, _ = _drain(p, p.as_(w.user("insurer_a", "analyst")), head, 1000)
    assert all(c["kind"] != "consent" or c["id"] != cid for c in other)
    assert all(c.get("data") is None or (w.vehicle_ids["dave"] not in (c["data"].get("vehicle_ids") or [])
               and c["data"].get("vehicle_id") != w.vehicle_ids["dave"]) for c in other)


def test_erasure_reaches_the_feed_of_organisations_that_had_consent(fresh_portal, fresh_world):
    p, w = fresh_portal, fresh_world
    h = p.as_(w.user("insurer_a", "analyst"))
    other = p.as_(w.user("insurer_b", "analyst"))
    _, head = _drain(p, h, 0, 1000)
    _, other_head = _drain(p, other, 0, 1000)
    assert p.client.post("/v1/me/erasure", headers=p.as_(w.driver("alice")), json={"confirm": "ERASE"}
                         ).status_code == 200
    more, _ = _drain(p, h, head, 1000)
    deleted = {(c["kind"], c["id"]) for c in more if c["op"] == "delete"}
    assert {("trip", t) for t in w.trip_ids["alice"]} <= deleted
    assert ("consent", w.consent_ids[("alice", "insurer_a")]) in deleted
    assert all(c["op"] == "delete" for c in more)
    # an organisation alice never consented to learns nothing
    assert _drain(p, other, other_head, 1000)[0] == []


SITE = {"type": "Polygon", "coordinates": [[[7.00, 44.995], [7.02, 44.995], [7.02, 45.005], [7.00, 45.005],
                                            [7.00, 44.995]]]}


def test_a_visit_to_the_dealers_site_closes_open_leads(fresh_portal, fresh_world):
    p, w = fresh_portal, fresh_world
    admin = p.as_(w.user("dealer_a", "admin"))
    bad = [{"name": "x", "geometry": {"type": "Point", "coordinates": [7, 45]}},
           {"name": "x", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [80, 0], [80, 60], [0, 0]]]}},
           {"name": "x", "geometry": {"type": "Polygon", "coordinates": "nope"}}]
    for body in bad:
        assert p.client.post("/v1/dealer/sites", headers=admin, json=body).status_code == 422, body
    assert p.client.post("/v1/dealer/sites", headers=p.as_(w.user("dealer_a", "sales")),
                         json={"name": "x", "geometry": SITE}).status_code == 403
    site = p.client.post("/v1/dealer/sites", headers=admin, json={"name": "Workshop", "geometry": SITE}).json()
    assert 1e6 < site["area_m2"] < 2e6
    assert [s["site_id"] for s in p.client.get("/v1/dealer/sites", headers=admin).json()] == [site["site_id"]]
    assert p.client.get("/v1/dealer/sites", headers=p.as_(w.user("dealer_b", "admin"))).json() == []
    p.client.post("/v1/dealer/leads/refresh", headers=admin)
    jobs = BackgroundJobs(portal_settings(w.dsn), p.client.app.state.portal.pool)
    assert jobs.run_once()["leads_visited"] == 0
    with psycopg.connect(w.dsn) as conn:  # what analytics writes when alice parks there for 40 minutes
        conn.execute("INSERT INTO geofence_visits (device_key, geofence_id, entered_at, exited_at, dwell_s)"
                     " VALUES (%s, %s, now(), now() + interval '40 minutes', 2400)",
                     (w.device_keys["alice"], site["site_id"]))
        # carol parks there too, but she is dealer_b's customer: nothing changes for anyone
        conn.execute("INSERT INTO geofence_visits (device_key, geofence_id, entered_at, exited_at, dwell_s)"
                     " VALUES (%s, %s, now(), now() + interval '40 minutes', 2400)",
                     (w.device_keys["carol"], site["site_id"]))
    assert jobs.run_once()["leads_visited"] == 3
    leads = p.client.get("/v1/dealer/leads", headers=admin).json()["items"]
    assert {lead["state"] for lead in leads} == {"visited"} and all(lead["closed_at"] for lead in leads)
    funnel = p.client.get("/v1/dealer/leads/funnel", headers=admin).json()
    assert all(row["conversion_to_visit"] == 1.0 for row in funnel)
    assert jobs.run_once()["leads_visited"] == 0
