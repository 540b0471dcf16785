"""`ablation run` / `make ablation`: set up a study, run its workers, and finish it.

The main process checks everything first (config, device, folders, stores, corpus, model, objective, and
that a study of this name was started with the same settings: bad input leaves nothing behind), then,
under the study lock, creates what is missing: the queues (Optuna studies) with their work items, the
study run and the arm runs, so that any number of processes or machines starting at once make each exactly
once. It then works itself or starts `workers` processes (`worker.py`). The study run is FINISHED only
when the study is complete (`state.py`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing as mp
import os
import signal
import sys
import time
import warnings
from typing import Any

import optuna
import torch
from optuna_dashboard import save_note

from ablation.config import ExperimentConfig, dump_yaml
from ablation.errors import RedactingStream, UserError
from ablation.io import git_commit
from ablation.runtime import INTERRUPTS, parent_gone, resolve_device
from ablation.study.context import StudyContext
from ablation.study.preflight import SETTINGS, check_same, check_study
from ablation.study.progress import Progress
from ablation.study.storage import is_postgres
from ablation.study.sweep import SWEEP_ROLE
from ablation.study.tracked_run import describe
from ablation.study.worker import best_params, work
from ablation.tracking.store import NOTE_TAG, Tracker, package_versions
from ablation.tracking.view import COLOR_TAG, arm_colors

INTERRUPT_AT = "ABLATION_INTERRUPT_AT"
"""Fault injection, for tests of interrupts: `spawn` sends SIGINT to the process group right after the first
worker process started, while it is still starting up."""


QUEUE_NOTES = {
    "tuning": "Tuning queue of arm **{arm}** in study {study}: one trial per point of the random-negative "
    "schedule; the best trial's parameters are the arm's for its final runs.",
    "final": "**Final-seed queue** of arm **{arm}** in study {study}: one trial per seed, all with the arm's "
    "tuned parameters. Nothing is tuned here: its 'best trial' is only the luckiest seed.",
    "zero-shot": "The **zero-shot reference** of study {study}: the untrained encoder, evaluated once.",
}
"""What optuna-dashboard shows as each queue's note."""


class StudyIncomplete(RuntimeError):
    """The workers stopped and the study still lacks something (named in the message)."""


def record_settings(tracker: Tracker, run: str, settings: dict[str, Any]) -> None:
    """Keep the settings a run was started with (once: a resume leaves them), for `check_recorded`."""
    if tracker.read_text(run, f"{SETTINGS}.json") is None:
        tracker.log_text(run, json.dumps(settings, indent=1, sort_keys=True), f"{SETTINGS}.json")


def open_study(
    cfg: ExperimentConfig, corpus: str | None, tracking_uri: str | None, run_dir: str | None
) -> StudyContext:
    """Check, then set up (or join) the study; see the module's docstring."""
    c = check_study(cfg, corpus, tracking_uri, run_dir)
    folder, data, settings, experiment = c.folder, c.data, c.settings, c.experiment
    tracker = Tracker(c.uri)  # the first write: a sqlite store is created here when missing
    folder.mkdir(parents=True, exist_ok=True)
    ctx = StudyContext(cfg, data, tracker, experiment, folder)
    s = cfg.study
    study_tags = {"study": s.name, "role": "study"}
    total = int(s.zero_shot) + len(s.arms) * (s.n_trials + len(s.seeds))
    ctx.progress = Progress(s.objective, total, lambda: ctx.state().runs_done)
    try:
        with ctx.lock() as held:
            for kind, arm, queue in ctx.queues():
                recorded = queue.user_attrs.get(SETTINGS)
                check_same(s.name, recorded, settings, "by a process that started at the same time")
                if recorded is None:
                    held.check()
                    queue.set_user_attr(SETTINGS, settings)
                    save_note(queue, QUEUE_NOTES[kind].format(arm=arm, study=s.name))
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        queue.set_metric_names([s.objective])  # optuna-dashboard names its axis after it
            held.check()
            sweep_run = _sweep_run(ctx) if s.parent else None
            ctx.study_run = tracker.find_or_create_run(experiment, s.name, study_tags, sweep_run)
            _set_up_runs(ctx, settings)
    except BaseException as exc:  # once the study run exists, end what exists, as run_study would
        if ctx.study_run:
            interrupted = isinstance(exc, KeyboardInterrupt)
            _end_runs(ctx, "KILLED" if interrupted else "FAILED", "interrupted" if interrupted else _why(exc))
        ctx.close()
        raise
    return ctx


def _sweep_run(ctx: StudyContext) -> str:
    """The run of the sweep this sub-study is a level of (made by whichever process gets here first)."""
    name = ctx.cfg.study.parent
    return ctx.tracker.find_or_create_run(ctx.experiment, name, {"study": name, "role": SWEEP_ROLE})


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _set_up_runs(ctx: StudyContext, settings: dict) -> None:
    """The arm runs, every run RUNNING again on a resume, the settings record and this start's tags."""
    tracker, s = ctx.tracker, ctx.cfg.study
    # arm runs sit beside the study run, not under it: the UI's runs table then lists the arms (with their
    # aggregates) and the zero-shot reference at its top level, ready to compare with no expanding
    # (a sweep's levels nest instead: sweep run > level's study run > its arms, which the UI expands)
    colors = arm_colors(list(s.arms))
    for arm in s.arms:
        tags = {"study": s.name, "role": "arm", "arm": arm}
        parent = ctx.study_run if s.parent else None
        name = f"{arm} ({s.level})" if s.level else arm  # a sweep's charts name each level's arms apart
        ctx.arm_runs[arm] = tracker.find_or_create_run(ctx.experiment, name, tags, parent)
        tracker.set_tags(ctx.arm_runs[arm], {COLOR_TAG: colors[arm]})
    for run in (ctx.study_run, *ctx.arm_runs.values()):
        tracker.resume(run)  # a study interrupted before is RUNNING again
    record_settings(tracker, ctx.study_run, settings)
    note = f"Study {s.name}: arms {', '.join(s.arms)}; {s.n_trials} trials per arm on {s.objective}; seeds "
    note += f"{', '.join(map(str, s.seeds))}. Its metrics: each arm minus {s.arms[0]}, with 95 % interval."
    note += f" Level {s.level} of the sweep {s.parent}." if s.parent else ""
    tags = {"git_commit": git_commit(), "corpus_digest": ctx.data.digest, NOTE_TAG: note, **package_versions()}
    tracker.set_tags(ctx.study_run, tags)  # as of this (re)start
    for arm, run in ctx.arm_runs.items():
        tracker.set_tags(run, {NOTE_TAG: describe("arm", arm)})
    if ctx.level_tags:
        for run in (ctx.study_run, *ctx.arm_runs.values()):
            tracker.set_tags(run, ctx.level_tags)
            tracker.log_params(run, {"study.level": s.level})


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies (a `kill -9` of the parent leaves no orphans)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _worker_main(
    cfg: ExperimentConfig, corpus: str | None, tracking_uri: str | None, run_dir: str, threads: int, parent: int
) -> None:
    """A worker process: it starts with the interrupt signals blocked (the parent blocks them while it
    spawns), so a Ctrl-C during start-up waits until the handler is in place and ends it quietly."""
    INTERRUPTS.install()  # SIGTERM (also from the parent's death) ends the open run KILLED, like Ctrl-C
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    git_commit()  # the code this worker imported: its runs carry this commit
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS.SIGNALS)
        _die_with_parent()
        if parent_gone(parent):  # the parent died before the line above
            raise SystemExit(128 + signal.SIGTERM)
        torch.set_num_threads(threads)
        ctx = open_study(cfg, corpus, tracking_uri, run_dir)
        try:
            work(ctx)
        except KeyboardInterrupt:
            if parent_gone(parent):  # the parent was killed and cannot end its runs: do it for it
                _end_runs(ctx, "KILLED", "interrupted")
            raise
        finally:
            ctx.close()
    except KeyboardInterrupt:
        raise SystemExit(INTERRUPTS.exit_code) from None


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
        _end_runs(ctx, "KILLED", "interrupted")
        raise
    except StudyIncomplete:
        raise
    except BaseException as exc:
        _end_runs(ctx, "FAILED", _why(exc))
        raise
    finally:
        ctx.close()
    return "\n".join(lines)


def _end_runs(ctx: StudyContext, status: str, reason: str) -> None:
    """End the study and arm runs (a rerun resumes them)."""
    end_runs(ctx.cfg, ctx.tracker, [ctx.study_run, *ctx.arm_runs.values()], status, reason)


def end_runs(cfg: ExperimentConfig, tracker: Tracker, runs: list[str], status: str, reason: str) -> None:
    """End `runs` with `status` (FAILED ones tagged with the reason). With a shared PostgreSQL storage other
    machines may still work on the study, so its runs stay as they are."""
    if is_postgres(cfg.study.storage):
        return
    for run in runs:
        try:
            if status == "FAILED":
                tracker.set_tags(run, {"failure": reason[:5000]})
            tracker.terminate(run, status)
        except Exception as exc:  # the store itself may be what failed: say so, keep the first error
            print(f"warning: could not end run {run} {status}: {exc}", file=sys.stderr)


def _run_workers(ctx: StudyContext, corpus: str | None, tracking_uri: str | None, workers: int) -> None:
    """`workers` spawned processes sharing the study; a signal to the group reaches them too: they end their
    runs KILLED, then exit; any still alive after 30 s are terminated. Only when every worker is gone does
    the caller end the study's runs, so that no worker starting up can open them again after that."""
    spawn = mp.get_context("spawn")
    args = (ctx.cfg, corpus, tracking_uri, str(ctx.run_dir), ctx.cfg.train.threads, os.getpid())
    procs = [spawn.Process(target=_worker_main, args=args) for _ in range(workers)]
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
