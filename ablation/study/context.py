"""What every worker of one study shares: its config, data, tracker, coordinator and Optuna studies, and how
the trial budget is counted."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ablation.config import ExperimentConfig
from ablation.data.run_data import RunData
from ablation.errors import UserError
from ablation.evaluation.ranking import MODES, metric_names
from ablation.study.coordination import Coordinator
from ablation.study.progress import Progress
from ablation.tracking.store import Tracker

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


def used(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and trial.user_attrs.get(COUNTED, False)
    )


def trials_used(study: optuna.Study) -> int:
    """Trials that count against the budget: complete, pruned, or failed on their own (not a dead worker)."""
    return sum(used(t) for t in study.get_trials(deepcopy=False))
