"""A SQLite MLflow store is whole or absent: a kill at any moment of its creation leaves either nothing or a
complete store, and a store whose creation an older version left half-built is set aside with one warning."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablation.errors import UserError
from ablation.tracking.sqlite_store import check_store
from ablation.tracking.store import Tracker

CREATE = "import sys; from ablation.tracking.store import Tracker; Tracker(sys.argv[1]); print('made', flush=True)"


def _complete(db: Path) -> bool:
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from alembic_version").fetchone()[0] == 1


@pytest.mark.slow
def test_kills_during_creation_leave_no_half_built_store(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    started = time.monotonic()
    made = subprocess.run([sys.executable, "-c", CREATE, uri], capture_output=True, text=True, check=True)
    full = time.monotonic() - started  # how long one start with creation takes here
    assert "made" in made.stdout and _complete(db)
    for i in range(10):  # kill at moments spread over the whole start, creation included
        db.unlink()
        proc = subprocess.Popen([sys.executable, "-c", CREATE, uri], stdout=subprocess.PIPE, text=True)
        time.sleep(full * (0.3 + 0.07 * i))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not db.exists() or _complete(db), f"kill {i}: a half-built store"
        Tracker(uri).experiment_id("after")  # the next start works, building the store if it is not there
        assert _complete(db)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("mlflow.db", "mlflow.db.lock", "mlartifacts")]
    assert leftovers == []


def test_a_half_built_store_without_runs_is_set_aside_with_one_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:  # what a kill left before: tables made, no migration recorded
        con.execute("create table experiments (experiment_id integer primary key, name text)")
        con.execute("create table runs (run_uuid text primary key)")
        con.execute("create table alembic_version (version_num text)")
    Tracker(f"sqlite:///{db}").experiment_id("x")
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning:") and "cut short" in warnings[0]
    assert _complete(db) and len(list(tmp_path.glob("mlflow.db.incomplete-*"))) == 1


def test_a_half_built_store_with_runs_is_refused_not_touched(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        con.execute("create table runs (run_uuid text primary key)")
        con.execute("insert into runs values ('abc')")
    before = db.read_bytes()
    with pytest.raises(UserError, match="incomplete MLflow store that holds runs"):
        check_store(db, "tracking URI")
    assert db.read_bytes() == before and os.listdir(tmp_path) == ["mlflow.db"]
