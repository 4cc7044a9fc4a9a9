"""Services for running VINsight on one machine with nothing configured by hand.

MQTT: our own Mosquitto process on a free port, with persistence in the demo directory. The agent
relies on MQTT v5 (the content-type property; ingest will add shared subscriptions); the
pure-Python brokers on PyPI (amqtt 0.12) speak only 3.1.1, so the demo installs Mosquitto from the
OS packages instead (``scripts/demo.sh`` does it) and says so clearly when it cannot.
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
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None
