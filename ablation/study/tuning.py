"""Tuning: per arm, Optuna trials on validation until the arm's budget is used (shared by every worker), and
the best parameters found. One tracked training run (`train_run`) serves trials and final runs alike.

MLflow layout (one experiment per study): the study run, one run per arm and the zero-shot run at the top
level; trial and final runs under their arm, all tagged with `role`. Resumable: finished work is found and
skipped, work left behind by a dead process is failed (Optuna) or deleted (MLflow) and redone. A lock around
"count the budget, ask a trial" keeps each arm at exactly `n_trials`.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time

import optuna
from optuna.trial import TrialState

from ablation.config import ExperimentConfig, replace_path
from ablation.study.context import COUNTED, POLL_S, StudyContext, optuna_study, trials_used, used
from ablation.study.ledger import clean_stale
from ablation.study.tracked_run import describe, run_tags, system_metrics_s
from ablation.tracking.store import NOTE_TAG
from ablation.training.trainer import NonFiniteLoss, Trainer


def _sample(trial: optuna.trial.Trial, cfg: ExperimentConfig) -> ExperimentConfig:
    for key, space in sorted(cfg.study.search_space.items()):
        cfg = replace_path(cfg, key, trial.suggest_float(key, space.low, space.high, log=space.log))
    return cfg


KILL_AFTER_TRIALS = "ABLATION_KILL_AFTER_TRIALS"
"""Fault injection, for tests of resume: with this variable set to N, a process that has finished N trials
kills itself with SIGKILL after the first epoch of its next trial, leaving a RUNNING trial and MLflow run
behind exactly as a crash or `kill -9` would."""


def _finished_trials_of_this_process(study: optuna.Study, worker: str) -> int:
    return sum(
        t.state != TrialState.RUNNING and t.user_attrs.get("worker") == worker for t in study.get_trials(deepcopy=False)
    )


def train_run(
    ctx: StudyContext,
    cfg: ExperimentConfig,
    name: str,
    tags: dict[str, str],
    parent: str,
    trial: optuna.trial.Trial | None = None,
) -> float | None:
    """One tracked training run; with `trial`, each epoch reports to Optuna and may be pruned."""
    objective = ctx.cfg.study.objective

    kill_after = os.environ.get(KILL_AFTER_TRIALS)

    def on_epoch(epoch: int, val: dict[str, float]) -> None:
        if trial is None:
            return
        if kill_after and _finished_trials_of_this_process(trial.study, ctx.coord.me["worker"]) >= int(kill_after):
            os.kill(os.getpid(), signal.SIGKILL)
        trial.report(val[objective], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    trainer = Trainer(cfg, ctx.data, on_epoch, run_test=trial is None)
    all_tags = {**run_tags(cfg, ctx.data), **ctx.coord.me, "study": ctx.cfg.study.name, **tags}
    role = tags["role"]
    params = dict(trial.params) if trial is not None else {k[5:]: float(v) for k, v in tags.items() if k[:5] == "best."}
    what = {"trial": f"trial {tags.get('trial')}"} if trial is not None else {}
    all_tags[NOTE_TAG] = describe(role, cfg.model.sharing, cfg.seed, params, **what)
    pruned = False
    start = time.monotonic()
    with ctx.tracker.run(ctx.experiment, name, all_tags, parent, system_metrics_s(cfg)) as rec:
        try:
            trainer.fit(rec)
            rec.set_tags({"state": "complete"})
        except optuna.TrialPruned:  # a normal outcome: the run ends FINISHED, tagged pruned
            rec.set_tags({"state": "pruned"})
            pruned = True
    value = trainer.result.val_history[-1][objective] if trainer.result.val_history else None
    label = str(tags.get("trial")) if trial is not None else f"seed {cfg.seed}"
    ctx.progress.run_done(cfg.model.sharing, role, label, value, time.monotonic() - start, pruned)
    if pruned:
        raise optuna.TrialPruned()
    return value


def tune_arm(ctx: StudyContext, arm: str) -> None:
    """Run trials for `arm` until its budget is used (shared with any other worker)."""
    study = optuna_study(ctx, arm)
    base = replace_path(replace_path(ctx.cfg, "model.sharing", arm), "seed", ctx.cfg.study.tuning_seed)
    while True:
        with ctx.coord.lock():
            clean_stale(ctx, study, arm)
            trials = study.get_trials(deepcopy=False)
            if sum(used(t) or t.state == TrialState.RUNNING for t in trials) >= ctx.cfg.study.n_trials:
                return
            trial = study.ask()
            for k, v in ctx.coord.me.items():
                trial.set_user_attr(k, v)
        cfg = _sample(trial, base)
        try:
            value = train_run(
                ctx,
                cfg,
                f"{arm}-trial{trial.number}",
                {"role": "trial", "trial": str(trial.number)},
                ctx.arm_runs[arm],
                trial,
            )
        except optuna.TrialPruned:
            _tell(study, trial, state=TrialState.PRUNED)
            continue
        except NonFiniteLoss as exc:
            trial.set_user_attr(COUNTED, True)
            trial.set_user_attr("failure", str(exc))
            _tell(study, trial, state=TrialState.FAIL)
            continue
        if value is None or not math.isfinite(value):
            trial.set_user_attr(COUNTED, True)
            _tell(study, trial, state=TrialState.FAIL)
        else:
            _tell(study, trial, value)


def _tell(study: optuna.Study, trial: optuna.trial.Trial, value: float | None = None, **kw: TrialState) -> None:
    """Tell a trial's outcome, unless another worker already failed it (this one lost its lease meanwhile):
    then the outcome is dropped with a warning, and the budget is filled by a retry."""
    try:
        study.tell(trial, value, **kw)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError) as exc:
        print(
            f"warning: trial {trial.number} was failed by another worker ({exc}); its result is dropped",
            file=sys.stderr,
        )


def _wait_for_tuning(ctx: StudyContext, study: optuna.Study, arm: str) -> None:
    while True:
        with ctx.coord.lock():
            clean_stale(ctx, study, arm)
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                return
        time.sleep(POLL_S)


def best_config(ctx: StudyContext, arm: str) -> tuple[ExperimentConfig, dict[str, float]]:
    """The arm's config with its best trial's parameters (the defaults when no trial completed)."""
    study = optuna_study(ctx, arm)
    while True:  # a trial whose worker died while we waited is failed, and its budget is filled again
        tune_arm(ctx, arm)
        _wait_for_tuning(ctx, study, arm)
        if trials_used(study) >= ctx.cfg.study.n_trials:
            break
    params = best_params(study)
    cfg = replace_path(ctx.cfg, "model.sharing", arm)
    for key, value in params.items():
        cfg = replace_path(cfg, key, value)
    return cfg, params


def best_params(study: optuna.Study) -> dict[str, float]:
    """The best complete trial's parameters, as they stand (empty when no trial completed)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return {}
    return study.best_trial.params
