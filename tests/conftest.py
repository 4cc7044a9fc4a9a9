"""Fixtures shared by every room's tests: the real PostgreSQL and MQTT broker, and the shared data.

The services are the machine's own (PostgreSQL on 127.0.0.1:5432 with trust auth, Mosquitto on
127.0.0.1:1883; ``.ci/run`` starts them when they are not running). Each test that needs a database
gets a fresh one, dropped afterwards, so tests never see each other's rows. MQTT tests isolate
themselves by unique device ids and share-group names (see ``unique_id``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# The portal's list endpoints send pre-built JSON; under test each page is also checked against its
# response model (portal_api.pagination.page_response). Set before anything imports the portal.
os.environ.setdefault("VINSIGHT_PORTAL_CHECK_PAGES", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("VINSIGHT_SHARED_DATA", ROOT.parent / "shared" / "data"))
PG_ADMIN_DSN = os.environ.get("VINSIGHT_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
MQTT_HOST = os.environ.get("VINSIGHT_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("VINSIGHT_TEST_MQTT_PORT", "1883"))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that read it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mqtt_broker() -> tuple[str, int]:
    """The real broker's address. Its absence is a failure, not a skip: CI starts one."""
    assert _reachable(MQTT_HOST, MQTT_PORT), f"no MQTT broker on {MQTT_HOST}:{MQTT_PORT} (.ci/run starts one)"
    return MQTT_HOST, MQTT_PORT


@pytest.fixture
def unique_id() -> str:
    """A fresh lowercase id usable as a device id, topic segment or share group."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = "vinsight_test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(PG_ADMIN_DSN)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
