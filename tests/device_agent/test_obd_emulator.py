"""ObdSource against the real ELM327-emulator through python-obd (TCP and pty)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from device_agent.obd_source import ObdSource
from device_agent.settings import AgentSettings
from vinsight.contract import SignalPlan

from .conftest import TEST_VIN, CollectingSink, Emulator


def start_source(emu: Emulator, sink: CollectingSink, tmp_path: Path, **overrides) -> tuple[ObdSource, threading.Event,
                                                                                             threading.Thread]:
    settings = AgentSettings(obd_port=emu.url, obd_baudrate=38400, state_dir=tmp_path, reconnect_min_s=0.5,
                             reconnect_max_s=2, **{"engine_off_after_s": 2, "heartbeat_interval_s": 1, **overrides})
    source = ObdSource(settings, sink, dtc_interval_s=1.0)
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,), daemon=True)
    thread.start()
    return source, stop, thread


def test_reads_car_over_tcp_with_intact_vin_and_cached_pids(emulator, sink, tmp_path) -> None:
    source, stop, thread = start_source(emulator, sink, tmp_path)
    try:
        assert sink.wait(lambda s: {"speed", "rpm", "coolant_temp", "battery_voltage"} <= s.names(), 25)
        identified = [d for k, d in sink.events if k == "vehicle_identified"]
        assert identified and identified[0]["vin"] == TEST_VIN  # python-obd alone would give 'FA0ZZZ99ZTS39'
        assert "speed" in identified[0]["supported"] and "fuel_rate" not in identified[0]["supported"]
        cache = json.loads((tmp_path / "pid_cache.json").read_text())
        assert 0x0D in cache[TEST_VIN]["supported"] and 0x5E not in cache[TEST_VIN]["supported"]
        rpm = [v for n, v, _t in sink.readings if n == "rpm"]
        assert all(0 <= v <= 16383.75 for v in rpm)
        # The stock emulator sleeps once per PID inside a multi-PID request: packing is slower there,
        # and the agent measured that instead of assuming.
        assert source.status()["adapter"]["multi_pid"] is False
    finally:
        stop.set()
        thread.join(10)


def test_packs_pids_when_the_ecu_answers_a_request_in_one_go(sink, tmp_path) -> None:
    from bench.agent_rate import per_request_timing

    with per_request_timing():
        emu = Emulator().start()
        try:
            source, stop, thread = start_source(emu, sink, tmp_path)
            assert sink.wait(lambda s: len(s.readings) > 20, 25)
            assert source.status()["adapter"]["multi_pid"] is True
            source.apply_plan({n: SignalPlan(50.0, 1) for n in ("speed", "rpm", "engine_load", "maf", "throttle_pos")})
            time.sleep(1)
            requests, reads = source.ecu_requests, len(sink.readings)
            time.sleep(2)
            assert (len(sink.readings) - reads) > 1.5 * (source.ecu_requests - requests)  # several PIDs a request
            stop.set()
            thread.join(10)
        finally:
            emu.stop()


def test_reads_car_over_a_pty(sink, tmp_path) -> None:
    emu = Emulator(pty=True).start()
    try:
        _source, stop, thread = start_source(emu, sink, tmp_path)
        assert sink.wait(lambda s: {"speed", "rpm"} <= s.names(), 25)
        stop.set()
        thread.join(10)
    finally:
        emu.stop()


def test_trouble_codes_become_change_events(emulator, sink, tmp_path) -> None:
    emulator.set_dtcs(stored=["0143", "0196"], pending=["0300"])
    _source, stop, thread = start_source(emulator, sink, tmp_path)
    try:
        assert sink.wait(lambda s: s.kinds().count("dtc_new") >= 3 and "mil_on" in s.kinds(), 25)
        new = {(d["code"], d["dtc_type"]) for k, d in sink.events if k == "dtc_new"}
        assert new == {("P0143", "stored"), ("P0196", "stored"), ("P0300", "pending")}
        mil = next(d for k, d in sink.events if k == "mil_on")
        assert mil["dtc_count"] == 2
        time.sleep(2.5)  # further polls with the same codes repeat nothing
        assert sink.kinds().count("dtc_new") == 3
        emulator.set_dtcs(stored=["0143"])
        assert sink.wait(lambda s: s.kinds().count("dtc_cleared") >= 2, 15)
        cleared = {(d["code"], d["dtc_type"]) for k, d in sink.events if k == "dtc_cleared"}
        assert cleared == {("P0196", "stored"), ("P0300", "pending")}
    finally:
        stop.set()
        thread.join(10)


def test_engine_off_stops_ecu_polling_and_voltage_wakes_it(emulator, sink, tmp_path) -> None:
    source, stop, thread = start_source(emulator, sink, tmp_path)
    try:
        assert sink.wait(lambda s: "rpm" in s.names(), 25)
        emulator.voltage = 12.4
        emulator.set_scenario("engineoff")
        assert sink.wait(lambda s: "engine_off" in s.kinds(), 20)
        time.sleep(1.0)
        requests = source.ecu_requests
        voltages_before = sum(1 for n, _v, _t in sink.readings if n == "battery_voltage")
        time.sleep(3.5)
        assert source.ecu_requests == requests  # parked: not one request reaches the ECU
        voltages_after = sum(1 for n, _v, _t in sink.readings if n == "battery_voltage")
        assert voltages_after >= voltages_before + 2  # heartbeat voltage from the adapter continues
        emulator.set_scenario("car")
        emulator.voltage = 14.3  # alternator charging: the engine started
        assert sink.wait(lambda s: s.kinds().count("engine_on") >= 1 and s.kinds()[-1] != "engine_off", 20)
        assert source.ecu_requests > requests
    finally:
        stop.set()
        thread.join(10)


def test_low_voltage_cutoff_while_parked(emulator, sink, tmp_path) -> None:
    _source, stop, thread = start_source(emulator, sink, tmp_path)
    try:
        assert sink.wait(lambda s: "rpm" in s.names(), 25)
        emulator.voltage = 12.3
        emulator.set_scenario("engineoff")
        assert sink.wait(lambda s: "engine_off" in s.kinds(), 20)
        emulator.voltage = 11.2
        assert sink.wait(lambda s: "low_voltage_cutoff" in s.kinds(), 10)
        cut = next(d for k, d in sink.events if k == "low_voltage_cutoff")
        assert cut["voltage"] == pytest.approx(11.2)
    finally:
        stop.set()
        thread.join(10)


def test_reconnects_after_the_adapter_goes_away(sink, tmp_path) -> None:
    emu = Emulator().start()
    port = emu.port
    try:
        _source, stop, thread = start_source(emu, sink, tmp_path)
        assert sink.wait(lambda s: "speed" in s.names(), 25)
        emu.stop(restore=False)
        assert sink.wait(lambda s: "adapter_disconnected" in s.kinds(), 60)  # a silent socket, not a closed one
        count = len(sink.readings)
        emu = Emulator(port=port)
        emu.start()
        assert sink.wait(lambda s: s.kinds().count("adapter_connected") >= 2 and len(s.readings) > count + 5, 40)
        stop.set()
        thread.join(10)
    finally:
        emu.stop()


def test_scheduler_measures_a_slower_adapter(emulator, sink, tmp_path) -> None:
    source, stop, thread = start_source(emulator, sink, tmp_path)
    try:
        assert sink.wait(lambda s: len(s.readings) > 30, 25)
        fast_cost = source.scheduler.read_cost_s
        replans = source.scheduler.replans
        emulator.set_delay(0.25)
        time.sleep(6)
        assert source.scheduler.read_cost_s > 2 * fast_cost
        assert source.scheduler.replans > replans
        assert sum(source.scheduler.planned_hz().values()) <= source.scheduler.planned_capacity_hz * 1.0001
    finally:
        stop.set()
        thread.join(10)
