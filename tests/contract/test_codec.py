"""Property tests of the wire codec: exact round trips, and hostile bytes never crash a decoder."""

from __future__ import annotations

import contextlib
import json
import math
import struct
import uuid
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vinsight.contract import (
    DecodeReason,
    Sample,
    SampleBatch,
    WireDecodeError,
    WireEncodeError,
    codec,
)
from vinsight.contract.signals import SIGNALS

SIGNAL_NAMES = [s.name for s in SIGNALS]
BY_NAME = {s.name: s for s in SIGNALS}


def on_grid(name: str, q: int) -> float:
    """A value exactly representable at the signal's resolution (what a sensor can report)."""
    sig = BY_NAME[name]
    return round(q * sig.resolution, codec._DECIMALS[sig.code])


@st.composite
def batches(draw, max_samples: int = 40) -> SampleBatch:
    n = draw(st.integers(1, max_samples))
    names = draw(st.lists(st.sampled_from(SIGNAL_NAMES), unique=True, max_size=8))
    extras = draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), unique=True, max_size=2))
    seq0 = draw(st.integers(0, 2**40))
    steps = draw(st.lists(st.integers(1, 1000), min_size=n - 1, max_size=n - 1))
    seq = [seq0]
    for s in steps:
        seq.append(seq[-1] + s)
    ts0 = draw(st.integers(0, 2**45))
    ts = [ts0]
    for d in draw(st.lists(st.integers(-5000, 100_000), min_size=n - 1, max_size=n - 1)):
        ts.append(ts[-1] + d)
    columns = {}
    for name in names:
        sig = BY_NAME[name]
        lo, hi = math.ceil(sig.minimum / sig.resolution), math.floor(sig.maximum / sig.resolution)
        col = [
            on_grid(name, q) if q is not None else math.nan
            for q in draw(st.lists(st.none() | st.integers(lo, hi), min_size=n, max_size=n))
        ]
        columns[name] = col
    extra_cols = {
        name: draw(st.lists(st.none() | st.floats(allow_nan=False, allow_infinity=False), min_size=n, max_size=n))
        for name in extras
        if name not in BY_NAME
    }
    extra_cols = {k: [math.nan if v is None else v for v in col] for k, col in extra_cols.items()}
    device = draw(st.from_regex(r"[a-z0-9][a-z0-9_-]{1,20}", fullmatch=True))
    return SampleBatch(device, uuid.UUID(int=draw(st.integers(0, 2**128 - 1))), seq, ts, columns, extra_cols)


def rows(batch: SampleBatch) -> list[tuple]:
    return [(s.seq, s.ts_ms, s.values, s.extras) for s in batch.samples()]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.booleans())
def test_binary_round_trip_is_exact_on_both_decoders(batch: SampleBatch, compress: bool) -> None:
    payload = codec.encode_samples_binary(batch, compress=compress)
    pure = codec.decode_samples_binary(payload, use_numpy=False)
    fast = codec.decode_samples_binary(payload, use_numpy=True)
    assert rows(pure) == rows(batch)
    assert rows(fast) == rows(batch)
    assert (pure.device_id, pure.boot_id) == (batch.device_id, batch.boot_id)
    assert isinstance(fast.seq, np.ndarray) and fast.seq.dtype == np.int64


@settings(max_examples=100)
@given(batches())
def test_json_round_trip(batch: SampleBatch) -> None:
    decoded = codec.decode_samples_json(codec.encode_samples_json(batch))
    assert decoded.rejects == []
    assert rows(decoded) == rows(batch)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_typed_errors(data: bytes) -> None:
    for use_numpy in (False, True):
        with pytest.raises(WireDecodeError):
            codec.decode_samples_binary(data, use_numpy=use_numpy)


def _with_crc(body: bytes, flags: int = 0) -> bytes:
    head = codec.MAGIC + bytes((codec.FORMAT_VERSION, flags)) + body
    return head + struct.pack("<I", zlib.crc32(head))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(batches(max_samples=10), st.data())
def test_corrupt_bodies_with_valid_checksum_never_crash(batch: SampleBatch, data) -> None:
    """An attacker can recompute the CRC: the body parser itself must hold."""
    body = bytearray(codec.encode_samples_binary(batch, compress=False)[4:-4])
    op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    pos = data.draw(st.integers(0, len(body) - 1))
    if op == "flip":
        body[pos] ^= data.draw(st.integers(1, 255))
    elif op == "cut":
        del body[pos:]
    else:
        body[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    payload = _with_crc(bytes(body))
    outcomes = []
    for use_numpy in (False, True):
        try:
            outcomes.append(rows(codec.decode_samples_binary(payload, use_numpy=use_numpy)))
        except WireDecodeError as exc:
            outcomes.append(exc.reason)
    # Both decoders agree on what a corrupted body means (the same rows or the same refusal class).
    assert isinstance(outcomes[0], DecodeReason) == isinstance(outcomes[1], DecodeReason)
    if not isinstance(outcomes[0], DecodeReason):
        assert outcomes[0] == outcomes[1]


def test_truncation_and_bit_flip_are_caught_by_the_checksum() -> None:
    batch = SampleBatch.from_samples("car-1", uuid.uuid4(), [Sample(i, 1_700_000_000_000 + i * 1000,
                                                                    {"speed": 40.0 + i}) for i in range(30)])
    payload = codec.encode_samples_binary(batch)
    with pytest.raises(WireDecodeError) as cut:
        codec.decode_samples_binary(payload[:-7])
    assert cut.value.reason is DecodeReason.BAD_CHECKSUM
    flipped = bytearray(payload)
    flipped[10] ^= 0x40
    with pytest.raises(WireDecodeError) as flip:
        codec.decode_samples_binary(bytes(flipped))
    assert flip.value.reason is DecodeReason.BAD_CHECKSUM


def test_wrong_version_and_magic_are_named() -> None:
    batch = SampleBatch.from_samples("car-1", uuid.uuid4(), [Sample(0, 0, {"rpm": 800.0})])
    payload = bytearray(codec.encode_samples_binary(batch))
    payload[2] = 9
    with pytest.raises(WireDecodeError) as exc:
        codec.decode_samples_binary(bytes(payload))
    assert exc.value.reason is DecodeReason.UNSUPPORTED_VERSION
    with pytest.raises(WireDecodeError) as exc:
        codec.decode_samples_binary(b"{}" + bytes(payload[2:]))
    assert exc.value.reason is DecodeReason.BAD_MAGIC


def test_deflate_bomb_is_refused() -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = packer.compress(b"\x00" * (codec.MAX_BODY_BYTES + 1024)) + packer.flush()
    with pytest.raises(WireDecodeError) as exc:
        codec.decode_samples_binary(_with_crc(bomb, codec.FLAG_DEFLATE))
    assert exc.value.reason is DecodeReason.TOO_LARGE


def test_unknown_signal_code_is_refused() -> None:
    body = bytearray()
    codec._put_varint(body, 5)
    body += b"car-1" + uuid.uuid4().bytes
    for v in (1, 0, 0, 0, 0, 1, 999, 0):  # n=1, ts0, seq0, empty ts/seq blocks, 1 column, code 999, all present
        codec._put_varint(body, v)
    with pytest.raises(WireDecodeError) as exc:
        codec.decode_samples_binary(_with_crc(bytes(body)))
    assert exc.value.reason is DecodeReason.UNKNOWN_SIGNAL


def test_encoder_refuses_what_the_wire_cannot_carry() -> None:
    boot = uuid.uuid4()
    with pytest.raises(WireEncodeError):
        codec.encode_samples_binary(SampleBatch("car-1", boot, [0], [0], {"speed": [math.inf]}))
    with pytest.raises(WireEncodeError):
        codec.encode_samples_binary(SampleBatch("car-1", boot, [3, 2], [0, 1], {}))
    with pytest.raises(WireEncodeError):
        codec.encode_samples_binary(SampleBatch("Bad Id!", boot, [0], [0], {}))


def test_absent_values_stay_absent() -> None:
    samples = [Sample(0, 0, {"speed": 10.0}), Sample(1, 1000, {"rpm": 900.0}), Sample(2, 2000, {})]
    batch = SampleBatch.from_samples("car-1", uuid.uuid4(), samples)
    for use_numpy in (False, True):
        decoded = codec.decode_samples_binary(codec.encode_samples_binary(batch), use_numpy=use_numpy)
        assert rows(decoded) == [(0, 0, {"speed": 10.0}, {}), (1, 1000, {"rpm": 900.0}, {}), (2, 2000, {}, {})]


def test_json_bad_sample_is_rejected_alone() -> None:
    doc = {
        "v": 1, "device_id": "car-1", "boot_id": str(uuid.uuid4()),
        "samples": [
            {"seq": 0, "ts": 1000, "values": {"speed": 12}},
            {"seq": 1, "ts": 2000, "values": {"speed": "fast"}},
            {"seq": 2, "ts": 3000, "values": {"no_such_signal": 1}},
            {"seq": 3, "ts": "x", "values": {}},
            {"seq": 4, "ts": 5000, "values": {"rpm": 700.5}},
        ],
    }
    batch = codec.decode_samples_json(json.dumps(doc).encode())
    assert [s.seq for s in batch.samples()] == [0, 4]
    assert [r.index for r in batch.rejects] == [1, 2, 3]
    assert [r.seq for r in batch.rejects] == [1, 2, 3]
    assert "speed is not a finite number" in batch.rejects[0].reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"v":1,"device_id":"car-1","boot_id":"00000000-0000-0000-0000-000000000000","samples":[{"seq":0,'
         b'"ts":1,"values":{"speed":NaN}}]}', DecodeReason.BAD_JSON),
        (b"\xff\xfe", DecodeReason.BAD_TEXT),
        (b'{"v":2}', DecodeReason.UNSUPPORTED_VERSION),
        (b'{"v":1,"device_id":"car-1","boot_id":"nope","samples":[]}', DecodeReason.SCHEMA),
        (b'{"v":1,"device_id":"x\'; DROP TABLE samples;--","boot_id":"00000000-0000-0000-0000-000000000000",'
         b'"samples":[{}]}', DecodeReason.BAD_DEVICE_ID),
        (b'{"v":1,"device_id":"car-1","boot_id":"00000000-0000-0000-0000-000000000000","samples":[]}',
         DecodeReason.EMPTY_BATCH),
        (b"[" * 100_000, DecodeReason.BAD_JSON),
    ],
)
def test_json_batch_level_errors_are_typed(payload: bytes, reason: DecodeReason) -> None:
    with pytest.raises(WireDecodeError) as exc:
        codec.decode_samples_json(payload)
    assert exc.value.reason is reason


def test_content_type_selects_the_decoder() -> None:
    batch = SampleBatch.from_samples("car-1", uuid.uuid4(), [Sample(0, 0, {"speed": 1.0})])
    for ct in (codec.CT_SAMPLES_BINARY, codec.CT_SAMPLES_JSON):
        assert rows(codec.decode_samples(codec.encode_samples(batch, ct), ct)) == rows(batch)
    with pytest.raises(WireDecodeError) as exc:
        codec.decode_samples(b"", "text/plain")
    assert exc.value.reason is DecodeReason.CONTENT_TYPE


@settings(max_examples=200)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_every_json_decoder_is_total(data: bytes) -> None:
    for decode in (codec.decode_samples_json, codec.decode_events, codec.decode_state, codec.decode_health,
                   codec.decode_config_ack):
        with contextlib.suppress(WireDecodeError):
            decode(data)
    config, errors = codec.decode_config(data)
    assert (config is None) == bool(errors)


def test_binary_is_much_smaller_than_json_per_sample() -> None:
    """A realistic 1 Hz minute: 10 OBD signals and a GPS fix, slowly varying."""
    samples = []
    for i in range(60):
        v = 50 + 10 * math.sin(i / 9)
        samples.append(Sample(i, 1_700_000_000_000 + 1000 * i, {
            "speed": round(v), "rpm": round(v * 40) + 0.25 * (i % 4), "engine_load": round(30 + v / 3, 2),
            "throttle_pos": round(15 + v / 5, 2), "coolant_temp": 90.0, "intake_temp": 31.0,
            "maf": round(v / 4, 2), "fuel_rate": round(v / 20, 1), "battery_voltage": 14.1,
            "intake_pressure": 40.0 + i % 3, "latitude": round(45.0 + i * 1.3e-4, 7),
            "longitude": round(9.0 + i * 0.9e-4, 7), "altitude": round(120 + i * 0.1, 1),
            "gps_speed": round(v + 0.3, 2), "course": 33.5, "hdop": 0.9, "satellites": 9.0, "fix_mode": 3.0,
        }))
    batch = SampleBatch.from_samples("car-0001", uuid.uuid4(), samples)
    binary = len(codec.encode_samples_binary(batch)) / 60
    naive_json = sum(len(json.dumps({"device_id": "car-0001", "boot_id": str(batch.boot_id), "seq": s.seq,
                                      "ts": s.ts_ms, **s.values})) for s in samples) / 60
    assert naive_json / binary >= 8
