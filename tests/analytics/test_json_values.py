"""The converter analytics results and the data export go through before they become JSON."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from analytics.json_values import json_value


@dataclasses.dataclass
class _Battery:
    resting_v: float
    days: int


def test_every_kind_of_value_becomes_plain_json():
    when = dt.datetime(2026, 11, 24, 5, 0, tzinfo=dt.UTC)
    value = {
        1: np.float64(12.5), "n": np.int32(7), "nan": float("nan"), "inf": np.float64("inf"), "ok": True,
        "when": when, "day": dt.date(2026, 11, 24), "raw": b"\x00\xff", "view": memoryview(b"\x01"),
        "battery": _Battery(12.4, 3), "frame": pd.DataFrame({"a": [1, 2], "b": [0.5, None]}),
        "nested": [(np.float32(0.25), None, "text")],
    }
    out = json_value(value)
    assert out == {
        "1": 12.5, "n": 7, "nan": None, "inf": None, "ok": True,
        "when": "2026-11-24T05:00:00+00:00", "day": "2026-11-24", "raw": "00ff", "view": "01",
        "battery": {"resting_v": 12.4, "days": 3}, "frame": [{"a": 1, "b": 0.5}, {"a": 2, "b": None}],
        "nested": [[0.25, None, "text"]],
    }
    assert type(out["n"]) is int and type(out["1"]) is float
    json.dumps(out, allow_nan=False)  # strict JSON: no NaN, no Infinity, nothing json cannot write


@given(st.recursive(st.none() | st.booleans() | st.integers(-2**62, 2**62) | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                    max_leaves=20))
def test_any_nesting_of_plain_values_is_strict_json_and_keeps_finite_values(value):
    out = json_value(value)
    json.dumps(out, allow_nan=False)

    def same(a, b):  # finite values kept as they are, non-finite floats as null
        if isinstance(a, float) and not math.isfinite(a):
            return b is None
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        return a == b and type(a) is type(b)

    assert same(value, out)
