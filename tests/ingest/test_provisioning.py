"""Provisioning against the real things: PostgreSQL for the registry, ``mosquitto_passwd`` for the hash
format, and a private Mosquitto that must enforce the password and ACL files we generate."""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ingest import device_cli
from ingest.migrate import migrate
from ingest.provisioning import (
    ProvisioningError,
    add_device,
    list_devices,
    mosquitto_hash,
    reload_broker,
    revoke_device,
    verify_mosquitto_hash,
    write_broker_files,
)
from vinsight.embedded import MosquittoBroker

VIN = "1FA0ZZZ99ZTS39002"


@pytest.fixture
def registry(pg_dsn: str) -> str:
    """A fresh database with the schema (the registry tables are all provisioning needs)."""
    migrate(pg_dsn)
    return pg_dsn


# --- hash format ----------------------------------------------------------------------------------


def test_hash_is_byte_for_byte_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    exe = shutil.which("mosquitto_passwd")
    assert exe, "mosquitto_passwd is missing (apt-get install mosquitto)"
    passwd = tmp_path / "passwd"
    subprocess.run([exe, "-c", "-b", str(passwd), "alice", "pä$$ word"], check=True, capture_output=True)
    user, reference = passwd.read_text().strip().split(":", 1)
    _, ident, iterations, salt_b64, key_b64 = reference.split("$")
    assert (user, ident, iterations) == ("alice", "7", "101")
    salt = base64.b64decode(salt_b64)
    assert len(salt) == 12 and len(base64.b64decode(key_b64)) == 64
    assert mosquitto_hash("pä$$ word", salt=salt) == reference
    assert verify_mosquitto_hash("pä$$ word", reference)
    assert not verify_mosquitto_hash("pa$$ word", reference)
    ours = mosquitto_hash("x")
    assert ours.startswith("$7$101$") and ours != mosquitto_hash("x")  # random salt each time
    assert not verify_mosquitto_hash("x", "$6$101$abc$def") and not verify_mosquitto_hash("x", "garbage")


# --- registry -------------------------------------------------------------------------------------


def test_add_list_revoke_round_trip(registry: str, unique_id: str) -> None:
    key, password = add_device(registry, unique_id, vin=VIN.lower(), owner_ref="app-42", note="bench unit")
    assert len(password) >= 32
    with psycopg.connect(registry) as conn:
        status, hashed, note = conn.execute("SELECT status, password_hash, note FROM devices WHERE device_key = %s",
                                            (key,)).fetchone()
    assert (status, note) == ("active", "bench unit")
    assert hashed.startswith("$7$101$") and verify_mosquitto_hash(password, hashed)
    assert password not in hashed

    [row] = list_devices(registry)
    assert row["device_id"] == unique_id and row["status"] == "active" and row["vin"] == VIN
    assert row["owner"] == "app-42" and row["created_at"] is not None and row["revoked_at"] is None
    assert row["state"] is None and row["last_seen"] is None

    # A second device in the same car and owner reuses both rows.
    add_device(registry, unique_id + "-b", vin=VIN, owner_ref="app-42")
    with psycopg.connect(registry) as conn:
        assert conn.execute("SELECT count(*) FROM vehicles").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM owners").fetchone()[0] == 1

    revoke_device(registry, unique_id)
    row = next(r for r in list_devices(registry) if r["device_id"] == unique_id)
    assert row["status"] == "revoked" and row["revoked_at"] is not None and row["vin"] == VIN
    with psycopg.connect(registry) as conn:
        assert conn.execute("SELECT password_hash FROM devices WHERE device_key = %s", (key,)).fetchone()[0] is None


def test_bad_requests_are_refused_with_clear_errors(registry: str, unique_id: str) -> None:
    for bad in ("A-upper", "x", "-leading", "has space", "a" * 65, "slash/y", "plus+"):
        with pytest.raises(ProvisioningError, match="invalid device id"):
            add_device(registry, bad)
    with pytest.raises(ProvisioningError, match="invalid VIN"):
        add_device(registry, unique_id, vin="1FA0ZZZ99ZTS3900O")  # letter O
    with pytest.raises(ProvisioningError, match="needs --vin"):
        add_device(registry, unique_id, owner_ref="app-1")
    assert list_devices(registry) == []  # the refused add left nothing behind

    add_device(registry, unique_id)
    with pytest.raises(ProvisioningError, match="already provisioned"):
        add_device(registry, unique_id)
    with pytest.raises(ProvisioningError, match="unknown device"):
        revoke_device(registry, unique_id + "-nope")
    revoke_device(registry, unique_id)
    with pytest.raises(ProvisioningError, match="already revoked"):
        revoke_device(registry, unique_id)
    with pytest.raises(ProvisioningError, match="revoked ids are not reused"):
        add_device(registry, unique_id)

    add_device(registry, unique_id + "-c", vin=VIN, owner_ref="app-1")
    with pytest.raises(ProvisioningError, match="already belongs to owner 'app-1'"):
        add_device(registry, unique_id + "-d", vin=VIN, owner_ref="app-2")


def test_add_promotes_a_device_ingest_registered_and_keeps_its_key(registry: str, unique_id: str) -> None:
    with psycopg.connect(registry) as conn:
        vehicle = conn.execute("INSERT INTO vehicles (vin) VALUES (%s) RETURNING vehicle_id", (VIN,)).fetchone()[0]
        key = conn.execute("INSERT INTO devices (device_id, status, note, vehicle_id) VALUES"
                           " (%s, 'auto', 'registered by ingest', %s) RETURNING device_key",
                           (unique_id, vehicle)).fetchone()[0]
        conn.execute("INSERT INTO device_status (device_key, state, last_seen) VALUES (%s, 'online', now())", (key,))
    added = add_device(registry, unique_id, owner_ref="fleet-7")  # the owner goes on the reported vehicle
    assert added.device_key == key and added.promoted
    [row] = list_devices(registry)
    assert (row["status"], row["vin"], row["owner"], row["state"]) == ("active", VIN, "fleet-7", "online")
    assert row["last_seen"] is not None and row["note"] == "registered by ingest"


def test_broker_files_content_modes_and_name_clash(registry: str, unique_id: str, tmp_path: Path) -> None:
    add_device(registry, unique_id)
    add_device(registry, unique_id + "-gone")
    revoke_device(registry, unique_id + "-gone")
    with psycopg.connect(registry) as conn:
        conn.execute("INSERT INTO devices (device_id, status) VALUES (%s, 'auto')", (unique_id + "-auto",))
    pw, acl = tmp_path / "etc" / "passwd", tmp_path / "etc" / "acl"
    written = write_broker_files(registry, pw, acl, service_users={"ingest-svc": "svc-pass"})
    assert (written.devices, written.service_users) == (1, 1)
    entries = dict(line.split(":", 1) for line in pw.read_text().splitlines())
    assert set(entries) == {unique_id, "ingest-svc"}  # neither the revoked nor the 'auto' device
    assert verify_mosquitto_hash("svc-pass", entries["ingest-svc"])
    text = acl.read_text()
    assert "pattern write vinsight/v1/data/%u/#" in text and "pattern read vinsight/v1/cmd/%u/#" in text
    assert "user ingest-svc\ntopic read vinsight/v1/data/#\ntopic read vinsight/v1/status/#\n" \
           "topic write vinsight/v1/cmd/#" in text
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600 and stat.S_IMODE(acl.stat().st_mode) == 0o600
    os.chmod(pw, 0o640)  # an operator let the mosquitto group read it: regeneration keeps that
    write_broker_files(registry, pw, acl)
    assert stat.S_IMODE(pw.stat().st_mode) == 0o640
    assert sorted(p.name for p in pw.parent.iterdir()) == ["acl", "passwd"]  # no temp files left
    with pytest.raises(ProvisioningError, match="also a device id"):
        write_broker_files(registry, pw, acl, service_users={unique_id: "x"})
    with pytest.raises(ProvisioningError, match="invalid service user"):
        write_broker_files(registry, pw, acl, service_users={"a:b": "x"})


# --- the broker enforces it -----------------------------------------------------------------------


class Probe:
    """One MQTT v5 client with every acknowledgement's reason code recorded."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.connack: Any = None
        self.connected = threading.Event()
        self.subacks: dict[int, list[Any]] = {}
        self.pubacks: dict[int, Any] = {}
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{username}-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self._put(self.subacks, mid, codes)
        self.client.on_publish = lambda _c, _u, mid, code, _p: self._put(self.pubacks, mid, code)
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.connected.wait(5), "no CONNACK"

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if self.connack is None:
            self.connack = reason
        if reason.is_failure:
            self.client.disconnect()  # no reconnect loop against a broker that said no
        self.connected.set()

    def _put(self, store: dict, mid: int, value: Any) -> None:
        with self._lock:
            store[mid] = value

    def _wait(self, store: dict, mid: int) -> Any:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self._lock:
                if mid in store:
                    return store[mid]
            time.sleep(0.01)
        raise TimeoutError(f"no acknowledgement for mid {mid}")

    def subscribe(self, topic: str) -> Any:
        _rc, mid = self.client.subscribe(topic, qos=1)
        return self._wait(self.subacks, mid)[0]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> Any:
        return self._wait(self.pubacks, self.client.publish(topic, payload, qos=1, retain=retain).mid)

    def received(self, payload: bytes, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            if any(p == payload for _t, p in list(self.messages)):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def broker_files(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "mosq" / "passwd", tmp_path / "mosq" / "acl"


@pytest.fixture
def secured_broker(tmp_path: Path, broker_files: tuple[Path, Path]) -> Iterator[tuple[MosquittoBroker, Path]]:
    """A private Mosquitto reading our files (they must exist first: the caller writes them)."""
    pw, acl = broker_files
    pid_file = tmp_path / "mosq" / "mosquitto.pid"
    broker = MosquittoBroker(tmp_path / "broker", auth_conf=(
        f"allow_anonymous false\npassword_file {pw}\nacl_file {acl}\npid_file {pid_file}"))
    try:
        yield broker, pid_file
    finally:
        broker.stop()


def test_real_mosquitto_enforces_passwords_and_acls(registry: str, unique_id: str, broker_files: tuple[Path, Path],
                                                    secured_broker: tuple[MosquittoBroker, Path]) -> None:
    dev_a, dev_b = unique_id + "-a", unique_id + "-b"
    _, pw_a = add_device(registry, dev_a)
    _, pw_b = add_device(registry, dev_b)
    write_broker_files(registry, *broker_files, service_users={"ingest-svc": "svc-pass"})
    broker, pid_file = secured_broker
    port = broker.start()

    ingest = Probe(port, "ingest-svc", "svc-pass")
    a = Probe(port, dev_a, pw_a)
    probes = [ingest, a]
    try:
        assert not ingest.connack.is_failure and not a.connack.is_failure
        assert not ingest.subscribe("$share/ingest/vinsight/v1/data/+/+").is_failure
        assert not ingest.subscribe("vinsight/v1/status/+/+").is_failure

        assert not a.publish(f"vinsight/v1/data/{dev_a}/samples", b"own-data").is_failure
        assert ingest.received(b"own-data", 3)
        assert not a.publish(f"vinsight/v1/status/{dev_a}/state", b"own-state").is_failure
        assert ingest.received(b"own-state", 3)

        # Writing as another device: PUBACK "not authorized" (0x87), nothing delivered. Mosquitto 2.0.11
        # then also closes the connection, so this runs on a connection of its own.
        spoofer = Probe(port, dev_a, pw_a)
        probes.append(spoofer)
        spoof = spoofer.publish(f"vinsight/v1/data/{dev_b}/samples", b"spoofed")
        assert spoof.is_failure and spoof.value == 0x87
        assert not ingest.received(b"spoofed", 1.0)

        # Reading other devices' topics. Mosquitto's acl_file does not refuse SUBSCRIBE (2.0's default
        # ACL check grants every subscription and applies "read" rights to each message delivered), so
        # the guarantee is that nothing is delivered; a broker that refuses at SUBACK is stricter still.
        b_cmd = f"vinsight/v1/cmd/{dev_b}/config"
        assert not ingest.publish(b_cmd, b"cfg-b-retained", retain=True).is_failure
        granted_other = not a.subscribe(b_cmd).is_failure
        granted_fleet = not a.subscribe("vinsight/v1/data/#").is_failure
        assert not a.subscribe(f"vinsight/v1/cmd/{dev_a}/config").is_failure
        assert not ingest.publish(f"vinsight/v1/cmd/{dev_a}/config", b"cfg-a").is_failure
        assert not ingest.publish(b_cmd, b"cfg-b").is_failure
        b = Probe(port, dev_b, pw_b)
        probes.append(b)
        assert not b.subscribe(b_cmd).is_failure
        assert not b.publish(f"vinsight/v1/data/{dev_b}/samples", b"b-data").is_failure
        assert a.received(b"cfg-a", 3) and b.received(b"cfg-b-retained", 3) and ingest.received(b"b-data", 3)
        assert not a.received(b"cfg-b", 1.0), f"A read B's commands (SUBACK granted: {granted_other})"
        assert not a.received(b"cfg-b-retained", 0) and not a.received(b"b-data", 0), \
            f"A read B's traffic (SUBACK granted: {granted_other}, {granted_fleet})"

        wrong = Probe(port, dev_b, pw_a)
        assert wrong.connack.is_failure and wrong.connack.value in (0x86, 0x87)  # bad credentials / not authorized
        wrong.close()

        # Revoke A, regenerate, SIGHUP: the broker refuses A's next CONNECT and still admits B.
        revoke_device(registry, dev_a)
        write_broker_files(registry, *broker_files, service_users={"ingest-svc": "svc-pass"})
        assert reload_broker(pid_file) == broker._proc.pid
        deadline = time.monotonic() + 5
        while a.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not a.client.is_connected(), "the reload should drop the revoked device's live connection"
        deadline, again = time.monotonic() + 5, None
        while time.monotonic() < deadline:
            again = Probe(port, dev_a, pw_a)
            again.close()
            if again.connack.is_failure:
                break
            time.sleep(0.1)
        assert again is not None and again.connack.value in (0x86, 0x87)
        b_again = Probe(port, dev_b, pw_b)
        probes.append(b_again)
        assert not b_again.connack.is_failure
    finally:
        for p in probes:
            p.close()


# --- command line ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vinsight")
    device_cli.register(parser.add_subparsers(dest="command"))
    return parser


def _run(*argv: str) -> int:
    args = _parser().parse_args(list(argv))
    return args.func(args)


def test_cli_help_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["device"], ["device", "add"], ["device", "list"], ["device", "revoke"], ["device", "broker-files"]):
        with pytest.raises(SystemExit) as exc:
            _parser().parse_args([*argv, "--help"])
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: vinsight device" in out and "--reload-pid-file" in out and "VINSIGHT_DB_URL" in out


def test_cli_add_list_revoke_and_broker_files(registry: str, unique_id: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run("device", "add", unique_id, "--vin", VIN, "--owner", "app-9", "--db-url", registry) == 0
    out = capsys.readouterr().out
    [line] = [x for x in out.splitlines() if x.startswith("VINSIGHT_AGENT_MQTT_PASSWORD=")]
    password = line.split("=", 1)[1]
    assert out.count(password) == 1
    assert f"VINSIGHT_AGENT_DEVICE_ID={unique_id}" in out and f"VINSIGHT_AGENT_MQTT_USERNAME={unique_id}" in out
    with psycopg.connect(registry) as conn:
        hashed = conn.execute("SELECT password_hash FROM devices WHERE device_id = %s", (unique_id,)).fetchone()[0]
    assert verify_mosquitto_hash(password, hashed)

    # User errors: exit 2, one line on stderr, no traceback.
    for argv in (["device", "add", unique_id], ["device", "add", "Bad Id"], ["device", "revoke", "nobody-here"]):
        assert _run(*argv, "--db-url", registry) == 2
        err = capsys.readouterr().err
        assert err.startswith("vinsight device: error: ") and err.count("\n") == 1 and "Traceback" not in err

    monkeypatch.setenv("VINSIGHT_DB_URL", registry)  # the default comes from the ingest settings
    assert _run("device", "list", "--json") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["device_id"], row["status"], row["vin"], row["owner"]) == (unique_id, "active", VIN, "app-9")
    assert _run("device", "list") == 0
    assert unique_id in capsys.readouterr().out

    monkeypatch.setenv("VINSIGHT_INGEST_MQTT_USERNAME", "ingest-svc")
    monkeypatch.setenv("VINSIGHT_INGEST_MQTT_PASSWORD", "svc-pass")
    monkeypatch.setenv("PORTAL_MQTT_PW", "portal-pass")
    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    assert _run("device", "broker-files", "--password-file", str(pw), "--acl-file", str(acl),
                "--service-user", "portal-svc", "--service-password-env", "PORTAL_MQTT_PW") == 0
    assert "1 devices, 2 service users" in capsys.readouterr().out
    assert {line.split(":")[0] for line in pw.read_text().splitlines()} == {unique_id, "ingest-svc", "portal-svc"}
    assert "user portal-svc" in acl.read_text()
    assert _run("device", "broker-files", "--password-file", str(pw), "--acl-file", str(acl),
                "--service-user", "x-svc", "--service-password-env", "UNSET_VAR_FOR_TEST") == 2
    assert "UNSET_VAR_FOR_TEST" in capsys.readouterr().err

    assert _run("device", "revoke", unique_id) == 0
    assert "revoked" in capsys.readouterr().out
    assert _run("device", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "revoked"

    assert _run("device", "list", "--db-url", "postgresql://nobody@127.0.0.1:1/none") == 1
    assert "cannot reach the database" in capsys.readouterr().err
