"""A PostgreSQL cluster of the test's own, which a fault test may stop and restart.

The machine's PostgreSQL is shared by every test, so restarting it would be a test of something
else. This runs the machine's own server binaries (``initdb``/``pg_ctl`` of the installed major
version) on a free port in a temporary directory; as root it runs them as the ``postgres`` user,
because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from vinsight.embedded import free_port, wait_for_port


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class PrivatePostgres:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vinsight-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")

    @staticmethod
    def available() -> bool:
        return _bin("initdb") is not None and _bin("pg_ctl") is not None

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PrivatePostgres:
        if not self.data.exists():
            self._run(str(_bin("initdb")), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--no-sync")
            with open(self.data / "postgresql.conf", "a") as conf:
                conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                           f"unix_socket_directories = '{self.dir}'\nfsync = off\nshared_buffers = 64MB\n")
        self._run(str(_bin("pg_ctl")), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "start")
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(str(_bin("pg_ctl")), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
