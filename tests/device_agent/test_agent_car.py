"""The whole agent on an emulated car: ELM327-emulator -> python-obd -> agent -> Mosquitto -> subscriber."""

from __future__ import annotations

import threading
import time

from device_agent.agent import Agent
from device_agent.settings import AgentSettings

from .conftest import TEST_VIN
from .mqtt_helpers import Collector


def test_drive_with_trouble_codes_arrives_complete_and_in_order(emulator, mqtt_broker, unique_id, tmp_path) -> None:
    host, port = mqtt_broker
    emulator.set_dtcs(stored=["0301"], pending=["0171"])
    collector = Collector(host, port, unique_id).start()
    settings = AgentSettings(device_id=unique_id, state_dir=tmp_path, obd_port=emulator.url, obd_baudrate=38400,
                             gps_mode="none", mqtt_port=port, batch_max_samples=5, batch_max_age_s=1.0,
                             health_interval_s=2.0)
    agent = Agent(settings)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        assert collector.wait_for(lambda c: len(c.samples) >= 8 and any(e[2] == "dtc_new" for e in c.events), 40)
        assert collector.wait_for(
            lambda c: any(h.rates_hz.get("speed", 0) > 0 and h.rates_hz.get("rpm", 0) > 0 for h in c.health), 20)
    finally:
        agent.stop_event.set()
        thread.join(30)
    time.sleep(1)
    collector.stop()
    assert not collector.errors
    sample_seqs = [s for _b, s, _t, _v in collector.samples]
    event_seqs = [s for _b, s, _k, _d in collector.events]
    assert sample_seqs == sorted(sample_seqs) and len(set(sample_seqs)) == len(sample_seqs)  # in order, once
    every = sorted(sample_seqs + event_seqs)
    assert every == list(range(len(every)))  # one counter, no gap: nothing recorded went missing
    kinds = {k: d for _b, _s, k, d in collector.events}
    assert kinds["vehicle_identified"]["vin"] == TEST_VIN
    new_codes = {(d["code"], d["dtc_type"]) for _b, _s, k, d in collector.events if k == "dtc_new"}
    assert new_codes == {("P0301", "stored"), ("P0171", "pending")}
    assert "mil_on" in kinds
    speeds = [v["speed"] for _b, _s, _t, v in collector.samples if "speed" in v]
    assert speeds and all(0 <= s <= 255 for s in speeds)
    assert collector.states[0] == "online" and collector.states[-1] == "offline"
    health = next(h for h in collector.health if h.rates_hz.get("speed", 0) > 0 and h.rates_hz.get("rpm", 0) > 0)
    assert health.adapter["state"] == "connected" and health.adapter["vin"] == TEST_VIN
    assert 0 < health.rates_hz["rpm"] <= 1.0 + 1e-9  # achieved, never above the 1 Hz target
    assert health.power["engine"] == "running" and health.outbox["records"] >= 0
