"""Consent takes effect at once both ways; every organisation read is audited and visible to the
owner; export holds everything; erasure leaves nothing about the owner in any table."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile

import psycopg

from .world import OWNERS, rows_mentioning, table_counts


def test_grant_and_revoke_are_effective_on_the_next_request(fresh_portal, fresh_world):
    p, w = fresh_portal, fresh_world
    insurer = p.as_(w.user("insurer_b", "underwriter"))
    dave = p.as_(w.driver("dave"))
    vid = w.vehicle_ids["dave"]
    assert p.client.get(f"/v1/insurer/policyholders/{vid}", headers=insurer).status_code == 404
    r = p.client.post("/v1/me/consents", headers=dave, json={
        "org_id": w.org_ids["insurer_b"], "scopes": ["driving_score"], "purpose": "usage-based premium"})
    assert r.status_code == 201, r.text
    consent = r.json()
    assert consent["active"] and consent["organisation"] == "Other Assurance"
    assert p.client.get(f"/v1/insurer/policyholders/{vid}", headers=insurer).status_code == 200
    # driving_score does not open mileage or trips
    assert p.client.get(f"/v1/insurer/policyholders/{vid}/mileage", headers=insurer).status_code == 404
    assert p.client.get(f"/v1/insurer/policyholders/{vid}/trips", headers=insurer).status_code == 404
    r = p.client.delete(f"/v1/me/consents/{consent['consent_id']}", headers=dave)
    assert r.status_code == 200 and r.json()["active"] is False and r.json()["revoked_at"]
    assert p.client.get(f"/v1/insurer/policyholders/{vid}", headers=insurer).status_code == 404
    assert vid not in {i["vehicle_id"] for i in
                       p.client.get("/v1/insurer/policyholders", headers=insurer).json()["items"]}
    # a driver cannot revoke someone else's consent
    alice_consent = w.consent_ids[("alice", "dealer_a")]
    assert p.client.delete(f"/v1/me/consents/{alice_consent}", headers=dave).status_code == 404


def test_consent_input_is_checked(fresh_portal, fresh_world):
    p, w = fresh_portal, fresh_world
    dave = p.as_(w.driver("dave"))
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    cases = [({"org_id": 999_999, "scopes": ["mileage"], "purpose": "xyz"}, 404),
             ({"org_id": w.org_ids["dealer_a"], "scopes": ["everything"], "purpose": "xyz"}, 422),
             ({"org_id": w.org_ids["dealer_a"], "scopes": [], "purpose": "xyz"}, 422),
             ({"org_id": w.org_ids["dealer_a"], "scopes": ["mileage"], "purpose": ""}, 422),
             ({"org_id": w.org_ids["dealer_a"], "scopes": ["mileage"], "purpose": "xyz", "expires_at": past}, 422),
             ({"org_id": w.org_ids["dealer_a"], "scopes": ["mileage"], "purpose": "xyz", "extra": 1}, 422)]
    for body, status in cases:
        r = p.client.post("/v1/me/consents", headers=dave, json=body)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json") and r.json()["detail"]


def test_every_organisation_read_is_in_the_owners_access_log(fresh_portal, fresh_world):
    p, w = fresh_portal, fresh_world
    alice = p.as_(w.driver("alice"))
    assert p.client.get("/v1/me/access-log", headers=alice).json()["items"] == []
    p.client.get("/v1/dealer/vehicles", headers=p.as_(w.user("dealer_a", "service_advisor")))
    p.client.get(f"/v1/insurer/policyholders/{w.vehicle_ids['alice']}/mileage",
                 headers=p.as_(w.user("insurer_a", "analyst")))
    p.client.get(f"/v1/insurer/policyholders/{w.vehicle_ids['carol']}/trips",
                 headers=p.as_(w.user("insurer_a", "analyst")))  # carol's, not alice's
    log = p.client.get("/v1/me/access-log", headers=alice).json()["items"]
    seen = {(e["who"], e["scope"], e["action"]) for e in log}
    assert ("service_advisor@dealer_a.test", "vehicle_health", "dealer_vehicles") in seen
    assert ("service_advisor@dealer_a.test", "service_contact", "dealer_vehicles") in seen
    assert ("analyst@insurer_a.test", "mileage", "insurer_mileage") in seen
    assert all(e["vehicle_id"] == w.vehicle_ids["alice"] for e in log)
    assert all(e["purpose"] for e in log) and all(e["records"] >= 1 for e in log)
    carol = p.client.get("/v1/me/access-log", headers=p.as_(w.driver("carol"))).json()["items"]
    assert {e["scope"] for e in carol} >= {"trip_summary", "location_history"}  # places read and logged
    # bob's consents are expired/revoked: nobody read him
    assert p.client.get("/v1/me/access-log", headers=p.as_(w.driver("bob"))).json()["items"] == []


def test_export_holds_everything_about_the_owner_and_nothing_else(fresh_portal, fresh_world):
    p, w = fresh_portal, fresh_world
    r = p.client.get("/v1/me/export", headers=p.as_(w.driver("alice")))
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(z.namelist())
    assert {"owner.json", "vehicles.json", "consents.json", "access_log.json", "trips.geojson",
            "driving_events.json", "scores.json", "trouble_codes.json", "samples/dev-alice.csv"} <= names
    assert json.loads(z.read("owner.json"))[0]["display_name"] == "Alice"
    trips = json.loads(z.read("trips.geojson"))
    assert len(trips["features"]) == 2 and trips["features"][0]["geometry"]["type"] == "LineString"
    samples = z.read("samples/dev-alice.csv").decode().splitlines()
    assert len(samples) == 1 + 60 and samples[0].startswith("ts,speed")
    assert not any(n.startswith("samples/dev-bob") for n in names)
    assert {v["vehicle_id"] for v in json.loads(z.read("vehicles.json"))} == {w.vehicle_ids["alice"]}


def test_erasure_removes_the_owner_from_every_table_and_touches_no_one_else(fresh_portal, fresh_world):
    p, w = fresh_portal, fresh_world
    alice = p.as_(w.driver("alice"))
    # generate personal data in the side tables too: a lead, an audit trail, a service record, a webhook delivery
    dealer = p.as_(w.user("dealer_a", "admin"))
    assert p.client.post("/v1/dealer/webhooks", headers=dealer, json={"url": "http://127.0.0.1:9/x"}
                         ).status_code == 201
    assert p.client.get("/v1/dealer/vehicles", headers=dealer).status_code == 200  # an audited read
    assert p.client.post("/v1/dealer/leads/refresh", headers=dealer).json()["created"] >= 1
    assert p.client.post(f"/v1/dealer/vehicles/{w.vehicle_ids['alice']}/service-records", headers=dealer,
                         json={"serviced_at": "2026-01-10T09:00:00Z", "odometer_km": 50000}).status_code == 201
    before = table_counts(w.dsn)
    assert rows_mentioning(w.dsn, w, "alice"), "the world must hold alice's data before erasure"
    others_before = {o: rows_mentioning(w.dsn, w, o) for o in OWNERS if o != "alice"}
    assert p.client.post("/v1/me/erasure", headers=alice, json={"confirm": "nope"}).status_code == 422
    r = p.client.post("/v1/me/erasure", headers=alice, json={"confirm": "ERASE"})
    assert r.status_code == 200, r.text
    deleted = r.json()["rows_deleted"]
    after = table_counts(w.dsn)
    assert rows_mentioning(w.dsn, w, "alice") == {}
    assert {o: rows_mentioning(w.dsn, w, o) for o in OWNERS if o != "alice"} == others_before
    for table in ("samples", "samples_daily", "samples_hourly", "trips", "driving_events", "scores", "dtc_episodes",
                  "device_events", "vehicle_health", "leads", "consents", "dead_letters", "service_records",
                  "webhook_deliveries", "audit_log", "portal_users", "vehicles", "owners"):
        assert after[table] == before[table] - deleted[table], table
        assert deleted[table] > 0, f"alice had rows in {table}"
    assert after["erasures"] == before["erasures"] + 1
    with psycopg.connect(w.dsn) as conn:
        record = conn.execute("SELECT requested_by, rows_deleted::text FROM erasures").fetchone()
        status = conn.execute("SELECT status, vehicle_id FROM devices WHERE device_id = 'dev-alice'").fetchone()
    assert record[0] == "owner" and "alice" not in record[1].lower() and "dev-" not in record[1]
    assert status == ("revoked", None)
    # the token of an erased driver is dead; others still work
    assert p.client.get("/v1/me/vehicles", headers=alice).status_code == 401
    assert p.client.get("/v1/me/vehicles", headers=p.as_(w.driver("carol"))).status_code == 200


def test_the_access_log_reads_only_its_owners_rows_however_long_the_log(fresh_portal, fresh_world):
    """An owner's list is an index range on (owner_id, audit_id), newest first, not a walk back
    through everyone's audit rows: its cost must not grow with the whole log."""
    from portal_api.routes.me import ACCESS_LOG_SQL

    p, w = fresh_portal, fresh_world
    alice = w.owner_ids["alice"]
    dealer = p.as_(w.user("dealer_a", "service_advisor"))
    for _ in range(3):
        assert p.client.get("/v1/dealer/vehicles", headers=dealer).status_code == 200
    with psycopg.connect(w.dsn) as conn:  # a busy platform: 200,000 reads since, one in a thousand of alice
        conn.execute("INSERT INTO audit_log (actor_kind, actor_id, actor_label, org_id, scope, action, owner_id,"
                     " vehicle_id, records, purpose) SELECT 'user', 1, 'bulk', NULL, 'vehicle_health', 'bulk',"
                     " CASE WHEN i %% 1000 = 0 THEN %(oid)s ELSE 1000000 + i %% 5000 END, NULL, 1, 'bulk'"
                     " FROM generate_series(1, 200000) i", {"oid": alice})
        conn.execute("ANALYZE audit_log")
        plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + ACCESS_LOG_SQL.format(where="a.owner_id = %(oid)s"),
                            {"oid": alice, "lim": 51}).fetchone()[0][0]["Plan"]

    def scans(node):
        yield node
        for child in node.get("Plans", []):
            yield from scans(child)

    audit = [n for n in scans(plan) if n.get("Relation Name") == "audit_log"]
    # one page of alice's newest rows read, not all of hers sorted, nor everyone's walked and filtered
    assert len(audit) == 1 and audit[0]["Actual Rows"] <= 51, audit
    assert audit[0].get("Rows Removed by Filter", 0) == 0, audit
    log = p.client.get("/v1/me/access-log", headers=p.as_(w.driver("alice")), params={"limit": 2}).json()
    nxt = p.client.get("/v1/me/access-log", headers=p.as_(w.driver("alice")),
                       params={"limit": 2, "cursor": log["next_cursor"]}).json()
    assert len(log["items"]) == 2 and nxt["items"] and log["items"][-1]["at"] >= nxt["items"][0]["at"]
