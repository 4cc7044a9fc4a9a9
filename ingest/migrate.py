"""Versioned SQL migrations: ``vinsight db migrate``.

Migrations are the numbered ``*.sql`` files in ``ingest/migrations``. Each is applied once, in its
own transaction, and recorded in ``schema_migrations`` with a checksum; rerunning is a no-op, and a
file edited after it was applied is an error rather than a silent divergence. A migration serves
both backends: lines starting with ``--@native `` or ``--@timescaledb `` are kept only for that
backend (see :mod:`ingest.backend`). Concurrent migrates (two hosts starting at once) are
serialised by an advisory lock.

Storage policies (retention, columnstore, chunk width, rollup refresh) depend on the deployment, not
on the schema version, so :func:`apply_storage_policies` sets them from settings after migrating.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from .backend import Backend, choose_backend

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x76696E73  # "vins"
_BACKEND_LINE = re.compile(r"^--@(native|timescaledb)(?: (.*))?$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def render(self, backend: Backend) -> str:
        """The SQL for one backend: its tagged lines untagged, the other backend's dropped."""
        out: list[str] = []
        for line in self.text.splitlines():
            m = _BACKEND_LINE.match(line)
            if m is None:
                out.append(line)
            elif m.group(1) == backend.value:
                out.append(m.group(2) or "")
        return "\n".join(out) + "\n"


@dataclass
class MigrationReport:
    backend: Backend
    applied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)


def available_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if m is None:
            raise ValueError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError("two migrations share a version number")
    return found


class MigrationError(RuntimeError):
    pass


def migrate(db_url: str, backend_preference: str = "auto", directory: Path = MIGRATIONS_DIR) -> MigrationReport:
    """Bring the database to the newest schema; safe to rerun and to run from several hosts."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            return _migrate_locked(conn, backend_preference, directory)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _migrate_locked(conn: psycopg.Connection, preference: str, directory: Path) -> MigrationReport:
    with conn.transaction():
        backend = choose_backend(conn, preference)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS vinsight_meta (key text PRIMARY KEY, value text NOT NULL,"
            " updated_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " checksum text NOT NULL, backend text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO vinsight_meta (key, value) VALUES ('backend', %s) ON CONFLICT (key) DO NOTHING",
            (backend.value,),
        )
    report = MigrationReport(backend)
    applied = {
        int(v): c for v, c in conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    }
    for migration in available_migrations(directory):
        label = f"{migration.version:04d}_{migration.name}"
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(f"migration {label} was changed after it was applied; add a new one instead")
            report.already.append(label)
            continue
        log.info("applying migration %s (%s)", label, backend.value)
        with conn.transaction():
            conn.execute(migration.render(backend))
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum, backend) VALUES (%s, %s, %s, %s)",
                (migration.version, migration.name, migration.checksum, backend.value),
            )
        report.applied.append(label)
    return report


def schema_status(db_url: str) -> dict[str, object]:
    """What ``vinsight db status`` prints: backend, applied and pending migrations."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None:
            applied: dict[int, tuple[str, datetime]] = {}
            backend = None
        else:
            applied = {
                int(v): (n, t)
                for v, n, t in conn.execute("SELECT version, name, applied_at FROM schema_migrations").fetchall()
            }
            row = conn.execute("SELECT value FROM vinsight_meta WHERE key = 'backend'").fetchone()
            backend = row[0] if row else None
    pending = [f"{m.version:04d}_{m.name}" for m in available_migrations() if m.version not in applied]
    return {
        "backend": backend,
        "applied": [f"{v:04d}_{n} at {t.astimezone(UTC).isoformat()}" for v, (n, t) in sorted(applied.items())],
        "pending": pending,
    }
