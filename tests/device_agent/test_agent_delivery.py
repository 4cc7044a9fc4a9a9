"""The agent's delivery guarantees against a real Mosquitto: complete, in order, once, after faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from device_agent.agent import Agent
from device_agent.outbox import Outbox
from device_agent.recorder import Recorder
from device_agent.replay import read_polidriving
from device_agent.settings import AgentSettings
from vinsight.contract import AgentConfig, Sample, SignalPlan, codec, topics

from .mqtt_helpers import Collector, PrivateBroker

DRIVE = Path(__file__).resolve().parent.parent / "fixtures" / "polidriving" / "20231222_134710_col.csv.gz"


def settings_for(tmp_path: Path, device_id: str, port: int, **extra) -> AgentSettings:
    return AgentSettings(device_id=device_id, state_dir=tmp_path / device_id, mqtt_port=port, gps_mode="none",
                         batch_max_samples=60, batch_max_age_s=0.5, health_interval_s=3600, **extra)


def expected_rows() -> list[dict]:
    """What the recorder should produce from the fixture drive: one sample per distinct second."""
    by_second: dict[int, dict] = {}
    for row in read_polidriving(DRIVE):
        by_second.setdefault(row.ts_ms // 1000, {}).update(row.values)
    return [v for _k, v in sorted(by_second.items()) if v]


def run_agent_in_thread(agent: Agent) -> threading.Thread:
    t = threading.Thread(target=agent.run, kwargs={"exit_when_replayed": True, "drain_timeout_s": 60}, daemon=True)
    t.start()
    return t


def test_replayed_drive_arrives_complete_and_in_order(tmp_path, mqtt_broker, unique_id) -> None:
    host, port = mqtt_broker
    collector = Collector(host, port, unique_id).start()
    agent = Agent(settings_for(tmp_path, unique_id, port, replay_speed=0), replay_file=DRIVE)
    run_agent_in_thread(agent).join(90)
    expected = expected_rows()
    assert collector.wait_for(lambda c: len(c.samples) >= len(expected), 30)
    collector.stop()
    assert not collector.errors
    seqs = [s for _b, s, _t, _v in collector.samples]
    assert seqs == list(range(len(expected)))  # complete, once, in order
    values = [v for _b, _s, _t, v in collector.samples]
    for got, want in zip(values, expected, strict=True):
        assert got["speed"] == want["speed"] if "speed" in want else "speed" not in got
        if "latitude" in want:
            assert abs(got["latitude"] - want["latitude"]) < 1e-7
    ts = [t for _b, _s, t, _v in collector.samples]
    assert ts == sorted(ts) and ts[-1] <= time.time() * 1000 + 1000  # shifted to now, never in the future
    assert collector.content_types == {codec.CT_SAMPLES_BINARY}
    assert collector.states[0] == "online"


def test_broker_outage_loses_nothing(tmp_path, unique_id) -> None:
    broker = PrivateBroker(tmp_path / "broker").start()
    try:
        collector = Collector("127.0.0.1", broker.port, unique_id).start()
        agent = Agent(settings_for(tmp_path, unique_id, broker.port, replay_speed=30), replay_file=DRIVE)
        thread = run_agent_in_thread(agent)
        assert collector.wait_for(lambda c: len(c.samples) > 60, 30)
        broker.stop()  # the broker goes away mid-drive; the agent keeps recording to disk
        time.sleep(5)
        assert len(agent.outbox) > 0
        broker.start()  # same port; the collector's persistent session survives and it reconnects
        thread.join(120)
        n = len(expected_rows())
        assert collector.wait_for(lambda c: len(c.unique_samples()) >= n, 60)
        collector.stop()
        unique = collector.unique_samples()
        assert sorted(s for _b, s in unique) == list(range(n))  # every sample, no gap
        assert len(agent.outbox) == 0
    finally:
        broker.stop()


def test_sigkill_loses_nothing_from_the_outbox(tmp_path, unique_id) -> None:
    broker = PrivateBroker(tmp_path / "broker").start()
    state = tmp_path / "state"
    env = dict(os.environ, VINSIGHT_AGENT_STATE_DIR=str(state), VINSIGHT_AGENT_DEVICE_ID=unique_id,
               VINSIGHT_AGENT_MQTT_PORT=str(broker.port), VINSIGHT_AGENT_GPS_MODE="none",
               VINSIGHT_AGENT_BATCH_MAX_AGE_S="0.5")
    cmd = [sys.executable, "-m", "vinsight.cli", "agent", "replay", str(DRIVE), "--speed", "40"]
    try:
        collector = Collector("127.0.0.1", broker.port, unique_id).start()
        broker.stop()  # nothing can be delivered: everything recorded waits in the outbox
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(6)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        outbox = Outbox(state / "outbox.sqlite3")
        waiting = outbox.pending(100_000)
        outbox.close()
        recorded = [r.seq for r in waiting if r.kind == 0]
        assert len(recorded) > 50, "the first run should have recorded samples before the kill"
        first_boot = str(waiting[0].boot_id)
        broker.start()
        collector.stop()
        collector = Collector("127.0.0.1", broker.port, unique_id).start()
        second = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert second.wait(120) == 0
        assert collector.wait_for(
            lambda c: {s for b, s in c.unique_samples() if b == first_boot} >= set(recorded), 30)
        boots = {b for b, _s in collector.unique_samples()}
        assert first_boot in boots and len(boots) == 2  # the restart is a new boot with its own seq space
        collector.stop()
    finally:
        broker.stop()


def test_disk_budget_drops_oldest_and_counts(tmp_path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3", max_bytes=20_000)
    boot = uuid.uuid4()
    recorder = Recorder(outbox, boot, lambda: 0, interval_s=1.0)
    for i in range(400):
        recorder.reading("speed", 50.0, i * 1000)
        recorder.reading("rpm", 2000.0, i * 1000)
    recorder.flush()
    stats = outbox.stats()
    assert stats["bytes"] <= 20_000
    records = outbox.pending(10_000)
    samples = [r for r in records if r.kind == 0]
    drops = [r for r in records if r.kind == 1 and r.body["k"] == "outbox_dropped"]
    assert outbox.dropped_total > 0
    assert samples[-1].ts_ms == 399_000  # the newest survive
    # Every sample is either kept or counted as dropped: nothing vanishes silently.
    kept = len(samples)
    dropped_samples = 400 - kept
    assert dropped_samples <= outbox.dropped_total
    assert drops, "an outbox_dropped event reports the loss"
    outbox.close()


def test_remote_configuration_is_applied_persisted_and_acknowledged(tmp_path, mqtt_broker, unique_id) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    host, port = mqtt_broker
    collector = Collector(host, port, unique_id).start()
    settings = settings_for(tmp_path, unique_id, port, replay_speed=1)
    agent = Agent(settings, replay_file=DRIVE)
    agent.start()
    try:
        assert agent.publisher.wait_connected(10)
        cloud = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        cloud.connect(host, port)
        cloud.loop_start()
        good = AgentConfig(version=3, signals={"rpm": SignalPlan(2.0, 1)}, batch_max_samples=10)
        cloud.publish(topics.config_command(unique_id), codec.encode_config(good), qos=1).wait_for_publish(5)
        assert collector.wait_for(lambda c: any(a.version == 3 and a.status == "applied" for a in c.acks), 10)
        assert agent.publisher.config.batch_max_samples == 10
        cloud.publish(topics.config_command(unique_id), b'{"v":1,"version":4,"batch_max_samples":-5}',
                      qos=1).wait_for_publish(5)
        assert collector.wait_for(lambda c: any(a.status == "rejected" for a in c.acks), 10)
        rejected = next(a for a in collector.acks if a.status == "rejected")
        assert rejected.version == 4 and any("batch_max_samples" in e for e in rejected.errors)
        older = AgentConfig(version=2, batch_max_samples=99)
        cloud.publish(topics.config_command(unique_id), codec.encode_config(older), qos=1).wait_for_publish(5)
        time.sleep(1)
        assert agent.publisher.config.batch_max_samples == 10  # an older version is not applied
        cloud.publish(topics.config_command(unique_id), b"", qos=1, retain=True).wait_for_publish(5)
        cloud.loop_stop()
    finally:
        agent.stop_event.set()
        agent.shutdown()
        collector.stop()
    reopened = Outbox(Path(settings.state_dir) / "outbox.sqlite3")
    assert codec.decode_config(reopened.get_meta("config").encode())[0] == good  # survives restarts
    reopened.close()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def test_tls_with_per_device_password(tmp_path, unique_id) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=vinsight-test-ca", cwd=certs)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=certs)
    (certs / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=certs)
    password = "s3cret-" + unique_id
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), unique_id, password], check=True, capture_output=True)
    os.chmod(passwd, 0o644)
    broker = PrivateBroker(tmp_path / "broker", extra_conf=(
        f"allow_anonymous false\npassword_file {passwd}\ncafile {certs / 'ca.crt'}\n"
        f"certfile {certs / 'server.crt'}\nkeyfile {certs / 'server.key'}\n"))
    broker.start()
    try:
        base = dict(mqtt_tls=True, mqtt_ca_file=certs / "ca.crt", mqtt_password=password, replay_speed=0)
        agent = Agent(settings_for(tmp_path, unique_id, broker.port, **base), replay_file=DRIVE)
        agent.start()
        assert agent.publisher.wait_connected(10)
        agent.stop_event.set()
        agent.shutdown()
        wrong = Agent(settings_for(tmp_path, unique_id + "x", broker.port, **{**base, "mqtt_password": "nope"}),
                      replay_file=DRIVE)
        wrong.publisher.config.username = unique_id
        wrong.start()
        assert not wrong.publisher.wait_connected(3)
        assert "refused" in wrong.publisher.stats.last_error or not wrong.publisher.connected
        wrong.stop_event.set()
        wrong.shutdown()
    finally:
        broker.stop()


def test_recorder_numbers_samples_and_events_from_one_counter(tmp_path) -> None:
    from vinsight.contract import EventKind

    outbox = Outbox(tmp_path / "o.sqlite3")
    recorder = Recorder(outbox, uuid.uuid4(), lambda: 5_000)
    recorder.reading("speed", 10.0, 1_000)
    recorder.reading("speed", 12.0, 1_500)  # same interval: the later value wins
    recorder.event(EventKind.ENGINE_ON, {"reason": "rpm"}, 1_600)
    recorder.reading("speed", 14.0, 2_100)
    recorder.reading("nonsense", 1.0, 2_100)
    recorder.flush()
    records = outbox.pending(10)
    assert [(r.kind, r.seq) for r in records] == [(1, 0), (0, 1), (0, 2)]
    assert records[1].as_sample() == Sample(1, 1_000, {"speed": 12.0}, {})
    assert recorder.readings_rejected == 1
    outbox.close()


@pytest.mark.parametrize(("raw", "error"), [(b"", None), (b"\x1f\x8b", EOFError)])
def test_replay_of_a_broken_file_delivers_nothing(tmp_path, raw, error) -> None:
    from device_agent.replay import ReplaySource

    bad = tmp_path / "20240101_000000_col.csv.gz"
    bad.write_bytes(raw)  # empty, or a gzip header cut short
    got = []

    class Sink:
        def reading(self, *a):
            got.append(a)

        def extra(self, *a):
            got.append(a)

        def event(self, *a, **k):
            got.append(a)

    source = ReplaySource(bad, Sink(), speed=0)
    if error is None:
        source.run(threading.Event())
        assert source.finished.is_set()
    else:
        with pytest.raises(error):  # a truncated log is an error the operator sees, not a silent partial drive
            source.run(threading.Event())
    assert got == []


def test_mutual_tls_with_a_client_certificate(tmp_path, unique_id) -> None:
    """The device's identity is its certificate (CN = device id); a device without one is refused."""
    certs = tmp_path / "certs"
    certs.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=vinsight-test-ca", cwd=certs)
    (certs / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, cn in (("server", "localhost"), ("device", unique_id)):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=certs)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", "san.ext", cwd=certs)
    broker = PrivateBroker(tmp_path / "broker", extra_conf=(
        f"allow_anonymous false\nrequire_certificate true\nuse_identity_as_username true\n"
        f"cafile {certs / 'ca.crt'}\ncertfile {certs / 'server.crt'}\nkeyfile {certs / 'server.key'}\n"))
    broker.start()
    try:
        base = dict(mqtt_tls=True, mqtt_ca_file=certs / "ca.crt", replay_speed=0)
        agent = Agent(settings_for(tmp_path, unique_id, broker.port, mqtt_cert_file=certs / "device.crt",
                                   mqtt_key_file=certs / "device.key", **base), replay_file=DRIVE)
        agent.start()
        assert agent.publisher.wait_connected(10)
        agent.stop_event.set()
        agent.shutdown()
        anonymous = Agent(settings_for(tmp_path, unique_id + "n", broker.port, **base), replay_file=DRIVE)
        anonymous.start()
        assert not anonymous.publisher.wait_connected(3)  # the TLS handshake fails without a certificate
        anonymous.stop_event.set()
        anonymous.shutdown()
    finally:
        broker.stop()
