"""Fixtures for ingest tests: a migrated database (native backend: CI has plain PostgreSQL)."""

from __future__ import annotations

import pytest

from ingest.maintenance import apply_storage_policies
from ingest.migrate import migrate
from ingest.settings import IngestSettings


@pytest.fixture
def db(pg_dsn: str) -> str:
    """A fresh database with the full schema and default storage policies applied."""
    migrate(pg_dsn)
    apply_storage_policies(pg_dsn, IngestSettings(db_url=pg_dsn))
    return pg_dsn
