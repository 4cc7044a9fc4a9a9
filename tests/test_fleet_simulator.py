"""The fleet simulator: deterministic, valid on the wire, physically believable, and publishable.

Physics checks run on the samples as ingest would see them (quantised columns), with tolerances
that follow from the catalog resolutions (speed is whole km/h), plus the exact speed for the
acceleration bounds a driver style promises.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vinsight.contract import topics
from vinsight.contract.codec import CT_SAMPLES_BINARY, decode_samples_binary
from vinsight.contract.signals import BY_NAME
from vinsight.contract.validation import invalid_sample_mask, sample_problems
from vinsight.fleet_simulator import (
    STYLE_PARAMS,
    DriverStyle,
    FleetSimulator,
    MqttTarget,
    VehicleDrive,
    haversine_m,
    parse_style_mix,
    simulate_vehicle,
    style_for_index,
)

DAY_MS = 86_400_000
MIDNIGHT = 1_717_200_000_000 - 1_717_200_000_000 % DAY_MS  # 2024-06-01 00:00 UTC


def _fleet(**kw: object) -> FleetSimulator:
    args: dict = {"vehicles": 4, "seed": 7, "start_ms": MIDNIGHT + 8 * 3_600_000}
    args.update(kw)
    return FleetSimulator(**args)


@cache
def _drive(style: DriverStyle, index: int, hours: float, seed: int = 11, at_start: bool = True,
           start: int = MIDNIGHT + 7 * 3_600_000) -> VehicleDrive:
    return simulate_vehicle(index, hours * 3600, start, seed=seed, style=style, drive_at_start=at_start)


# --- determinism and the wire ----------------------------------------------------------------------


def test_same_seed_same_bytes_and_other_seeds_differ() -> None:
    a = list(_fleet().payloads(1800, drive_at_start=True))
    b = list(_fleet().payloads(1800, drive_at_start=True))
    c = list(_fleet(seed=8).payloads(1800, drive_at_start=True))
    assert a and a == b
    assert [p for _, p, _ in a] != [p for _, p, _ in c]
    assert all(ct == CT_SAMPLES_BINARY for _, _, ct in a)


def test_every_sample_is_valid_and_payloads_decode_to_the_same_columns() -> None:
    fleet = _fleet(vehicles=6, rate_hz=2.0, batch_seconds=30)
    batches = list(fleet.batches(3 * 3600, drive_at_start=True))
    payloads = list(fleet.payloads(3 * 3600, drive_at_start=True))
    assert len(batches) == len(payloads) > 100
    for (dev, batch), (topic, payload, _ct) in zip(batches, payloads, strict=True):
        assert topic == topics.samples(dev)
        now = int(batch.ts_ms[-1])
        assert not invalid_sample_mask(batch, now).any()
        for i in range(0, len(batch), 7):
            assert sample_problems(batch, i, now) == []
        decoded = decode_samples_binary(payload)
        assert decoded.device_id == dev and decoded.boot_id == batch.boot_id
        assert list(decoded.seq) == list(batch.seq) and list(decoded.ts_ms) == list(batch.ts_ms)
        assert set(decoded.columns) == set(batch.columns)
        for name, col in batch.columns.items():
            assert np.array_equal(np.asarray(decoded.columns[name]), np.asarray(col)), name
            sig = BY_NAME[name]
            arr = np.asarray(col)
            assert ((arr >= sig.minimum) & (arr <= sig.maximum)).all(), name
            steps = arr / sig.resolution
            assert np.allclose(steps, np.round(steps), atol=1e-6), f"{name} is not on its resolution grid"


def test_parallel_prebuild_gives_the_same_payloads_in_the_same_order() -> None:
    fleet = _fleet(vehicles=7, batch_seconds=30)
    serial = fleet.prebuild(900, MIDNIGHT)
    assert serial == fleet.prebuild(900, MIDNIGHT, workers=3)
    assert [(t, p) for t, p, _ in serial] == [(t, p) for t, p, _ in fleet.payloads(900, MIDNIGHT, drive_at_start=True)]


def test_batches_seq_boot_timestamps_and_order() -> None:
    fleet = _fleet(vehicles=5, rate_hz=1.0, batch_seconds=60)
    per_dev: dict[str, list] = defaultdict(list)
    last_end = -1
    for dev, batch in fleet.batches(6 * 3600):
        assert len(batch) == 60
        assert int(batch.ts_ms[-1]) >= last_end  # published in the order the batches complete
        last_end = int(batch.ts_ms[-1])
        per_dev[dev].append(batch)
    assert set(per_dev) <= set(fleet.device_ids) and len(per_dev) >= 3
    for dev, items in per_dev.items():
        assert topics.DEVICE_ID_RE.match(dev)
        assert len({b.boot_id for b in items}) == 1
        seq = np.concatenate([np.asarray(b.seq) for b in items])
        assert np.array_equal(seq, np.arange(len(seq)))
        ts = np.concatenate([np.asarray(b.ts_ms) for b in items])
        assert (np.diff(ts) > 0).all()
        for b in items:
            assert (np.diff(np.asarray(b.ts_ms)) == 1000).all()
    # Different runs (start times) are different boots; unique_boots gives fresh ones every time.
    assert fleet.boot_id(0, MIDNIGHT) != fleet.boot_id(0, MIDNIGHT + 1)
    assert _fleet(unique_boots=True).boot_id(0, MIDNIGHT) != _fleet(unique_boots=True).boot_id(0, MIDNIGHT)


def test_live_style_fleet_drives_from_the_first_window_and_staggers_batches() -> None:
    fleet = _fleet(vehicles=20, batch_seconds=60)
    start = MIDNIGHT + 3 * 3_600_000  # 03:00 UTC: day drivers would be parked
    first = list(fleet.batches(60, start, drive_at_start=True))
    assert sorted(dev for dev, _ in first) == fleet.device_ids
    ends = sorted(int(b.ts_ms[-1]) - start for _, b in first)
    assert ends[0] < 5_000 and ends[-1] <= 60_000 and len(set(ends)) > 15
    assert all(b.columns["battery_voltage"][0] < 11.5 for _, b in first)  # cranking dip at the start


def test_a_large_fleet_plans_every_kind_of_trip() -> None:
    """Hundreds of first trips (short, turn-free, motorway...) all plan and give full batches."""
    fleet = FleetSimulator(1500, seed=99, start_ms=MIDNIGHT)
    got = list(fleet.batches(60, drive_at_start=True))
    assert len(got) == 1500 and all(len(b) == 60 for _, b in got)


def test_style_mix_and_cli_style_parsing() -> None:
    styles = [style_for_index(i) for i in range(1000)]
    share = {s: styles.count(s) / 1000 for s in DriverStyle}
    assert abs(share[DriverStyle.CALM] - 0.6) < 0.02 and abs(share[DriverStyle.AGGRESSIVE] - 0.25) < 0.02
    assert parse_style_mix("calm=1,aggressive=1") == {DriverStyle.CALM: 0.5, DriverStyle.AGGRESSIVE: 0.5}
    with pytest.raises(ValueError):
        parse_style_mix("sporty=1")
    fleet = FleetSimulator(3, style_override={1: "aggressive"}, styles={"calm": 1})
    assert fleet.styles == [DriverStyle.CALM, DriverStyle.AGGRESSIVE, DriverStyle.CALM]


def test_parked_vehicles_send_nothing_and_chunking_does_not_change_the_data() -> None:
    whole = _drive(DriverStyle.CALM, 1, 24, at_start=False, start=MIDNIGHT)
    fleet = FleetSimulator(2, seed=11, start_ms=MIDNIGHT, style_override=DriverStyle.CALM, chunk_seconds=60)
    small = fleet.simulate_vehicle(1, 24 * 3600, MIDNIGHT)
    assert np.array_equal(whole.ts_ms, small.ts_ms)
    for name in whole.columns:
        assert np.allclose(whole.columns[name], small.columns[name], atol=1e-6, rtol=0), name
    assert 0 < len(whole.ts_ms) < 0.5 * 86_400  # trips, not a day-long drive
    gaps = np.diff(whole.ts_ms)
    assert (gaps > 10 * 60_000).sum() == len(set(whole.trip.tolist())) - 1  # parked between trips


# --- physics ---------------------------------------------------------------------------------------


def _check_track(d: VehicleDrive) -> None:
    lat, lon = d.columns["latitude"], d.columns["longitude"]
    speed_ms = d.columns["speed"] / 3.6
    step = haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    dt = np.diff(d.ts_ms) / 1000
    same_trip = d.trip[1:] == d.trip[:-1]
    # Within a trip: the distance between fixes is what the speed allows.
    bound = np.maximum(speed_ms[:-1], speed_ms[1:]) * dt + 0.3 * dt + 0.05
    assert (step[same_trip] <= bound[same_trip]).all(), float(np.max(step[same_trip] - bound[same_trip]))
    # Between trips the car stood still: the next trip starts where the last one ended.
    assert (step[~same_trip] < 0.05).all()
    # The track's length matches the speed integrated over time.
    for trip in np.unique(d.trip):
        idx = np.flatnonzero(d.trip == trip)
        track = step[idx[:-1]].sum()
        integrated = (0.5 * (speed_ms[idx[:-1]] + speed_ms[idx[1:]]) * dt[idx[:-1]]).sum()
        if integrated > 1000:
            assert abs(track - integrated) / integrated < 0.10, (trip, track, integrated)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), style=st.sampled_from(list(DriverStyle)), index=st.integers(0, 50))
def test_tracks_are_continuous_and_accelerations_bounded(seed: int, style: DriverStyle, index: int) -> None:
    d = simulate_vehicle(index, 2 * 3600, MIDNIGHT + 9 * 3_600_000, seed=seed, style=style, drive_at_start=True)
    assert len(d.ts_ms) > 300
    _check_track(d)
    p = STYLE_PARAMS[style]
    same_trip = d.trip[1:] == d.trip[:-1]
    accel = np.diff(d.speed_ms)[same_trip]  # 1 Hz
    assert accel.max() <= p.max_accel + 1e-9 and -accel.min() <= p.max_brake + 1e-9
    # What ingest sees (whole km/h) stays within the bound plus one quantisation step.
    accel_q = np.diff(d.columns["speed"] / 3.6)[same_trip]
    assert accel_q.max() <= p.max_accel + 0.3 and -accel_q.min() <= p.max_brake + 0.3
    # The engine follows the car: idles when stopped, MAF and fuel from RPM and load.
    c = d.columns
    stopped = (d.speed_ms < 0.05) & (c["run_time"] >= 3)
    assert ((c["rpm"][stopped] >= 700) & (c["rpm"][stopped] <= 1150)).all()
    maf = 1.6 * c["rpm"] / 120 * (c["engine_load"] / 100) * 1.06
    assert np.allclose(c["maf"], maf, atol=0.05)
    assert np.allclose(c["fuel_rate"], c["maf"] / 14.7 / 745 * 3600, atol=0.05)
    # Gears: the engine never revs past the shift point unless top gear needs it at that speed.
    top_gear_rpm = (c["speed"] + 0.5) * 1000 / 37.5
    assert (c["rpm"] <= np.maximum(p.shift_up_rpm, top_gear_rpm) + 1).all()
    running = c["run_time"] >= 3
    assert ((c["battery_voltage"][running] > 13.8) & (c["battery_voltage"][running] < 14.5)).all()
    assert ((c["hdop"] >= 0.7) & (c["hdop"] <= 1.5)).all()
    assert ((c["satellites"] >= 7) & (c["satellites"] <= 12)).all() and (c["fix_mode"] == 3).all()
    assert np.abs(c["gps_speed"] - c["speed"]).max() < 2.0


def test_aggressive_drivers_brake_and_accelerate_harder_and_drive_faster() -> None:
    def pooled(style: DriverStyle) -> tuple[float, float]:
        accels, vmax = [], 0.0
        for i in range(6):
            d = _drive(style, i, 4)
            same = d.trip[1:] == d.trip[:-1]
            accels.append(np.abs(np.diff(d.columns["speed"] / 3.6))[same])
            vmax = max(vmax, float(d.columns["speed"].max()))
        a = np.concatenate(accels)
        return float(np.percentile(a[a > 0], 95)), vmax

    calm_p95, calm_vmax = pooled(DriverStyle.CALM)
    aggr_p95, aggr_vmax = pooled(DriverStyle.AGGRESSIVE)
    assert aggr_p95 > calm_p95 * 1.3
    assert aggr_vmax > calm_vmax + 15 and aggr_vmax >= 120


def test_engine_warms_up_then_regulates() -> None:
    d = _drive(DriverStyle.CALM, 2, 2)
    first = d.trip == d.trip[0]
    coolant = d.columns["coolant_temp"][first]
    assert coolant[0] < 40 and np.all(np.diff(coolant[:600]) >= 0)
    if first.sum() > 900:
        assert coolant[900:].min() >= 85 and coolant.max() <= 92


def test_night_commuters_drive_at_night() -> None:
    hours = []
    for i in range(4):
        d = _drive(DriverStyle.NIGHT_COMMUTER, i, 48, at_start=False, start=MIDNIGHT + 12 * 3_600_000)
        assert len(d.ts_ms) > 0
        hours.append((d.ts_ms // 3_600_000) % 24)
    h = np.concatenate(hours)
    night = (h >= 21) | (h < 5)
    assert night.mean() > 0.8, night.mean()


# --- MQTT and CLI ----------------------------------------------------------------------------------


def test_max_rate_run_publishes_everything_with_content_type_and_sent_ms(mqtt_broker, unique_id) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    host, port = mqtt_broker
    received: list[mqtt.MQTTMessage] = []
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.startswith(f"vinsight/v1/data/{unique_id}-"):  # '+' only matches a whole level
            with lock:
                received.append(msg)

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{unique_id}", protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect(host, port)
    sub.loop_start()
    try:
        sub.subscribe("vinsight/v1/data/+/samples", qos=1)
        assert subscribed.wait(10)
        fleet = FleetSimulator(3, 1.0, 20, seed=5, device_prefix=unique_id)
        before = int(time.time() * 1000)
        stats = fleet.run_live(MqttTarget(host, port), 300, max_rate=True)
        after = int(time.time() * 1000)
        assert stats.messages == stats.acked_messages == 3 * 15 and stats.samples == stats.acked_samples == 900
        assert stats.seconds > 0 and stats.samples_per_s > 0 and stats.refused == 0
        deadline = time.monotonic() + 15
        while len(received) < stats.messages and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert len(received) == stats.messages
    seqs: dict[str, list[int]] = defaultdict(list)
    for msg in received:
        assert msg.properties.ContentType == CT_SAMPLES_BINARY
        user = dict(msg.properties.UserProperty)
        assert before <= int(user["sent_ms"]) <= after
        batch = decode_samples_binary(msg.payload)
        assert msg.topic == topics.samples(batch.device_id)
        assert int(batch.ts_ms[-1]) <= after  # max-rate data ends now
        seqs[batch.device_id].extend(int(s) for s in batch.seq)
    assert set(seqs) == set(fleet.device_ids)
    assert all(sorted(s) == list(range(len(s))) for s in seqs.values())


def test_live_run_paces_batches_by_the_clock(mqtt_broker, unique_id) -> None:
    host, port = mqtt_broker
    fleet = FleetSimulator(4, 1.0, 2, seed=3, device_prefix=unique_id)
    seen: list[int] = []
    t0 = time.monotonic()
    stats = fleet.run_live(MqttTarget(host, port), 3, progress=lambda st: seen.append(st.messages),
                           progress_interval_s=1.0)
    took = time.monotonic() - t0
    assert 2.0 < took < 10 and seen
    assert stats.messages == stats.acked_messages >= 4  # every vehicle published within 3 s
    assert stats.samples == 2 * stats.messages


def test_cli_help_mentions_vehicles_and_rate(capsys) -> None:
    from vinsight.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--vehicles" in out and "--rate" in out and "VINSIGHT_MQTT_HOST" in out and "--max-rate" in out


def test_settings_read_the_shared_mqtt_variables(monkeypatch) -> None:
    from vinsight.simulate_cli import SimulatorSettings

    monkeypatch.setenv("VINSIGHT_MQTT_HOST", "broker.example")
    monkeypatch.setenv("VINSIGHT_MQTT_PORT", "8883")
    monkeypatch.setenv("VINSIGHT_SIMULATE_VEHICLES", "42")
    s = SimulatorSettings()
    assert (s.host, s.port, s.vehicles) == ("broker.example", 8883, 42)
    assert all(f.description for f in SimulatorSettings.model_fields.values())


def test_boot_ids_are_uuids() -> None:
    fleet = _fleet()
    assert isinstance(fleet.boot_id(1, MIDNIGHT), uuid.UUID)
