"""Ingest's hot path in compiled kernels: binary batch decoding, validation and sample intervals.

An ingest worker spends its time per message, not per sample: decoding a 60-sample batch with
numpy calls per column costs ~0.5 ms, most of it call overhead. These numba kernels walk the
whole batch in one compiled pass (a few microseconds) and write straight into the
(samples x catalog signals) matrix that the COPY is built from.

The wire contract stays the authority. :func:`decode_samples_fast` uses its kernel only when the
kernel accepts the batch; anything unusual (extras, a malformed column, an overlong varint, values
outside what the contract allows) goes to :func:`vinsight.contract.codec.decode_samples_binary`,
which decodes it or raises the precise typed error. The tests hold each kernel to its plain-Python
reference: the contract decoder, :func:`vinsight.contract.validation.sample_problems`, and
:func:`sample_intervals_reference`.
"""

from __future__ import annotations

import struct
import uuid
import zlib

import numba
import numpy as np

from vinsight.contract import codec
from vinsight.contract.messages import SampleBatch
from vinsight.contract.signals import SIGNALS
from vinsight.contract.topics import DEVICE_ID_RE

SIGNAL_NAMES: tuple[str, ...] = tuple(s.name for s in SIGNALS)
_CODE_TO_INDEX = np.full(256, -1, dtype=np.int64)
for _j, _s in enumerate(SIGNALS):
    _CODE_TO_INDEX[_s.code] = _j
_RESOLUTION = np.array([s.resolution for s in SIGNALS], dtype=np.float64)
_DECIMALS = np.array([codec._DECIMALS[s.code] if codec._DECIMALS[s.code] is not None else -1
                      for s in SIGNALS], dtype=np.int64)
_LIMIT = 1 << 62
OK = 0
FALLBACK = 1  # anything the kernel does not take: the contract decoder decides


@numba.njit(cache=True)
def _varint(buf: np.ndarray, pos: int, end: int) -> tuple[np.uint64, int]:
    """(value, next position); next position -1 for a truncated or over-long (> 9 bytes) varint."""
    result = np.uint64(0)
    shift = np.uint64(0)
    for _k in range(9):
        if pos >= end:
            return np.uint64(0), -1
        b = np.uint64(buf[pos])
        pos += 1
        result |= (b & np.uint64(0x7F)) << shift
        if b < np.uint64(0x80):
            return result, pos
        shift += np.uint64(7)
    return np.uint64(0), -1


@numba.njit(cache=True)
def _unzigzag(u: np.uint64) -> np.int64:
    return np.int64(u >> np.uint64(1)) ^ -np.int64(u & np.uint64(1))


@numba.njit(cache=True)
def decode_body_kernel(body: np.ndarray, code_to_index: np.ndarray, resolution: np.ndarray,
                       decimals: np.ndarray, max_samples: int, max_columns: int):
    """Decode an inflated batch body: (status, device id span, boot id offset, ts, seq, values)."""
    limit = np.int64(1) << np.int64(62)
    n_sig = len(resolution)
    empty_i = np.zeros(0, dtype=np.int64)
    empty_v = np.zeros((0, n_sig), dtype=np.float64)
    end = len(body)
    dev_len, pos = _varint(body, 0, end)
    if pos < 0 or pos + np.int64(dev_len) > end:
        return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
    dev_start = pos
    pos += np.int64(dev_len)
    boot_start = pos
    pos += 16
    if pos > end:
        return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
    un, pos = _varint(body, pos, end)
    n = np.int64(un)
    if pos < 0 or n < 1 or n > max_samples:
        return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
    u, pos = _varint(body, pos, end)
    if pos < 0:
        return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
    ts = np.empty(n, dtype=np.int64)
    ts[0] = _unzigzag(u)
    u, pos = _varint(body, pos, end)
    if pos < 0 or u >= np.uint64(limit):
        return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
    seq = np.empty(n, dtype=np.int64)
    seq[0] = np.int64(u)
    for which in range(2):  # the ts deltas block, then the seq steps block
        blen, pos = _varint(body, pos, end)
        if pos < 0 or pos + np.int64(blen) > end:
            return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
        block_end = pos + np.int64(blen)
        for i in range(1, n):
            u, pos = _varint(body, pos, block_end)
            if pos < 0:
                return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
            if which == 0:
                d = _unzigzag(u)
                if abs(d) > limit or abs(ts[i - 1]) > limit:
                    return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
                ts[i] = ts[i - 1] + d
            else:
                if u >= np.uint64(limit):
                    return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
                seq[i] = seq[i - 1] + np.int64(u) + 1
                if seq[i] >= limit:
                    return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
        if pos != block_end:
            return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
    ucols, pos = _varint(body, pos, end)
    if pos < 0 or ucols > np.uint64(max_columns):
        return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
    values = np.full((n, n_sig), np.nan)
    seen = np.zeros(n_sig, dtype=np.bool_)
    nbitmap = (n + 7) // 8
    for _c in range(np.int64(ucols)):
        code, pos = _varint(body, pos, end)
        if pos < 0 or code == np.uint64(0) or code >= np.uint64(256):
            return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v  # extras and unknown codes: the contract
        j = code_to_index[np.int64(code)]
        if j < 0 or seen[j]:
            return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
        seen[j] = True
        if pos >= end:
            return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
        mode = body[pos]
        pos += 1
        bitmap_start = pos
        if mode == 1:
            pos += nbitmap
            if pos > end:
                return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
            for i in range(n, nbitmap * 8):  # bits past the last sample must be clear
                if (body[bitmap_start + (i >> 3)] >> (i & 7)) & 1:
                    return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
        elif mode != 0:
            return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
        blen, pos = _varint(body, pos, end)
        if pos < 0 or pos + np.int64(blen) > end:
            return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
        block_end = pos + np.int64(blen)
        res = resolution[j]
        dec = decimals[j]
        scale = 10.0 ** dec if dec >= 0 else 1.0
        acc = np.int64(0)
        for i in range(n):
            if mode == 1 and not ((body[bitmap_start + (i >> 3)] >> (i & 7)) & 1):
                continue
            u, pos = _varint(body, pos, block_end)
            if pos < 0:
                return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
            d = _unzigzag(u)
            if abs(d) > limit or abs(acc) > limit:
                return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
            acc += d
            v = np.float64(acc) * res
            if dec >= 0:  # numpy's round(x, dec): rint(x * 10**dec) / 10**dec
                v = np.rint(v * scale) / scale
            values[i, j] = v
        if pos != block_end:
            return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
    if pos != end:
        return FALLBACK, 0, 0, 0, empty_i, empty_i, empty_v
    return OK, dev_start, np.int64(dev_len), boot_start, ts, seq, values


def decode_samples_fast(payload: bytes) -> tuple[SampleBatch, np.ndarray | None]:
    """Decode a binary batch: (batch, values matrix or None when the contract decoder was needed).

    Raises :class:`~vinsight.contract.errors.WireDecodeError` exactly where the contract does.
    """
    payload = bytes(payload)
    if (len(payload) > codec.MAX_PAYLOAD_BYTES or len(payload) < 8 or payload[:2] != codec.MAGIC
            or payload[2] != codec.FORMAT_VERSION or payload[3] & ~codec.FLAG_DEFLATE
            or zlib.crc32(payload[:-4]) != struct.unpack("<I", payload[-4:])[0]):
        return codec.decode_samples_binary(payload), None  # raises the precise error
    body = payload[4:-4]
    if payload[3] & codec.FLAG_DEFLATE:
        try:
            unpacker = zlib.decompressobj(-15)
            body = unpacker.decompress(body, codec.MAX_BODY_BYTES)
            if unpacker.unconsumed_tail or not unpacker.eof:
                return codec.decode_samples_binary(payload), None
        except zlib.error:
            return codec.decode_samples_binary(payload), None
    status, dev_start, dev_len, boot_start, ts, seq, values = decode_body_kernel(
        np.frombuffer(body, dtype=np.uint8), _CODE_TO_INDEX, _RESOLUTION, _DECIMALS, codec.MAX_SAMPLES,
        codec.MAX_COLUMNS)
    if status != OK:
        return codec.decode_samples_binary(payload), None
    try:
        device_id = body[dev_start:dev_start + dev_len].decode("ascii")
    except UnicodeDecodeError:
        return codec.decode_samples_binary(payload), None
    if not DEVICE_ID_RE.match(device_id):
        return codec.decode_samples_binary(payload), None
    boot_id = uuid.UUID(bytes=body[boot_start:boot_start + 16])
    carried = np.flatnonzero(~np.isnan(values).all(axis=0))
    columns = {SIGNAL_NAMES[j]: values[:, j] for j in carried}
    return SampleBatch(device_id, boot_id, seq, ts, columns, {}), values


@numba.njit(cache=True)
def invalid_rows_kernel(values: np.ndarray, ts: np.ndarray, minimum: np.ndarray, maximum: np.ndarray,
                        earliest_ms: int, latest_ms: int) -> np.ndarray:
    """True for each sample with a value outside its signal's range or a timestamp outside the window."""
    n, m = values.shape
    bad = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        if ts[i] < earliest_ms or ts[i] > latest_ms:
            bad[i] = True
            continue
        for j in range(m):
            v = values[i, j]
            if v == v and (v < minimum[j] or v > maximum[j]):  # v == v: present (not NaN)
                bad[i] = True
                break
    return bad


@numba.njit(cache=True)
def sample_intervals_kernel(ts_ms: np.ndarray, max_interval_ms: int) -> np.ndarray:
    """How long each sample stands for; see :func:`sample_intervals_reference`."""
    n = len(ts_ms)
    out = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return out
    order = np.argsort(ts_ms, kind="mergesort")
    gaps = np.empty(n - 1, dtype=np.int64)
    for k in range(n - 1):
        gaps[k] = ts_ms[order[k + 1]] - ts_ms[order[k]]
    typical = np.int64(np.median(gaps))
    for k in range(n):
        g = gaps[k] if k < n - 1 else typical
        out[order[k]] = g if 0 < g <= max_interval_ms else -1
    return out


def sample_intervals_reference(ts_ms: list[int], max_interval_ms: int) -> list[int]:
    """Plain Python: each sample stands for the gap to the next one in time order; the last one
    for the median gap (numpy's median, truncated to whole ms); gaps that are zero or longer than
    ``max_interval_ms`` (a stop, a data gap) stand for nothing (-1, stored as NULL)."""
    n = len(ts_ms)
    if n < 2:
        return [-1] * n
    order = sorted(range(n), key=lambda i: ts_ms[i])
    gaps = [ts_ms[order[k + 1]] - ts_ms[order[k]] for k in range(n - 1)]
    s = sorted(gaps)
    mid = len(s) // 2
    typical = int(s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2)
    out = [-1] * n
    for k in range(n):
        g = gaps[k] if k < n - 1 else typical
        out[order[k]] = g if 0 < g <= max_interval_ms else -1
    return out


def warm_up() -> None:
    """Load (or compile, on a fresh install) every kernel now, not on the first live message."""
    from vinsight.contract.messages import Sample

    samples = [Sample(i, 1_000 * i, {"speed": 1.0 * i}) for i in range(3)]
    batch = SampleBatch.from_samples("warm-up", uuid.UUID(int=0), samples)
    _, values = decode_samples_fast(codec.encode_samples_binary(batch))
    assert values is not None
    invalid_rows_kernel(values, np.arange(3, dtype=np.int64), _RESOLUTION, _RESOLUTION, 0, 10)
    sample_intervals_kernel(np.arange(3, dtype=np.int64), 5)
