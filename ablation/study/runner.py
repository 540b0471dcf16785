"""`ablation run` / `make ablation`: set up a study, run its workers, and finish it.

The main process checks everything first (config, device, folders, stores, corpus, model, objective, and
that a study of this name was started with the same settings: bad input leaves nothing behind), then opens
the study (`opening.py`: its queues and MLflow runs, each made once), then works itself or starts `workers`
processes (`worker.py`). The study run is FINISHED only when the study is complete (`state.py`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time

import torch

from ablation.config import ExperimentConfig, dump_yaml
from ablation.errors import UserError
from ablation.runtime import INTERRUPTS, resolve_device
from ablation.study.context import StudyContext
from ablation.study.opening import end_study_runs, open_study, why
from ablation.study.worker import best_params, work, worker_main

INTERRUPT_AT = "ABLATION_INTERRUPT_AT"
"""Fault injection, for tests of interrupts: `spawn` sends SIGINT to the process group right after the first
worker process started, while it is still starting up."""


class StudyIncomplete(RuntimeError):
    """The workers stopped and the study still lacks something (named in the message)."""


def finish(ctx: StudyContext) -> list[str]:
    """If the study is complete: tuning figures and best parameters on the arm runs, and every run of the
    study FINISHED (once, whichever worker gets here first). Returns summary lines; raises StudyIncomplete
    naming what is missing otherwise."""
    tracker, cfg = ctx.tracker, ctx.cfg
    s = cfg.study
    with ctx.lock():
        state = ctx.state()
        lines = []
        for what, run_id, role in state.duplicates():
            tracker.set_tags(run_id, {"role": role})
            lines.append(f"warning: {what}: run {run_id} duplicates an earlier finished run; relabelled {role}")
        gaps = state.missing(s.arms, s.seeds, s.n_trials, s.zero_shot)
        if gaps:
            raise StudyIncomplete(f"study {s.name!r} is incomplete: {'; '.join(gaps)}")
        done = tracker.status(ctx.study_run) == "FINISHED"
        for arm in s.arms:
            queue = ctx.queue("tuning", arm)
            best = best_params(queue)
            if not done:
                tracker.set_tags(ctx.arm_runs[arm], {f"best.{k}": f"{v:.6g}" for k, v in best.items()})
                tracker.log_params(
                    ctx.arm_runs[arm], {k: f"{v:.6g}" for k, v in best.items()}
                )  # MLflow compares params
                tracker.set_tags(ctx.arm_runs[arm], {"trials_used": state.trials_used.get(arm, 0)})
                tracker.terminate(ctx.arm_runs[arm], "FINISHED")
            states = [t.state.name for t in queue.get_trials(deepcopy=False)]
            shown = ", ".join(f"{k.split('.')[-1]}={v:.3f}" for k, v in best.items()) or "defaults (no complete trial)"
            lines.append(
                f"  {arm}: best {shown}; trials {states.count('COMPLETE')} complete, {states.count('PRUNED')} "
                f"pruned, {states.count('FAIL')} failed"
            )
        if not done:
            tracker.log_text(ctx.study_run, dump_yaml(cfg), "config.yaml")
            tracker.terminate(ctx.study_run, "FINISHED")
    return lines


def workers_for(cfg: ExperimentConfig, cores: int) -> int:
    """`--workers auto`: on the CPU as many processes as `train.threads` fit in the cores (together they use
    every core and no more: `make bench`, id `threads`, measured 2 workers of 1 thread 2.4x faster on 2 cores
    than 2 of 2 threads); one on a GPU, which the processes would share."""
    if resolve_device(cfg.train.device).type == "cuda":
        return 1
    return max(1, cores // cfg.train.threads)


def oversubscribed(cfg: ExperimentConfig, workers: int, cores: int) -> str | None:
    """A note where `workers` processes of `train.threads` threads each ask for more threads than cores."""
    if workers * cfg.train.threads <= cores or resolve_device(cfg.train.device).type == "cuda":
        return None
    return (
        f"note: {workers} worker(s) × train.threads {cfg.train.threads} = {workers * cfg.train.threads} threads on "
        f"{cores} cores: every run slows down (fewer --workers, or a study with fewer train.threads)"
    )


def run_study(
    cfg: ExperimentConfig,
    corpus: str | None = None,
    tracking_uri: str | None = None,
    run_dir: str | None = None,
    workers: int = 1,
) -> str:
    """Run (or resume, or join) the whole study; returns a summary saying where the results are (the report
    is built from MLflow afterwards, by `ablation run` or `ablation report`). Raises StudyIncomplete when
    the workers stopped short of a complete study. Every way out ends this process's open runs: KILLED on
    a signal, FAILED with the error otherwise."""
    if workers < 1:
        raise UserError(f"run: --workers must be at least 1, got {workers}")
    note = oversubscribed(cfg, workers, os.cpu_count() or 1)
    if note:
        print(note, file=sys.stderr)
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.train.threads)  # the study's numbers depend on it; --workers does not
    try:
        return _run_study(cfg, corpus, tracking_uri, run_dir, workers)
    finally:
        torch.set_num_threads(caller_threads)


def _run_study(
    cfg: ExperimentConfig, corpus: str | None, tracking_uri: str | None, run_dir: str | None, workers: int
) -> str:
    start = time.perf_counter()
    ctx = open_study(cfg, corpus, tracking_uri, run_dir)
    try:
        if workers == 1:
            work(ctx)
        else:
            _run_workers(ctx, corpus, tracking_uri, workers)
        lines = [
            f"study {cfg.study.name!r} done in {time.perf_counter() - start:.0f} s",
            f"MLflow: experiment {ctx.experiment!r} at {ctx.tracker.uri} (browse: make ui)",
            *finish(ctx),
        ]
    except KeyboardInterrupt:
        end_study_runs(ctx, "KILLED", "interrupted")
        raise
    except StudyIncomplete:
        raise
    except BaseException as exc:
        end_study_runs(ctx, "FAILED", why(exc))
        raise
    finally:
        ctx.close()
    return "\n".join(lines)


def _run_workers(ctx: StudyContext, corpus: str | None, tracking_uri: str | None, workers: int) -> None:
    """`workers` spawned processes sharing the study; a signal to the group reaches them too: they end their
    runs KILLED, then exit; any still alive after 30 s are terminated. Only when every worker is gone does
    the caller end the study's runs, so that no worker starting up can open them again after that."""
    spawn = mp.get_context("spawn")
    args = (ctx.cfg, corpus, tracking_uri, str(ctx.run_dir), ctx.cfg.train.threads, os.getpid())
    procs = [spawn.Process(target=worker_main, args=args) for _ in range(workers)]
    try:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS.SIGNALS)  # inherited by the children
        try:
            for p in procs:
                p.start()
                if os.environ.pop(INTERRUPT_AT, None) == "spawn":
                    os.killpg(os.getpgid(0), signal.SIGINT)  # a Ctrl-C of the group while workers start
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a signal that came meanwhile arrives now
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        deadline = time.monotonic() + 30
        for p in procs:
            if p.pid is None:
                continue
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()
                p.join()
        raise
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} worker(s) failed (exit codes {failed}); rerun to resume")
