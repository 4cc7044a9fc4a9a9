"""Reading samples out of PostgreSQL fast: binary COPY out, parsed by a compiled kernel.

Analytics reads whole vehicle-days (86,400 rows at 1 Hz). Fetching them as Python tuples costs
~1 µs per value; ``COPY (SELECT ...) TO STDOUT (FORMAT BINARY)`` hands over the server's binary
rows, and :func:`parse_copy_kernel` walks them once into one float64 matrix (NaN for NULL) plus
the int64 timestamps and device keys. The matrix is column-major (Fortran order), because the
analytics stages read whole columns: each is then a contiguous view, not a strided copy. The
plain-Python :func:`parse_copy_reference` is the
statement the tests hold the kernel to.

Every selected column must be ``real``, ``double precision`` (signals), ``integer`` (device key)
or ``timestamptz`` (time); the query text comes from :func:`samples_query`, never from a caller.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import psycopg
from psycopg import sql

from ingest.store import SIGNAL_PG_TYPES

PG_EPOCH_MS = 946_684_800_000
_HEADER = 19  # signature (11) + flags (4) + header extension length (4)
KIND_INT4, KIND_TS, KIND_F4, KIND_F8 = 0, 1, 2, 3


@dataclass(slots=True)
class SampleFrame:
    """Samples of one or many vehicles, ordered by (device_key, ts): the analytics input."""

    device_key: np.ndarray  # int64
    ts_ms: np.ndarray  # int64
    values: np.ndarray  # float64 (n, len(signals)), column-major (a column is contiguous); NaN = absent
    signals: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ts_ms)

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.signals.index(name)]

    def vehicles(self) -> list[tuple[int, int, int]]:
        """(device_key, first row, end row) for each vehicle's contiguous block."""
        if len(self) == 0:
            return []
        change = np.flatnonzero(np.diff(self.device_key)) + 1
        starts = np.concatenate(([0], change))
        ends = np.concatenate((change, [len(self)]))
        return [(int(self.device_key[s]), int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def samples_query(signals: Sequence[str]) -> sql.Composed:
    for name in signals:
        if name not in SIGNAL_PG_TYPES:
            raise ValueError(f"{name!r} is not a catalog signal")
    cols = sql.SQL(", ").join(sql.Identifier(n) for n in signals)
    return sql.SQL(
        "COPY (SELECT device_key, ts, {cols} FROM samples WHERE device_key = ANY({keys})"
        " AND ts >= {start} AND ts < {end} ORDER BY device_key, ts) TO STDOUT (FORMAT BINARY)"
    ).format(cols=cols, keys=sql.Placeholder(), start=sql.Placeholder(), end=sql.Placeholder())


def read_samples(conn: psycopg.Connection, device_keys: Sequence[int], start, end,
                 signals: Sequence[str]) -> SampleFrame:
    """Samples of ``device_keys`` with ``start <= ts < end``, one binary COPY."""
    chunks: list[bytes] = []
    with conn.cursor() as cur, cur.copy(samples_query(signals), (list(device_keys), start, end)) as cp:
        for block in cp:
            chunks.append(bytes(block))
    data = np.frombuffer(b"".join(chunks), dtype=np.uint8)
    kinds = np.array([KIND_INT4, KIND_TS] + [KIND_F4 if SIGNAL_PG_TYPES[s] == "float4" else KIND_F8
                                              for s in signals], dtype=np.int64)
    status, keys, ts, values = parse_copy_kernel(data, kinds)
    if status != 0:
        raise ValueError(f"unexpected binary COPY stream (status {status})")
    return SampleFrame(keys, ts, values, tuple(signals))


@numba.njit(cache=True)
def _be_int(data: np.ndarray, pos: int, size: int) -> np.int64:
    v = np.int64(0)
    for k in range(size):
        v = (v << np.int64(8)) | np.int64(data[pos + k])
    if size < 8 and v >= (np.int64(1) << np.int64(8 * size - 1)):
        v -= np.int64(1) << np.int64(8 * size)
    return v


@numba.njit(cache=True)
def parse_copy_kernel(data: np.ndarray, kinds: np.ndarray):
    """(status, device keys, ts ms, values) from a binary COPY stream of (int4, timestamptz, floats...)."""
    n_fields = len(kinds)
    m = n_fields - 2
    pos = _HEADER
    end = len(data)
    # count rows first so the arrays are allocated once
    rows = 0
    p = pos
    while p + 2 <= end:
        nf = _be_int(data, p, 2)
        p += 2
        if nf == -1:
            break
        if nf != n_fields:
            return 1, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((m, 0)).T
        for _f in range(n_fields):
            ln = _be_int(data, p, 4)
            p += 4
            if ln > 0:
                p += ln
        rows += 1
    keys = np.empty(rows, dtype=np.int64)
    ts = np.empty(rows, dtype=np.int64)
    # Column-major: the analytics stages read whole columns, which are then contiguous views.
    columns = np.full((m, rows), np.nan)
    values = columns.T
    p = pos
    for r in range(rows):
        p += 2
        for f in range(n_fields):
            ln = _be_int(data, p, 4)
            p += 4
            if ln < 0:
                continue
            kind = kinds[f]
            if kind == KIND_INT4:
                keys[r] = _be_int(data, p, 4)
            elif kind == KIND_TS:
                ts[r] = _be_int(data, p, 8) // 1000 + PG_EPOCH_MS
            elif kind == KIND_F4:
                bits = np.uint32(_be_int(data, p, 4) & np.int64(0xFFFFFFFF))
                values[r, f - 2] = np.array([bits], dtype=np.uint32).view(np.float32)[0]
            else:
                bits = np.uint64(_be_int(data, p, 8))
                values[r, f - 2] = np.array([bits], dtype=np.uint64).view(np.float64)[0]
            p += ln
    return 0, keys, ts, values


def parse_copy_reference(data: bytes, kinds: Sequence[int]) -> tuple[list[int], list[int], list[list[float]]]:
    """Plain Python: the same parse, with struct."""
    pos = _HEADER
    keys: list[int] = []
    ts: list[int] = []
    values: list[list[float]] = []
    while True:
        (nf,) = struct.unpack_from(">h", data, pos)
        pos += 2
        if nf == -1:
            break
        row: list[float] = []
        for kind in kinds:
            (ln,) = struct.unpack_from(">i", data, pos)
            pos += 4
            value = None
            if ln >= 0:
                fmt = {KIND_INT4: ">i", KIND_TS: ">q", KIND_F4: ">f", KIND_F8: ">d"}[kind]
                (value,) = struct.unpack_from(fmt, data, pos)
                pos += ln
            if kind == KIND_INT4:
                keys.append(value)
            elif kind == KIND_TS:
                ts.append(value // 1000 + PG_EPOCH_MS)
            else:
                row.append(float("nan") if value is None else float(value))
        values.append(row)
    return keys, ts, values
