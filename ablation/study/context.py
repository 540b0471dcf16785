"""What every worker of one study shares: its config, data, tracker, Optuna storage and lock, and the three
kinds of queue the work is taken from (each an Optuna study whose enqueued trials are the work items)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from ablation.config import ExperimentConfig
from ablation.data.run_data import RunData
from ablation.study.liveness import TrialLease, WorkerFile, heartbeats
from ablation.study.progress import Progress
from ablation.study.state import StudyState, row_of, study_state
from ablation.study.storage import StudyLock, open_storage, retry_stale
from ablation.tracking.store import Tracker

POLL_S = 2.0  # how often a worker looks again at work that others hold
COUNTED = "counted"  # user attr: a failed trial that used budget (non-finite loss), not a stopped worker
SLOT = "slot"  # user attr of a work item: its place in the queue (trial index, seed); a retry keeps it


def identity() -> dict[str, str]:
    """This process as recorded on trials and runs: a worker id unique across machines and restarts, plus
    host and pid for people."""
    return {"worker": uuid.uuid4().hex[:16], "host": socket.gethostname(), "pid": str(os.getpid())}


def queue_name(study: str, kind: str, arm: str = "") -> str:
    """The Optuna study of a queue: `<study>-<arm>` (tuning), `<study>-<arm>-final`, `<study>-zero-shot`."""
    return {"tuning": f"{study}-{arm}", "final": f"{study}-{arm}-final", "zero-shot": f"{study}-zero-shot"}[kind]


def used(trial: FrozenTrial) -> bool:
    """Whether a trial used its slot: complete, pruned, or failed on its own (not a stopped worker)."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and trial.user_attrs.get(COUNTED, False)
    )


@dataclass
class StudyContext:
    """What every worker of one study shares."""

    cfg: ExperimentConfig
    data: RunData
    tracker: Tracker
    experiment: str
    run_dir: Path
    me: dict[str, str] = field(default_factory=identity)
    study_run: str = ""
    arm_runs: dict[str, str] = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)
    lease: TrialLease | None = None  # the item this worker runs now (read by its watcher thread)
    slot_points: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)  # kind → slot → fixed point
    _queues: dict[str, optuna.Study] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.cfg.study
        self.liveness = None if s.storage else WorkerFile(self.run_dir, self.me["worker"])
        self.lock = StudyLock(s.storage, s.name, self.run_dir, s.lease_s)
        with self.lock():  # a database storage creates its tables when opened: one process at a time
            self.storage = open_storage(s.storage, self.run_dir, s.lease_s, self.on_stale)
        self.heartbeats = heartbeats(self.storage)

    @property
    def level_tags(self) -> dict[str, str]:
        """The tags that place every run of a sweep's sub-study: the sweep and the level (none otherwise)."""
        s = self.cfg.study
        return {"sweep": s.parent, "level": s.level} if s.parent else {}

    def queue(self, kind: str, arm: str = "") -> optuna.Study:
        """One queue, created if missing (under the study lock: a database storage makes its tables then)."""
        name = queue_name(self.cfg.study.name, kind, arm)
        if name not in self._queues:
            s = self.cfg.study
            pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
            if kind == "tuning" and s.pruner == "median":
                pruner = optuna.pruners.MedianPruner(
                    n_startup_trials=s.pruner_startup_trials, n_warmup_steps=s.pruner_warmup_epochs
                )
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self._queues[name] = optuna.create_study(
                study_name=name, storage=self.storage, load_if_exists=True, direction=s.direction, pruner=pruner
            )
        return self._queues[name]

    def queues(self) -> list[tuple[str, str, optuna.Study]]:
        """(kind, arm, queue) in the order work is taken: zero-shot, tuning per arm, finals per arm."""
        s = self.cfg.study
        out = [("zero-shot", "", self.queue("zero-shot"))] if s.zero_shot else []
        out += [("tuning", arm, self.queue("tuning", arm)) for arm in s.arms]
        return out + [("final", arm, self.queue("final", arm)) for arm in s.arms]

    def on_stale(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A trial whose worker stopped was failed: queue it again, and end the MLflow runs it left (open ones
        are deleted, a FINISHED one whose outcome never reached Optuna is relabelled `superseded-<role>`)."""
        retry_stale(study, trial)
        wanted = {"study": self.cfg.study.name, "optuna_study": study.study_name, "optuna_trial": str(trial.number)}
        for run in self.tracker.search(self.experiment, wanted):
            if run.info.status == "FINISHED":
                self.tracker.set_tags(run.info.run_id, {"role": f"superseded-{run.data.tags.get('role')}"})
            else:
                self.tracker.set_tags(run.info.run_id, {"failure": "its worker stopped; the work was queued again"})
                if run.info.status == "RUNNING":
                    self.tracker.terminate(run.info.run_id, "KILLED")  # ended before it is hidden
                self.tracker.delete_run(run.info.run_id)

    def state(self) -> StudyState:
        """The study's accounting, from MLflow."""
        return study_state(row_of(r) for r in self.tracker.search(self.experiment, {"study": self.cfg.study.name}))

    def close(self) -> None:
        self.lock.close()
        if self.liveness is not None:
            self.liveness.close()
