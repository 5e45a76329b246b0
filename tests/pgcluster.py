"""A throwaway PostgreSQL cluster for the store's tests: Debian's server binaries (scripts/setup.sh installs the
``postgresql`` package with the test dependencies), a data folder in /tmp, loopback TCP on a free port, trust
authentication. Started once per test run, stopped and removed at the end; ``restart`` is what the
held-writes test does to a live call.

PostgreSQL refuses to run as root (CI runs as root): then the cluster runs as the ``postgres`` account the package
creates, in a folder it owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError("PostgreSQL's server binaries are not installed: run TINGSHUO_TEST_DEPS=1 bash "
                       "scripts/setup.sh (apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    def __init__(self) -> None:
        self.bin = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="tingshuo-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user: str | None = None
        if os.getuid() == 0:
            import pwd

            self.user = "postgres"
            pw = pwd.getpwnam(self.user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        self.start()

    def _run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        full = ["runuser", "-u", self.user, "--", *cmd] if self.user else list(cmd)
        return subprocess.run(full, check=True, capture_output=True, text=True, cwd=self.root)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def database(self) -> str:
        """A new empty database's URL (each test gets its own)."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        import psycopg

        t0 = time.time()
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.time() - t0 > timeout_s:
                    raise
                time.sleep(0.2)

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
