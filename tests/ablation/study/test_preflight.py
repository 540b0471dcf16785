"""Every bad input to a study is stopped before anything is written: one `error:` line, exit code 2, and no
MLflow store, no run, no run folder and no Optuna journal left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ablation.cli.main import main
from ablation.errors import UserError
from ablation.study import preflight
from ablation.tracking.services import free_port
from tests.conftest import FIXTURE, REPO, SMOKE, missing

CASES = [
    (["--corpus", "{tmp}/missing"], "no such file or directory"),
    (["--set", "study.objective=val/rerank/acc/mean"], "study.objective"),
    (["--set", "train.lr=[1,"], "train.lr"),
    (["--set", "negatives.random_rate=.nan"], "random_rate"),
    (["--set", "seed=-1"], "seed"),
    (["--set", "study.tuning_seed=-3"], "tuning_seed"),
    (["--set", "study.search_space={train.epochs: {low: 1, high: 3}}"], "train.epochs"),
    (["--set", "study.search_space={negatives.random_rate: {low: 0, high: 1, log: true}}"], "log"),
    (["--set", 'study.name=it\'s "both"'], "study.name"),
    (["--set", "train.device=cuda:99"], "cuda:99"),
    (["--set", "study.storage=redis://127.0.0.1/0"], "unknown scheme 'redis'"),
    (["--set", "study.storage=postgresql://nobody@127.0.0.1:{port}/none"], "cannot connect"),
    (["--set", "study.lease_s=0"], "lease_s"),
    (["--workers", "0"], "--workers: must be at least 1"),
    (["--tracking-uri", "ftp://127.0.0.1/store"], "unknown scheme 'ftp'"),
    (["--tracking-uri", "http://127.0.0.1:{port}"], "does not answer"),
    (["--tracking-uri", "sqlite:///{tmp}/blocker/mlflow.db"], "is a file"),
    (["--tracking-uri", "sqlite:///{tmp}/folder"], "is a folder"),
    (["--run-dir", "{tmp}/blocker/run"], "is a file"),
    (["--run-dir", "{tmp}/blocker"], "is a file"),
    # names are names, never paths (the run and report folders are named after the study)
    (["--set", "study.name=.."], "'..' is not a plain name"),
    (["--set", "study.name=a/b"], "'a/b' is not a plain name"),
    (["--set", "study.name=../../x"], "is not a plain name"),
    (["--set", "study.name=a b"], "'a b' is not a plain name"),
    (["--set", "study.name=" + "x" * 300], "(300 characters)' is not a plain name"),
    (["--set", "study.name=étude"], "'étude' is not a plain name"),
    # limits that come from the thing itself: the model's depth, numpy's seed range, the setting's domain
    (["--set", "model.freeze_layers=99"], "model.freeze_layers: 99 is above the 2 layers of tiny-random"),
    (["--set", "study.tuning_seed=4294967296"], "study.tuning_seed: 4294967296 is above the maximum 4294967295"),
    (["--set", "study.seeds=[1, 4294967296]"], "study.seeds: 4294967296 is above the maximum"),
    (["--set", "study.seeds=[1, 1]"], "study.seeds: seed 1 is listed twice"),
    (["--set", "eval.val_tasks=[]"], "eval.val_tasks: must not be empty"),
    (["--config", "{tmp}/range.yaml"], "the range 0.0 to 2.0 leaves the setting's own range 0.0 to 1.0"),
    # files and folders that cannot serve
    (["--set", "data.cache_dir={tmp}/blocker"], "data.cache_dir: {tmp}/blocker is a file"),
    (["--set", "study.storage=sqlite:///{tmp}/missing/optuna.db"], "the folder {tmp}/missing does not exist"),
    (["--tracking-uri", "sqlite:///{tmp}/missing/mlflow.db"], "the folder {tmp}/missing does not exist"),
    (["--tracking-uri", "sqlite:///{tmp}/junk.db"], "{tmp}/junk.db is not an SQLite database"),
    (["--run-dir", "{tmp}/junkrun"], "{tmp}/junkrun/optuna.journal: line 1 is not an Optuna journal entry"),
    (["--config", "{tmp}/dup.yaml"], "key 'study' is given twice (line 3)"),
    (["--config", "{tmp}/empty.yaml"], "{tmp}/empty.yaml is empty"),
    (["--config", "{tmp}/binary.yaml"], "{tmp}/binary.yaml is not a text file"),
    # a sweep: every level is checked before the first one starts
    (["--set", "study.sweep={model.freeze_layers: [1, 9]}"], "model.freeze_layers: 9 is above the 2 layers"),
    (["--set", "study.sweep={model.max_length: [48, 4]}"], "level 2 (max_length-4): config: model.max_length: 4"),
    (["--set", "study.sweep={study.n_trials: [1, 2]}"], "'study.n_trials' is not a setting a sweep can vary"),
    (["--set", "study.sweep={train.device: [cpu, cuda]}"], "'train.device' is not a setting a sweep can vary"),
    (["--set", "study.sweep={model.freeze_layers: [1]}"], "a sweep needs 2 to 50 levels, got 1"),
    (["--set", "study.sweep={train.lr: [1, 1.0]}"], "the level 1.0 is listed twice (levels equal as values)"),
    # sizes bounded before anything can explode: aliases, long values, long lists, big files
    (["--config", "{tmp}/bomb.yaml"], "aliases are not allowed (line 3)"),
    (["--set", "study.sweep={model.freeze_layers: &a [1, 0], train.lr: *a}"], "aliases are not allowed"),
    (["--set", "data.corpus=" + "c" * 120_000], "120,012 characters; at most 4,096"),
    (["--set", "tracking.experiment=" + "e" * 300], "tracking.experiment: 'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee…"),
    (["--config", "{tmp}/seeds.yaml"], "study.seeds: holds more than 1000 entries"),
    (["--config", "{tmp}/huge.yaml"], "is 1,100,000 bytes; an experiment YAML is at most 1,048,576"),
    (["--set", "study.sweep={model.freeze_layers: [1, 0], train.lr: [0.1, 0.2, 0.3]}"], "the same number of levels"),
    (["--config", "{tmp}/longsweep.yaml"], "the sub-study of level 1: 'xxxxxxxxxxxxxxxxxxxx"),
]


def _inputs(tmp: Path) -> None:
    """The broken and blocking files the cases name."""
    (tmp / "blocker").write_text("a file where a folder should be")
    (tmp / "folder").mkdir()
    (tmp / "range.yaml").write_text("study:\n  search_space:\n    negatives.random_rate: {low: 0.0, high: 2.0}\n")
    (tmp / "dup.yaml").write_text("study:\n  n_trials: 1\nstudy:\n  n_trials: 2\n")
    (tmp / "empty.yaml").write_text("")
    (tmp / "longsweep.yaml").write_text(f"study:\n  name: {'x' * 50}\n  sweep:\n    model.freeze_layers: [1, 0]\n")
    (tmp / "binary.yaml").write_bytes(bytes(range(128, 256)) * 4)
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{x}: &{x} [*{y}, *{y}, *{y}, *{y}, *{y}, *{y}, *{y}, *{y}, *{y}]\n"
        for y, x in zip("abcdefgh", "bcdefghi", strict=True)
    )
    (tmp / "bomb.yaml").write_text(bomb.replace("a: &a", "seed: 1\na: &a", 1))
    (tmp / "seeds.yaml").write_text("study:\n  seeds: [" + ", ".join(map(str, range(2000))) + "]\n")
    (tmp / "huge.yaml").write_text("seed: 1\n" + "#" * (1_100_000 - 9) + "\n")
    (tmp / "junk.db").write_bytes(bytes(range(256)) * 64)
    (tmp / "junkrun").mkdir()
    (tmp / "junkrun" / "optuna.journal").write_bytes(b"\x93\xffnot json\n" * 8)


@pytest.mark.parametrize(("extra", "message"), CASES, ids=[c[1][:60] for c in CASES])
def test_bad_run_input_stops_before_anything_is_written(
    corpus: Path, tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _inputs(tmp_path)
    port = free_port()  # nothing listens there
    extra = [a.replace("{tmp}", str(tmp_path)).replace("{port}", str(port)) for a in extra]
    message = message.replace("{tmp}", str(tmp_path))
    defaults = {"--tracking-uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "--run-dir": str(tmp_path / "run")}
    args = ["run", "--config", str(SMOKE), "--corpus", str(corpus), *[a for s in FIXTURE for a in ("--set", s)]]
    args += [a for k, v in defaults.items() if k not in extra for a in (k, v)] + extra
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err, err
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing made, nothing changed
    assert not list((tmp_path / "folder").iterdir())


def test_evaluate_batch_size_zero_is_one_error_line(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--zero-shot", "--corpus", str(corpus), "--batch-size", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--batch-size: must be at least 1" in err and "\n" not in err


def test_a_read_only_run_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root every folder is writable, so the check is shown with access(2) answering as for a user."""
    monkeypatch.setattr(preflight.os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(UserError, match="is not writable"):
        preflight.check_run_folder(tmp_path / "run")
    preflight.check_run_folder(tmp_path.parent / "elsewhere")  # a writable ancestor passes


def test_processes_starting_at_once_on_a_fresh_sqlite_store_all_succeed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = (
        "import sys; from ablation.tracking.store import Tracker; t = Tracker(sys.argv[1]); "
        "print(t.experiment_id('race'))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, uri], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err.decode()[-1500:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1  # one experiment, found by all


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _start_two_workers(corpus: Path, tmp_path: Path, workers: int = 2) -> tuple[subprocess.Popen, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [
        *(sys.executable, "-m", "ablation", "run", "--config", str(SMOKE), "--corpus", str(corpus)),
        *("--workers", str(workers)),
        *("--tracking-uri", uri, "--run-dir", str(tmp_path / "run"), "--no-report"),
        *[a for s in [*FIXTURE, "train.epochs=30"] for a in ("--set", s)],
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return proc, uri


def _statuses(uri: str) -> dict[str, list[str]]:
    """Run statuses by role. Read through Tracker, which creates a new sqlite store under the same lock as
    the study does: a bare MlflowClient here, polling while the study creates the store, migrated it at
    the same time and broke it (2 of 20 runs of the parent-kill test)."""
    from ablation.tracking.store import Tracker

    out: dict[str, list[str]] = {}
    for r in Tracker(uri).search("smoke", {}):
        out.setdefault(r.data.tags.get("role", "?"), []).append(r.info.status)
    return out


def _wait_for_trials(proc: subprocess.Popen, uri: str, n: int = 2) -> None:
    import time

    deadline = time.monotonic() + 300
    while _statuses(uri).get("trial", []).count("RUNNING") < n:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:] if proc.stderr else ""
        time.sleep(0.5)


@pytest.mark.slow
def test_ctrl_c_with_two_workers_ends_every_run_killed_and_leaks_nothing(corpus: Path, tmp_path: Path) -> None:
    import signal

    proc, uri = _start_two_workers(corpus, tmp_path)
    _wait_for_trials(proc, uri)
    workers = _children(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    statuses = _statuses(uri)
    assert all("RUNNING" not in s for s in statuses.values()), statuses
    assert statuses["trial"].count("KILLED") == 2 and statuses["study"] == ["KILLED"]
    assert "leaked semaphore" not in err and "Traceback" not in err, err[-2000:]
    assert not any(_alive(pid) for pid in workers)


@pytest.mark.slow
def test_workers_die_with_their_parent(corpus: Path, tmp_path: Path) -> None:
    import signal
    import time

    proc, uri = _start_two_workers(corpus, tmp_path)
    _wait_for_trials(proc, uri)
    workers = _children(proc.pid)
    assert len(workers) >= 2
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)  # the workers' stderr too: they hold the pipe until they exit
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in workers)
    statuses = _statuses(uri)
    assert statuses["trial"].count("KILLED") == 2, (statuses, err[-3000:])  # each worker ended its run
    # and the parent's runs, which it could not end itself
    assert statuses["study"] == ["KILLED"] and statuses["arm"] == ["KILLED", "KILLED"], (statuses, err[-3000:])
    assert "Traceback" not in err, err[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGHUP"])
def test_sigterm_or_sighup_to_one_process_ends_its_runs_killed(corpus: Path, tmp_path: Path, signum: str) -> None:
    import signal

    sig = getattr(signal, signum)
    proc, uri = _start_two_workers(corpus, tmp_path, workers=1)
    _wait_for_trials(proc, uri, n=1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    statuses = _statuses(uri)
    assert statuses["trial"] == ["KILLED"] and statuses["study"] == ["KILLED"], statuses
    assert statuses["arm"] == ["KILLED", "KILLED"] and "Traceback" not in err, (statuses, err[-2000:])


def test_an_immutable_journal_is_refused_before_anything_is_written(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """chattr +i: even root cannot append (what Optuna does first), so access(2) alone would not tell."""
    journal = tmp_path / "run" / "optuna.journal"
    journal.parent.mkdir()
    journal.write_text("")
    if subprocess.run(["chattr", "+i", str(journal)], capture_output=True, timeout=60).returncode:
        missing("this file system has no immutable attribute (chattr +i failed)")  # fails in CI
    try:
        before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
        args = ["run", "--config", str(SMOKE), "--corpus", str(corpus), "--run-dir", str(journal.parent)]
        args += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *[a for s in FIXTURE for a in ("--set", s)]]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: study storage {journal}: cannot be written (Operation not permitted)"
        assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    finally:
        subprocess.run(["chattr", "-i", str(journal)], check=True, timeout=60)
