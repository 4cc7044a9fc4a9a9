"""The durable outbox: every sample and event waits on disk until the broker has acknowledged it.

paho-mqtt keeps in-flight QoS 1 messages only in memory, so a crash, a kill -9 or a power cut would
lose whatever it had not delivered. Here each record is committed to SQLite (WAL mode,
``synchronous=FULL``: the commit is fsynced before the call returns, so it survives power loss, not
only a process crash; at 1 Hz that costs one fsync a second). A record leaves the outbox only when
the publisher reports the broker's PUBACK for the batch that carried it.

The outbox is bounded by a disk budget. When it is full the OLDEST records go first (the newest data
is the most useful to a driver and a dealer after a long outage); every dropped record is counted
persistently, and the recorder reports the count as an ``outbox_dropped`` event.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vinsight.contract import Event, EventKind, Sample

KIND_SAMPLE = 0
KIND_EVENT = 1
ROW_OVERHEAD_BYTES = 48  # rough per-row cost of SQLite's b-tree and our key columns


@dataclass(slots=True)
class OutboxRecord:
    id: int
    boot_id: uuid.UUID
    seq: int
    kind: int
    ts_ms: int
    created_ms: int
    body: dict[str, Any]

    def as_sample(self) -> Sample:
        return Sample(self.seq, self.ts_ms, self.body.get("v", {}), self.body.get("x", {}))

    def as_event(self) -> Event:
        return Event(self.seq, self.ts_ms, EventKind(self.body["k"]), self.body.get("d", {}))


class Outbox:
    def __init__(self, path: Path, max_bytes: int = 256 * 1024 * 1024) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS records (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                boot_id BLOB NOT NULL,
                seq INTEGER NOT NULL,
                kind INTEGER NOT NULL,
                ts_ms INTEGER NOT NULL,
                created_ms INTEGER NOT NULL,
                body TEXT NOT NULL,
                size INTEGER NOT NULL,
                UNIQUE (boot_id, seq)
            );
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            """
        )
        row = self._db.execute("SELECT coalesce(sum(size), 0), count(*) FROM records").fetchone()
        self._bytes, self._count = int(row[0]), int(row[1])

    # --- writing ----------------------------------------------------------------------------------

    def add_sample(self, boot_id: uuid.UUID, sample: Sample) -> int:
        body: dict[str, Any] = {"v": sample.values}
        if sample.extras:
            body["x"] = sample.extras
        return self._add(boot_id, sample.seq, KIND_SAMPLE, sample.ts_ms, body)

    def add_event(self, boot_id: uuid.UUID, event: Event) -> int:
        return self._add(boot_id, event.seq, KIND_EVENT, event.ts_ms, {"k": event.kind.value, "d": event.data})

    def add_samples(self, boot_id: uuid.UUID, samples: list[Sample]) -> None:
        """Store many samples in one transaction (loading a backlog; live recording adds one at a time)."""
        now = int(time.time() * 1000)
        rows = []
        for sample in samples:
            body: dict[str, Any] = {"v": sample.values}
            if sample.extras:
                body["x"] = sample.extras
            text = json.dumps(body, separators=(",", ":"), allow_nan=False)
            size = len(text) + ROW_OVERHEAD_BYTES
            rows.append((boot_id.bytes, sample.seq, KIND_SAMPLE, sample.ts_ms, now, text, size))
        with self._lock:
            self._make_room(sum(r[6] for r in rows))
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO records (boot_id, seq, kind, ts_ms, created_ms, body, size) VALUES (?,?,?,?,?,?,?)", rows)
            self._db.execute("COMMIT")
            self._bytes += sum(r[6] for r in rows)
            self._count += len(rows)

    def _add(self, boot_id: uuid.UUID, seq: int, kind: int, ts_ms: int, body: dict[str, Any]) -> int:
        """Store one record durably; return how many old records the disk budget dropped."""
        text = json.dumps(body, separators=(",", ":"), allow_nan=False)
        size = len(text) + ROW_OVERHEAD_BYTES
        with self._lock:
            dropped = self._make_room(size)
            self._db.execute(
                "INSERT INTO records (boot_id, seq, kind, ts_ms, created_ms, body, size) VALUES (?,?,?,?,?,?,?)",
                (boot_id.bytes, seq, kind, ts_ms, int(time.time() * 1000), text, size),
            )
            self._bytes += size
            self._count += 1
        return dropped

    def _make_room(self, size: int) -> int:
        if self._bytes + size <= self.max_bytes:
            return 0
        need = self._bytes + size - self.max_bytes
        victims = []
        freed = 0
        for rid, rsize in self._db.execute("SELECT id, size FROM records ORDER BY id"):
            victims.append(rid)
            freed += rsize
            if freed >= need:
                break
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("DELETE FROM records WHERE id = ?", [(v,) for v in victims])
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('dropped', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
            (str(len(victims)),),
        )
        self._db.execute("COMMIT")
        self._bytes -= freed
        self._count -= len(victims)
        return len(victims)

    # --- reading and acknowledging ---------------------------------------------------------------

    def pending(self, limit: int, exclude_ids: set[int] | frozenset[int] = frozenset(),
                after_id: int = 0) -> list[OutboxRecord]:
        """Oldest records first, skipping ids already in flight."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, boot_id, seq, kind, ts_ms, created_ms, body FROM records WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit + len(exclude_ids)),
            ).fetchall()
        out = [
            OutboxRecord(r[0], uuid.UUID(bytes=r[1]), r[2], r[3], r[4], r[5], json.loads(r[6]))
            for r in rows
            if r[0] not in exclude_ids
        ]
        return out[:limit]

    def acknowledge(self, ids: list[int]) -> None:
        """The broker has the records: remove them for good."""
        if not ids:
            return
        with self._lock:
            placeholders = ",".join("?" * len(ids))
            freed = self._db.execute(
                f"SELECT coalesce(sum(size), 0), count(*) FROM records WHERE id IN ({placeholders})", ids
            ).fetchone()
            self._db.execute(f"DELETE FROM records WHERE id IN ({placeholders})", ids)
            self._bytes -= int(freed[0])
            self._count -= int(freed[1])

    # --- bookkeeping ---------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    @property
    def dropped_total(self) -> int:
        return int(self.get_meta("dropped") or 0)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            oldest = self._db.execute("SELECT min(ts_ms) FROM records").fetchone()[0]
            count, size = self._count, self._bytes
        return {"records": count, "bytes": size, "max_bytes": self.max_bytes, "oldest_ts": oldest,
                "dropped_total": self.dropped_total}

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        with self._lock:
            self._db.close()
