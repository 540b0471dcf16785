"""The team services: a PostgreSQL cluster and an `mlflow server` on 127.0.0.1.

`make services` starts them secured (`start_services`): PostgreSQL asks for a generated password
(scram-sha-256) kept in a libpq password file, the tracking server runs MLflow's basic-auth app with a
generated admin password, both files readable by their owner only (0600) in the services folder; fsync stays
on and the cluster stops with a fast (clean) shutdown. Tests may start throw-away clusters that trust local
connections and skip fsync, for speed. The PostgreSQL server binaries come from the machine
(`/usr/lib/postgresql/*/bin`); PostgreSQL refuses to run as root, so as root the cluster belongs to the
`postgres` user.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ablation.errors import UserError

PGPASS = "pgpass"  # libpq's password file: 127.0.0.1:*:*:postgres:<password>
AUTH_INI = "mlflow-auth.ini"  # the basic-auth app's config, with the admin password
CREDENTIALS = "mlflow-credentials"  # MLFLOW_TRACKING_USERNAME=… and MLFLOW_TRACKING_PASSWORD=… lines
FLASK_KEY = "mlflow-flask-key"  # the server's CSRF key
ADMIN = "admin"
SERVICES_ENV = "ABLATION_SERVICES_DIR"  # where `use_credentials` looks (default .services in the repository)


def write_secret(path: Path, text: str, owner: str | None = None) -> None:
    """Write `text` to a file only its owner can read or write (0600 from the start, never wider)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if owner:
        shutil.chown(path, owner)


def use_credentials(folder: Path) -> None:
    """Pick up the services' credentials from `folder` where the environment names none: libpq's password
    file (PGPASSFILE) and the tracking server's user and password (MLFLOW_TRACKING_USERNAME/PASSWORD)."""
    if "PGPASSFILE" not in os.environ and (folder / PGPASS).is_file():
        os.environ["PGPASSFILE"] = str(folder / PGPASS)
    creds = folder / CREDENTIALS
    if "MLFLOW_TRACKING_USERNAME" not in os.environ and creds.is_file():
        for line in creds.read_text().splitlines():
            key, _, value = line.partition("=")
            if key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                os.environ[key] = value


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
    """A PostgreSQL cluster in `folder`, listening on 127.0.0.1:`port` only. `secure`: a generated password
    (scram-sha-256, in `folder/pgpass`), fsync on and a fast shutdown; else it trusts local connections and
    runs without fsync (throw-away clusters of tests)."""

    folder: Path
    port: int
    secure: bool = False

    @property
    def data(self) -> Path:
        return self.folder / "pgdata"

    @property
    def passfile(self) -> Path:
        return self.folder / PGPASS

    def env(self) -> dict[str, str]:
        """The environment of a client that connects with the cluster's password file."""
        return {**os.environ, "PGPASSFILE": str(self.passfile)} if self.secure else dict(os.environ)

    def _initdb(self) -> None:
        cmd = [_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8"]
        if not self.secure:
            subprocess.run(_as_owner([*cmd, "--auth=trust"]), check=True, capture_output=True)
            return
        password = secrets.token_urlsafe(24)
        pwfile = self.folder / ".initdb-password"
        try:
            write_secret(pwfile, password + "\n", "postgres" if os.geteuid() == 0 else None)
            subprocess.run(
                _as_owner([*cmd, "--auth=scram-sha-256", f"--pwfile={pwfile}"]), check=True, capture_output=True
            )
        finally:
            pwfile.unlink(missing_ok=True)
        write_secret(self.passfile, f"127.0.0.1:*:*:postgres:{password}\nlocalhost:*:*:postgres:{password}\n")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> Postgres:
        """initdb (once) and start the server; returns self when it accepts connections."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            self.folder.chmod(0o755)
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data} -c max_connections=200"
        options += "" if self.secure else " -c fsync=off"
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
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-w", name],
            check=True,
            capture_output=True,
            env=self.env(),
        )
        return self.url(name)

    def stop(self) -> None:
        """A fast (clean) shutdown for the secured cluster; an immediate one for throw-away clusters."""
        mode = "fast" if self.secure else "immediate"
        subprocess.run(
            _as_owner([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]), capture_output=True
        )


@dataclass
class MlflowServer:
    """`mlflow server` on 127.0.0.1:`port` with `backend` (a database URL) and artifacts in `artifacts`."""

    backend: str
    artifacts: Path
    port: int
    log: Path
    process: subprocess.Popen | None = None
    auth: Path | None = None  # the basic-auth app's config: only its users get in
    env: dict[str, str] | None = None  # the server's environment (PGPASSFILE for its backend)

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
            *(("--app-name", "basic-auth") if self.auth else ()),
        ]
        env = {**(self.env or os.environ), **({"MLFLOW_AUTH_CONFIG_PATH": str(self.auth)} if self.auth else {})}
        # MLflow 3's job runner (three huey consumers, each a full mlflow import) serves GenAI features the
        # harness never calls; without it the server starts faster and holds about 0.75 GB less
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        start = time.monotonic()
        while timeout is None or time.monotonic() < start + timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # up, and asking who we are
                    return self
                time.sleep(0.5)
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


def _auth_config(folder: Path) -> Path:
    """The basic-auth app's config (once): no permission for anyone but the generated admin, whose
    password goes into `folder/mlflow-credentials` for the harness's clients."""
    ini = folder / AUTH_INI
    if not ini.is_file():
        password = secrets.token_urlsafe(24)
        write_secret(
            ini,
            "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
            f"database_uri = sqlite:///{folder / 'mlflow-auth.db'}\nadmin_username = {ADMIN}\n"
            f"admin_password = {password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
        )
        write_secret(folder / CREDENTIALS, f"MLFLOW_TRACKING_USERNAME={ADMIN}\nMLFLOW_TRACKING_PASSWORD={password}\n")
    if not (folder / "mlflow-auth.db").exists():  # the users' password hashes: created owner-only, then filled
        write_secret(folder / "mlflow-auth.db", "")
    if not (folder / FLASK_KEY).is_file():  # the server's CSRF key, by the environment (never on argv)
        write_secret(folder / FLASK_KEY, secrets.token_urlsafe(32))
    return ini


def start_services(folder: Path, pg_port: int, port: int) -> tuple[Postgres, MlflowServer]:
    """`make services`: the secured PostgreSQL (databases optuna and mlflow) and the tracking server with
    basic auth over it, both on 127.0.0.1; the data and the secrets stay in `folder` for the next start."""
    folder.mkdir(parents=True, exist_ok=True)
    pg = Postgres(folder, pg_port, secure=True).start()
    try:
        if not (folder / ".databases").exists():
            for name in ("optuna", "mlflow"):
                pg.create_database(name)
            (folder / ".databases").write_text("optuna mlflow\n")
        auth = _auth_config(folder)
        env = {**pg.env(), "MLFLOW_FLASK_SERVER_SECRET_KEY": (folder / FLASK_KEY).read_text()}
        server = MlflowServer(pg.url("mlflow"), folder / "artifacts", port, folder / "mlflow.log", auth=auth, env=env)
        server.start()
    except BaseException:
        pg.stop()
        raise
    return pg, server
