"""The study runner on the smoke study: layout, totals, resume after kill -9, two workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from ablation.config import ExperimentConfig, load_config
from ablation.study.queue import startup_points
from ablation.study.runner import oversubscribed, run_study, workers_for
from ablation.study.worker import KILL_AFTER_TRIALS
from tests.conftest import FIXTURE, REPO, SMOKE, SmokeStudy


def _runs(uri: str, study: str = "smoke") -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(study)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def _check_totals(
    uri: str, n_trials: int, seeds: int, arms: tuple[str, ...] = ("shared", "unshared"), study: str = "smoke"
) -> None:
    runs = _runs(uri, study)
    by_id = {r.info.run_id: r for r in runs}
    assert all(r.info.status in ("FINISHED", "FAILED") for r in runs), [r.info.status for r in runs]
    roles = [r.data.tags["role"] for r in runs]
    assert roles.count("study") == 1 and roles.count("arm") == len(arms)
    study_run = next(r for r in runs if r.data.tags["role"] == "study").info.run_id
    for arm in arms:
        arm_run = next(r for r in runs if r.data.tags["role"] == "arm" and r.data.tags["arm"] == arm)
        assert "mlflow.parentRunId" not in arm_run.data.tags  # top level in the UI, beside the study run
        assert arm_run.data.tags["study"] == by_id[study_run].data.tags["study"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == arm_run.info.run_id]
        trials = [r for r in children if r.data.tags["role"] == "trial"]
        finals = [r for r in children if r.data.tags["role"] == "final"]
        assert len(trials) == n_trials and len({r.data.tags["trial"] for r in trials}) == n_trials
        assert sorted(r.data.tags["seed"] for r in finals) == sorted(str(s) for s in range(1, seeds + 1))
        assert all(r.data.tags["arm"] == arm for r in trials + finals)
        assert all("negatives.random_rate" in r.data.params for r in trials)
        assert all("test/rerank/acc_at_1/epa" in r.data.metrics for r in finals)
    assert len(by_id) == 1 + len(arms) * (1 + n_trials + seeds)


@pytest.mark.slow
def test_smoke_study_end_to_end(smoke_study: SmokeStudy) -> None:
    assert "shared: best" in smoke_study.summary and "unshared: best" in smoke_study.summary
    cfg = load_config(SMOKE, FIXTURE)
    _check_totals(smoke_study.uri, cfg.study.n_trials, len(cfg.study.seeds))
    # the fixture ran the finished study again: no work done, no run added
    assert smoke_study.runs_after_rerun == smoke_study.runs_after_first == len(_runs(smoke_study.uri))


@pytest.mark.slow
def test_kill_after_first_trial_then_resume(corpus: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    sets = [*FIXTURE, "study.n_trials=3"]
    cmd = [
        sys.executable,
        "-m",
        "ablation",
        "run",
        "--config",
        str(SMOKE),
        "--corpus",
        str(corpus),
        "--tracking-uri",
        uri,
        "--run-dir",
        str(run_dir),
        "--no-report",
        *[a for s in sets for a in ("--set", s)],
    ]
    env = {**os.environ, KILL_AFTER_TRIALS: "1"}  # the documented fault: SIGKILL during the second trial
    crashed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    storage = JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal")))
    trials = optuna.load_study(study_name="smoke-shared", storage=storage).get_trials()
    states = [t.state for t in trials]
    assert states == [
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.RUNNING,
        optuna.trial.TrialState.WAITING,
    ]
    assert any(r.info.status == "RUNNING" for r in _runs(uri))  # the kill left work behind
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    progress = [line for line in again.stderr.splitlines() if line.startswith("[progress] ")]
    assert len(progress) == 9  # one line per run this process finished (1 of 10 was done before the kill)
    assert "unshared final seed 2: val/retrieval/acc_at_1/mean 0." in progress[-1]
    assert "10 of 10 runs done, 0 left" in progress[-1]  # counted across processes, from MLflow
    _check_totals(uri, 3, 2)
    _check_distinct_points(storage, load_config(SMOKE, sets))
    # the killed trial's half-written run was ended before it was hidden: KILLED, not left RUNNING
    from mlflow.entities import ViewType

    client = MlflowClient(uri)
    hidden = client.search_runs(
        [client.get_experiment_by_name("smoke").experiment_id], run_view_type=ViewType.DELETED_ONLY
    )
    assert hidden and all(r.info.status == "KILLED" for r in hidden), [r.info.status for r in hidden]


def _check_distinct_points(storage: optuna.storages.BaseStorage, cfg: ExperimentConfig) -> None:
    """Within each arm the used trials have distinct parameters, and they are the points drawn from
    tuning_seed for their slots, the same in every arm (a retried slot keeps its point)."""
    expected = startup_points(cfg)
    for arm in cfg.study.arms:
        trials = optuna.load_study(study_name=f"smoke-{arm}", storage=storage).get_trials()
        done = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
        points = [tuple(sorted(t.params.items())) for t in done]
        assert len(done) == cfg.study.n_trials and len(set(points)) == len(points), points
        assert sorted(points) == sorted(tuple(sorted(p.items())) for p in expected)


@pytest.mark.slow
def test_three_workers_share_one_study_with_distinct_trials(corpus: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(SMOKE, [*FIXTURE, "study.n_trials=3"])
    run_study(cfg, corpus=str(corpus), tracking_uri=uri, run_dir=str(tmp_path / "run"), workers=3)
    _check_totals(uri, 3, 2)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "run" / "optuna.journal")))
    pids = set()
    for arm in ("shared", "unshared"):
        trials = optuna.load_study(study_name=f"smoke-{arm}", storage=storage).get_trials()
        assert len(trials) == 3  # the budget held although two processes asked for trials
        pids |= {t.user_attrs["pid"] for t in trials}
    assert len(pids) >= 2 and str(os.getpid()) not in pids  # the worker processes did the tuning work
    _check_distinct_points(storage, cfg)
    # the same config in one process gives the same numbers to the last digit: every run uses the study's
    # train.threads whatever --workers is (torch's CPU reductions depend on the thread count)
    one = f"sqlite:///{tmp_path / 'one.db'}"
    run_study(cfg, corpus=str(corpus), tracking_uri=one, run_dir=str(tmp_path / "one"), workers=1)

    def finals(u: str) -> dict:
        return {
            (r.data.tags["arm"], r.data.tags["seed"]): (
                {k: v for k, v in r.data.metrics.items() if not k.startswith(("time/", "system/"))},
                {k: v for k, v in r.data.tags.items() if k.startswith(("checksum.", "digest."))},
                r.data.tags["torch_threads"],
            )
            for r in _runs(u)
            if r.data.tags["role"] == "final"
        }

    three, single = finals(uri), finals(one)
    assert len(three) == 4 and three.keys() == single.keys()
    for key, (metrics, sums, threads) in three.items():
        assert threads == single[key][2] == "1"
        assert sums == single[key][1], key
        assert metrics == single[key][0], key


@pytest.mark.slow
def test_non_finite_trials_fail_with_a_reason_and_the_study_goes_on(corpus: Path, tmp_path: Path) -> None:
    cfg = load_config(
        SMOKE,
        [
            *FIXTURE,
            "study.search_space={train.lr: {low: 1.0e+29, high: 1.0e+30}}",
            "train.optimizer=sgd",
            "study.seeds=[1]",
        ],
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_study(cfg, corpus=str(corpus), tracking_uri=uri, run_dir=str(tmp_path / "run"))
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "run" / "optuna.journal")))
    trials = optuna.load_study(study_name="smoke-shared", storage=storage).get_trials()
    assert len(trials) == cfg.study.n_trials
    assert all(t.state == optuna.trial.TrialState.FAIL and "loss became" in t.user_attrs["failure"] for t in trials)
    runs = _runs(uri)
    trial_runs = [r for r in runs if r.data.tags["role"] == "trial"]
    assert trial_runs and all(r.info.status == "FAILED" and "loss became" in r.data.tags["failure"] for r in trial_runs)
    finals = [r for r in runs if r.data.tags["role"] == "final"]
    assert len(finals) == 2 and all(r.info.status == "FINISHED" for r in finals)  # defaults, since no trial completed


@pytest.mark.slow
def test_a_study_name_with_dots_dashes_and_underscores_runs_resumes_and_reports(corpus: Path, tmp_path: Path) -> None:
    from ablation.report.build import build_report

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    name = "Smoke.v2-a_b"
    cfg = load_config(SMOKE, [*FIXTURE, f"study.name={name}", "study.n_trials=1", "study.seeds=[1]"])
    for _ in range(2):  # the rerun must find every run by its tags, and add none
        run_study(cfg, corpus=str(corpus), tracking_uri=uri, run_dir=str(tmp_path / "run"))
    _check_totals(uri, 1, 1, study=name)
    paths = build_report(name, tracking_uri=uri, out_dir=str(tmp_path / "report"))
    assert f"Ablation report: {name}" in paths.html.read_text()


@pytest.mark.slow
def test_an_unexpected_error_ends_every_open_run_failed_and_prints_one_line(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ablation.cli.main import main
    from ablation.study import worker

    real, calls = worker._next, []

    def broken(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:  # after the first trial: with the study, arm and a trial run written
            raise RuntimeError("the disk caught fire\nsecond line")
        return real(*args, **kwargs)

    monkeypatch.setattr(worker, "_next", broken)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", "--config", str(SMOKE), "--corpus", str(corpus), "--tracking-uri", uri, "--no-report"]
    args += ["--run-dir", str(tmp_path / "run"), *[a for s in FIXTURE for a in ("--set", s)]]
    assert main(args) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err == ["error: RuntimeError: the disk caught fire (run with --debug for the traceback)"]
    runs = _runs(uri)
    assert [r.info.status for r in runs if r.data.tags["role"] == "trial"] == ["FINISHED"]
    ended = [r for r in runs if r.data.tags["role"] in ("study", "arm")]
    assert len(ended) == 3 and all(r.info.status == "FAILED" for r in ended)
    for run in ended:
        assert run.data.tags["failure"].startswith("RuntimeError: the disk caught fire"), run.info.run_name
    calls.clear()
    with pytest.raises(RuntimeError, match="caught fire"):  # --debug: the traceback, for the bug report
        main(["--debug", *args])


@pytest.mark.parametrize(("threads", "cores", "workers"), [(1, 2, 2), (2, 2, 1), (3, 16, 5), (4, 2, 1)])
def test_auto_workers_fill_the_cores_with_the_studys_threads(threads: int, cores: int, workers: int) -> None:
    cfg = load_config(SMOKE, [f"train.threads={threads}", "train.device=cpu"])
    assert workers_for(cfg, cores) == workers
    assert oversubscribed(cfg, workers, cores) is None or threads > cores
    assert "more threads" not in (oversubscribed(cfg, workers, cores) or "")
    note = oversubscribed(cfg, workers + 1, cores)
    assert note is not None and f"{(workers + 1) * threads} threads on {cores} cores" in note


def test_an_error_while_setting_up_the_runs_ends_those_that_exist(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ablation.study import opening

    def broken() -> dict[str, str]:
        raise RuntimeError("no versions today")

    monkeypatch.setattr(opening, "package_versions", broken)  # after the study and arm runs were made
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(RuntimeError, match="no versions today"):
        run_study(load_config(SMOKE, FIXTURE), corpus=str(corpus), tracking_uri=uri, run_dir=str(tmp_path / "run"))
    runs = _runs(uri)
    assert sorted(r.data.tags["role"] for r in runs) == ["arm", "arm", "study"]
    assert all(r.info.status == "FAILED" and "no versions today" in r.data.tags["failure"] for r in runs)


@pytest.mark.slow
def test_ctrl_c_while_workers_start_is_one_quiet_line_and_ends_every_run(corpus: Path, tmp_path: Path) -> None:
    from ablation.study.runner import INTERRUPT_AT

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "ablation", "run", "--config", str(SMOKE), "--corpus", str(corpus)]
    cmd += ["--tracking-uri", uri, "--run-dir", str(tmp_path / "run"), "--no-report", "--workers", "2"]
    cmd += [a for s in FIXTURE for a in ("--set", s)]
    env = {**os.environ, INTERRUPT_AT: "spawn"}  # SIGINT to the group right after the first worker started
    stopped = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env, start_new_session=True
    )
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr and "KeyboardInterrupt" not in stopped.stderr, stopped.stderr[-3000:]
    assert len(stopped.stderr.strip().splitlines()) <= 2, stopped.stderr  # the error line (and at most a note)
    runs = _runs(uri)
    assert runs and all(r.info.status == "KILLED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, start_new_session=True)
    assert again.returncode == 0, again.stderr[-3000:]
    _check_totals(uri, 2, 2)


def test_one_click_between_mlflow_optuna_dashboard_and_the_report(smoke_study: SmokeStudy, tmp_path: Path) -> None:
    import shutil

    from optuna_dashboard import get_note

    from ablation.report.build import build_report

    storage = JournalStorage(JournalFileBackend(str(smoke_study.root / "run" / "optuna.journal")))
    runs = {r.info.run_id: r for r in _runs(smoke_study.uri)}
    exp = next(iter(runs.values())).info.experiment_id
    for name in ("smoke-shared", "smoke-unshared-final"):
        queue = optuna.load_study(study_name=name, storage=storage)
        note = get_note(queue)
        assert ("Final-seed queue" in note) == name.endswith("-final"), note  # seed queues say what they are
        for trial in queue.get_trials():
            if trial.state != optuna.trial.TrialState.COMPLETE:
                continue
            run_id = trial.user_attrs["mlflow_run_id"]
            assert trial.user_attrs["mlflow_url"] == f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{run_id}" + (
                "?workflowType=machine_learning"
            )
            page = runs[run_id].data.tags["optuna_dashboard"]
            assert page.endswith(f"/dashboard/studies/{queue._study_id}/trials?numbers={trial.number}")
            assert page in runs[run_id].data.tags["mlflow.note.content"]
    shutil.copy(smoke_study.root / "mlflow.db", tmp_path / "mlflow.db")
    paths = build_report("smoke", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", out_dir=str(tmp_path / "r"))
    finals = [r for r in runs.values() if r.data.tags["role"] == "final"]
    html = Path(paths.html).read_text()
    for r in finals:
        assert f'<a href="http://127.0.0.1:5000/#/experiments/{exp}/runs/{r.info.run_id}' in html


def test_every_run_carries_its_arms_colour_the_one_the_report_draws_it_in(smoke_study: SmokeStudy) -> None:
    from ablation.tracking.view import COLOR_TAG, arm_colors

    colors = arm_colors(["shared", "unshared"])
    runs = [r for r in _runs(smoke_study.uri) if r.data.tags["role"] in ("arm", "trial", "final")]
    assert runs and all(r.data.tags[COLOR_TAG] == colors[r.data.tags["arm"]] for r in runs)
    assert colors["shared"] != colors["unshared"] != colors["zero-shot"] != colors["shared"]


@pytest.mark.slow
def test_trials_past_the_fixed_points_are_distinct_when_tpe_samples_in_parallel(corpus: Path, tmp_path: Path) -> None:
    """12 trials per arm, 3 workers: the first 10 slots take the points drawn from tuning_seed, the last two
    are sampled by TPE while other workers run; no two trials of an arm share a point."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(SMOKE, [*FIXTURE, "study.n_trials=12", "study.seeds=[1]", "train.epochs=1"])
    run_study(cfg, corpus=str(corpus), tracking_uri=uri, run_dir=str(tmp_path / "run"), workers=3)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "run" / "optuna.journal")))
    fixed = {tuple(sorted(p.items())) for p in startup_points(cfg)}
    for arm in cfg.study.arms:
        done = [
            t
            for t in optuna.load_study(study_name=f"smoke-{arm}", storage=storage).get_trials()
            if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        ]
        points = [tuple(sorted(t.params.items())) for t in done]
        assert len(done) == 12 and len(set(points)) == 12, points
        assert fixed <= set(points) and len(set(points) - fixed) == 2  # two sampled by TPE, both new
