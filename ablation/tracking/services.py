"""Throw-away services for the team setup: a PostgreSQL cluster and an `mlflow server` on 127.0.0.1.

Used by the multi-machine test and by `make services`. The PostgreSQL server binaries come from the
machine (`/usr/lib/postgresql/*/bin`); PostgreSQL refuses to run as root, so as root the cluster belongs to
the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ablation.errors import UserError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise UserError(f"services: PostgreSQL's {name} is not installed (looked in PATH and /usr/lib/postgresql)")
    return found


def _as_owner(cmd: list[str]) -> list[str]:
    """`cmd` as the postgres user when we are root (initdb and postgres refuse root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class Postgres:
    """A PostgreSQL cluster in `folder`, listening on 127.0.0.1:`port` only, trusting local connections."""

    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "pgdata"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> Postgres:
        """initdb (once) and start the server; returns self when it accepts connections."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            self.folder.chmod(0o755)
        if not (self.data / "PG_VERSION").exists():
            subprocess.run(
                _as_owner([_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                check=True,
                capture_output=True,
            )
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data} -c max_connections=200 -c fsync=off"
        subprocess.run(
            _as_owner(
                [_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.data / "log"), "-w", "start"]
            ),
            check=True,
            capture_output=True,
        )
        return self

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name`; returns its URL."""
        subprocess.run(
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name],
            check=True,
            capture_output=True,
        )
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            _as_owner([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]), capture_output=True
        )


@dataclass
class MlflowServer:
    """`mlflow server` on 127.0.0.1:`port` with `backend` (a database URL) and artifacts in `artifacts`."""

    backend: str
    artifacts: Path
    port: int
    log: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float | None = None) -> MlflowServer:
        """Start the server in its own process group and wait until /health answers, for as long as its
        process lives (under load it can take minutes to come up), or at most `timeout` seconds."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        command = [
            *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port)),
            *("--backend-store-uri", self.backend, "--artifacts-destination", str(self.artifacts)),
            *("--workers", "2"),
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        start = time.monotonic()
        while timeout is None or time.monotonic() < start + timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer within {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
