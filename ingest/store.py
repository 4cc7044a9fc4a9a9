"""Writes what the pipeline produced, one flush per transaction, exactly once.

A flush is everything buffered since the last commit: sample rows of many messages, events, status
updates and dead letters. :meth:`IngestStore.write` commits all of it in one transaction and only
then may the worker acknowledge those messages to the broker, so a crash anywhere before the commit
means the broker redelivers and nothing is lost.

Exactly once comes from the unique key (device, ts, boot, seq) on samples (and (device, boot, seq)
on events). The fast path COPYs straight into ``samples`` under a savepoint; redelivery is rare, so
only when that COPY hits the unique key does the flush take the slow path: COPY into a temporary
staging table and ``INSERT ... ON CONFLICT DO NOTHING`` from it, which stores the new rows and skips
the ones already there.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import errors, sql
from psycopg.types.json import Jsonb

from vinsight.contract.messages import EventKind
from vinsight.contract.signals import SIGNALS, Signal

from .backend import Backend, recorded_backend
from .copy_binary import CopyColumn, copy_buffer, float_column
from .partitions import ensure_partitions, partition_start
from .pipeline import SIGNAL_NAMES, DeadLetter, Delivery, IngestReason, Outcome, SampleRows, jsonable

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
_VIN = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")
_DTC = re.compile(r"^[PCBU][0-9A-F]{4}$")


def signal_pg_type(sig: Signal) -> str:
    """float4 where the signal's range / resolution fits float32's 24-bit mantissa, else float8."""
    return "float8" if (sig.maximum - sig.minimum) / sig.resolution > 2**24 else "float4"


SIGNAL_PG_TYPES: dict[str, str] = {s.name: signal_pg_type(s) for s in SIGNALS}


@dataclass
class Flush:
    """Messages buffered for one transaction, with what the pipeline made of each."""

    items: list[tuple[Delivery, Outcome]] = field(default_factory=list)
    rows: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, delivery: Delivery, outcome: Outcome) -> None:
        self.items.append((delivery, outcome))
        if outcome.samples is not None:
            self.rows += len(outcome.samples)
        else:
            self.rows += 1

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class WriteResult:
    samples_offered: int = 0
    samples_inserted: int = 0
    events_inserted: int = 0
    dead_letters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    used_dedup_path: bool = False
    newest_sample_ms: int | None = None


class IngestStore:
    """One database connection and the caches a worker keeps across flushes."""

    def __init__(self, db_url: str, *, require_provisioned: bool = False, connect_timeout_s: float = 5.0) -> None:
        self.db_url = db_url
        self.require_provisioned = require_provisioned
        self.connect_timeout_s = connect_timeout_s
        self.conn: psycopg.Connection | None = None
        self.backend: Backend | None = None
        self.chunk_days = 1
        self._devices: dict[str, tuple[int, str]] = {}
        self._devices_fetched = time.monotonic()
        self.registry_ttl_s = 30.0  # a revocation reaches running workers within this
        self._partitions: set[date] = set()

    # --- connection --------------------------------------------------------------------------------

    def connect(self) -> None:
        self.close()
        conn = psycopg.connect(self.db_url, autocommit=True, connect_timeout=int(self.connect_timeout_s))
        backend = recorded_backend(conn)
        if backend is None:
            conn.close()
            raise RuntimeError("the database has no schema: run `vinsight db migrate` first")
        row = conn.execute("SELECT value FROM vinsight_meta WHERE key = 'chunk_days'").fetchone()
        self.chunk_days = int(row[0]) if row else 1
        self.backend, self.conn = backend, conn
        self._partitions.clear()

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.closed

    # --- the write -----------------------------------------------------------------------------------

    def write(self, flush: Flush) -> WriteResult:
        """Commit the whole flush, or raise with nothing committed."""
        if not self.connected:
            self.connect()
        assert self.conn is not None
        conn = self.conn
        result = WriteResult()
        keys = self._resolve_devices({o.device_id for _, o in flush.items if o.device_id and _has_data(o)})
        samples: list[tuple[int, SampleRows]] = []
        events: list[tuple[int, Outcome]] = []
        statuses: list[tuple[int, Outcome]] = []
        dead: list[tuple[DeadLetter, bytes]] = []
        for delivery, outcome in flush.items:
            refused = list(outcome.dead_letters)
            if _has_data(outcome):
                key, status = keys.get(outcome.device_id or "", (None, "unknown"))
                if key is None or status == "revoked":
                    reason = IngestReason.REVOKED_DEVICE if status == "revoked" else IngestReason.UNKNOWN_DEVICE
                    refused.append(DeadLetter(delivery.topic, outcome.device_id, delivery.content_type, reason,
                                              f"device {outcome.device_id!r} is {status}", delivery.payload))
                else:
                    if outcome.samples is not None:
                        samples.append((key, outcome.samples))
                    if outcome.events is not None and outcome.events.events:
                        events.append((key, outcome))
                    if outcome.status is not None:
                        statuses.append((key, outcome))
            if refused:  # every dead letter, whoever refused it, is fingerprinted from its message here
                message = message_digest(delivery)
                dead.extend((d, dead_letter_fingerprint(message, d.sample_index)) for d in refused)
        if samples and self.backend is Backend.NATIVE:
            self._ensure_partitions(samples)
        with conn.transaction():
            if samples:
                self._write_samples(conn, samples, result)
            if events:
                self._write_events(conn, events, result)
            self._write_device_status(conn, samples, statuses)
            if dead:
                self._write_dead_letters(conn, dead, result)
        return result

    # --- devices -------------------------------------------------------------------------------------

    def _resolve_devices(self, device_ids: set[str]) -> dict[str, tuple[int | None, str]]:
        assert self.conn is not None
        if time.monotonic() - self._devices_fetched > self.registry_ttl_s:
            self._devices.clear()
            self._devices_fetched = time.monotonic()
        missing = [d for d in device_ids if d not in self._devices]
        if missing:
            rows = self.conn.execute(
                "SELECT device_id, device_key, status FROM devices WHERE device_id = ANY(%s)", (missing,)
            ).fetchall()
            for device_id, key, status in rows:
                self._devices[device_id] = (key, status)
            unknown = [d for d in missing if d not in self._devices]
            if unknown and not self.require_provisioned:
                rows = self.conn.execute(
                    "INSERT INTO devices (device_id, status, note) SELECT d, 'auto', 'registered by ingest'"
                    " FROM unnest(%s::text[]) AS d ON CONFLICT (device_id) DO NOTHING RETURNING device_id",
                    (sorted(unknown),),
                ).fetchall()
                rows = self.conn.execute(
                    "SELECT device_id, device_key, status FROM devices WHERE device_id = ANY(%s)", (unknown,)
                ).fetchall()
                for device_id, key, status in rows:
                    self._devices[device_id] = (key, status)
        out: dict[str, tuple[int | None, str]] = {}
        for d in device_ids:
            out[d] = self._devices.get(d, (None, "unknown"))
        return out

    def forget_device(self, device_id: str) -> None:
        """Drop a cached registry entry (after provisioning changes it)."""
        self._devices.pop(device_id, None)

    # --- samples -------------------------------------------------------------------------------------

    def _ensure_partitions(self, samples: list[tuple[int, SampleRows]]) -> None:
        assert self.conn is not None
        day_numbers: set[int] = set()
        for _, rows in samples:  # a batch spans seconds to minutes: its first and last day suffice
            day_numbers.update(range(int(rows.ts_ms.min()) // DAY_MS, int(rows.ts_ms.max()) // DAY_MS + 1))
        days = {datetime.fromtimestamp(d * 86_400, UTC).date() for d in day_numbers}
        needed = {partition_start(d, self.chunk_days) for d in days} - self._partitions
        if needed:
            ensure_partitions(self.conn, needed, self.chunk_days)
            self._partitions.update(needed)

    def _write_samples(self, conn: psycopg.Connection, samples: list[tuple[int, SampleRows]],
                       result: WriteResult) -> None:
        plain, with_extras = [], []
        for key, rows in samples:
            (with_extras if rows.extras and any((~np.isnan(v)).any() for v in rows.extras.values())
             else plain).append((key, rows))
        result.samples_offered = sum(len(r) for _, r in samples)
        result.newest_sample_ms = max(int(r.ts_ms.max()) for _, r in samples)
        copies: list[tuple[list[str], bytes | None, list[tuple[Any, ...]] | None, list[str] | None]] = []
        if plain:
            names, buffer = samples_copy_buffer(plain)
            copies.append((names, buffer, None, None))
        if with_extras:
            copies.append(_extras_rows(with_extras))
        try:
            with conn.transaction():  # savepoint: the fast path
                for names, buffer, rows_, types in copies:
                    _copy(conn, "samples", names, buffer, rows_, types)
            result.samples_inserted = result.samples_offered
        except errors.UniqueViolation:
            result.used_dedup_path = True
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS samples_staging (LIKE samples) ON COMMIT DELETE ROWS")
            inserted = 0
            for names, buffer, rows_, types in copies:
                conn.execute("TRUNCATE samples_staging")
                _copy(conn, "samples_staging", names, buffer, rows_, types)
                cols = sql.SQL(", ").join(map(sql.Identifier, names))
                cur = conn.execute(sql.SQL(
                    "INSERT INTO samples ({c}) SELECT {c} FROM samples_staging ON CONFLICT DO NOTHING"
                ).format(c=cols))
                inserted += cur.rowcount
            result.samples_inserted = inserted
        if self.backend is Backend.NATIVE:
            # every hour a batch touches (first to last: a batch spans minutes, so this is exact
            # but for an hour skipped inside a gap, which the refresh then finds empty)
            pairs = sorted({(k, h) for k, r in samples
                            for h in range(int(r.ts_ms.min()) // HOUR_MS, int(r.ts_ms.max()) // HOUR_MS + 1)})
            conn.execute(
                "INSERT INTO rollup_invalidations (device_key, bucket)"
                " SELECT k, to_timestamp(h * 3600) FROM unnest(%s::int[], %s::bigint[]) AS t(k, h)",
                ([k for k, _ in pairs], [h for _, h in pairs]),
            )

    # --- events and what they mean -------------------------------------------------------------------

    def _write_events(self, conn: psycopg.Connection, events: list[tuple[int, Outcome]], result: WriteResult) -> None:
        new: list[tuple[int, Any]] = []
        for key, outcome in events:
            batch = outcome.events
            assert batch is not None
            for e in batch.events:
                row = conn.execute(
                    "INSERT INTO device_events (device_key, boot_id, seq, ts, kind, data)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING seq",
                    (key, batch.boot_id, e.seq, _ts(e.ts_ms), e.kind.value, Jsonb(jsonable(e.data))),
                ).fetchone()
                if row is not None:
                    new.append((key, e))
        result.events_inserted = len(new)
        for key, e in sorted(new, key=lambda ke: (ke[1].ts_ms, ke[1].seq)):
            apply_event(conn, key, e)

    # --- device status -------------------------------------------------------------------------------

    def _write_device_status(self, conn: psycopg.Connection, samples: list[tuple[int, SampleRows]],
                             statuses: list[tuple[int, Outcome]]) -> None:
        seen: dict[int, list[int | None]] = {}
        for key, rows in samples:
            newest = int(rows.ts_ms.max())
            entry = seen.setdefault(key, [0, None])
            entry[1] = newest if entry[1] is None else max(entry[1], newest)
        now_ms = int(time.time() * 1000)
        for key, _ in statuses:
            seen.setdefault(key, [0, None])
        if seen:
            keys = sorted(seen)  # one order for every worker: concurrent upserts never deadlock
            conn.execute(
                "INSERT INTO device_status (device_key, last_seen, last_sample_ts)"
                " SELECT k, to_timestamp(%s / 1000.0), to_timestamp(t / 1000.0)"
                " FROM unnest(%s::int[], %s::bigint[]) AS u(k, t)"
                " ON CONFLICT (device_key) DO UPDATE SET"
                " last_seen = greatest(device_status.last_seen, EXCLUDED.last_seen),"
                " last_sample_ts = greatest(device_status.last_sample_ts, EXCLUDED.last_sample_ts),"
                " updated_at = now()",
                (now_ms, keys, [seen[k][1] for k in keys]),
            )
        for key, outcome in sorted(statuses, key=lambda ko: ko[0]):
            st = outcome.status
            assert st is not None
            f = st.fields
            if st.kind == "state":
                conn.execute(
                    "UPDATE device_status SET state = %s, state_since = to_timestamp(%s / 1000.0),"
                    " boot_id = coalesce(%s, boot_id), agent_version = coalesce(nullif(%s, ''), agent_version),"
                    " config_version = coalesce(%s, config_version), updated_at = now() WHERE device_key = %s",
                    (f["state"], f["ts_ms"], f["boot_id"], f["agent_version"], f["config_version"] or None, key),
                )
            elif st.kind == "health":
                conn.execute(
                    "UPDATE device_status SET health = %s, boot_id = coalesce(%s, boot_id), updated_at = now()"
                    " WHERE device_key = %s",
                    (Jsonb(f["health"]), f["boot_id"], key),
                )
            elif f.get("config_version") is not None:
                conn.execute(
                    "UPDATE device_status SET config_version = greatest(config_version, %s), updated_at = now()"
                    " WHERE device_key = %s",
                    (f["config_version"], key),
                )

    # --- dead letters --------------------------------------------------------------------------------

    def _write_dead_letters(self, conn: psycopg.Connection, dead: list[tuple[DeadLetter, bytes]],
                            result: WriteResult) -> None:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO dead_letters (topic, device_id, content_type, reason, detail, sample_index, sample,"
                " payload, fingerprint) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                # the same message delivered again (QoS 1 redelivery): one row, counted (migration 0010)
                " ON CONFLICT (fingerprint, reason) WHERE fingerprint IS NOT NULL DO UPDATE"
                " SET deliveries = dead_letters.deliveries + 1, last_received_at = now()",
                [(d.topic, d.device_id, d.content_type, d.reason, d.detail, d.sample_index,
                  None if d.sample is None else Jsonb(d.sample), d.payload, fingerprint) for d, fingerprint in dead],
            )
        for d, _ in dead:
            result.dead_letters[d.reason] += 1


def message_digest(d: Delivery) -> bytes:
    """SHA-256 of a message as received: its topic and payload (once per message, however many of
    its samples were refused)."""
    h = hashlib.sha256(d.topic.encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(d.payload)
    return h.digest()


def dead_letter_fingerprint(message: bytes, sample_index: int | None) -> bytes:
    """The key a dead letter is stored under (with its reason, migration 0010): the message's digest
    and the refused sample's index. The same message delivered twice (QoS 1 redelivery after a
    restart) gives the same key, so its dead letter is one row with a delivery count; device messages
    carry their boot id and sequence numbers, so two different messages do not share one."""
    return hashlib.sha256(message + b"\x00" + (b"" if sample_index is None else str(sample_index).encode())).digest()


def _has_data(outcome: Outcome) -> bool:
    return outcome.samples is not None or outcome.events is not None or outcome.status is not None


def _ts(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, UTC)


def samples_copy_buffer(batches: list[tuple[int, SampleRows]]) -> tuple[list[str], bytes]:
    """One binary COPY stream for many batches: the signals any of them carries, NULL where absent.

    A fixed number of numpy calls per flush, whatever the number of batches in it. The benchmark's
    raw-COPY baseline calls this too, so both measure the same bytes.
    """
    lengths = np.array([len(r) for _, r in batches], dtype=np.int64)
    device = np.repeat(np.array([k for k, _ in batches], dtype=np.int32), lengths)
    boots = np.frombuffer(b"".join(r.boot_id.bytes for _, r in batches), dtype=np.uint8).reshape(-1, 16)
    boot = boots[np.repeat(np.arange(len(batches)), lengths)]
    ts = np.concatenate([r.ts_ms for _, r in batches])
    seq = np.concatenate([r.seq for _, r in batches])
    interval = np.concatenate([r.interval_ms for _, r in batches])
    values = np.concatenate([r.values for _, r in batches])
    carried = np.flatnonzero(~np.isnan(values).all(axis=0))
    columns = [
        CopyColumn("device_key", "int4", device),
        CopyColumn("ts", "timestamptz", ts),
        CopyColumn("boot_id", "uuid", boot),
        CopyColumn("seq", "int8", seq),
        CopyColumn("interval_ms", "int4", interval, interval < 0),
    ]
    for j in carried:
        name = SIGNAL_NAMES[j]
        columns.append(float_column(name, SIGNAL_PG_TYPES[name], values[:, j]))
    return [c.name for c in columns], copy_buffer(columns)


def _extras_rows(batches: list[tuple[int, SampleRows]]) -> tuple[list[str], None, list[tuple[Any, ...]], list[str]]:
    """Rows that carry non-catalog values: rare, so plain per-row COPY with a jsonb column."""
    values = np.concatenate([r.values for _, r in batches])
    carried = [int(j) for j in np.flatnonzero(~np.isnan(values).all(axis=0))]
    names = [SIGNAL_NAMES[j] for j in carried]
    cols = ["device_key", "ts", "boot_id", "seq", "interval_ms", *names, "extras"]
    types = ["int4", "timestamptz", "uuid", "int8", "int4", *(SIGNAL_PG_TYPES[n] for n in names), "jsonb"]
    rows: list[tuple[Any, ...]] = []
    for key, r in batches:
        for i in range(len(r)):
            row_values = [None if np.isnan(r.values[i, j]) else float(r.values[i, j]) for j in carried]
            extras = {k: float(v[i]) for k, v in r.extras.items() if not np.isnan(v[i])}
            interval = int(r.interval_ms[i])
            rows.append((key, _ts(int(r.ts_ms[i])), r.boot_id, int(r.seq[i]), interval if interval >= 0 else None,
                         *row_values, Jsonb(extras) if extras else None))
    return cols, None, rows, types


def _copy(conn: psycopg.Connection, table: str, names: list[str], buffer: bytes | None,
          rows: list[tuple[Any, ...]] | None, types: list[str] | None) -> None:
    stmt = sql.SQL("COPY {t} ({c}) FROM STDIN (FORMAT BINARY)").format(
        t=sql.Identifier(table), c=sql.SQL(", ").join(map(sql.Identifier, names)))
    with conn.cursor() as cur, cur.copy(stmt) as cp:
        if buffer is not None:
            cp.write(buffer)
        else:
            assert rows is not None and types is not None
            cp.set_types(types)
            for row in rows:
                cp.write_row(row)


def apply_event(conn: psycopg.Connection, device_key: int, event: Any) -> None:
    """What a newly stored event changes: trouble-code episodes, MIL, the vehicle's VIN."""
    data = event.data if isinstance(event.data, dict) else {}
    at = _ts(event.ts_ms)
    kind = event.kind
    if kind in (EventKind.DTC_NEW, EventKind.DTC_CLEARED):
        code, dtc_type = str(data.get("code", "")).upper(), str(data.get("dtc_type", ""))
        if not _DTC.match(code) or dtc_type not in ("stored", "pending", "permanent"):
            log.warning("event %s of device %s has an unusable code %r/%r", kind, device_key, code, dtc_type)
            return
        if kind == EventKind.DTC_NEW:
            conn.execute(
                "INSERT INTO dtc_episodes (device_key, code, dtc_type, description, first_seen, last_seen, mil_on)"
                " VALUES (%(k)s, %(c)s, %(t)s, %(d)s, %(at)s, %(at)s, coalesce((SELECT e.kind = 'mil_on'"
                "   FROM device_events e WHERE e.device_key = %(k)s AND e.kind IN ('mil_on', 'mil_off')"
                "   AND e.ts <= %(at)s ORDER BY e.ts DESC LIMIT 1), false))"
                " ON CONFLICT (device_key, code, dtc_type) WHERE cleared_at IS NULL"
                " DO UPDATE SET last_seen = greatest(dtc_episodes.last_seen, EXCLUDED.last_seen)",
                {"k": device_key, "c": code, "t": dtc_type, "d": str(data.get("description", ""))[:200], "at": at},
            )
        else:
            conn.execute(
                "UPDATE dtc_episodes SET cleared_at = %s, last_seen = greatest(last_seen, %s)"
                " WHERE device_key = %s AND code = %s AND dtc_type = %s AND cleared_at IS NULL AND first_seen <= %s",
                (at, at, device_key, code, dtc_type, at),
            )
    elif kind in (EventKind.MIL_ON, EventKind.MIL_OFF):
        if kind == EventKind.MIL_ON:
            conn.execute("UPDATE dtc_episodes SET mil_on = true WHERE device_key = %s AND cleared_at IS NULL",
                         (device_key,))
    elif kind == EventKind.VEHICLE_IDENTIFIED:
        vin = str(data.get("vin", "")).upper()
        if not _VIN.match(vin):
            log.warning("device %s reported an invalid VIN %r", device_key, vin[:40])
            return
        row = conn.execute(
            "INSERT INTO vehicles (vin) VALUES (%s) ON CONFLICT (vin) DO UPDATE SET vin = EXCLUDED.vin"
            " RETURNING vehicle_id", (vin,)).fetchone()
        assert row is not None
        conn.execute("UPDATE devices SET vehicle_id = %s WHERE device_key = %s AND vehicle_id IS NULL",
                     (row[0], device_key))
