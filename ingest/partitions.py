"""Native range partitions of ``samples`` (the backend without TimescaleDB).

Partitions are ``chunk_days`` wide, aligned to UTC midnight of 2000-01-01 (the same origin
TimescaleDB buckets use), named ``samples_pYYYYMMDD`` by their first day. Maintenance creates them
ahead of time; ingest also creates any a batch needs (a device flushing a week-old outbox), under an
advisory lock so two workers never race on the same one. Retention detaches and drops whole
partitions, never deletes rows.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import psycopg

log = logging.getLogger(__name__)

ORIGIN = date(2000, 1, 1)
_LOCK_KEY = 0x70617274  # "part"
_NAME = re.compile(r"^samples_p(\d{8})$")


def partition_start(day: date, chunk_days: int) -> date:
    """First day of the partition holding ``day``."""
    offset = (day - ORIGIN).days
    return ORIGIN + timedelta(days=offset - offset % chunk_days)


def partition_name(start: date) -> str:
    return f"samples_p{start:%Y%m%d}"


def existing_partitions(conn: psycopg.Connection) -> dict[date, str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'samples'::regclass"
    ).fetchall()
    found: dict[date, str] = {}
    for (name,) in rows:
        m = _NAME.match(name)
        if m:
            found[datetime.strptime(m.group(1), "%Y%m%d").date()] = name
    return found


def ensure_partitions(conn: psycopg.Connection, days: Iterable[date], chunk_days: int) -> list[str]:
    """Create the partitions that hold ``days`` if missing; returns the names created.

    Runs in its own transaction on ``conn`` (which must not be inside one): creating a partition
    takes a strong lock on ``samples`` for a moment, which must not be held across an ingest flush.
    """
    starts = sorted({partition_start(d, chunk_days) for d in days})
    created: list[str] = []
    if not starts:
        return created
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        have = existing_partitions(conn)
        for start in starts:
            if start in have:
                continue
            end = start + timedelta(days=chunk_days)
            name = partition_name(start)
            conn.execute(
                f"CREATE TABLE {name} PARTITION OF samples FOR VALUES FROM ('{start.isoformat()} 00:00+00')"
                f" TO ('{end.isoformat()} 00:00+00')"
            )
            created.append(name)
    if created:
        log.info("created partitions %s", ", ".join(created))
    return created


def ensure_partitions_ahead(conn: psycopg.Connection, today: date, ahead_days: int, chunk_days: int) -> list[str]:
    return ensure_partitions(conn, (today + timedelta(days=i) for i in range(ahead_days + 1)), chunk_days)


def drop_expired_partitions(conn: psycopg.Connection, today: date, retention_days: int, chunk_days: int) -> list[str]:
    """Detach and drop partitions whose every row is older than the retention bound.

    ``conn`` must be in autocommit mode: DETACH ... CONCURRENTLY cannot run in a transaction, and it
    lets ingest keep writing to the other partitions meanwhile.
    """
    cutoff = today - timedelta(days=retention_days)
    dropped: list[str] = []
    for start, name in sorted(existing_partitions(conn).items()):
        if start + timedelta(days=chunk_days) <= cutoff:
            conn.execute(f"ALTER TABLE samples DETACH PARTITION {name} CONCURRENTLY")
            conn.execute(f"DROP TABLE {name}")
            dropped.append(name)
    if dropped:
        log.info("retention: dropped partitions %s", ", ".join(dropped))
    return dropped


def utc_day(ts_ms: int) -> date:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).date()
