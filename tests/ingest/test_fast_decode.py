"""The compiled kernels of ingest's hot path against their plain-Python references.

decode_samples_fast vs the contract decoder (pure-Python path); invalid_rows_kernel vs the
contract's sample_problems; sample_intervals_kernel vs sample_intervals_reference; and the numpy
binary COPY builder vs psycopg's own row-by-row binary COPY, read back from a real PostgreSQL.
"""

from __future__ import annotations

import math
import random
import uuid

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.copy_binary import CopyColumn, copy_buffer, float_column
from ingest.fast_decode import (
    decode_samples_fast,
    invalid_rows_kernel,
    sample_intervals_kernel,
    sample_intervals_reference,
)
from ingest.pipeline import SIGNAL_INDEX, SIGNAL_MAX, SIGNAL_MIN, SIGNAL_NAMES
from vinsight.contract import SampleBatch, WireDecodeError, codec
from vinsight.contract.signals import SIGNALS
from vinsight.contract.validation import TimeWindow, sample_problems

BY_NAME = {s.name: s for s in SIGNALS}


def on_grid(name: str, q: int) -> float:
    sig = BY_NAME[name]
    return round(q * sig.resolution, codec._DECIMALS[sig.code])


@st.composite
def batches(draw, max_samples: int = 80, extras: bool = False) -> SampleBatch:
    n = draw(st.integers(1, max_samples))
    names = draw(st.lists(st.sampled_from(SIGNAL_NAMES), unique=True, max_size=12))
    seq = [draw(st.integers(0, 2**40))]
    for step in draw(st.lists(st.integers(1, 1000), min_size=n - 1, max_size=n - 1)):
        seq.append(seq[-1] + step)
    ts = [draw(st.integers(0, 2**45))]
    for d in draw(st.lists(st.integers(-5000, 100_000), min_size=n - 1, max_size=n - 1)):
        ts.append(ts[-1] + d)
    columns = {}
    for name in names:
        sig = BY_NAME[name]
        lo, hi = math.ceil(sig.minimum / sig.resolution), math.floor(sig.maximum / sig.resolution)
        qs = draw(st.lists(st.none() | st.integers(lo, hi), min_size=n, max_size=n))
        columns[name] = [math.nan if q is None else on_grid(name, q) for q in qs]
    extra_cols = {"ext_a": [float(i) for i in range(n)]} if extras else {}
    device = draw(st.from_regex(r"[a-z0-9][a-z0-9_-]{1,20}", fullmatch=True))
    return SampleBatch(device, uuid.UUID(int=draw(st.integers(0, 2**128 - 1))), seq, ts, columns, extra_cols)


def rows(batch: SampleBatch) -> list[tuple]:
    return [(s.seq, s.ts_ms, s.values, s.extras) for s in batch.samples()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.booleans())
def test_fast_decoder_equals_the_contract_decoder(batch, extras):
    if extras:
        batch.extras = {"ext_a": [float(i) for i in range(len(batch))]}
    payload = codec.encode_samples_binary(batch)
    fast, values = decode_samples_fast(payload)
    reference = codec.decode_samples_binary(payload, use_numpy=False)
    assert (fast.device_id, fast.boot_id) == (reference.device_id, reference.boot_id)
    assert rows(fast) == rows(reference)
    assert (values is None) == bool(extras), "extras are the contract decoder's job"
    if values is not None:
        for name, col in reference.columns.items():
            assert np.array_equal(values[:, SIGNAL_INDEX[name]], np.asarray(col, dtype=float), equal_nan=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(max_samples=30), st.data())
def test_fast_decoder_fails_exactly_where_the_contract_does(batch, data):
    payload = bytearray(codec.encode_samples_binary(batch, compress=data.draw(st.booleans())))
    how = data.draw(st.sampled_from(["flip", "cut", "body_flip_with_crc"]))
    if how == "flip":
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "cut":
        payload = payload[: data.draw(st.integers(0, len(payload) - 1))]
    else:  # corrupt the body but keep the checksum right: reaches the column decoders
        i = data.draw(st.integers(4, max(4, len(payload) - 5)))
        payload[i] = data.draw(st.integers(0, 255))
        import struct
        import zlib

        payload[-4:] = struct.pack("<I", zlib.crc32(bytes(payload[:-4])))
    outcomes = []
    # the reference is the decoder ingest would otherwise run (the contract's, numpy on a server)
    for decode in (lambda p: decode_samples_fast(p)[0], codec.decode_samples_binary):
        try:
            outcomes.append(("ok", rows(decode(bytes(payload)))))
        except WireDecodeError as exc:
            outcomes.append(("error", exc.reason))
    assert outcomes[0] == outcomes[1]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_invalid_rows_kernel_agrees_with_sample_problems(data):
    n = data.draw(st.integers(1, 30))
    names = data.draw(st.lists(st.sampled_from(SIGNAL_NAMES), unique=True, min_size=1, max_size=6))
    now = 1_800_000_000_000
    ts = data.draw(st.lists(st.sampled_from([now, now - 10 * 86_400_000, now - 91 * 86_400_000, now + 60_000,
                                             now + 600_000]), min_size=n, max_size=n))
    columns = {}
    for name in names:
        sig = BY_NAME[name]
        choices = st.sampled_from([sig.minimum, sig.maximum, sig.minimum - 1, sig.maximum + 1, math.nan,
                                   (sig.minimum + sig.maximum) / 2])
        columns[name] = data.draw(st.lists(choices, min_size=n, max_size=n))
    batch = SampleBatch("dev-1", uuid.uuid4(), list(range(n)), ts, columns, {})
    values = np.full((n, len(SIGNAL_NAMES)), np.nan)
    for name, col in columns.items():
        values[:, SIGNAL_INDEX[name]] = col
    w = TimeWindow()
    bad = invalid_rows_kernel(values, np.array(ts, dtype=np.int64), SIGNAL_MIN, SIGNAL_MAX,
                              now - w.max_past_ms, now + w.max_future_ms)
    assert bad.tolist() == [bool(sample_problems(batch, i, now, w)) for i in range(n)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 10**6), max_size=60), st.integers(1, 10_000))
def test_sample_intervals_kernel_agrees_with_reference(ts, max_interval):
    got = sample_intervals_kernel(np.array(ts, dtype=np.int64), max_interval).tolist()
    assert got == sample_intervals_reference(ts, max_interval)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_copy_buffer_reads_back_like_psycopg_row_copy(pg_dsn, seed):
    """The numpy-built binary COPY stream stores exactly what psycopg's own row COPY stores."""
    rng = random.Random(seed)
    n = 500
    ints = np.array([rng.randrange(-2**31, 2**31) for _ in range(n)], dtype=np.int64)
    bigs = np.array([rng.randrange(-2**62, 2**62) for _ in range(n)], dtype=np.int64)
    ts = np.array([rng.randrange(0, 4_000_000_000_000) for _ in range(n)], dtype=np.int64)
    f4 = np.array([rng.choice([math.nan, rng.uniform(-1e6, 1e6)]) for _ in range(n)])
    f8 = np.array([rng.choice([math.nan, rng.uniform(-180, 180)]) for _ in range(n)])
    uuids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(n)]
    nullable = ints % 3 == 0
    cols = [CopyColumn("a", "int4", ints, nullable), CopyColumn("b", "int8", bigs), CopyColumn("t", "timestamptz", ts),
            CopyColumn("u", "uuid", np.frombuffer(b"".join(u.bytes for u in uuids), np.uint8).reshape(n, 16)),
            float_column("r", "float4", f4), float_column("d", "float8", f8)]
    ddl = "(a int4, b int8, t timestamptz, u uuid, r real, d double precision)"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE fast {ddl}")
        conn.execute(f"CREATE TABLE slow {ddl}")
        with conn.cursor() as cur, cur.copy("COPY fast FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(copy_buffer(cols))
        from datetime import UTC, datetime

        with conn.cursor() as cur, cur.copy("COPY slow FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["int4", "int8", "timestamptz", "uuid", "float4", "float8"])
            for i in range(n):
                cp.write_row((None if nullable[i] else int(ints[i]), int(bigs[i]),
                              datetime.fromtimestamp(int(ts[i]) / 1000, UTC), uuids[i],
                              None if math.isnan(f4[i]) else float(f4[i]), None if math.isnan(f8[i]) else float(f8[i])))
        fast = conn.execute("SELECT * FROM fast").fetchall()
        slow = conn.execute("SELECT * FROM slow").fetchall()
    assert fast == slow and len(fast) == n
