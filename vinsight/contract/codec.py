"""Encoding and decoding of everything on the wire.

Sample batches have two forms, told apart by the MQTT v5 content type:

* ``application/vnd.vinsight.samples.v1+binary`` — compact and columnar (the default)::

      'V' 'S' | version u8 = 1 | flags u8 (bit 0: body is raw-deflated)
      body:
        device id        varint length + ASCII
        boot id          16 bytes (UUID)
        n                varint, 1..MAX_SAMPLES
        ts0, seq0        zig-zag varint (Unix ms), varint
        ts deltas        varint byte length + (n-1) zig-zag varints
        seq steps        varint byte length + (n-1) varints of (seq[i] - seq[i-1] - 1)
        column count     varint
        per column:      varint signal code (0 = extra: varint length + UTF-8 name follows)
                         u8 presence (0 = every sample, 1 = bitmap of ceil(n/8) bytes follows)
                         varint byte length + values: catalog signals as zig-zag varint deltas of
                         round(value / resolution); extras as little-endian float64
      crc32 (LE u32) of every byte before it

  Delta coding of quantised values makes slowly changing signals cost one byte each; the byte
  length before each block lets the server decode a whole column with numpy at once.

* ``application/vnd.vinsight.samples.v1+json`` — the same content as JSON, for debugging.

Events, status and configuration are low-rate and always JSON.

Decoding is written for hostile input: every failure is a :class:`WireDecodeError` with a reason.
"""

from __future__ import annotations

import json
import math
import struct
import uuid
import zlib
from collections.abc import Sequence
from typing import Any

from .errors import DecodeReason, WireDecodeError, WireEncodeError
from .messages import (
    EVENT_REQUIRED_DATA,
    AgentConfig,
    ConfigAck,
    ConnectionState,
    DeviceHealth,
    DeviceState,
    Event,
    EventBatch,
    EventKind,
    Sample,
    SampleBatch,
    SampleReject,
    SignalPlan,
)
from .signals import BY_CODE, BY_NAME, Signal
from .topics import DEVICE_ID_RE

CT_SAMPLES_BINARY = "application/vnd.vinsight.samples.v1+binary"
CT_SAMPLES_JSON = "application/vnd.vinsight.samples.v1+json"
CT_EVENTS_JSON = "application/vnd.vinsight.events.v1+json"
CT_STATUS_JSON = "application/vnd.vinsight.status.v1+json"
CT_CONFIG_JSON = "application/vnd.vinsight.config.v1+json"

FORMAT_VERSION = 1
MAGIC = b"VS"
FLAG_DEFLATE = 0x01
MAX_PAYLOAD_BYTES = 1 << 20  # what the broker should also enforce (message_size_limit)
MAX_BODY_BYTES = 8 << 20  # decompressed; a deflate bomb stops here
MAX_SAMPLES = 20_000
MAX_COLUMNS = 256
MAX_EXTRA_NAME = 64
_Q_LIMIT = 1 << 62

# Decimal places to round a dequantised value to, so 0.1 * 3 comes back as 0.3.
_DECIMALS = {
    s.code: max(0, -math.floor(math.log10(s.resolution)) + (0 if round(math.log10(s.resolution)) ==
                                                             math.log10(s.resolution) else 1))
    for s in BY_CODE.values()
}


# --- varints ----------------------------------------------------------------------------------


def _put_varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    return (value << 1) if value >= 0 else ((-value << 1) - 1)


def _unzigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


class _Reader:
    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise WireDecodeError(DecodeReason.TRUNCATED, f"needed a byte at offset {self.pos}")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise WireDecodeError(DecodeReason.TRUNCATED, f"needed {n} bytes at offset {self.pos}")
        chunk = self.buf[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self) -> int:
        shift = 0
        result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise WireDecodeError(DecodeReason.BAD_VARINT, f"varint longer than 10 bytes at {self.pos}")


def _decode_varints_py(block: bytes, count: int) -> list[int]:
    r = _Reader(block)
    out = [r.varint() for _ in range(count)]
    if r.pos != len(block):
        raise WireDecodeError(DecodeReason.TRAILING_BYTES, f"{len(block) - r.pos} stray bytes in a column")
    return out


def _decode_varints_np(block: bytes, count: int):  # -> numpy uint64 array
    import numpy as np

    a = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(a < 0x80)
    if len(ends) != count or (count and ends[-1] != len(a) - 1):
        raise WireDecodeError(DecodeReason.BAD_VARINT, f"column holds {len(ends)} varints, expected {count}")
    if count == 0:
        return np.zeros(0, dtype=np.uint64)
    return _varints_at(a, ends, np)


def _varints_at(a, ends, np):  # -> numpy uint64 array
    """The varints of byte array ``a`` whose last bytes sit at ``ends`` (non-empty, checked by the caller)."""
    starts = np.empty(len(ends), dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > 10:
        raise WireDecodeError(DecodeReason.BAD_VARINT, "varint longer than 10 bytes")
    position = np.arange(len(a), dtype=np.int64) - np.repeat(starts, lengths)
    parts = (a & 0x7F).astype(np.uint64) << (position * 7).astype(np.uint64)
    return np.add.reduceat(parts, starts)


def _numpy():
    try:
        import numpy

        return numpy
    except ImportError:  # the device has no numpy; the pure path is exact, only slower
        return None


# --- sample batches: binary -------------------------------------------------------------------


def encode_samples_binary(batch: SampleBatch, *, compress: bool = True) -> bytes:
    """Encode a batch; raise :class:`WireEncodeError` for what the contract cannot carry."""
    n = len(batch.seq)
    if not 1 <= n <= MAX_SAMPLES:
        raise WireEncodeError(f"a batch holds 1..{MAX_SAMPLES} samples, not {n}")
    if not DEVICE_ID_RE.match(batch.device_id):
        raise WireEncodeError(f"invalid device id {batch.device_id!r}")
    body = bytearray()
    dev = batch.device_id.encode("ascii")
    _put_varint(body, len(dev))
    body += dev
    body += batch.boot_id.bytes
    _put_varint(body, n)
    ts = [int(t) for t in batch.ts_ms]
    seq = [int(s) for s in batch.seq]
    if seq[0] < 0:
        raise WireEncodeError("sequence numbers start at 0")
    _put_varint(body, _zigzag(ts[0]))
    _put_varint(body, seq[0])
    block = bytearray()
    for i in range(1, n):
        _put_varint(block, _zigzag(ts[i] - ts[i - 1]))
    _put_varint(body, len(block))
    body += block
    block = bytearray()
    for i in range(1, n):
        step = seq[i] - seq[i - 1] - 1
        if step < 0:
            raise WireEncodeError("sequence numbers in a batch must strictly increase")
        _put_varint(block, step)
    _put_varint(body, len(block))
    body += block

    columns = [(BY_NAME[name], col) for name, col in batch.columns.items()]
    extras = list(batch.extras.items())
    _put_varint(body, len(columns) + len(extras))
    for sig, col in columns:
        _put_varint(body, sig.code)
        present = _presence(body, col, n, sig.name)
        block = bytearray()
        previous = 0
        res = sig.resolution
        for i in present:
            q = round(float(col[i]) / res)
            if not -_Q_LIMIT < q < _Q_LIMIT:
                raise WireEncodeError(f"{sig.name}={col[i]} is beyond what the wire carries")
            _put_varint(block, _zigzag(q - previous))
            previous = q
        _put_varint(body, len(block))
        body += block
    for name, col in extras:
        raw_name = name.encode("utf-8")
        if not 0 < len(raw_name) <= MAX_EXTRA_NAME or name in BY_NAME:
            raise WireEncodeError(f"invalid extra name {name!r}")
        _put_varint(body, 0)
        _put_varint(body, len(raw_name))
        body += raw_name
        present = _presence(body, col, n, name)
        block = bytearray(struct.pack(f"<{len(present)}d", *(float(col[i]) for i in present)))
        _put_varint(body, len(block))
        body += block

    flags = 0
    payload = bytes(body)
    if compress:
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        deflated = packer.compress(payload) + packer.flush()
        if len(deflated) < len(payload):
            payload, flags = deflated, FLAG_DEFLATE
    out = MAGIC + bytes((FORMAT_VERSION, flags)) + payload
    return out + struct.pack("<I", zlib.crc32(out))


def _presence(body: bytearray, col: Sequence[float], n: int, name: str) -> list[int]:
    if len(col) != n:
        raise WireEncodeError(f"column {name} has {len(col)} values for {n} samples")
    present = []
    for i in range(n):
        v = float(col[i])
        if math.isnan(v):
            continue
        if math.isinf(v):
            raise WireEncodeError(f"{name} is infinite at sample {i}")
        present.append(i)
    if len(present) == n:
        body.append(0)
    else:
        body.append(1)
        bitmap = bytearray((n + 7) // 8)
        for i in present:
            bitmap[i >> 3] |= 1 << (i & 7)
        body += bitmap
    return present


def decode_samples_binary(payload: bytes, *, use_numpy: bool | None = None) -> SampleBatch:
    """Decode untrusted bytes into a batch. ``use_numpy=None`` uses numpy when it is installed;
    both paths give identical results (a property test holds them to it)."""
    try:
        return _decode_binary(payload, use_numpy)
    except WireDecodeError:
        raise
    except Exception as exc:  # defence in depth: a decoder bug must not kill an ingest worker
        raise WireDecodeError(DecodeReason.TRUNCATED, f"undecodable batch ({type(exc).__name__}: {exc})") from exc


def _decode_binary(payload: bytes, use_numpy: bool | None) -> SampleBatch:
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireDecodeError(DecodeReason.TOO_LARGE, f"payload of {len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    if len(payload) < 8:
        raise WireDecodeError(DecodeReason.TOO_SHORT, f"payload of {len(payload)} bytes")
    if payload[:2] != MAGIC:
        raise WireDecodeError(DecodeReason.BAD_MAGIC, f"starts with {payload[:2]!r}, not {MAGIC!r}")
    if payload[2] != FORMAT_VERSION:
        raise WireDecodeError(DecodeReason.UNSUPPORTED_VERSION, f"format version {payload[2]}")
    (crc,) = struct.unpack("<I", payload[-4:])
    if zlib.crc32(payload[:-4]) != crc:
        raise WireDecodeError(DecodeReason.BAD_CHECKSUM, "crc32 mismatch: the payload was altered or cut")
    flags = payload[3]
    body = payload[4:-4]
    if flags & ~FLAG_DEFLATE:
        raise WireDecodeError(DecodeReason.UNSUPPORTED_VERSION, f"unknown flags {flags:#x}")
    if flags & FLAG_DEFLATE:
        try:
            unpacker = zlib.decompressobj(-15)
            body = unpacker.decompress(body, MAX_BODY_BYTES)
        except zlib.error as exc:
            raise WireDecodeError(DecodeReason.DECOMPRESSION, str(exc)) from None
        if unpacker.unconsumed_tail:
            raise WireDecodeError(DecodeReason.TOO_LARGE, f"body inflates past {MAX_BODY_BYTES} bytes")
        if not unpacker.eof:
            raise WireDecodeError(DecodeReason.DECOMPRESSION, "deflate stream is incomplete")
    np = _numpy() if use_numpy in (None, True) else None
    if use_numpy and np is None:
        raise RuntimeError("numpy decoding requested but numpy is not installed")

    r = _Reader(body)
    dev_raw = r.take(r.varint())
    try:
        device_id = dev_raw.decode("ascii")
    except UnicodeDecodeError:
        raise WireDecodeError(DecodeReason.BAD_DEVICE_ID, "device id is not ASCII") from None
    if not DEVICE_ID_RE.match(device_id):
        raise WireDecodeError(DecodeReason.BAD_DEVICE_ID, f"invalid device id {device_id[:80]!r}")
    boot_id = uuid.UUID(bytes=r.take(16))
    n = r.varint()
    if n == 0:
        raise WireDecodeError(DecodeReason.EMPTY_BATCH, "batch has no samples")
    if n > MAX_SAMPLES:
        raise WireDecodeError(DecodeReason.TOO_LARGE, f"{n} samples > {MAX_SAMPLES}")
    ts0 = _unzigzag(r.varint())
    seq0 = r.varint()
    ts_block = r.take(r.varint())
    seq_block = r.take(r.varint())
    if np is not None:
        ts_d = _decode_varints_np(ts_block, n - 1)
        ts_d = ((ts_d >> np.uint64(1)).astype(np.int64)) ^ -((ts_d & np.uint64(1)).astype(np.int64))
        ts = np.empty(n, dtype=np.int64)
        ts[0] = ts0
        ts[1:] = ts_d
        ts = np.cumsum(ts)
        seq = np.empty(n, dtype=np.int64)
        seq[0] = seq0
        seq[1:] = _decode_varints_np(seq_block, n - 1).astype(np.int64) + 1
        if n > 1 and (seq[1:] < 1).any():
            raise WireDecodeError(DecodeReason.BAD_SEQUENCE, "sequence step overflows")
        seq = np.cumsum(seq)
        if seq[-1] < seq0 or seq[-1] >= 1 << 62:
            raise WireDecodeError(DecodeReason.BAD_SEQUENCE, "sequence number out of range")
    else:
        ts = [ts0]
        for d in _decode_varints_py(ts_block, n - 1):
            ts.append(ts[-1] + _unzigzag(d))
        seq = [seq0]
        for d in _decode_varints_py(seq_block, n - 1):
            seq.append(seq[-1] + d + 1)
        if seq[-1] >= 1 << 62:
            raise WireDecodeError(DecodeReason.BAD_SEQUENCE, "sequence number out of range")

    ncols = r.varint()
    if ncols > MAX_COLUMNS:
        raise WireDecodeError(DecodeReason.TOO_LARGE, f"{ncols} columns > {MAX_COLUMNS}")
    columns: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    pending: list[tuple[Signal, bytes | None, int, int, int]] = []  # numpy path: located, not decoded
    pending_names: set[str] = set()
    for _ in range(ncols):
        code = r.varint()
        if code == 0:
            raw_name = r.take(r.varint())
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError:
                raise WireDecodeError(DecodeReason.BAD_TEXT, "extra name is not UTF-8") from None
            if not 0 < len(raw_name) <= MAX_EXTRA_NAME or name in BY_NAME:
                raise WireDecodeError(DecodeReason.SCHEMA, f"invalid extra name {name[:80]!r}")
            if name in extras:
                raise WireDecodeError(DecodeReason.DUPLICATE_SIGNAL, f"extra {name!r} appears twice")
            present = _read_presence(r, n, np)
            block = r.take(r.varint())
            count = len(present) if np is None else int(present.sum())
            if len(block) != 8 * count:
                raise WireDecodeError(DecodeReason.TRUNCATED, f"extra {name!r} has {len(block)} bytes")
            values = struct.unpack(f"<{count}d", block)
            if any(not math.isfinite(v) for v in values):
                raise WireDecodeError(DecodeReason.SCHEMA, f"extra {name!r} carries a non-finite value")
            extras[name] = _scatter(values, present, n, np, 1.0, None)
            continue
        sig = BY_CODE.get(code)
        if sig is None:
            raise WireDecodeError(DecodeReason.UNKNOWN_SIGNAL, f"signal code {code} is not in the v1 catalog")
        if sig.name in columns or sig.name in pending_names:
            raise WireDecodeError(DecodeReason.DUPLICATE_SIGNAL, f"{sig.name} appears twice")
        if np is not None:
            # Only locate the column here; all catalog columns are decoded together below, in a
            # fixed number of numpy calls, instead of a dozen calls per column.
            mode = r.byte()
            if mode == 0:
                bitmap, count = None, n
            elif mode == 1:
                bitmap = r.take((n + 7) // 8)
                bits = int.from_bytes(bitmap, "little")
                if bits >> n:
                    raise WireDecodeError(DecodeReason.SCHEMA, "presence bitmap marks samples past the end")
                count = bits.bit_count()
            else:
                raise WireDecodeError(DecodeReason.SCHEMA, f"presence mode {mode}")
            length = r.varint()
            start = r.pos
            r.take(length)
            pending.append((sig, bitmap, count, start, length))
            pending_names.add(sig.name)
            continue
        present = _read_presence(r, n, np)
        block = r.take(r.varint())
        q, acc = [], 0
        for d in _decode_varints_py(block, len(present)):
            acc += _unzigzag(d)
            q.append(acc)
        columns[sig.name] = _scatter(q, present, n, np, sig.resolution, _DECIMALS[sig.code])
    if pending:
        columns.update(_decode_columns_np(body, pending, n, np))
    if r.pos != len(body):
        raise WireDecodeError(DecodeReason.TRAILING_BYTES, f"{len(body) - r.pos} bytes after the last column")
    return SampleBatch(device_id, boot_id, seq, ts, columns, extras)


def _decode_columns_np(body: bytes, pending: list, n: int, np) -> dict[str, Any]:
    """Decode every located catalog column at once (server side, numpy).

    Same result as the per-column path, which the property tests hold it to: the varint blocks are
    decoded as one array, each column's deltas are summed within its own segment, and values land in
    one (columns x samples) matrix through the stacked presence bitmaps.
    """
    counts = np.array([c for _, _, c, _, _ in pending], dtype=np.int64)
    total = int(counts.sum())
    raw = np.frombuffer(b"".join(body[st:st + ln] for _, _, _, st, ln in pending), dtype=np.uint8)
    lengths = np.array([ln for *_, ln in pending], dtype=np.int64)
    block_ends = np.cumsum(lengths)
    ends = np.flatnonzero(raw < 0x80)
    # every block must hold exactly its count of complete varints
    per_block = np.diff(np.concatenate(([0], np.searchsorted(ends, block_ends, side="left"))))
    if len(ends) != total or not np.array_equal(per_block, counts):
        raise WireDecodeError(DecodeReason.BAD_VARINT, "a column's varints do not match its sample count")
    nonempty = lengths > 0
    if nonempty.any() and not (raw[block_ends[nonempty] - 1] < 0x80).all():
        raise WireDecodeError(DecodeReason.BAD_VARINT, "a column ends inside a varint")
    out = np.full((len(pending), n), np.nan)
    if total:
        u = _varints_at(raw, ends, np)
        z = ((u >> np.uint64(1)).astype(np.int64)) ^ -((u & np.uint64(1)).astype(np.int64))
        cs = np.cumsum(z)  # wraps on hostile input; the per-segment difference below is still exact
        seg_first = np.cumsum(counts) - counts
        base = np.where(seg_first > 0, cs[np.maximum(seg_first - 1, 0)], 0)
        q = cs - np.repeat(base, counts)
        res = np.repeat(np.array([sig.resolution for sig, *_ in pending]), counts)
        vals = q.astype(np.float64) * res
        decimals = np.array([_DECIMALS[sig.code] if _DECIMALS[sig.code] is not None else -1
                             for sig, *_ in pending])
        dec_per_value = np.repeat(decimals, counts)
        for d in np.unique(decimals):
            if d >= 0:
                sel = dec_per_value == d
                vals[sel] = np.round(vals[sel], int(d))
        present = np.ones((len(pending), n), dtype=bool)
        for j, (_sig, bitmap, _c, _st, _ln) in enumerate(pending):
            if bitmap is not None:
                present[j] = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")[:n]
        out[present] = vals
    return {sig.name: out[j] for j, (sig, *_rest) in enumerate(pending)}


def _read_presence(r: _Reader, n: int, np):
    mode = r.byte()
    if mode == 0:
        return np.ones(n, dtype=bool) if np is not None else list(range(n))
    if mode != 1:
        raise WireDecodeError(DecodeReason.SCHEMA, f"presence mode {mode}")
    bitmap = r.take((n + 7) // 8)
    if np is not None:
        bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
        if bits[n:].any():
            raise WireDecodeError(DecodeReason.SCHEMA, "presence bitmap marks samples past the end")
        return bits[:n].astype(bool)
    present = [i for i in range(n) if bitmap[i >> 3] >> (i & 7) & 1]
    if any(bitmap[i >> 3] >> (i & 7) & 1 for i in range(n, len(bitmap) * 8)):
        raise WireDecodeError(DecodeReason.SCHEMA, "presence bitmap marks samples past the end")
    return present


def _scatter(values, present, n: int, np, resolution: float, decimals: int | None):
    if np is not None:
        out = np.full(n, np.nan)
        vals = np.asarray(values, dtype=np.float64) * resolution
        out[present] = np.round(vals, decimals) if decimals is not None else vals
        return out
    out = [math.nan] * n
    for i, v in zip(present, values, strict=True):
        out[i] = round(v * resolution, decimals) if decimals is not None else float(v)
    return out


# --- sample batches: JSON ---------------------------------------------------------------------


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def _loads(payload: bytes) -> Any:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireDecodeError(DecodeReason.TOO_LARGE, f"payload of {len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        raise WireDecodeError(DecodeReason.BAD_TEXT, "payload is not UTF-8") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise WireDecodeError(DecodeReason.BAD_JSON, str(exc)[:200]) from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, int | float)) and not isinstance(v, bool) and math.isfinite(v)


def _header(doc: Any, list_key: str) -> tuple[str, uuid.UUID, list]:
    if not isinstance(doc, dict):
        raise WireDecodeError(DecodeReason.SCHEMA, "top level is not an object")
    if doc.get("v") != FORMAT_VERSION:
        raise WireDecodeError(DecodeReason.UNSUPPORTED_VERSION, f"v={str(doc.get('v'))[:20]}")
    device_id = doc.get("device_id")
    if not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id):
        raise WireDecodeError(DecodeReason.BAD_DEVICE_ID, f"invalid device_id {str(device_id)[:80]!r}")
    try:
        boot_id = uuid.UUID(str(doc.get("boot_id")))
    except ValueError:
        raise WireDecodeError(DecodeReason.SCHEMA, "boot_id is not a UUID") from None
    items = doc.get(list_key)
    if not isinstance(items, list):
        raise WireDecodeError(DecodeReason.SCHEMA, f"{list_key} is not a list")
    if not items:
        raise WireDecodeError(DecodeReason.EMPTY_BATCH, f"no {list_key}")
    if len(items) > MAX_SAMPLES:
        raise WireDecodeError(DecodeReason.TOO_LARGE, f"{len(items)} {list_key} > {MAX_SAMPLES}")
    return device_id, boot_id, items


def encode_samples_json(batch: SampleBatch) -> bytes:
    doc = {
        "v": FORMAT_VERSION,
        "device_id": batch.device_id,
        "boot_id": str(batch.boot_id),
        "samples": [
            {"seq": s.seq, "ts": s.ts_ms, "values": s.values, **({"extras": s.extras} if s.extras else {})}
            for s in batch.samples()
        ],
    }
    try:
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as exc:
        raise WireEncodeError(str(exc)) from None


def _sample_from_json(item: Any) -> Sample:
    """One JSON sample, or ValueError saying what is wrong with it (the batch survives)."""
    if not isinstance(item, dict):
        raise ValueError("sample is not an object")
    seq, ts, values, extras = item.get("seq"), item.get("ts"), item.get("values"), item.get("extras", {})
    if not _is_int(seq) or not 0 <= seq < 1 << 62:
        raise ValueError("seq is not a non-negative integer")
    if not _is_int(ts) or not -(1 << 62) < ts < 1 << 62:
        raise ValueError("ts is not an integer (Unix ms)")
    if not isinstance(values, dict) or not isinstance(extras, dict):
        raise ValueError("values/extras are not objects")
    for name, v in values.items():
        if name not in BY_NAME:
            raise ValueError(f"unknown signal {name[:64]!r}")
        if not _is_number(v):
            raise ValueError(f"{name} is not a finite number")
    for name, v in extras.items():
        if not 0 < len(name.encode()) <= MAX_EXTRA_NAME or name in BY_NAME:
            raise ValueError(f"invalid extra name {name[:64]!r}")
        if not _is_number(v):
            raise ValueError(f"extra {name[:64]} is not a finite number")
    return Sample(seq, ts, {k: float(v) for k, v in values.items()}, {k: float(v) for k, v in extras.items()})


def decode_samples_json(payload: bytes) -> SampleBatch:
    """Decode a JSON batch. A malformed sample becomes a reject; its neighbours survive."""
    device_id, boot_id, items = _header(_loads(payload), "samples")
    good: list[Sample] = []
    rejects: list[SampleReject] = []
    seen: set[int] = set()
    for i, item in enumerate(items):
        try:
            s = _sample_from_json(item)
            if s.seq in seen:
                raise ValueError(f"seq {s.seq} repeats within the batch")
            seen.add(s.seq)
            good.append(s)
        except ValueError as exc:
            seq = item.get("seq") if isinstance(item, dict) and _is_int(item.get("seq")) else None
            rejects.append(SampleReject(i, f"{DecodeReason.SCHEMA.value}: {exc}", item, seq))
    good.sort(key=lambda s: s.seq)
    batch = SampleBatch.from_samples(device_id, boot_id, good) if good else SampleBatch(
        device_id, boot_id, [], [], {}, {})
    batch.rejects = rejects
    return batch


# --- one entry point for sample payloads -------------------------------------------------------


def encode_samples(batch: SampleBatch, content_type: str = CT_SAMPLES_BINARY) -> bytes:
    if content_type == CT_SAMPLES_BINARY:
        return encode_samples_binary(batch)
    if content_type == CT_SAMPLES_JSON:
        return encode_samples_json(batch)
    raise WireEncodeError(f"unknown content type {content_type!r}")


def decode_samples(payload: bytes, content_type: str | None) -> SampleBatch:
    if content_type == CT_SAMPLES_BINARY:
        return decode_samples_binary(payload)
    if content_type == CT_SAMPLES_JSON:
        return decode_samples_json(payload)
    raise WireDecodeError(DecodeReason.CONTENT_TYPE, f"unknown content type {str(content_type)[:100]!r}")


# --- events -------------------------------------------------------------------------------------


def encode_events(batch: EventBatch) -> bytes:
    doc = {
        "v": FORMAT_VERSION,
        "device_id": batch.device_id,
        "boot_id": str(batch.boot_id),
        "events": [{"seq": e.seq, "ts": e.ts_ms, "kind": e.kind.value, "data": e.data} for e in batch.events],
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def decode_events(payload: bytes) -> EventBatch:
    device_id, boot_id, items = _header(_loads(payload), "events")
    events: list[Event] = []
    rejects: list[SampleReject] = []
    for i, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ValueError("event is not an object")
            seq, ts, kind, data = item.get("seq"), item.get("ts"), item.get("kind"), item.get("data", {})
            if not _is_int(seq) or not 0 <= seq < 1 << 62:
                raise ValueError("seq is not a non-negative integer")
            if not _is_int(ts) or not -(1 << 62) < ts < 1 << 62:
                raise ValueError("ts is not an integer (Unix ms)")
            try:
                kind = EventKind(kind)
            except ValueError:
                raise ValueError(f"unknown event kind {str(kind)[:40]!r}") from None
            if not isinstance(data, dict):
                raise ValueError("data is not an object")
            missing = [k for k in EVENT_REQUIRED_DATA[kind] if k not in data]
            if missing:
                raise ValueError(f"{kind.value} lacks {missing}")
            events.append(Event(seq, ts, kind, data))
        except ValueError as exc:
            seq = item.get("seq") if isinstance(item, dict) and _is_int(item.get("seq")) else None
            rejects.append(SampleReject(i, f"{DecodeReason.SCHEMA.value}: {exc}", item, seq))
    return EventBatch(device_id, boot_id, events, rejects)


# --- status and configuration --------------------------------------------------------------------


def encode_state(state: DeviceState) -> bytes:
    return json.dumps({
        "v": FORMAT_VERSION, "state": state.state.value, "ts": state.ts_ms,
        "boot_id": str(state.boot_id) if state.boot_id else None,
        "agent_version": state.agent_version, "config_version": state.config_version,
    }, separators=(",", ":")).encode()


def decode_state(payload: bytes) -> DeviceState:
    doc = _loads(payload)
    try:
        boot = doc.get("boot_id")
        return DeviceState(ConnectionState(doc["state"]), int(doc["ts"]), uuid.UUID(boot) if boot else None,
                           str(doc.get("agent_version", "")), int(doc.get("config_version", 0)))
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise WireDecodeError(DecodeReason.SCHEMA, f"state message: {exc}") from None


def encode_health(health: DeviceHealth) -> bytes:
    return json.dumps({
        "v": FORMAT_VERSION, "ts": health.ts_ms, "boot_id": str(health.boot_id), "adapter": health.adapter,
        "rates_hz": health.rates_hz, "outbox": health.outbox, "power": health.power, "gps": health.gps,
    }, separators=(",", ":"), allow_nan=False, default=str).encode()


def decode_health(payload: bytes) -> DeviceHealth:
    doc = _loads(payload)
    try:
        return DeviceHealth(int(doc["ts"]), uuid.UUID(doc["boot_id"]), dict(doc.get("adapter", {})),
                            {str(k): float(v) for k, v in doc.get("rates_hz", {}).items()},
                            dict(doc.get("outbox", {})), dict(doc.get("power", {})), dict(doc.get("gps", {})))
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise WireDecodeError(DecodeReason.SCHEMA, f"health message: {exc}") from None


def encode_config(config: AgentConfig) -> bytes:
    doc: dict[str, Any] = {"v": FORMAT_VERSION, "version": config.version,
                           "signals": {n: {"rate_hz": p.rate_hz, "priority": p.priority}
                                       for n, p in config.signals.items()}}
    for key in ("batch_max_samples", "batch_max_age_s", "heartbeat_interval_s", "low_voltage_cutoff_v"):
        if getattr(config, key) is not None:
            doc[key] = getattr(config, key)
    return json.dumps(doc, separators=(",", ":")).encode()


_CONFIG_BOUNDS = {
    "batch_max_samples": (1, MAX_SAMPLES, int),
    "batch_max_age_s": (0.1, 3600.0, float),
    "heartbeat_interval_s": (5.0, 86400.0, float),
    "low_voltage_cutoff_v": (9.0, 14.0, float),
}


def decode_config(payload: bytes) -> tuple[AgentConfig | None, list[str]]:
    """Parse and validate a configuration command. Returns (config, []) or (None, errors), where
    every error names the offending field, so the agent can acknowledge a rejection usefully."""
    try:
        doc = _loads(payload)
    except WireDecodeError as exc:
        return None, [str(exc)]
    if not isinstance(doc, dict):
        return None, ["configuration is not a JSON object"]
    errors: list[str] = []
    if doc.get("v") != FORMAT_VERSION:
        errors.append(f"v must be {FORMAT_VERSION}")
    version = doc.get("version")
    if not _is_int(version) or version < 0:
        errors.append("version must be a non-negative integer")
    signals: dict[str, SignalPlan] = {}
    raw_signals = doc.get("signals", {})
    if not isinstance(raw_signals, dict):
        errors.append("signals must be an object of name -> {rate_hz, priority}")
        raw_signals = {}
    for name, plan in raw_signals.items():
        if name not in BY_NAME:
            errors.append(f"signals.{name}: not in the catalog")
            continue
        if not isinstance(plan, dict):
            errors.append(f"signals.{name}: must be an object")
            continue
        rate, prio = plan.get("rate_hz", BY_NAME[name].rate_hz), plan.get("priority", BY_NAME[name].priority)
        if not _is_number(rate) or not 0 <= rate <= 50:
            errors.append(f"signals.{name}.rate_hz must be a number in 0..50")
            continue
        if not _is_int(prio) or not 1 <= prio <= 9:
            errors.append(f"signals.{name}.priority must be an integer in 1..9")
            continue
        signals[name] = SignalPlan(float(rate), int(prio))
    values: dict[str, Any] = {}
    for key, (lo, hi, kind) in _CONFIG_BOUNDS.items():
        if key not in doc:
            continue
        v = doc[key]
        ok = _is_int(v) if kind is int else _is_number(v)
        if not ok or not lo <= v <= hi:
            errors.append(f"{key} must be a {kind.__name__} in {lo}..{hi}")
        else:
            values[key] = kind(v)
    unknown = set(doc) - {"v", "version", "signals", *_CONFIG_BOUNDS}
    errors.extend(f"{k}: unknown setting" for k in sorted(unknown))
    if errors:
        return None, errors
    return AgentConfig(version=version, signals=signals, **values), []


def encode_config_ack(ack: ConfigAck) -> bytes:
    return json.dumps({"v": FORMAT_VERSION, "version": ack.version, "status": ack.status,
                       "errors": ack.errors, "ts": ack.ts_ms}, separators=(",", ":")).encode()


def decode_config_ack(payload: bytes) -> ConfigAck:
    doc = _loads(payload)
    try:
        return ConfigAck(int(doc["version"]), str(doc["status"]), [str(e) for e in doc.get("errors", [])],
                         int(doc.get("ts", 0)))
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise WireDecodeError(DecodeReason.SCHEMA, f"config ack: {exc}") from None

