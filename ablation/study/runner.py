"""`ablation run` / `make ablation`: set up a study, run its workers, and finish it.

The main process checks everything first (config, device, folders, stores, corpus, model, objective: bad
input leaves nothing behind), then, under the study lock, finds or creates the Optuna studies, the study
run and the arm runs, so that any number of processes or machines starting at once make each exactly once.
It then works itself or starts `workers` processes. Every worker works until the study is complete or
nothing it can do is left; the study run is FINISHED only when the study is complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import torch

from ablation.config import ExperimentConfig, dump_yaml
from ablation.data.run_data import load_run_data
from ablation.errors import UserError
from ablation.io import REPO_ROOT
from ablation.study.context import POLL_S, StudyContext, check_objective, optuna_study, trials_used
from ablation.study.coordination import coordinator_for, is_postgres
from ablation.study.final import final_runs, zero_shot_run
from ablation.study.ledger import mark_duplicate_finals, missing, open_work, runs_done
from ablation.study.preflight import preflight
from ablation.study.progress import Progress
from ablation.study.tracked_run import describe
from ablation.study.tuning import best_params, tune_arm
from ablation.study.tuning_plots import arm_colors, trials_table, tuning_figures
from ablation.tracking.store import NOTE_TAG, Tracker, git_commit, package_versions, resolve_tracking_uri


class StudyIncomplete(RuntimeError):
    """The workers stopped and the study still lacks something (named in the message)."""


def _context(cfg: ExperimentConfig, corpus: str | None, tracking_uri: str | None, run_dir: str | None) -> StudyContext:
    check_objective(cfg)
    uri = resolve_tracking_uri(tracking_uri, cfg.tracking.uri)
    folder = Path(run_dir) if run_dir else REPO_ROOT / "runs" / cfg.study.name
    preflight(cfg, uri, folder)
    data = load_run_data(cfg, corpus)
    tracker = Tracker(uri)
    experiment = cfg.tracking.experiment or cfg.study.name
    folder.mkdir(parents=True, exist_ok=True)
    coord = coordinator_for(cfg.study.storage, cfg.study.name, folder, cfg.study.lease_s)
    ctx = StudyContext(cfg, data, tracker, experiment, folder, coord)
    s = cfg.study
    ctx.progress = Progress(
        s.objective, int(s.zero_shot) + len(s.arms) * (s.n_trials + len(s.seeds)), lambda: runs_done(ctx)
    )
    name = cfg.study.name
    with coord.lock():
        for arm in cfg.study.arms:
            optuna_study(ctx, arm)
        ctx.study_run = tracker.find_or_create_run(experiment, name, {"study": name, "role": "study"})
        # arm runs sit beside the study run, not under it: the UI's runs table then lists the arms (with their
        # aggregates) and the zero-shot reference at its top level, ready to compare with no expanding
        ctx.arm_runs = {
            arm: tracker.find_or_create_run(experiment, arm, {"study": name, "role": "arm", "arm": arm})
            for arm in cfg.study.arms
        }
        for run in (ctx.study_run, *ctx.arm_runs.values()):
            tracker.resume(run)  # a study interrupted before is RUNNING again
        note = f"Study {name}: arms {', '.join(s.arms)}; {s.n_trials} trials per arm on {s.objective}; seeds "
        note += f"{', '.join(map(str, s.seeds))}. Its metrics: each arm minus {s.arms[0]}, with 95 % interval."
        tags = {"git_commit": git_commit(), "corpus_digest": data.digest, NOTE_TAG: note, **package_versions()}
        tracker.set_tags(ctx.study_run, tags)  # as of this (re)start
        for arm, run in ctx.arm_runs.items():
            tracker.set_tags(run, {NOTE_TAG: describe("arm", arm)})
    return ctx


def work(ctx: StudyContext) -> None:
    """Everything one worker does: the reference row, tuning of every arm, then the final seeds; again
    while other live workers hold open work (a dead one's work is taken over), until nothing is open."""
    while True:
        zero_shot_run(ctx)
        for arm in ctx.cfg.study.arms:
            tune_arm(ctx, arm)
        for arm in ctx.cfg.study.arms:
            final_runs(ctx, arm)
        if not open_work(ctx):
            return
        time.sleep(POLL_S)


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies (a `kill -9` of the parent leaves no orphans)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _worker_main(
    cfg: ExperimentConfig, corpus: str | None, tracking_uri: str | None, run_dir: str, threads: int
) -> None:
    _die_with_parent()
    signal.signal(signal.SIGTERM, _interrupt)  # ends the open run KILLED, like Ctrl-C
    torch.set_num_threads(threads)
    ctx = _context(cfg, corpus, tracking_uri, run_dir)
    try:
        work(ctx)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        ctx.coord.close()


def _finish(ctx: StudyContext) -> list[str]:
    """If the study is complete: tuning figures and best parameters on the arm runs, and every run of the
    study FINISHED (once, whichever worker gets here first). Returns summary lines; raises StudyIncomplete
    naming what is missing otherwise."""
    tracker, cfg = ctx.tracker, ctx.cfg
    with ctx.coord.lock():
        lines = mark_duplicate_finals(ctx)
        gaps = missing(ctx)
        if gaps:
            raise StudyIncomplete(f"study {cfg.study.name!r} is incomplete: {'; '.join(gaps)}")
        done = tracker.status(ctx.study_run) == "FINISHED"
        colors = arm_colors(list(cfg.study.arms))
        for arm in cfg.study.arms:
            study = optuna_study(ctx, arm)
            best = best_params(study)
            if not done:
                maximize = cfg.study.direction == "maximize"
                figures = tuning_figures(trials_table(study), cfg.study.objective, arm, colors[arm], maximize)
                for name, fig in figures.items():
                    tracker.log_figure(ctx.arm_runs[arm], fig, name)
                tracker.set_tags(ctx.arm_runs[arm], {f"best.{k}": f"{v:.6g}" for k, v in best.items()})
                tracker.set_tags(ctx.arm_runs[arm], {"trials_used": trials_used(study)})
                tracker.terminate(ctx.arm_runs[arm], "FINISHED")
            states = [t.state.name for t in study.get_trials(deepcopy=False)]
            shown = ", ".join(f"{k.split('.')[-1]}={v:.3f}" for k, v in best.items()) or "defaults (no complete trial)"
            lines.append(
                f"  {arm}: best {shown}; trials {states.count('COMPLETE')} complete, {states.count('PRUNED')} "
                f"pruned, {states.count('FAIL')} failed"
            )
        if not done:
            tracker.log_text(ctx.study_run, dump_yaml(cfg), "config.yaml")
            tracker.terminate(ctx.study_run, "FINISHED")
    return lines


def threads_per_worker(workers: int, cores: int) -> int:
    """Torch threads for each of `workers` processes on `cores` cores: together they use every core and no
    more. Measured by `make bench` (id `threads`): 2 workers on 2 cores finish quick steps 2.4x sooner with
    1 thread each than with torch's default of one thread per core each."""
    return max(1, cores // workers)


def run_study(
    cfg: ExperimentConfig,
    corpus: str | None = None,
    tracking_uri: str | None = None,
    run_dir: str | None = None,
    workers: int = 1,
) -> str:
    """Run (or resume, or join) the whole study; returns a summary saying where the results are (the report
    is built from MLflow afterwards, by `ablation run` or `ablation report`). Raises StudyIncomplete when
    the workers stopped short of a complete study."""
    if workers < 1:
        raise UserError(f"run: --workers must be at least 1, got {workers}")
    start = time.perf_counter()
    ctx = _context(cfg, corpus, tracking_uri, run_dir)
    try:
        if workers == 1:
            work(ctx)
        else:
            _run_workers(ctx, corpus, tracking_uri, workers)
        lines = [
            f"study {cfg.study.name!r} done in {time.perf_counter() - start:.0f} s",
            f"MLflow: experiment {ctx.experiment!r} at {ctx.tracker.uri} (browse: make ui)",
            *_finish(ctx),
        ]
    except KeyboardInterrupt:
        _interrupted(ctx)
        raise
    finally:
        ctx.coord.close()
    return "\n".join(lines)


def _interrupted(ctx: StudyContext) -> None:
    """Ctrl-C on one machine: the study and arm runs end KILLED (a rerun resumes them). With a shared
    PostgreSQL storage other machines may still work on the study, so its runs stay as they are."""
    if is_postgres(ctx.cfg.study.storage):
        return
    for run in (ctx.study_run, *ctx.arm_runs.values()):
        with contextlib.suppress(Exception):
            ctx.tracker.terminate(run, "KILLED")


def _run_workers(ctx: StudyContext, corpus: str | None, tracking_uri: str | None, workers: int) -> None:
    """`workers` spawned processes sharing the study; Ctrl-C reaches them too (one process group): they end
    their runs KILLED, then exit; any still alive after 30 s are terminated."""
    threads = threads_per_worker(workers, os.cpu_count() or 1)
    spawn = mp.get_context("spawn")
    args = (ctx.cfg, corpus, tracking_uri, str(ctx.run_dir), threads)
    procs = [spawn.Process(target=_worker_main, args=args) for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        deadline = time.monotonic() + 30
        for p in procs:
            with contextlib.suppress(KeyboardInterrupt):
                p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()
                p.join()
        raise
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} worker(s) failed (exit codes {failed}); rerun to resume")
