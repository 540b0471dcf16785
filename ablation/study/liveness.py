"""How a study knows which of its workers are alive, and what it does with those that are not.

- A database storage: Optuna's trial heartbeats (`record_heartbeat`, `fail_stale_trials`), judged by the
  database's clock against a grace period of `study.lease_s`; no trial is judged within `lease_s` after
  this worker's own store calls were disturbed, since live workers could not beat through that either.
- The journal file (one machine), which has no heartbeats: each worker holds an `flock` on a file of its
  own for its lifetime (`WorkerFile`), so the operating system ends it with the process.
- `TrialLease`: this worker's hold on the item it runs, and whether the trial is still its own.
- `Watcher`: a thread that beats every `lease_s / 4` and fails the trials of stopped workers (which
  queues them again), even while every live worker is mid-run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from ablation.tracking.retry import disturbed_at
from ablation.tracking.store import RunSuperseded

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


def heartbeats(storage: BaseStorage) -> bool:
    """Whether `storage` keeps Optuna's trial heartbeats (a database storage opened with an interval)."""
    return isinstance(storage, RDBStorage) and storage.heartbeat_interval is not None


def may_judge_stale(lease_s: float) -> bool:
    """Whether this worker may fail trials for stale heartbeats now: not within `lease_s` after one of
    its own store calls failed or hung, since live workers could not beat through that outage either."""
    return time.monotonic() - disturbed_at() > lease_s


class WorkerFile:
    """One machine: this worker is alive while it holds an flock on `workers/<id>.alive` in the run folder;
    the kernel releases it when the process ends, however it ends."""

    def __init__(self, folder: Path, worker: str) -> None:
        self.folder = folder / "workers"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.worker = worker
        self._fd = os.open(self.folder / f"{worker}.alive", os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def alive(self, worker: object) -> bool:
        if worker == self.worker:
            return True
        if not isinstance(worker, str) or not worker.isalnum():
            return False
        path = self.folder / f"{worker}.alive"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # its owner is gone: the file has served
        return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            (self.folder / f"{self.worker}.alive").unlink()
            os.close(self._fd)


def fail_stale(
    study: optuna.Study, liveness: WorkerFile | None, on_stale: StaleCallback, judge_heartbeats: bool = True
) -> None:
    """Fail the running trials whose worker is gone, each once, and hand each to `on_stale` (which queues it
    again): Optuna's heartbeat check on a database (`liveness` None; skipped unless `judge_heartbeats`:
    right after an outage live workers have not been able to beat yet), the workers' flocks on the journal."""
    storage = study._storage
    if liveness is None:
        if not judge_heartbeats:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        return
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if liveness.alive(trial.user_attrs.get("worker")):
            continue
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                on_stale(study, storage.get_trial(trial._trial_id))


class TrialLease:
    """This worker's hold on the item it runs: heartbeats on a database (each `beat`, by the watcher thread
    every lease_s / 4), and whether the trial is still its own. `guard()` runs before every write of the
    item's run and before its outcome is told: a worker that was stopped so long that the others failed
    its trial finds out there, writes nothing more and steps aside (RunSuperseded)."""

    def __init__(self, storage: BaseStorage, beats: bool, lease_s: float, trial: optuna.Trial) -> None:
        self.storage, self.beats, self.trial_id, self.number = storage, beats, trial._trial_id, trial.number
        self.grace = lease_s
        self.last_ok = time.monotonic()
        self.lost = False

    def beat(self) -> None:
        if self.beats:
            self.storage.record_heartbeat(self.trial_id)
        if self.storage.get_trial(self.trial_id).state != TrialState.RUNNING:
            self.lost = True
        else:
            self.last_ok = time.monotonic()

    def guard(self) -> None:
        if not self.lost and time.monotonic() - self.last_ok > self.grace / 2:
            self.beat()  # no beat for a while: this process may have been stopped
        if self.lost:
            raise RunSuperseded(self.why)

    @property
    def why(self) -> str:
        return f"trial {self.number} was failed while this worker was stopped or cut off; it is retried"

    def write(self, fn: Callable[[], object]) -> None:
        """An Optuna write to the item's trial (a report, an attribute): a trial that another worker failed
        meanwhile (this one waited on a hung or absent database) is no longer this worker's."""
        try:
            fn()
        except optuna.exceptions.UpdateFinishedTrialError:
            self.lost = True
            raise RunSuperseded(self.why) from None


class Watched(Protocol):
    """What the watcher reads of a study (a `StudyContext`)."""

    lease: TrialLease | None
    heartbeats: bool
    liveness: WorkerFile | None
    lock: Callable[[], contextlib.AbstractContextManager[Any]]

    def on_stale(self, study: optuna.Study, trial: FrozenTrial) -> None: ...


class Watcher:
    """A daemon thread that, every lease_s / 4, beats for the item this worker runs (and notices when it
    was taken over) and fails the trials of stopped workers, which queues them again."""

    def __init__(self, study: Watched, queues: list[optuna.Study], lease_s: float) -> None:
        self.study, self.queues, self.lease_s = study, queues, lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="study-watcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        s = self.study
        while not self._stop.wait(self.lease_s / 4):
            try:
                lease = s.lease
                if lease is not None:
                    lease.beat()
                if s.heartbeats:
                    for queue in self.queues:
                        fail_stale(queue, None, s.on_stale, may_judge_stale(self.lease_s))
                else:  # on the journal a trial is named after its worker just after it is taken: under the lock
                    with s.lock():
                        for queue in self.queues:
                            fail_stale(queue, s.liveness, s.on_stale)
            except Exception as exc:  # the main loop meets the same trouble and reports it; try again later
                print(f"warning: watcher: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
