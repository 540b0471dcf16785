"""Many machines, one study, on real services: a throw-away PostgreSQL cluster for Optuna and the study lock,
and an `mlflow server` on 127.0.0.1 with a PostgreSQL backend. Machines start at once on empty databases;
one is killed, one runs two workers, one is frozen (SIGSTOP) while it holds the study lock and one while it
runs a final; the database restarts mid-study; a machine with other settings is refused."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from ablation.report.build import build_report
from ablation.study.worker import KILL_AFTER_TRIALS, STOP_AT
from ablation.tracking.services import MlflowServer, Postgres, free_port
from tests.conftest import FIXTURE, REPO, SMOKE

pytestmark = pytest.mark.slow

LEASE_S = 6.0
ARMS = ("shared", "unshared")


@dataclass
class Services:
    storage: str  # Optuna storage URL
    tracking: str  # MLflow server URL
    pg: Postgres
    server: MlflowServer


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    folder = Path(tempfile.mkdtemp(prefix="ablation-services-"))
    folder.chmod(0o755)  # the cluster may belong to the postgres user
    pg = Postgres(folder / "pg", free_port()).start()
    server = None
    try:
        storage = pg.create_database("optuna")
        server = MlflowServer(pg.create_database("mlflow"), folder / "artifacts", free_port(), folder / "mlflow.log")
        server.start()
        yield Services(storage, server.url, pg, server)
    finally:
        if server is not None:
            server.stop()
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _machine(
    corpus: Path,
    services: Services,
    run_dir: Path,
    study: str,
    env: dict[str, str] | None = None,
    sets: tuple[str, ...] = (),
    args: tuple[str, ...] = (),
) -> subprocess.Popen:
    every = [*FIXTURE, f"study.storage={services.storage}", f"study.lease_s={LEASE_S}", "study.n_trials=3"]
    every += [f"study.name={study}", "study.zero_shot=true", *sets]
    cmd = [
        *(sys.executable, "-m", "ablation", "run", "--config", str(SMOKE), "--corpus", str(corpus)),
        *("--tracking-uri", services.tracking, "--run-dir", str(run_dir), "--no-report", *args),
        *[a for s in every for a in ("--set", s)],
    ]
    log = open(run_dir.with_suffix(".log"), "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def _log(path: Path) -> str:
    return path.with_suffix(".log").read_text()[-3000:]


def _trials(services: Services, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=services.storage).get_trials()


def _check_study(services: Services, study: str, tmp: Path) -> dict[str, list[tuple[float, ...]]]:
    """Exact budgets, distinct points per arm, one FINISHED final per (arm, seed), nothing left RUNNING, the
    report complete. Returns each arm's used points."""
    client = MlflowClient(services.tracking)
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    roles = [r.data.tags["role"] for r in runs]
    assert roles.count("study") == 1 and roles.count("arm") == 2 and roles.count("zero-shot") == 1
    assert all(r.info.status == "FINISHED" for r in runs), [(r.data.tags["role"], r.info.status) for r in runs]
    points = {}
    for arm in ARMS:
        finals = sorted(
            r.data.tags["seed"] for r in runs if r.data.tags["role"] == "final" and r.data.tags["arm"] == arm
        )
        assert finals == ["1", "2"]  # exactly one finished final run per (arm, seed)
        trials = _trials(services, f"{study}-{arm}")
        done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(done) == 3, [t.state for t in trials]  # the budget, not more
        points[arm] = sorted(tuple(sorted(t.params.values())) for t in done)
        assert len(set(points[arm])) == 3, points[arm]  # no two trials of an arm share their point
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        trial_runs = [r for r in runs if r.data.tags["role"] == "trial" and r.data.tags["arm"] == arm]
        assert len(trial_runs) == 3
    assert points["shared"] == points["unshared"]  # the same points in every arm: a paired comparison
    out = build_report(study, tracking_uri=services.tracking, out_dir=str(tmp / f"report-{study}"), experiment=study)
    text = Path(out.markdown).read_text()
    assert "complete" in text.lower() and "incomplete" not in text.lower()
    return points


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return time.time()


def _queues(study: str) -> list[str]:
    return [f"{study}-zero-shot", *(f"{study}-{arm}{kind}" for arm in ARMS for kind in ("", "-final"))]


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_three_machines_one_killed_one_with_two_workers_and_a_replacement(
    corpus: Path, tmp_path: Path, services: Services
) -> None:
    study = "smoke-many"
    machines = {
        "m1": _machine(corpus, services, tmp_path / "m1", study, {KILL_AFTER_TRIALS: "0"}),  # SIGKILL in 1st trial
        "m2": _machine(corpus, services, tmp_path / "m2", study, args=("--workers", "2")),
        "m3": _machine(corpus, services, tmp_path / "m3", study),
    }
    assert machines["m1"].wait(timeout=600) == -9, _log(tmp_path / "m1")
    killed_at = time.time()
    machines["m4"] = _machine(corpus, services, tmp_path / "m4", study)
    for name in ("m2", "m3", "m4"):
        assert machines[name].wait(timeout=900) == 0, _log(tmp_path / name)
    points = _check_study(services, study, tmp_path)
    failed = {arm: [t for t in _trials(services, f"{study}-{arm}") if t.state == TrialState.FAIL] for arm in ARMS}
    assert sum(map(len, failed.values())) == 1  # the killed machine's trial, failed by the others and retried
    arm = next(a for a in ARMS if failed[a])
    assert tuple(sorted(failed[arm][0].params.values())) in points[arm]  # the retry kept its point
    failed = failed[arm]
    recovery = failed[0].datetime_complete.timestamp() - killed_at
    print(f"\nkilled machine's trial failed {recovery:.1f} s after the kill (lease {LEASE_S} s); points {points}")
    # retried work comes first: no item was taken between the retry's queueing and the retry itself
    everything = [t for q in _queues(study) for t in _trials(services, q)]
    retry = next(
        t
        for t in everything
        if t.system_attrs.get("failed_trial") == failed[0].number
        and t.number != failed[0].number
        and t.user_attrs.get("slot") == failed[0].user_attrs.get("slot")
    )
    queued = failed[0].datetime_complete
    taken_after = [
        t for t in everything if t.datetime_start is not None and t.datetime_start > queued and t.number != retry.number
    ]
    assert all(retry.datetime_start <= t.datetime_start for t in taken_after), (retry.datetime_start, queued)


def test_frozen_lock_holder_and_frozen_final_run_step_aside(corpus: Path, tmp_path: Path, services: Services) -> None:
    """a freezes (SIGSTOP) right after it takes the study lock, c in the first epoch of its first final run;
    each is resumed (SIGCONT) 3 × lease_s later. b and c must go on meanwhile, and a and c step aside."""
    study, sets = "smoke-frozen", ("train.epochs=3",)
    procs = {
        "a": _machine(corpus, services, tmp_path / "a", study, {STOP_AT: "lock"}, sets),
        "b": _machine(corpus, services, tmp_path / "b", study, None, sets),
        "c": _machine(corpus, services, tmp_path / "c", study, {STOP_AT: "final"}, sets),
    }
    stopped: dict[str, float] = {}
    resumed: set[str] = set()
    resumed_at: dict[str, float] = {}
    deadline = time.monotonic() + 900
    while any(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
        for name in ("a", "c"):
            p = procs[name]
            if name not in stopped and p.poll() is None and _stopped(p.pid):
                stopped[name] = time.time()
            if name in stopped and name not in resumed and time.time() > stopped[name] + 3 * LEASE_S:
                p.send_signal(signal.SIGCONT)
                resumed.add(name)
                resumed_at[name] = time.time()
        time.sleep(0.1)
    assert set(stopped) == {"a", "c"}, stopped
    for name, p in procs.items():
        assert p.wait(timeout=60) == 0, _log(tmp_path / name)
    _check_study(services, study, tmp_path)
    # a steps aside: its first write under the lost lock is refused (LockLost), or, where the others had done
    # everything by the time it woke, it found nothing to write and ran nothing
    log_a = _log(tmp_path / "a")
    assert "study lock was taken over" in log_a or "[progress]" not in log_a, log_a
    assert "failed while this worker was stopped" in _log(tmp_path / "c")
    trials = [t for q in _queues(study) for t in _trials(services, q)]
    went_on = min(t.datetime_start.timestamp() for t in trials if t.datetime_start.timestamp() > stopped["a"])
    failed = [t for arm in ARMS for t in _trials(services, f"{study}-{arm}-final") if t.state == TrialState.FAIL]
    assert len(failed) == 1  # c's final, failed by the others and retried
    recovery = failed[0].datetime_complete.timestamp() - stopped["c"]
    waited = went_on - stopped["a"]
    print(f"\nothers took an item {waited:.1f} s after a froze in the lock; c's final failed {recovery:.1f} s later")
    assert went_on < resumed_at["a"]  # the others went on while a was frozen, not after it came back


def test_machines_survive_a_database_and_a_tracking_server_restart(
    corpus: Path, tmp_path: Path, services: Services
) -> None:
    study = "smoke-restart"
    machines = [_machine(corpus, services, tmp_path / f"r{i}", study, sets=("train.epochs=4",)) for i in range(2)]
    client = MlflowClient(services.tracking)

    def trials_done(n: int) -> Callable[[], bool]:
        def check() -> bool:
            exp = client.get_experiment_by_name(study)
            runs = client.search_runs([exp.experiment_id]) if exp else []
            return sum(r.data.tags.get("role") == "trial" and r.info.status == "FINISHED" for r in runs) >= n

        return check

    for n in (1, 3):
        _wait(trials_done(n), 600, f"{n} finished trials")
        services.pg.stop()
        time.sleep(3)
        services.pg.start()
    _wait(trials_done(5), 600, "5 finished trials")
    services.server.stop()  # and the tracking server, for as long as it takes to start again
    time.sleep(3)
    services.server.start()
    for i, p in enumerate(machines):
        assert p.wait(timeout=900) == 0, _log(tmp_path / f"r{i}")
    _check_study(services, study, tmp_path)
    # outages shorter than the lease: both machines lived, so no trial was failed as stale and none redone
    failed = [t for q in _queues(study) for t in _trials(services, q) if t.state == TrialState.FAIL]
    assert not failed, [(t.number, t.user_attrs) for t in failed]


def _postgres_processes(pg: Postgres) -> list[int]:
    """The postmaster and every process it started (backends, background workers)."""
    main = int((pg.data / "postmaster.pid").read_text().split()[0])
    children = [
        int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and (p / "stat").exists() and _ppid(p) == main
    ]
    return [main, *children]


def _ppid(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def test_a_hung_database_never_crashes_a_machine(corpus: Path, tmp_path: Path, services: Services) -> None:
    """PostgreSQL frozen (SIGSTOP of the postmaster and its backends) for 3 × lease_s mid-study, then thawed:
    a machine whose trial was taken over meanwhile steps aside and goes on; every machine ends with 0."""
    study = "smoke-hung"
    machines = [_machine(corpus, services, tmp_path / f"h{i}", study, sets=("train.epochs=4",)) for i in range(2)]
    client = MlflowClient(services.tracking)

    def trials_done() -> bool:
        exp = client.get_experiment_by_name(study)
        runs = client.search_runs([exp.experiment_id]) if exp else []
        return any(r.data.tags.get("role") == "trial" and r.info.status == "FINISHED" for r in runs)

    _wait(trials_done, 600, "a finished trial")
    frozen = _postgres_processes(services.pg)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(3 * LEASE_S)
    for pid in frozen:
        os.kill(pid, signal.SIGCONT)
    for i, p in enumerate(machines):
        assert p.wait(timeout=900) == 0, _log(tmp_path / f"h{i}")
        assert "error:" not in _log(tmp_path / f"h{i}"), _log(tmp_path / f"h{i}")
    _check_study(services, study, tmp_path)


def test_a_machine_with_other_settings_is_refused_before_it_writes(
    corpus: Path, tmp_path: Path, services: Services
) -> None:
    study = "smoke-mismatch"
    first = _machine(corpus, services, tmp_path / "first", study)
    client = MlflowClient(services.tracking)
    _wait(lambda: client.get_experiment_by_name(study) is not None, 300, "the first machine to set up")
    exp = client.get_experiment_by_name(study)
    before = len(client.search_runs([exp.experiment_id]))
    other = _machine(corpus, services, tmp_path / "other", study, sets=("study.n_trials=5",))
    assert other.wait(timeout=300) == 2
    err = [line for line in _log(tmp_path / "other").splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and "study.n_trials is 3 there, 5 here" in err[0], err
    assert not (tmp_path / "other").exists()  # nothing written: no run folder
    assert first.wait(timeout=900) == 0, _log(tmp_path / "first")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert len(runs) >= before and not any(r.data.tags.get("pid") == str(other.pid) for r in runs)
    _check_study(services, study, tmp_path)
