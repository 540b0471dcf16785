"""Opening a study, the first writes of `ablation run`: after every check (`preflight.py`), under the study
lock, what is missing is made: the queues (Optuna studies) with their notes and recorded settings, the study
run and the arm runs, so that any number of processes or machines starting at once make each exactly once.
Every way out of a study ends these runs again (`end_study_runs`): KILLED on a signal, FAILED otherwise."""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import optuna
from optuna_dashboard import save_note

from ablation.config import ExperimentConfig
from ablation.io import git_commit
from ablation.names import Role
from ablation.study.context import StudyContext
from ablation.study.preflight import SETTINGS, check_same, check_study
from ablation.study.progress import Progress
from ablation.study.storage import is_postgres
from ablation.study.tracked_run import describe
from ablation.tracking.store import NOTE_TAG, Tracker, package_versions
from ablation.tracking.view import COLOR_TAG, arm_colors

QUEUE_NOTES = {
    "tuning": "Tuning queue of arm **{arm}** in study {study}: one trial per point of the random-negative "
    "schedule; the best trial's parameters are the arm's for its final runs.",
    "final": "**Final-seed queue** of arm **{arm}** in study {study}: one trial per seed, all with the arm's "
    "tuned parameters. Nothing is tuned here: its 'best trial' is only the luckiest seed.",
    "zero-shot": "The **zero-shot reference** of study {study}: the untrained encoder, evaluated once.",
}
"""What optuna-dashboard shows as each queue's note."""


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
    study_tags = {"study": s.name, "role": Role.STUDY}
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
            end_study_runs(ctx, "KILLED" if interrupted else "FAILED", "interrupted" if interrupted else why(exc))
        ctx.close()
        raise
    return ctx


def _sweep_run(ctx: StudyContext) -> str:
    """The run of the sweep this sub-study is a level of (made by whichever process gets here first)."""
    name = ctx.cfg.study.parent
    return ctx.tracker.find_or_create_run(ctx.experiment, name, {"study": name, "role": Role.SWEEP})


def why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _set_up_runs(ctx: StudyContext, settings: dict) -> None:
    """The arm runs, every run RUNNING again on a resume, the settings record and this start's tags."""
    tracker, s = ctx.tracker, ctx.cfg.study
    # arm runs sit beside the study run, not under it: the UI's runs table then lists the arms (with their
    # aggregates) and the zero-shot reference at its top level, ready to compare with no expanding
    # (a sweep's levels nest instead: sweep run > level's study run > its arms, which the UI expands)
    colors = arm_colors(list(s.arms))
    for arm in s.arms:
        tags = {"study": s.name, "role": Role.ARM, "arm": arm}
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
        tracker.set_tags(run, {NOTE_TAG: describe(Role.ARM, arm)})
    if ctx.level_tags:
        for run in (ctx.study_run, *ctx.arm_runs.values()):
            tracker.set_tags(run, ctx.level_tags)
            tracker.log_params(run, {"study.level": s.level})


def end_study_runs(ctx: StudyContext, status: str, reason: str) -> None:
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
