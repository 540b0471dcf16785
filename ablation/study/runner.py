"""`ablation run` / `make ablation`: set up a study, run its workers, and finish it.

The main process validates everything first (config, corpus, model, objective: bad input leaves no run),
finds or creates the study and arm runs, then works itself or starts `workers` processes that share the
studies through the Optuna storage and the locks in the run directory.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import torch

from ablation.config import ExperimentConfig, dump_yaml
from ablation.data.run_data import load_run_data
from ablation.io import REPO_ROOT
from ablation.study.tuning import (
    StudyContext,
    best_config,
    check_objective,
    final_runs,
    optuna_study,
    tune_arm,
    zero_shot_run,
)
from ablation.study.tuning_plots import arm_colors, trials_table, tuning_figures
from ablation.study.workers import locked
from ablation.tracking.store import Tracker, git_commit, package_versions, resolve_tracking_uri


def _context(cfg: ExperimentConfig, corpus: str | None, tracking_uri: str | None, run_dir: str | None) -> StudyContext:
    check_objective(cfg)
    data = load_run_data(cfg, corpus)
    tracker = Tracker(resolve_tracking_uri(tracking_uri, cfg.tracking.uri))
    experiment = cfg.tracking.experiment or cfg.study.name
    folder = Path(run_dir) if run_dir else REPO_ROOT / "runs" / cfg.study.name
    folder.mkdir(parents=True, exist_ok=True)
    name = cfg.study.name
    with locked(folder / "study.lock"):
        study_run = tracker.find_or_create_run(experiment, name, {"study": name, "role": "study"})
        arm_runs = {
            arm: tracker.find_or_create_run(experiment, arm, {"study": name, "role": "arm", "arm": arm}, study_run)
            for arm in cfg.study.arms
        }
    for key, value in {"git_commit": git_commit(), "corpus_digest": data.digest, **package_versions()}.items():
        tracker.set_tags(study_run, {key: value})  # as of this (re)start
    return StudyContext(cfg, data, tracker, experiment, folder, study_run, arm_runs)


def work(ctx: StudyContext) -> None:
    """Everything one worker does: the reference row, tuning of every arm, then the final seeds."""
    zero_shot_run(ctx)
    for arm in ctx.cfg.study.arms:
        tune_arm(ctx, arm)
    for arm in ctx.cfg.study.arms:
        final_runs(ctx, arm)


def _worker_main(
    cfg: ExperimentConfig, corpus: str | None, tracking_uri: str | None, run_dir: str, threads: int
) -> None:
    torch.set_num_threads(threads)
    work(_context(cfg, corpus, tracking_uri, run_dir))


def _finish(ctx: StudyContext) -> list[str]:
    """Tuning figures on the arm runs, study params on the study run, and a summary of the results."""
    tracker = ctx.tracker
    cfg = ctx.cfg
    lines = []
    tracker.log_text(ctx.study_run, dump_yaml(cfg), "config.yaml")
    colors = arm_colors(list(cfg.study.arms))
    for arm in cfg.study.arms:
        study = optuna_study(ctx, arm)
        maximize = cfg.study.direction == "maximize"
        figures = tuning_figures(trials_table(study), cfg.study.objective, arm, colors[arm], maximize)
        for name, fig in figures.items():
            tracker.log_figure(ctx.arm_runs[arm], fig, name)
        _, best = best_config(ctx, arm)
        for key, value in best.items():
            tracker.set_tags(ctx.arm_runs[arm], {f"best.{key}": f"{value:.6g}"})
        tracker.terminate(ctx.arm_runs[arm], "FINISHED")
        states = [t.state.name for t in study.get_trials(deepcopy=False)]
        shown = ", ".join(f"{k.split('.')[-1]}={v:.3f}" for k, v in best.items()) or "defaults (no complete trial)"
        lines.append(
            f"  {arm}: best {shown}; trials {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
            f"{states.count('FAIL')} failed"
        )
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
    """Run (or resume) the whole study; returns a summary saying where the results are (the report is
    built from MLflow afterwards, by `ablation run` or `ablation report`)."""
    start = time.perf_counter()
    ctx = _context(cfg, corpus, tracking_uri, run_dir)
    if workers == 1:
        work(ctx)
    else:
        threads = threads_per_worker(workers, os.cpu_count() or 1)
        spawn = mp.get_context("spawn")
        procs = [
            spawn.Process(target=_worker_main, args=(cfg, corpus, tracking_uri, str(ctx.run_dir), threads))
            for _ in range(workers)
        ]
        for p in procs:
            p.start()
        try:
            for p in procs:
                p.join()
        except KeyboardInterrupt:
            for p in procs:
                p.terminate()
            raise
        failed = [p.exitcode for p in procs if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"{len(failed)} worker(s) failed (exit codes {failed}); rerun to resume")
    lines = [
        f"study {cfg.study.name!r} done in {time.perf_counter() - start:.0f} s",
        f"MLflow: experiment {ctx.experiment!r} at {ctx.tracker.uri} (browse: make ui)",
        *_finish(ctx),
    ]
    return "\n".join(lines)
