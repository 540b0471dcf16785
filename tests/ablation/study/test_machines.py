"""Many machines, one study, on real services: a throw-away PostgreSQL cluster for Optuna and the leases,
and an `mlflow server` on 127.0.0.1 with a PostgreSQL backend. Three machines start at once on empty
databases, one is killed with SIGKILL mid-study, a replacement joins, and the study ends complete."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from ablation.report.build import build_report
from ablation.study.tuning import KILL_AFTER_TRIALS
from ablation.tracking.services import MlflowServer, Postgres, free_port
from tests.conftest import FIXTURE, REPO, SMOKE

pytestmark = pytest.mark.slow

LEASE_S = 6.0


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[str, str]]:
    """(Optuna storage URL, MLflow tracking URL) on a fresh cluster and server, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="ablation-services-"))
    folder.chmod(0o755)  # the cluster may belong to the postgres user
    pg = Postgres(folder / "pg", free_port()).start()
    server = None
    try:
        storage = pg.create_database("optuna")
        server = MlflowServer(pg.create_database("mlflow"), folder / "artifacts", free_port(), folder / "mlflow.log")
        server.start()
        yield storage, server.url
    finally:
        if server is not None:
            server.stop()
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _machine(corpus: Path, storage: str, tracking: str, run_dir: Path, env: dict[str, str]) -> subprocess.Popen:
    sets = [
        *FIXTURE,
        f"study.storage={storage}",
        f"study.lease_s={LEASE_S}",
        "study.n_trials=3",
        "study.zero_shot=true",
    ]
    cmd = [
        *(sys.executable, "-m", "ablation", "run", "--config", str(SMOKE), "--corpus", str(corpus)),
        *("--tracking-uri", tracking, "--run-dir", str(run_dir), "--no-report"),
        *[a for s in sets for a in ("--set", s)],
    ]
    log = open(run_dir.with_suffix(".log"), "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})


def test_three_machines_one_killed_a_replacement_joins_and_the_study_completes(
    corpus: Path, tmp_path: Path, services: tuple[str, str]
) -> None:
    storage, tracking = services
    machines = [
        _machine(corpus, storage, tracking, tmp_path / "m1", {KILL_AFTER_TRIALS: "0"}),  # SIGKILL in its 1st trial
        _machine(corpus, storage, tracking, tmp_path / "m2", {}),
        _machine(corpus, storage, tracking, tmp_path / "m3", {}),
    ]
    assert machines[0].wait(timeout=600) == -9, (tmp_path / "m1.log").read_text()[-3000:]
    killed_at = time.time()
    replacement = _machine(corpus, storage, tracking, tmp_path / "m4", {})
    for name, p in zip(("m2", "m3", "m4"), [*machines[1:], replacement], strict=True):
        assert p.wait(timeout=900) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]

    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    roles = [r.data.tags["role"] for r in runs]
    assert roles.count("study") == 1 and roles.count("arm") == 2 and roles.count("zero-shot") == 1
    assert all(r.info.status == "FINISHED" for r in runs), [(r.data.tags["role"], r.info.status) for r in runs]
    workers = set()
    for arm in ("shared", "unshared"):
        finals = sorted(
            r.data.tags["seed"] for r in runs if r.data.tags["role"] == "final" and r.data.tags["arm"] == arm
        )
        assert finals == ["1", "2"]  # exactly one finished final run per (arm, seed)
        trials = optuna.load_study(study_name=f"smoke-{arm}", storage=storage).get_trials()
        states = [t.state for t in trials]
        used = sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states)
        assert used == 3, states  # the budget, not more
        workers |= {t.user_attrs["worker"] for t in trials}
        assert optuna.trial.TrialState.RUNNING not in states
    assert len(workers) >= 3  # the work was spread, the killed machine's included

    failed = [
        t
        for arm in ("shared", "unshared")
        for t in optuna.load_study(study_name=f"smoke-{arm}", storage=storage).get_trials()
        if t.state == optuna.trial.TrialState.FAIL
    ]
    assert len(failed) == 1  # the killed machine's trial, failed by the others and retried
    recovery = failed[0].datetime_complete.timestamp() - killed_at
    print(f"\nkilled machine's trial failed {recovery:.1f} s after the kill (lease {LEASE_S} s)")
    assert recovery < LEASE_S + 30

    out = build_report("smoke", tracking_uri=tracking, out_dir=str(tmp_path / "report"), experiment="smoke")
    text = Path(out.markdown).read_text()
    assert "complete" in text.lower() and "incomplete" not in text.lower()
