"""Which storage backend this database runs: the one place that decides.

With the TimescaleDB extension available, samples become a hypertable with a columnstore policy, the
rollups are continuous aggregates and retention is a Timescale policy. Without it (CI's plain
PostgreSQL 15, or a managed PostgreSQL that lacks the extension) samples are natively range-
partitioned by day, partitions are created ahead and dropped for retention by ``ingest.maintenance``,
and the rollups are tables that ``vinsight_refresh_rollups()`` maintains from an invalidation log.
Relation and column names are the same on both, so every query above this layer is the same.

The choice is made once, at the first ``vinsight db migrate``, and recorded in ``vinsight_meta``;
later runs use the recorded one, because a database cannot switch backends under existing data.
"""

from __future__ import annotations

import enum
import logging

import psycopg

log = logging.getLogger(__name__)


class Backend(enum.StrEnum):
    TIMESCALEDB = "timescaledb"
    NATIVE = "native"


class BackendError(RuntimeError):
    pass


def recorded_backend(conn: psycopg.Connection) -> Backend | None:
    """The backend recorded by an earlier migrate, or None on a fresh database."""
    row = conn.execute(
        "SELECT to_regclass('vinsight_meta') IS NOT NULL"
    ).fetchone()
    if not row or not row[0]:
        return None
    found = conn.execute("SELECT value FROM vinsight_meta WHERE key = 'backend'").fetchone()
    return Backend(found[0]) if found else None


def timescaledb_available(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return row is not None


def choose_backend(conn: psycopg.Connection, preference: str = "auto") -> Backend:
    """Decide the backend for a database (``preference``: auto, timescaledb or native).

    ``auto`` takes TimescaleDB when the extension can be created (it must be in
    ``shared_preload_libraries``), else native. Asking for ``timescaledb`` where it cannot be had is
    an error, not a silent fallback. Must run inside the migration's transaction.
    """
    recorded = recorded_backend(conn)
    if recorded is not None:
        if preference not in ("auto", recorded.value):
            raise BackendError(
                f"this database already uses the {recorded.value} backend; it cannot switch to {preference}"
            )
        return recorded
    if preference == Backend.NATIVE:
        return Backend.NATIVE
    if timescaledb_available(conn):
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            return Backend.TIMESCALEDB
        except psycopg.Error as exc:
            if preference == Backend.TIMESCALEDB:
                raise BackendError(f"TimescaleDB is installed but cannot be created: {exc}") from exc
            log.warning("TimescaleDB is installed but not loadable (%s); using native partitioning", exc)
            return Backend.NATIVE
    if preference == Backend.TIMESCALEDB:
        raise BackendError("the timescaledb extension is not available on this server")
    return Backend.NATIVE
