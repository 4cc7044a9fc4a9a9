"""Pure OBD logic: VIN frames, PID packing and parsing, DTC decoding and diffing, scheduler, power."""

from __future__ import annotations

import contextlib

import obd
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.dtc import DtcTracker, code_from_bytes, decode_dtc_answer, mil_from_status
from device_agent.obd_pids import (
    MAX_PIDS_PER_REQUEST,
    PIDS,
    SINGLE_FRAME_DATA_BYTES,
    pack_requests,
    parse_response,
    response_bytes,
    supported_from_bitmaps,
)
from device_agent.power import EngineState, PowerPolicy
from device_agent.scheduler import PidScheduler
from device_agent.vin import VIN_ALPHABET, VinError, check_digit_ok, decode_vin, frame_can, frame_legacy
from vinsight.contract import DtcType, EventKind, SignalPlan

vins = st.text(alphabet=sorted(VIN_ALPHABET), min_size=17, max_size=17)


@given(vins, st.booleans())
def test_vin_survives_can_framing_including_edge_zeros_ones_twos(vin: str, count: bool) -> None:
    assert decode_vin([frame_can(vin, with_count=count)]) == vin


@given(vins)
def test_vin_survives_legacy_framing(vin: str) -> None:
    assert decode_vin(frame_legacy(vin)) == vin


def test_python_obd_would_have_mangled_this_vin() -> None:
    vin = "1FA0ZZZ99ZTS39002"
    assert vin.strip("012") != vin  # the bug the agent works around
    assert decode_vin([frame_can(vin)]) == vin


def test_vin_errors_and_check_digit() -> None:
    try:
        decode_vin([b"\x49\x02\x01ABC"])
        raise AssertionError("short VIN accepted")
    except VinError:
        pass
    assert check_digit_ok("1M8GDM9AXKP042788")  # the textbook example
    assert not check_digit_ok("1M8GDM9A1KP042788")


pid_specs = st.lists(st.sampled_from(sorted(PIDS.values(), key=lambda s: s.pid)), unique=True, min_size=1, max_size=12)


@given(pid_specs, st.booleans())
def test_packing_keeps_every_pid_once_and_fits_frames(specs, single_frame: bool) -> None:
    groups = pack_requests(specs, multi_pid=True, single_frame=single_frame)
    flat = [s.pid for g in groups for s in g]
    assert sorted(flat) == sorted(s.pid for s in specs)
    for g in groups:
        assert len(g) <= MAX_PIDS_PER_REQUEST
        if single_frame and len(g) > 1:
            assert response_bytes(g) <= SINGLE_FRAME_DATA_BYTES
    assert all(len(g) == 1 for g in pack_requests(specs, multi_pid=False))


@settings(max_examples=200)
@given(pid_specs, st.data())
def test_multi_pid_answer_decodes_like_python_obd_single_answers(specs, data) -> None:
    specs = specs[:MAX_PIDS_PER_REQUEST]
    answer = bytearray([0x41])
    expected = {}
    for spec in specs:
        payload = data.draw(st.binary(min_size=spec.data_bytes, max_size=spec.data_bytes))
        answer += bytes([spec.pid]) + payload
        expected[spec.signal.name] = spec.decode(payload)
        if spec.signal.obd_command:  # the same bytes through python-obd's own command object
            msg = obd.protocols.protocol.Message([])
            msg.data = bytearray([0x41, spec.pid]) + payload
            reference = obd.commands[spec.signal.obd_command].decode([msg])
            assert expected[spec.signal.name] == float(getattr(reference, "magnitude", reference))
    got = parse_response(bytes(answer), specs)
    assert got == {k: v for k, v in expected.items() if v is not None}


@given(st.binary(max_size=30))
def test_parse_response_only_raises_value_error(raw: bytes) -> None:
    with contextlib.suppress(ValueError):
        parse_response(raw, list(PIDS.values())[:4])


def test_supported_bitmap() -> None:
    # 0100 answer 'BE 3F A8 13' as the emulator's car scenario gives it
    supported = supported_from_bitmaps({0x00: bytes.fromhex("BE3FA813")})
    assert {0x01, 0x03, 0x04, 0x05, 0x0C, 0x0D, 0x20} <= supported
    assert 0x02 not in supported and 0x5E not in supported


@given(st.integers(0, 255), st.integers(0, 255))
def test_dtc_code_letters_and_digits(a: int, b: int) -> None:
    code = code_from_bytes(a, b)
    assert code[0] == "PCBU"[a >> 6] and len(code) == 5
    assert int(code[1:], 16) == ((a & 0x3F) << 8) | b


def test_dtc_answers_with_and_without_count_byte() -> None:
    assert decode_dtc_answer([bytes.fromhex("4302014301 96".replace(" ", ""))], 0x03) == ["P0143", "P0196"]
    assert decode_dtc_answer([bytes.fromhex("43014301960000")], 0x03) == ["P0143", "P0196"]  # legacy, padded
    assert decode_dtc_answer([bytes.fromhex("4300")], 0x03) == []
    assert decode_dtc_answer([bytes.fromhex("470103 00")[:4]], 0x07) == ["P0300"]
    assert mil_from_status(bytes.fromhex("41018207A100")) == (True, 2)


def test_dtc_tracker_reports_changes_and_persists(tmp_path) -> None:
    state = tmp_path / "dtc.json"
    tracker = DtcTracker(state)
    first = tracker.update({DtcType.STORED: ["P0301"], DtcType.PENDING: []}, (True, 1))
    assert first == [(EventKind.DTC_NEW, {"code": "P0301", "dtc_type": "stored"}),
                     (EventKind.MIL_ON, {"dtc_count": 1})]
    assert tracker.update({DtcType.STORED: ["P0301"]}, (True, 1)) == []
    restarted = DtcTracker(state)  # an agent restart announces nothing again
    assert restarted.update({DtcType.STORED: ["P0301"]}, (True, 1)) == []
    cleared = restarted.update({DtcType.STORED: []}, (False, 0))
    assert cleared == [(EventKind.DTC_CLEARED, {"code": "P0301", "dtc_type": "stored"}),
                       (EventKind.MIL_OFF, {"dtc_count": 0})]


plans = st.dictionaries(
    st.sampled_from(sorted(PIDS)), st.builds(SignalPlan, st.floats(0.01, 10), st.integers(1, 9)), min_size=1
)


@settings(max_examples=200)
@given(plans, st.floats(0.005, 1.0))
def test_scheduler_plan_invariants(plan, cost) -> None:
    sched = PidScheduler(plan, initial_read_cost_s=cost)
    planned = sched.planned_hz()
    assert sum(planned.values()) <= sched.capacity_hz * (1 + 1e-9)
    for name, hz in planned.items():
        assert 0 < hz <= plan[name].rate_hz * (1 + 1e-9)  # nothing above target, nothing starved
    # A signal is cut below its target only if no lower-priority signal got more than its floor.
    for name, hz in planned.items():
        if hz < plan[name].rate_hz * (1 - 1e-9):
            for other, ohz in planned.items():
                if plan[other].priority > plan[name].priority:
                    assert ohz <= min(plan[other].rate_hz, sched.floor_hz) * (1 + 1e-9)


def test_scheduler_serves_due_signals_at_their_rates() -> None:
    sched = PidScheduler({"rpm": SignalPlan(2.0, 1), "coolant_temp": SignalPlan(0.5, 3)}, initial_read_cost_s=0.01)
    reads = {"rpm": 0, "coolant_temp": 0}
    t = 0.0
    while t < 10.0:
        for name in sched.due(t):
            sched.mark_read(name, t)
            sched.record_value(name, t)
            reads[name] += 1
        t += 0.01
    assert 19 <= reads["rpm"] <= 21 and 4 <= reads["coolant_temp"] <= 6
    assert abs(sched.achieved_hz(10.0)["rpm"] - 20 / 30) < 0.05  # 30 s window


def test_scheduler_replans_when_the_adapter_slows_down() -> None:
    sched = PidScheduler({n: SignalPlan(1.0, 1 + i % 5) for i, n in enumerate(sorted(PIDS))}, initial_read_cost_s=0.02)
    assert sum(sched.planned_hz().values()) == sum(1.0 for _ in PIDS)
    before = sched.replans
    for _ in range(30):
        sched.observe(0.5, 1)  # a slow clone: half a second per request
    assert sched.replans > before
    assert sum(sched.planned_hz().values()) <= sched.planned_capacity_hz * (1 + 1e-9)
    assert sched.planned_capacity_hz < 5  # the plan shrank from ~45 reads/s to what the adapter does


def test_power_policy_lifecycle() -> None:
    p = PowerPolicy(engine_off_after_s=10, heartbeat_interval_s=60, low_voltage_cutoff_v=11.8)
    assert p.on_rpm(850, 0) == [(EventKind.ENGINE_ON, {"reason": "rpm", "rpm": 850})]
    assert p.on_rpm(0, 5) == [] and p.may_poll_ecu()
    assert p.on_rpm(None, 16) == [(EventKind.ENGINE_OFF, {"reason": "no_ecu_answer"})]
    assert not p.may_poll_ecu() and not p.wants_probe()
    assert not p.voltage_due(30) and p.voltage_due(76)
    assert p.on_voltage(12.5, 76) == [] and not p.wants_probe()
    assert p.on_voltage(11.5, 136) == [(EventKind.LOW_VOLTAGE_CUTOFF, {"voltage": 11.5})]
    assert p.state is EngineState.CUTOFF and not p.voltage_due(136 + 60)  # slower checks in cut-off
    p.on_voltage(13.9, 136 + 240)  # alternator voltage: the engine may run
    assert p.wants_probe()
    assert p.on_rpm(900, 380)[0][0] is EventKind.ENGINE_ON
