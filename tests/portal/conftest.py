"""Portal fixtures: a migrated database holding the known world, the app on it, logged-in clients."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from ingest.migrate import migrate
from portal_api.app import create_app
from portal_api.settings import PortalSettings

from .world import PASSWORD, World, build_world

PG_ADMIN_DSN = os.environ.get("VINSIGHT_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _new_database() -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = "vinsight_portal_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(PG_ADMIN_DSN)
    params["dbname"] = name
    return make_conninfo(**params)


def _drop(dsn: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    name = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def portal_settings(dsn: str, **overrides: object) -> PortalSettings:
    base = {"db_url": dsn, "jwt_secret": "test-secret-" + "x" * 32, "rate_limit_per_min": 100_000,
            "login_rate_limit_per_min": 100_000, "background_jobs": False, "pool_max": 8}
    return PortalSettings(**{**base, **overrides})


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """The known world, shared by a module's read-only tests."""
    dsn = _new_database()
    try:
        migrate(dsn)
        yield build_world(dsn)
    finally:
        _drop(dsn)


@pytest.fixture
def fresh_world() -> Iterator[World]:
    """The known world for one test that changes it."""
    dsn = _new_database()
    try:
        migrate(dsn)
        yield build_world(dsn)
    finally:
        _drop(dsn)


class Portal:
    """A TestClient with a token cache: ``portal.as_(email)`` gives auth headers for that user."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self._tokens: dict[str, str] = {}

    def login(self, email: str, password: str = PASSWORD) -> str:
        r = self.client.post("/v1/auth/token", data={"username": email, "password": password})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def as_(self, email: str) -> dict[str, str]:
        if email not in self._tokens:
            self._tokens[email] = self.login(email)
        return {"Authorization": f"Bearer {self._tokens[email]}"}


def make_portal(world: World, **overrides: object) -> Iterator[Portal]:
    with TestClient(create_app(portal_settings(world.dsn, **overrides)), raise_server_exceptions=False) as client:
        yield Portal(client)


@pytest.fixture(scope="module")
def portal(world: World) -> Iterator[Portal]:
    yield from make_portal(world)


@pytest.fixture
def fresh_portal(fresh_world: World) -> Iterator[Portal]:
    yield from make_portal(fresh_world)
