"""End to end through the real tiers: a recorded drive ingested by the ingest pipeline, analysed by
the analytics runner, read through the portal by each audience with consent."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
import pytest

from analytics.runner import run_once
from device_agent.replay import derive_gps_motion, read_polidriving
from ingest.maintenance import apply_storage_policies
from ingest.migrate import migrate
from ingest.pipeline import Delivery, process_delivery
from ingest.settings import IngestSettings
from ingest.store import Flush, IngestStore
from portal_api.cli import create_driver
from portal_api.security import hash_password
from vinsight.contract import SampleBatch, codec, topics
from vinsight.contract.messages import Sample

from .conftest import make_portal
from .world import PASSWORD, World

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "polidriving" / "20231222_134710_col.csv.gz"


def ingest_recorded_drive(db: str, device_id: str, end_ms: int) -> None:
    """The fixture drive moved to end at ``end_ms``, through the ingest pipeline and store."""
    rows = list(read_polidriving(FIXTURE))
    derive_gps_motion(rows)
    shift = end_ms - rows[-1].ts_ms
    samples = [Sample(i, r.ts_ms + shift, dict(r.values)) for i, r in enumerate(rows)]
    boot, now, flush = uuid.uuid4(), int(time.time() * 1000), Flush()
    for i in range(0, len(samples), 60):
        batch = SampleBatch.from_samples(device_id, boot, samples[i:i + 60])
        d = Delivery(topics.samples(device_id), codec.encode_samples_binary(batch), codec.CT_SAMPLES_BINARY, now)
        out = process_delivery(d, now)
        assert not out.dead_letters
        flush.add(d, out)
    store = IngestStore(db)
    store.write(flush)
    store.close()


@pytest.fixture
def pipeline_world(pg_dsn: str) -> World:
    migrate(pg_dsn)
    apply_storage_policies(pg_dsn, IngestSettings(db_url=pg_dsn))
    now = int(time.time() * 1000)
    ingest_recorded_drive(pg_dsn, "poli-car", now - 3 * 3_600_000)
    run_once(pg_dsn)
    w = World(pg_dsn)
    pw = hash_password(PASSWORD)
    with psycopg.connect(pg_dsn) as conn:
        out = create_driver(conn, "driver@e2e.test", "Erin", pw, [("poli-car", "ZFA31200000123456")])
        w.owner_ids["erin"] = out["owner_id"]
        w.vehicle_ids["erin"] = out["vehicles"][0]["vehicle_id"]
        for key, kind in (("dealer", "dealer"), ("insurer", "insurer")):
            org = conn.execute("INSERT INTO organisations (kind, name) VALUES (%s, %s) RETURNING org_id",
                               (kind, f"E2E {kind}")).fetchone()[0]
            w.org_ids[key] = org
            conn.execute("INSERT INTO portal_users (email, password_hash, org_id, role) VALUES (%s, %s, %s, 'admin')",
                         (f"admin@{key}.e2e", pw, org))
    return w


def test_a_recorded_drive_reaches_every_audience_once_consented(pipeline_world):
    w = pipeline_world
    vid = w.vehicle_ids["erin"]
    for p in make_portal(w):
        driver = p.as_("driver@e2e.test")
        insurer = p.as_("admin@insurer.e2e")
        dealer = p.as_("admin@dealer.e2e")
        trips = p.client.get(f"/v1/me/vehicles/{vid}/trips", headers=driver).json()["items"]
        assert trips and all(t["distance_m"] > 0 for t in trips)
        trip = p.client.get(f"/v1/me/trips/{trips[0]['trip_id']}", headers=driver).json()
        assert trip["type"] == "Feature" and trip["geometry"]["type"] == "LineString"
        assert len(trip["geometry"]["coordinates"]) >= 2
        # nothing for the organisations until the owner grants it
        assert p.client.get("/v1/insurer/policyholders", headers=insurer).json()["items"] == []
        assert p.client.get("/v1/dealer/vehicles", headers=dealer).json()["items"] == []
        for org, scopes in (("insurer", ["driving_score", "mileage", "trip_summary"]),
                            ("dealer", ["vehicle_health"])):
            r = p.client.post("/v1/me/consents", headers=driver,
                              json={"org_id": w.org_ids[org], "scopes": scopes, "purpose": "e2e programme"})
            assert r.status_code == 201
        holders = p.client.get("/v1/insurer/policyholders", headers=insurer).json()["items"]
        assert [h["vehicle_id"] for h in holders] == [vid]
        assert holders[0]["distance_km_30d"] > 1
        itrips = p.client.get(f"/v1/insurer/policyholders/{vid}/trips", headers=insurer).json()["items"]
        assert [t["trip_id"] for t in itrips] == [t["trip_id"] for t in trips]
        assert all(t["start"] is None for t in itrips)  # no location_history granted
        mileage = p.client.get(f"/v1/insurer/policyholders/{vid}/mileage", headers=insurer,
                               params={"period": "day"}).json()
        assert sum(m["distance_km"] for m in mileage) == pytest.approx(sum(t["distance_m"] for t in trips) / 1000,
                                                                       rel=0.1)
        scores = p.client.get(f"/v1/insurer/policyholders/{vid}/scores", headers=insurer,
                              params={"period": "day"}).json()
        assert scores and scores[-1]["distance_km"] > 0
        health = p.client.get(f"/v1/dealer/vehicles/{vid}", headers=dealer).json()
        assert health["distance_recorded_km"] > 1 and health["last_seen"] and health["owner"] is None
