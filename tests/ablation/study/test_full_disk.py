"""A full disk at any moment of a study leaves its MLflow store and Optuna journal intact or repaired: the
next start, with room again, finishes the study exactly. The full disk is a file-size limit (RLIMIT_FSIZE:
every write past it fails with EFBIG, as one past a full disk fails with ENOSPC), so no mount is needed."""

from __future__ import annotations

import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import FIXTURE, REPO, SMOKE

pytestmark = pytest.mark.slow

LIMITS_KIB = (64, 1200, 2500)  # measured: 64 stops the store's creation, 1200 and 2500 runs mid-study


def _run(corpus: Path, folder: Path, limit_kib: int | None) -> subprocess.CompletedProcess:
    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
        if limit_kib is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_kib * 1024, limit_kib * 1024))

    args = [sys.executable, "-m", "ablation", "run", "--config", str(SMOKE), "--corpus", str(corpus), "--no-report"]
    args += ["--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", "--run-dir", str(folder / "run")]
    args += [a for s in [*FIXTURE, "tracking.retry_s=1", f"data.cache_dir={folder / 'cache'}"] for a in ("--set", s)]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, preexec_fn=full_disk)


@pytest.mark.parametrize("limit_kib", LIMITS_KIB)
def test_a_full_disk_loses_nothing_and_the_next_start_finishes(corpus: Path, tmp_path: Path, limit_kib: int) -> None:
    full = _run(corpus, tmp_path, limit_kib)
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert full.returncode == 0 or len(errors) == 1, full.stderr[-3000:]  # one line, never a traceback
    assert "Traceback" not in full.stderr, full.stderr[-3000:]
    again = _run(corpus, tmp_path, None)
    assert again.returncode == 0, again.stderr[-3000:]
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], max_results=1000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    roles = sorted(r.data.tags["role"] for r in finished)
    assert roles.count("final") == 4 and roles.count("study") == 1 and roles.count("arm") == 2
    assert roles.count("trial") == 4  # n_trials 2 per arm, each counted once
