"""The team services as `make services` starts them let in only their owner, keep their data safe in a
crash, and a study run through them (3 machines, one with the password in its storage URL) records and
prints that password nowhere."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ablation.tracking.services import CREDENTIALS, SERVICES_ENV, MlflowServer, Postgres, free_port, start_services
from tests.ablation.study.test_machines import Services, _check_study, _log, _machine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def secured() -> Iterator[tuple[Path, Postgres, MlflowServer]]:
    root = Path(tempfile.mkdtemp(prefix="ablation-secured-"))
    root.chmod(0o755)
    pg, server = start_services(root / "services", free_port(), free_port())
    try:
        yield root / "services", pg, server
    finally:
        server.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def _password(folder: Path) -> str:
    return (folder / "pgpass").read_text().split("\n")[0].rsplit(":", 1)[1]


def test_only_the_owner_gets_in_and_nothing_is_lost_in_a_crash(secured: tuple[Path, Postgres, MlflowServer]) -> None:
    folder, pg, server = secured
    for name in ("pgpass", "mlflow-auth.ini", CREDENTIALS, "mlflow-flask-key", "mlflow-auth.db"):
        assert (folder / name).stat().st_mode & 0o777 == 0o600, name
    psql = ["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-w", "-tAc"]
    nobody = subprocess.run(
        ["runuser", "-u", "nobody", "--", *psql, "select 1", "optuna"], capture_output=True, text=True, timeout=60
    )
    assert nobody.returncode != 0 and "password" in nobody.stderr, nobody.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSFILE", "PGPASSWORD")}
    without = subprocess.run([*psql, "select 1", "optuna"], capture_output=True, text=True, timeout=60, env=env)
    assert without.returncode != 0  # not even root, without the password file
    owner = subprocess.run([*psql, "show fsync", "optuna"], capture_output=True, text=True, timeout=60, env=pg.env())
    assert owner.returncode == 0 and owner.stdout.strip() == "on", owner.stderr
    url = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=30)
    assert refused.value.code == 401
    creds = dict(line.split("=", 1) for line in (folder / CREDENTIALS).read_text().splitlines())
    token = base64.b64encode(f"{creds['MLFLOW_TRACKING_USERNAME']}:{creds['MLFLOW_TRACKING_PASSWORD']}".encode())
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token.decode()}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200


def test_a_study_through_the_secured_services_leaves_its_password_nowhere(
    corpus: Path, tmp_path: Path, secured: tuple[Path, Postgres, MlflowServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, pg, server = secured
    password = _password(folder)
    monkeypatch.setenv(SERVICES_ENV, str(folder))  # the harness picks up both credentials from there
    plain = pg.url("optuna")
    with_password = plain.replace("postgres@", f"postgres:{password}@")
    study = "smoke-secured"
    services = Services(plain, server.url, pg, server)
    machines = {
        "p1": _machine(corpus, Services(with_password, server.url, pg, server), tmp_path / "p1", study),
        "p2": _machine(corpus, services, tmp_path / "p2", study),
        "p3": _machine(corpus, services, tmp_path / "p3", study, args=("--workers", "2")),
    }
    for name, proc in machines.items():
        assert proc.wait(timeout=900) == 0, _log(tmp_path / name)
    creds = dict(line.split("=", 1) for line in (folder / CREDENTIALS).read_text().splitlines())
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # this process reads the study too
        monkeypatch.setenv(key, creds[key])
    monkeypatch.setenv("PGPASSFILE", str(pg.passfile))
    _check_study(services, study, tmp_path)  # also writes the report (to tmp_path), through the server
    secret = password.encode()
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and secret in p.read_bytes()]
    leaks += [p for p in (folder / "artifacts").rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert not leaks, leaks  # run folders, logs (stdout and stderr), reports, artifacts
    for database in ("mlflow", "optuna"):  # params, tags, metrics, Optuna's attributes
        dump = subprocess.run(
            ["pg_dump", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-w", database],
            capture_output=True,
            timeout=120,
            env=pg.env(),
            check=True,
        ).stdout
        assert dump and secret not in dump, database
