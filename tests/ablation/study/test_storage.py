"""Liveness on one machine is the operating system's: a worker is alive while it holds the flock on its file,
whatever its host name or pid, and a dead worker's running trial is failed and queued again with its slot
and parameters (and without the dead worker's name)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from ablation.config import load_config
from ablation.study.liveness import WorkerFile, fail_stale
from ablation.study.runner import run_study
from ablation.study.storage import JOURNAL, retry_stale
from ablation.tracking.store import Tracker
from tests.conftest import FIXTURE, REPO, SMOKE, SmokeStudy

HOLD = "import sys, time; from pathlib import Path; from ablation.study.liveness import WorkerFile; "
HOLD += "WorkerFile(Path(sys.argv[1]), sys.argv[2]); print('held', flush=True); time.sleep(600)"


def _holder(folder: Path, worker: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), worker], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_worker_is_alive_exactly_while_its_process_runs(tmp_path: Path) -> None:
    me = WorkerFile(tmp_path, "me0")
    other = _holder(tmp_path, "other0")
    try:
        assert me.alive("me0") and me.alive("other0")
        assert not me.alive("never0") and not me.alive(None) and not me.alive("../x")
    finally:
        other.kill()
        other.wait()
    assert not me.alive("other0")  # killed with -9: the kernel released its lock
    assert not (tmp_path / "workers" / "other0.alive").exists()  # and the file is cleaned up
    me.close()


def test_a_dead_workers_trial_is_failed_and_queued_again_with_its_point(tmp_path: Path) -> None:
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 0.25}, user_attrs={"slot": 0})
    study.enqueue_trial({"x": 0.75}, user_attrs={"slot": 1})
    live = _holder(tmp_path, "live0")
    dead = _holder(tmp_path, "dead0")
    dead.kill()
    dead.wait()
    trials = [study.ask(), study.ask()]
    for trial, worker in zip(trials, ("live0", "dead0"), strict=True):
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("host", "a-host-that-no-longer-exists")
    retried: list[int] = []
    me = WorkerFile(tmp_path, "me0")
    try:
        fail_stale(study, me, lambda s, t: (retried.append(t.number), retry_stale(s, t)))
    finally:
        live.kill()
        live.wait()
        me.close()
    states = {t.number: t.state for t in study.get_trials()}
    assert states[0] == TrialState.RUNNING and states[1] == TrialState.FAIL and retried == [1]
    again = study.get_trials(states=(TrialState.WAITING,))
    assert len(again) == 1 and again[0].params == {"x": 0.75} and again[0].user_attrs == {"slot": 1}


def test_every_database_call_of_optunas_cache_is_retried() -> None:
    """Optuna's cached storage calls the RDB storage's methods, private ones included; a restart of the
    database must be retried in each (the restart test found one that was not)."""
    import re

    import optuna.storages._cached_storage as cached

    from ablation.study.storage import retrying_rdb_storage

    called = set(re.findall(r"self\._backend\.([a-z_]+)", Path(cached.__file__).read_text()))
    no_database = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback"}
    assert called - no_database and not [n for n in called - no_database if n not in vars(retrying_rdb_storage())]


@pytest.mark.slow
def test_a_torn_journal_line_is_dropped_with_one_warning_and_the_study_goes_on(
    smoke_study: SmokeStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(smoke_study.root / "mlflow.db", tmp_path / "mlflow.db")
    shutil.copytree(smoke_study.root / "run", tmp_path / "run")
    journal = tmp_path / "run" / JOURNAL
    whole = journal.read_bytes()
    with open(journal, "ab") as f:  # what a kill in the middle of a write, or a full disk, leaves
        f.write(b'{"op_code": 5, "worker_id": "dead", "trial_id": 3, "par')
    cfg = load_config(SMOKE, FIXTURE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    capsys.readouterr()
    summary = run_study(cfg, corpus=str(smoke_study.corpus), tracking_uri=uri, run_dir=str(tmp_path / "run"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(journal) in warnings[0] and "cut short" in warnings[0]
    assert journal.read_bytes().startswith(whole) and journal.read_bytes().endswith(b"\n")
    assert "done" in summary and len(Tracker(uri).search("smoke", {})) == smoke_study.runs_after_first


@pytest.mark.parametrize("damage", ["deleted", "cut in half", "no op_code"])
def test_a_journal_that_lost_entries_is_refused_and_nothing_runs_again(
    smoke_study: SmokeStudy, tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from ablation.cli.main import main

    shutil.copy(smoke_study.root / "mlflow.db", tmp_path / "mlflow.db")
    shutil.copytree(smoke_study.root / "run", tmp_path / "run")
    journal = tmp_path / "run" / "optuna.journal"
    if damage == "deleted":
        journal.unlink()
    elif damage == "cut in half":
        data = journal.read_bytes()
        journal.write_bytes(data[: len(data) // 2 + 7])  # mid-line, as a copy cut short leaves it
    else:
        with journal.open("a") as f:
            f.write('{"worker_id": "x", "study_id": 0}\n')  # valid JSON, but no journal operation
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = len(MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("smoke").experiment_id]))
    args = ["run", "--config", str(SMOKE), "--corpus", str(smoke_study.corpus), "--tracking-uri", uri]
    args += ["--run-dir", str(tmp_path / "run"), "--no-report", *[a for s in FIXTURE for a in ("--set", s)]]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err, err
    if damage == "no op_code":
        assert "is not an Optuna journal entry" in err
    else:
        assert "lacks" in err and "entries were lost" in err and "nothing was run again" in err, err
    after = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("smoke").experiment_id])
    assert len(after) == before
