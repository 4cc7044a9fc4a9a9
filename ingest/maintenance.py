"""Storage policies and upkeep, for both backends.

:func:`apply_storage_policies` turns the deployment's settings into TimescaleDB policies (retention,
columnstore, continuous-aggregate refresh, chunk width) or, natively, into rows of ``vinsight_meta``
that :func:`run_maintenance` follows: partitions ahead, retention by dropping partitions, and the
incremental rollup refresh. On TimescaleDB its background jobs do all of that and
:func:`run_maintenance` only reports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from .backend import Backend, recorded_backend
from .partitions import drop_expired_partitions, ensure_partitions_ahead
from .settings import IngestSettings

log = logging.getLogger(__name__)

# How far back the continuous aggregates look for invalidated buckets: ingest accepts samples up to
# 90 days old, so late data inside that window always reaches the rollups.
CAGG_START_OFFSET_DAYS = 92


def apply_storage_policies(db_url: str, settings: IngestSettings) -> Backend:
    with psycopg.connect(db_url, autocommit=True) as conn:
        backend = recorded_backend(conn)
        if backend is None:
            raise RuntimeError("the database has no schema yet: run `vinsight db migrate` first")
        policy = {
            "chunk_days": settings.chunk_days,
            "retention_days": settings.retention_days,
            "columnstore_after_days": settings.columnstore_after_days,
            "partitions_ahead_days": settings.partitions_ahead_days,
        }
        with conn.transaction():
            for key, value in policy.items():
                conn.execute(
                    "INSERT INTO vinsight_meta (key, value) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                    (key, str(value)),
                )
            if backend is Backend.TIMESCALEDB:
                _timescale_policies(conn, settings)
        if backend is Backend.NATIVE:
            run_maintenance(db_url)
    return backend


def _timescale_policies(conn: psycopg.Connection, s: IngestSettings) -> None:
    """Policies are replaced, not added if missing: a changed setting must take effect."""
    days = "make_interval(days => %s)"
    conn.execute(f"SELECT set_chunk_time_interval('samples', {days})", (s.chunk_days,))
    conn.execute("CALL remove_columnstore_policy('samples', if_exists => true)")
    conn.execute(f"CALL add_columnstore_policy('samples', after => {days})", (s.columnstore_after_days,))
    conn.execute("SELECT remove_retention_policy('samples', if_exists => true)")
    conn.execute(f"SELECT add_retention_policy('samples', drop_after => {days})", (s.retention_days,))
    for view, end_offset, schedule in (("samples_hourly", "1 hour", "10 minutes"),
                                       ("samples_daily", "1 hour", "1 hour")):
        conn.execute("SELECT remove_continuous_aggregate_policy(%s, if_exists => true)", (view,))
        conn.execute(
            f"SELECT add_continuous_aggregate_policy(%s, start_offset => {days},"
            " end_offset => %s::interval, schedule_interval => %s::interval)",
            (view, CAGG_START_OFFSET_DAYS, end_offset, schedule),
        )


@dataclass
class MaintenanceReport:
    backend: Backend
    partitions_created: list[str] = field(default_factory=list)
    partitions_dropped: list[str] = field(default_factory=list)
    rollup_buckets_refreshed: int = 0


def _meta_int(conn: psycopg.Connection, key: str, default: int) -> int:
    row = conn.execute("SELECT value FROM vinsight_meta WHERE key = %s", (key,)).fetchone()
    return int(row[0]) if row else default


def run_maintenance(db_url: str, now: datetime | None = None) -> MaintenanceReport:
    """One pass of upkeep (native backend): partitions ahead, retention, rollup refresh."""
    today = (now or datetime.now(UTC)).date()
    with psycopg.connect(db_url, autocommit=True) as conn:
        backend = recorded_backend(conn)
        if backend is None:
            raise RuntimeError("the database has no schema yet: run `vinsight db migrate` first")
        report = MaintenanceReport(backend)
        if backend is Backend.TIMESCALEDB:
            return report  # TimescaleDB's background jobs own all of it
        chunk_days = _meta_int(conn, "chunk_days", 1)
        report.partitions_created = ensure_partitions_ahead(
            conn, today, _meta_int(conn, "partitions_ahead_days", 3), chunk_days)
        # Rollups first: pending invalidations are computed while their samples still exist, so
        # retention takes raw rows and leaves the hourly and daily figures.
        report.rollup_buckets_refreshed = refresh_rollups(conn)
        report.partitions_dropped = drop_expired_partitions(
            conn, today, _meta_int(conn, "retention_days", 730), chunk_days)
    return report


def refresh_rollups(conn: psycopg.Connection) -> int:
    """Native: recompute the hourly/daily buckets that changed since the last refresh."""
    with conn.transaction():
        row = conn.execute("SELECT vinsight_refresh_rollups()").fetchone()
    return int(row[0]) if row else 0
