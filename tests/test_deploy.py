"""deploy/ stays consistent with the code: no Docker needed, each check against the real thing.

* compose.yaml parses; every VINsight service's command is a real ``vinsight`` command (parsed by
  the CLI's own argparse parser behind the image's entry point), worker indexes, health checks and
  Prometheus targets agree, and every VINSIGHT_* name it sets is one a settings class reads;
* the systemd units' ExecStart lines parse the same way, and ``systemd-analyze verify`` accepts the
  units (skipped where systemd-analyze is absent);
* vinsight.env.example documents every settings field with its current default;
* the real Mosquitto accepts deploy/mosquitto/mosquitto.conf: a provisioned device connects over
  TLS with the password ``vinsight device add`` gave it, a wrong password and anonymous clients
  are refused, the ingest service user connects on the internal listener, and the broker announces
  the flow-control limits the file explains;
* every Grafana SQL query runs (EXPLAIN) on a migrated database as the read-only role
  timescaledb/grafana-reader.sql creates, and every Prometheus expression names only metrics an
  ingest worker exports.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
sys.path.insert(0, str(DEPLOY))

import check_env_example  # noqa: E402

VINSIGHT_IMAGE = "vinsight-server"


def load_compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def vinsight_services(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items()
            if str(svc.get("image", "")).startswith(VINSIGHT_IMAGE)}


def dockerfile_entrypoint() -> list[str]:
    m = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert m, "deploy/Dockerfile has no exec-form ENTRYPOINT"
    return json.loads(m.group(1))


def parse_vinsight(argv: list[str]) -> argparse.Namespace | None:
    """Parse a ``vinsight`` command line with the real CLI parser; None for a --help that exits 0."""
    from vinsight.cli import build_parser

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 0, f"`vinsight {shlex.join(argv)}` is not a valid command"
        return None
    assert getattr(args, "func", None) is not None, f"`vinsight {shlex.join(argv)}` names no command"
    return args


# --- compose --------------------------------------------------------------------------------------


def test_compose_has_the_production_services() -> None:
    compose = load_compose()
    services = compose["services"]
    for name in ("timescaledb", "mosquitto", "migrate", "broker-files", "ingest-0", "ingest-1", "analytics",
                 "maintain", "portal", "caddy", "prometheus", "grafana"):
        assert name in services, f"compose.yaml has no {name} service"
    assert re.fullmatch(r"timescale/timescaledb:2\.28\.\d+-pg15", services["timescaledb"]["image"])
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2.")
    assert "8883:8883" in services["mosquitto"]["ports"], "devices reach the broker on 8883 (TLS)"
    assert not any("1883" in p.split(":")[0] for p in services["mosquitto"]["ports"]), \
        "the plain listener must stay on the internal network"
    for name in ("timescaledb", "portal", "ingest-0"):
        assert "ports" not in services[name], f"{name} must not be published on the host"
    build = vinsight_services(compose)["migrate"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()


def test_compose_commands_are_real_vinsight_commands() -> None:
    entry = dockerfile_entrypoint()
    assert entry[0] == "vinsight"
    services = vinsight_services(load_compose())
    assert len(services) >= 8
    parsed = {}
    for name, svc in services.items():
        command = svc["command"]
        assert isinstance(command, list), f"{name}: use the exec form for command"
        parsed[name] = parse_vinsight(entry[1:] + command)
    assert parsed["migrate"].db_command == "migrate"
    assert parsed["analytics"].loop and parsed["maintain"].loop
    assert parsed["portal"].port == 8000 and parsed["portal"].host == "0.0.0.0"
    assert parsed["broker-files"].password_file.parent == parsed["broker-files"].acl_file.parent


def test_ingest_workers_healthchecks_and_prometheus_agree() -> None:
    from ingest.settings import IngestSettings

    base = IngestSettings.model_fields["metrics_port"].default
    entry = dockerfile_entrypoint()
    compose = load_compose()
    workers = {n: s for n, s in vinsight_services(compose).items() if n.startswith("ingest-")}
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "vinsight-ingest")
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    indexes = set()
    for name, svc in workers.items():
        args = parse_vinsight(entry[1:] + svc["command"])
        assert args.ingest_command == "worker"
        assert name == f"ingest-{args.index}", f"{name} runs worker index {args.index}"
        indexes.add(args.index)
        port = base + args.index
        assert f"127.0.0.1:{port}/healthz" in " ".join(svc["healthcheck"]["test"])
        assert f"{name}:{port}" in targets, f"prometheus.yml does not scrape {name}:{port}"
        assert svc["environment"]["VINSIGHT_INGEST_METRICS_HOST"] == "0.0.0.0"
    assert indexes == set(range(len(workers))), "worker indexes must be 0..N-1, each once"
    assert len(targets) == len(workers)


def test_compose_sets_only_real_settings() -> None:
    known = set(check_env_example.expected_lines())
    for name, svc in load_compose()["services"].items():
        env = svc.get("environment") or {}
        for key in env:
            if key.startswith("VINSIGHT_"):
                assert key in known, f"{name}: {key} is read by no settings class"
        for env_file in svc.get("env_file", []):
            assert env_file == "vinsight.env", "the env file is a copy of vinsight.env.example"


def test_caddy_proxies_to_the_portal() -> None:
    caddy = (DEPLOY / "caddy" / "Caddyfile").read_text()
    assert re.search(r"reverse_proxy\s+portal:8000\b", caddy)
    assert "health_uri /healthz" in caddy


# --- the settings example -------------------------------------------------------------------------


def test_env_example_documents_every_setting() -> None:
    problems = check_env_example.check((DEPLOY / "vinsight.env.example").read_text())
    assert not problems, "deploy/vinsight.env.example is out of date (python deploy/check_env_example.py " \
                         "--write):\n" + "\n".join(problems)


def test_env_example_check_catches_drift() -> None:
    text = (DEPLOY / "vinsight.env.example").read_text()
    assert check_env_example.check(text.replace("#VINSIGHT_INGEST_FLUSH_ROWS=20000\n", ""))
    assert check_env_example.check(text.replace("#VINSIGHT_PORTAL_POOL_MAX=20", "#VINSIGHT_PORTAL_POOL_MAX=21"))
    assert check_env_example.check(text + "VINSIGHT_INGEST_NO_SUCH_THING=1\n")
    for name in ("VINSIGHT_DB_URL", "VINSIGHT_MQTT_HOST", "VINSIGHT_INGEST_DB_URL", "VINSIGHT_PORTAL_JWT_SECRET",
                 "VINSIGHT_ANALYTICS_INTERVAL_S"):
        assert name in check_env_example.expected_lines()


# --- systemd --------------------------------------------------------------------------------------


UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def test_systemd_units_run_real_commands() -> None:
    names = {u.name for u in UNITS}
    for unit in ("vinsight-ingest@.service", "vinsight-analytics.service", "vinsight-maintain.service",
                 "vinsight-portal.service", "vinsight-migrate.service"):
        assert unit in names
    known = set(check_env_example.expected_lines())
    for unit in UNITS:
        text = unit.read_text()
        assert "EnvironmentFile=/etc/vinsight/vinsight.env" in text, unit.name
        assert "ProtectSystem=strict" in text and "NoNewPrivileges=yes" in text, unit.name
        (line,) = re.findall(r"^ExecStart=(.*)$", text, re.M)
        argv = shlex.split(line.replace("%i", "0"))
        assert argv[0] == "/opt/vinsight/venv/bin/vinsight", unit.name
        parse_vinsight(argv[1:])
        for name in re.findall(r"\b(VINSIGHT_[A-Z0-9_]+)=", text):
            assert name in known, f"{unit.name}: {name} is read by no settings class"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).parent / "vinsight")
    if not Path(exe).exists():
        pytest.skip("the vinsight entry point is not installed next to this Python")
    paths = []
    for unit in sorted((DEPLOY / "systemd").iterdir()):
        text = unit.read_text().replace("/opt/vinsight/venv/bin/vinsight", exe)
        name = unit.name.replace("@.service", "@0.service")
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", *paths], capture_output=True, text=True,
                          timeout=120)
    ours = [ln for ln in (proc.stdout + proc.stderr).splitlines() if str(tmp_path) in ln or "vinsight" in ln]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


# --- Mosquitto ------------------------------------------------------------------------------------


def _mosquitto() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)


def _connect(port: int, user: str | None, password: str | None, ca: Path | None):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    result: dict = {}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t" + uuid.uuid4().hex[:10], protocol=mqtt.MQTTv5)
    if user is not None:
        client.username_pw_set(user, password)
    if ca is not None:
        client.tls_set(ca_certs=str(ca))
    client.on_connect = lambda _c, _u, _f, rc, props: result.update(rc=rc, props=props)
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.monotonic() + 10
    while "rc" not in result and time.monotonic() < deadline:
        time.sleep(0.02)
    client.loop_stop()
    client.disconnect()
    assert "rc" in result, "no CONNACK"
    return result["rc"], result["props"]


@pytest.mark.skipif(_mosquitto() is None or shutil.which("openssl") is None, reason="mosquitto/openssl missing")
def test_mosquitto_conf_with_generated_credentials(pg_dsn: str, tmp_path: Path) -> None:
    from ingest.migrate import migrate
    from ingest.provisioning import add_device, write_broker_files
    from vinsight.embedded import free_port, wait_for_port

    migrate(pg_dsn)
    device = add_device(pg_dsn, "car-" + uuid.uuid4().hex[:8])
    write_broker_files(pg_dsn, tmp_path / "passwd", tmp_path / "acl", service_users={"ingest": "ingest-secret"})

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=vinsight-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj",
            "/CN=localhost")
    (tmp_path / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "1", "-extfile", "ext")

    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    tls_port, plain_port = free_port(), free_port()
    (tmp_path / "data").mkdir()
    conf = (conf.replace("/mosquitto/auth/", f"{tmp_path}/").replace("/mosquitto/certs/", f"{tmp_path}/")
            .replace("/mosquitto/data/", f"{tmp_path}/data/"))
    conf = re.sub(r"^listener 8883$", f"listener {tls_port} 127.0.0.1", conf, flags=re.M)
    conf = re.sub(r"^listener 1883$", f"listener {plain_port} 127.0.0.1", conf, flags=re.M)
    assert f"listener {tls_port}" in conf and f"listener {plain_port}" in conf
    if os.geteuid() == 0:  # as root Mosquitto would switch to its own user and lose the temp dir
        conf += f"\nuser {pwd.getpwuid(0).pw_name}\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    log = open(tmp_path / "mosquitto.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([_mosquitto(), "-c", str(tmp_path / "mosquitto.conf")], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_port("127.0.0.1", tls_port, 10)
            wait_for_port("127.0.0.1", plain_port, 10)
        except TimeoutError:
            pytest.fail("mosquitto refused deploy/mosquitto/mosquitto.conf:\n" +
                        (tmp_path / "mosquitto.log").read_text())
        ca = tmp_path / "ca.crt"
        rc, props = _connect(tls_port, device.device_id, device.password, ca)
        assert rc == 0, f"provisioned device refused over TLS: {rc}"
        assert _connect(tls_port, device.device_id, "wrong", ca)[0] != 0
        assert _connect(plain_port, None, None, None)[0] != 0, "anonymous clients must be refused"
        rc, props = _connect(plain_port, "ingest", "ingest-secret", None)
        assert rc == 0, "the ingest service user connects on the internal listener"
        inflight = int(re.search(r"^max_inflight_messages (\d+)$", conf, re.M).group(1))
        packet = int(re.search(r"^max_packet_size (\d+)$", conf, re.M).group(1))
        assert props.ReceiveMaximum == inflight
        assert props.MaximumPacketSize == packet
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    assert "persistence true" in conf and re.search(r"^max_queued_messages 0$", conf, re.M)


# --- Grafana --------------------------------------------------------------------------------------


def dashboard_targets() -> list[tuple[str, dict]]:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "vinsight.json").read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target))
    return out


def provisioned_datasources() -> dict[str, str]:
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "vinsight.yaml").read_text())
    return {d["uid"]: d["type"] for d in ds["datasources"]}


def test_grafana_provisioning_is_consistent() -> None:
    datasources = provisioned_datasources()
    assert set(datasources.values()) == {"grafana-postgresql-datasource", "prometheus"}
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "vinsight.json").read_text())
    assert dash["uid"] and dash["panels"]
    kinds = set()
    for title, target in dashboard_targets():
        uid = target["datasource"]["uid"]
        assert uid in datasources, f"{title}: unknown datasource {uid}"
        kinds.add(datasources[uid])
    assert kinds == {"grafana-postgresql-datasource", "prometheus"}, "the dashboard covers rollups and metrics"
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "vinsight.yaml").read_text())
    grafana = load_compose()["services"]["grafana"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    assert provider["providers"][0]["options"]["path"] in mounted
    pg_ds = next(d for d in yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" /
                                            "vinsight.yaml").read_text())["datasources"] if d["type"] != "prometheus")
    assert f"\\set reader {pg_ds['user']}" in (DEPLOY / "timescaledb" / "grafana-reader.sql").read_text()


def _expand_grafana_sql(sql: str) -> str:
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", r"\1 BETWEEN now() - INTERVAL '7 days' AND now()", sql)
    sql = sql.replace("${vehicle:sqlstring}", "'car-0001'")
    assert "$" not in sql, f"unexpanded Grafana macro in: {sql}"
    return sql


def test_grafana_sql_runs_as_the_reader_role(pg_dsn: str) -> None:
    import psycopg

    from ingest.maintenance import apply_storage_policies
    from ingest.migrate import migrate
    from ingest.settings import IngestSettings

    migrate(pg_dsn)
    apply_storage_policies(pg_dsn, IngestSettings(db_url=pg_dsn))
    queries = [(title, t["rawSql"]) for title, t in dashboard_targets() if "rawSql" in t]
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "vinsight.json").read_text())
    queries += [("variable " + v["name"], v["query"]) for v in dash["templating"]["list"]]
    assert len(queries) >= 10
    role = None
    if shutil.which("psql"):
        role = "grafana_reader_" + uuid.uuid4().hex[:8]
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"reader={role}", "-v", "grafana_pw=x",
                        "-d", pg_dsn, "-f", str(DEPLOY / "timescaledb" / "grafana-reader.sql")],
                       check=True, capture_output=True, timeout=60)
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            if role:
                conn.execute(f'SET ROLE "{role}"')
            for title, sql in queries:
                try:
                    conn.execute("EXPLAIN " + _expand_grafana_sql(sql))
                except psycopg.Error as exc:
                    pytest.fail(f"Grafana panel {title!r}: {exc}")
            if role:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("SELECT password_hash FROM devices")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("SELECT count(*) FROM samples")
    finally:
        if role:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute(f'DROP OWNED BY "{role}"')
                conn.execute(f'DROP ROLE "{role}"')


def exported_metric_names() -> set[str]:
    from ingest.metrics import IngestMetrics

    names = set()
    for family in IngestMetrics().registry.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum", "_created")}
        else:
            names.add(family.name)
    return names


def test_prometheus_expressions_use_exported_metrics() -> None:
    exported = exported_metric_names()
    assert "vinsight_ingest_samples_total" in exported
    exprs = [(title, t["expr"]) for title, t in dashboard_targets() if "expr" in t]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs += [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) >= 15
    used = set()
    for title, expr in exprs:
        for name in re.findall(r"\b(vinsight_[a-z0-9_]+)", expr):
            assert name in exported, f"{title}: {name} is not a metric ingest exports"
            used.add(name)
    for name in ("vinsight_ingest_samples_total", "vinsight_ingest_publish_to_commit_seconds_bucket",
                 "vinsight_ingest_consumer_lag_seconds", "vinsight_ingest_rejects_total"):
        assert name in used
