"""The ablation study: per arm, Optuna tunes negative sampling on validation, then the best parameters are
retrained under every seed and tested; a zero-shot run is the reference row.

MLflow layout (one experiment per study): study run → arm runs → trial and final runs, plus a zero-shot
run under the study, all tagged with `role`. Resumable: finished work is found and skipped, work left
behind by a dead process is failed (Optuna) or deleted (MLflow) and redone. Several workers may share a
study, on one machine or many (coordination.py); a lock around "count the budget, ask a trial" keeps each
arm at exactly `n_trials`, and claims give each final seed and the zero-shot run to one worker.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ablation.config import ExperimentConfig, replace_path
from ablation.data.run_data import RunData
from ablation.errors import UserError
from ablation.evaluation.ranking import MODES, metric_names
from ablation.study.coordination import Coordinator
from ablation.study.progress import Progress
from ablation.study.tracked_run import describe, run_tags, system_metrics_s
from ablation.tracking.store import NOTE_TAG, Tracker
from ablation.training.trainer import NonFiniteLoss, Trainer

POLL_S = 2.0  # how often a worker looks again at work that others hold
COUNTED = "counted"  # user attr: a failed trial that used budget (non-finite loss), not a crashed worker


@dataclass
class StudyContext:
    """What every worker of one study shares."""

    cfg: ExperimentConfig
    data: RunData
    tracker: Tracker
    experiment: str
    run_dir: Path
    coord: Coordinator
    study_run: str = ""
    arm_runs: dict[str, str] = field(default_factory=dict)
    studies: dict[str, optuna.Study] = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)
    _storage: optuna.storages.BaseStorage | None = None

    def storage(self) -> optuna.storages.BaseStorage:
        """One storage object per process (an RDB storage creates its tables when made: under the lock)."""
        if self._storage is None:
            if self.cfg.study.storage:
                self._storage = optuna.storages.RDBStorage(
                    self.cfg.study.storage, engine_kwargs={"pool_pre_ping": True}
                )
            else:
                from optuna.storages import JournalStorage
                from optuna.storages.journal import JournalFileBackend

                self._storage = JournalStorage(JournalFileBackend(str(self.run_dir / "optuna.journal")))
        return self._storage


def check_objective(cfg: ExperimentConfig) -> None:
    """The objective must name a validation metric the trainer records."""
    parts = cfg.study.objective.split("/")
    metrics = metric_names(cfg.eval.ks)
    if (
        len(parts) != 4
        or parts[0] != "val"
        or parts[1] not in MODES
        or parts[2] not in metrics
        or parts[3] not in (*cfg.eval.val_tasks, "mean")
    ):
        raise UserError(
            f"config: study.objective {cfg.study.objective!r} is not a validation metric "
            "(val/<retrieval|rerank>/<acc_at_1|mrr|recall_at_K>/<task|mean>)"
        )


def optuna_study(ctx: StudyContext, arm: str) -> optuna.Study:
    if arm in ctx.studies:
        return ctx.studies[arm]
    s = ctx.cfg.study
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials, n_warmup_steps=s.pruner_warmup_epochs)
        if s.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ctx.studies[arm] = optuna.create_study(
        study_name=f"{s.name}-{arm}",
        storage=ctx.storage(),
        load_if_exists=True,
        direction=s.direction,
        sampler=optuna.samplers.TPESampler(seed=s.tuning_seed),
        pruner=pruner,
    )
    return ctx.studies[arm]


def _used(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and trial.user_attrs.get(COUNTED, False)
    )


def trials_used(study: optuna.Study) -> int:
    """Trials that count against the budget: complete, pruned, or failed on their own (not a dead worker)."""
    return sum(_used(t) for t in study.get_trials(deepcopy=False))


def _delete_dead_runs(ctx: StudyContext, tags: dict[str, str], roles: tuple[str, ...]) -> None:
    """Delete MLflow runs (soft: `mlflow gc` or the UI can restore them) that a dead worker left open."""
    for run in ctx.tracker.search(ctx.experiment, {"study": ctx.cfg.study.name, **tags}, exclude_status="FINISHED"):
        run_tags = run.data.tags
        if run_tags.get("role") in roles and run.info.status in ("RUNNING", "KILLED") and not ctx.coord.alive(run_tags):
            ctx.tracker.delete_run(run.info.run_id)


def _clean_stale(ctx: StudyContext, study: optuna.Study, arm: str) -> None:
    """Fail trials whose worker died, and delete MLflow runs that a dead worker left open."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not ctx.coord.alive(t.user_attrs):
            with contextlib.suppress(ValueError, optuna.exceptions.UpdateFinishedTrialError):
                study.tell(t.number, state=TrialState.FAIL)  # unless its owner told it meanwhile
    _delete_dead_runs(ctx, {"arm": arm}, ("trial", "final"))


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


def _train(
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
            _clean_stale(ctx, study, arm)
            trials = study.get_trials(deepcopy=False)
            if sum(_used(t) or t.state == TrialState.RUNNING for t in trials) >= ctx.cfg.study.n_trials:
                return
            trial = study.ask()
            for k, v in ctx.coord.me.items():
                trial.set_user_attr(k, v)
        cfg = _sample(trial, base)
        try:
            value = _train(
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
            _clean_stale(ctx, study, arm)
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


def _settled(ctx: StudyContext, arm: str, seed: int) -> bool:
    """Whether the final run of (arm, seed) is done: FINISHED, or FAILED on a non-finite loss (retraining
    the same seed would fail the same way)."""
    wanted = {"study": ctx.cfg.study.name, "role": "final", "arm": arm, "seed": str(seed)}
    runs = ctx.tracker.search(ctx.experiment, wanted, exclude_status="RUNNING")
    return any(
        r.info.status == "FINISHED" or r.data.tags.get("failure", "").startswith(NonFiniteLoss.__name__) for r in runs
    )


def _finished(ctx: StudyContext, role: str, **tags: str) -> bool:
    wanted = {"study": ctx.cfg.study.name, "role": role, **tags}
    return bool(ctx.tracker.search(ctx.experiment, wanted, status="FINISHED", limit=1))


def final_runs(ctx: StudyContext, arm: str) -> None:
    """Retrain the arm's best parameters under every seed (skipping seeds already done or claimed)."""
    cfg, params = best_config(ctx, arm)
    for seed in ctx.cfg.study.seeds:
        name = f"final-{arm}-seed{seed}"
        if _settled(ctx, arm, seed) or not ctx.coord.claim(name):
            continue
        try:
            if not _settled(ctx, arm, seed):
                with ctx.coord.lock():
                    _clean_stale(ctx, optuna_study(ctx, arm), arm)
                tags = {"role": "final", **{f"best.{k}": f"{v:.6g}" for k, v in params.items()}}
                _train(ctx, replace_path(cfg, "seed", seed), f"{arm}-seed{seed}", tags, ctx.arm_runs[arm])
        except NonFiniteLoss as exc:  # the run is FAILED with the reason; the study goes on
            print(f"warning: final run {arm} seed {seed} failed: {exc}", file=sys.stderr)
        finally:
            ctx.coord.release(name)


def zero_shot_run(ctx: StudyContext) -> None:
    """The pretrained encoder, untrained, on the validation and test splits: the reference row."""
    from ablation.evaluation.zeroshot import ZeroShot
    from ablation.runtime import describe_device, resolve_device

    if not ctx.cfg.study.zero_shot or _finished(ctx, "zero-shot") or not ctx.coord.claim("zero-shot"):
        return
    try:
        if _finished(ctx, "zero-shot"):  # finished between the look and the claim
            return
        _delete_dead_runs(ctx, {"role": "zero-shot"}, ("zero-shot",))
        device = resolve_device(ctx.cfg.train.device)
        tags = {
            **run_tags(ctx.cfg, ctx.data),
            **ctx.coord.me,
            "study": ctx.cfg.study.name,
            "role": "zero-shot",
            "arm": "zero-shot",
            "device": describe_device(device),
            NOTE_TAG: describe("zero-shot", "zero-shot", model=ctx.cfg.model.name),
        }
        start = time.monotonic()
        model = ZeroShot(ctx.cfg.model, ctx.cfg.eval.batch_size, device)  # loaded before the run is created
        with ctx.tracker.run(ctx.experiment, "zero-shot", tags) as rec:  # top level, beside the arm runs
            ks = ctx.cfg.eval.ks
            val = model.evaluate(ctx.data.val, ctx.cfg.eval.val_tasks, ks)
            res = model.evaluate(ctx.data.test, ks=ks)
            rec.log_metrics({f"val/{k}": v for k, v in val.metrics.items()}, step=0)
            rec.log_metrics({f"test/{k}": v for k, v in {**res.metrics, **res.slice_sizes}.items()}, step=0)
            rec.log_text(res.per_query.to_csv(index=False), "per_query_test.csv")
        objective = ctx.cfg.study.objective
        value = val.metrics.get(objective.removeprefix("val/"))
        ctx.progress.run_done("zero-shot", "zero-shot", "", value, time.monotonic() - start)
    finally:
        ctx.coord.release("zero-shot")


def open_work(ctx: StudyContext) -> list[str]:
    """Work items that no worker has settled yet: the zero-shot run, each arm's budget, each final seed."""
    items = ["the zero-shot run"] if ctx.cfg.study.zero_shot and not _finished(ctx, "zero-shot") else []
    for arm in ctx.cfg.study.arms:
        used = trials_used(optuna_study(ctx, arm))
        if used < ctx.cfg.study.n_trials:
            items.append(f"{arm}: {used} of {ctx.cfg.study.n_trials} trials")
        items += [f"{arm} seed {seed}: no final run" for seed in ctx.cfg.study.seeds if not _settled(ctx, arm, seed)]
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
