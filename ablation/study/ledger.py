"""The study's accounting, read from MLflow and Optuna: which work is settled, open or missing, which runs a
dead worker left behind, and duplicates of finished work."""

from __future__ import annotations

import contextlib

import optuna
from optuna.trial import TrialState

from ablation.study.context import StudyContext, optuna_study, trials_used
from ablation.training.trainer import NonFiniteLoss


def delete_dead_runs(ctx: StudyContext, tags: dict[str, str], roles: tuple[str, ...]) -> None:
    """Delete MLflow runs (soft: `mlflow gc` or the UI can restore them) that a dead worker left open."""
    for run in ctx.tracker.search(ctx.experiment, {"study": ctx.cfg.study.name, **tags}, exclude_status="FINISHED"):
        run_tags = run.data.tags
        if run_tags.get("role") in roles and run.info.status in ("RUNNING", "KILLED") and not ctx.coord.alive(run_tags):
            ctx.tracker.delete_run(run.info.run_id)


def clean_stale(ctx: StudyContext, study: optuna.Study, arm: str) -> None:
    """Fail trials whose worker died, and delete MLflow runs that a dead worker left open."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not ctx.coord.alive(t.user_attrs):
            with contextlib.suppress(ValueError, optuna.exceptions.UpdateFinishedTrialError):
                study.tell(t.number, state=TrialState.FAIL)  # unless its owner told it meanwhile
    delete_dead_runs(ctx, {"arm": arm}, ("trial", "final"))


def settled(ctx: StudyContext, arm: str, seed: int) -> bool:
    """Whether the final run of (arm, seed) is done: FINISHED, or FAILED on a non-finite loss (retraining
    the same seed would fail the same way)."""
    wanted = {"study": ctx.cfg.study.name, "role": "final", "arm": arm, "seed": str(seed)}
    runs = ctx.tracker.search(ctx.experiment, wanted, exclude_status="RUNNING")
    return any(
        r.info.status == "FINISHED" or r.data.tags.get("failure", "").startswith(NonFiniteLoss.__name__) for r in runs
    )


def finished(ctx: StudyContext, role: str, **tags: str) -> bool:
    wanted = {"study": ctx.cfg.study.name, "role": role, **tags}
    return bool(ctx.tracker.search(ctx.experiment, wanted, status="FINISHED", limit=1))


def open_work(ctx: StudyContext) -> list[str]:
    """Work items that no worker has settled yet: the zero-shot run, each arm's budget, each final seed."""
    items = ["the zero-shot run"] if ctx.cfg.study.zero_shot and not finished(ctx, "zero-shot") else []
    for arm in ctx.cfg.study.arms:
        used = trials_used(optuna_study(ctx, arm))
        if used < ctx.cfg.study.n_trials:
            items.append(f"{arm}: {used} of {ctx.cfg.study.n_trials} trials")
        items += [f"{arm} seed {seed}: no final run" for seed in ctx.cfg.study.seeds if not settled(ctx, arm, seed)]
    return items


def missing(ctx: StudyContext) -> list[str]:
    """What keeps the study from complete: open work, and any (arm, seed) without exactly one FINISHED
    final run (a final run that failed on a non-finite loss stays missing)."""
    items = open_work(ctx)
    for arm in ctx.cfg.study.arms:
        for seed in ctx.cfg.study.seeds:
            wanted = {"study": ctx.cfg.study.name, "role": "final", "arm": arm, "seed": str(seed)}
            n = len(ctx.tracker.search(ctx.experiment, wanted, status="FINISHED"))
            if n != 1 and f"{arm} seed {seed}: no final run" not in items:
                items.append(f"{arm} seed {seed}: {n} finished final runs")
    return items


def mark_duplicate_finals(ctx: StudyContext) -> list[str]:
    """Where an (arm, seed) has more than one FINISHED final run (a worker that lost its lease but went on),
    keep the oldest as the final run and retag the others `role=duplicate-final`: kept, never counted."""
    notes = []
    for arm in ctx.cfg.study.arms:
        for seed in ctx.cfg.study.seeds:
            wanted = {"study": ctx.cfg.study.name, "role": "final", "arm": arm, "seed": str(seed)}
            for run in ctx.tracker.search(ctx.experiment, wanted, status="FINISHED")[1:]:
                ctx.tracker.set_tags(run.info.run_id, {"role": "duplicate-final"})
                notes.append(f"warning: {arm} seed {seed}: run {run.info.run_id} duplicates the final run; retagged")
    return notes


def runs_done(ctx: StudyContext) -> int:
    """Runs of the study that ended on their own (FINISHED, or FAILED on a non-finite loss), by any worker."""
    runs = ctx.tracker.search(ctx.experiment, {"study": ctx.cfg.study.name}, exclude_status="RUNNING")
    return sum(
        r.data.tags.get("role") in ("trial", "final", "zero-shot")
        and (r.info.status == "FINISHED" or r.data.tags.get("failure", "").startswith(NonFiniteLoss.__name__))
        for r in runs
    )
