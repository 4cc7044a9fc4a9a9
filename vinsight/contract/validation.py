"""Semantic checks of decoded samples: physically valid ranges and believable timestamps.

The codec answers "is this a well-formed batch?"; this module answers "is each sample in it
believable?". A sample that fails goes to dead letters alone, with the reason; its neighbours are
stored. Both the device (to avoid sending junk) and ingest (which trusts nothing) use these checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .messages import SampleBatch
from .signals import BY_NAME

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """How far from the server's clock a sample's timestamp may be.

    Devices buffer offline for days (the outbox holds weeks at 1 Hz), so the past bound is
    generous; a Pi without RTC or GPS fix boots at 1970 or at its last shutdown time, which the
    past bound rejects until the clock is disciplined. The future bound allows for clock drift.
    """

    max_past_ms: int = 90 * DAY_MS
    max_future_ms: int = 5 * 60_000


def sample_problems(batch: SampleBatch, index: int, now_ms: int, window: TimeWindow = TimeWindow()) -> list[str]:
    """Everything wrong with sample ``index`` of ``batch``; an empty list means it is valid."""
    problems: list[str] = []
    ts = int(batch.ts_ms[index])
    if ts < now_ms - window.max_past_ms:
        problems.append(f"timestamp {ts} is more than {window.max_past_ms // DAY_MS} days in the past")
    elif ts > now_ms + window.max_future_ms:
        problems.append(f"timestamp {ts} is more than {window.max_future_ms // 1000} s in the future")
    for name, col in batch.columns.items():
        v = float(col[index])
        if math.isnan(v):
            continue
        sig = BY_NAME[name]
        if not sig.minimum <= v <= sig.maximum:
            problems.append(f"{name}={v} outside [{sig.minimum}, {sig.maximum}] {sig.unit}")
    return problems


def invalid_sample_mask(batch: SampleBatch, now_ms: int, window: TimeWindow = TimeWindow()):
    """Vectorised form for ingest: a boolean numpy array, True where a sample is invalid.

    Same rules as :func:`sample_problems`, which the tests hold it to."""
    import numpy as np

    ts = np.asarray(batch.ts_ms, dtype=np.int64)
    bad = (ts < now_ms - window.max_past_ms) | (ts > now_ms + window.max_future_ms)
    for name, col in batch.columns.items():
        sig = BY_NAME[name]
        v = np.asarray(col, dtype=np.float64)
        bad |= ~np.isnan(v) & ((v < sig.minimum) | (v > sig.maximum))
    return bad
