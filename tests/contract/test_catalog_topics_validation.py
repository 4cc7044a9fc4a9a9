"""The catalog agrees with python-obd; topics parse as laid out; validation's two forms agree."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vinsight.contract import SampleBatch, codec, topics
from vinsight.contract.signals import BY_CODE, SIGNALS, Source
from vinsight.contract.validation import TimeWindow, invalid_sample_mask, sample_problems


def test_catalog_is_self_consistent() -> None:
    assert len({s.code for s in SIGNALS}) == len(SIGNALS)
    assert 0 not in BY_CODE  # code 0 marks extras on the wire
    for s in SIGNALS:
        assert s.minimum < s.maximum, s.name
        assert s.resolution > 0 and 0 < s.rate_hz <= 50 and 1 <= s.priority <= 9, s.name
        assert s.name.isidentifier() and s.name == s.name.lower(), s.name  # also a SQL column name
        assert (s.pid is not None) == (s.source is Source.OBD), s.name


def test_catalog_pids_match_python_obd_commands() -> None:
    obd = pytest.importorskip("obd")
    for s in SIGNALS:
        if s.obd_command is None:
            continue
        command = obd.commands[s.obd_command]
        if s.pid is not None:
            assert command.command == f"01{s.pid}".encode(), s.name
            assert command.mode == 1


def test_topics_round_trip_and_reject_strangers() -> None:
    for build, kind in ((topics.samples, "samples"), (topics.events, "events"), (topics.state, "state"),
                        (topics.health, "health"), (topics.config_ack, "config"),
                        (topics.config_command, "config")):
        parsed = topics.parse(build("car-7"))
        assert (parsed.device_id, parsed.kind) == ("car-7", kind)
    for bad in ("vinsight/v2/data/car-7/samples", "vinsight/v1/data/car-7/config", "vinsight/v1/data/+/samples",
                "other/v1/data/car-7/samples", "vinsight/v1/data/CAR/samples", "vinsight/v1/data/car-7"):
        with pytest.raises(topics.TopicError):
            topics.parse(bad)
    assert topics.shared("ingest", topics.data_filter()) == "$share/ingest/vinsight/v1/data/+/+"
    with pytest.raises(topics.TopicError):
        topics.samples("../etc")


def test_acl_patterns_confine_a_device_to_its_own_subtrees() -> None:
    writes = [p.split(" ", 2)[2] for p in topics.DEVICE_ACL_PATTERNS if p.startswith("pattern write")]
    reads = [p.split(" ", 2)[2] for p in topics.DEVICE_ACL_PATTERNS if p.startswith("pattern read")]
    assert all("%u" in p for p in writes + reads)
    assert {p.split("/")[2] for p in writes} == {"data", "status"} and [p.split("/")[2] for p in reads] == ["cmd"]


def test_config_validation_names_each_bad_field() -> None:
    config, errors = codec.decode_config(
        b'{"v":1,"version":3,"signals":{"rpm":{"rate_hz":99},"warp":{}},"batch_max_samples":0,"color":"red"}'
    )
    assert config is None
    text = " | ".join(errors)
    assert "signals.rpm.rate_hz" in text and "signals.warp" in text and "batch_max_samples" in text
    assert "color: unknown setting" in text
    config, errors = codec.decode_config(
        b'{"v":1,"version":4,"signals":{"rpm":{"rate_hz":2,"priority":1}},"batch_max_age_s":10}'
    )
    assert errors == [] and config is not None
    assert config.signals["rpm"].rate_hz == 2 and config.batch_max_age_s == 10.0
    assert codec.decode_config(codec.encode_config(config)) == (config, [])


NOW = 1_800_000_000_000


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.integers(NOW - 200 * 86_400_000, NOW + 86_400_000),
            st.none() | st.floats(-100, 400, allow_nan=False),
            st.none() | st.floats(-200, 200, allow_nan=False),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_vectorised_validation_matches_the_per_sample_rules(rows) -> None:
    batch = SampleBatch(
        "car-1", uuid.uuid4(), list(range(len(rows))), [r[0] for r in rows],
        {"speed": [math.nan if r[1] is None else r[1] for r in rows],
         "latitude": [math.nan if r[2] is None else r[2] for r in rows]},
    )
    window = TimeWindow()
    mask = invalid_sample_mask(batch, NOW, window)
    expected = np.array([bool(sample_problems(batch, i, NOW, window)) for i in range(len(rows))])
    assert (mask == expected).all()


def test_problems_say_what_is_wrong() -> None:
    batch = SampleBatch("car-1", uuid.uuid4(), [0], [NOW + 3_600_000], {"speed": [300.0]})
    problems = sample_problems(batch, 0, NOW)
    assert any("future" in p for p in problems) and any("speed=300.0" in p for p in problems)
