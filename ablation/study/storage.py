"""The study's Optuna storage and what keeps many workers honest on it.

Optuna's own engine does most of it: the storage, its queue (`enqueue_trial`; `ask` pops a waiting trial),
trial heartbeats on database storages (`record_heartbeat`, `fail_stale_trials`, judged by the database's
clock against a grace period of `study.lease_s`), and the retry of a stale trial with the same parameters
and attributes (`RetryHeartbeatStaleTrialCallback`). What the harness adds is small:

- retries of every storage call through a database restart (tenacity, `tracking/retry.py`), and no
  storage call cut short by a signal (on the journal, that would leave its lock file behind);
- liveness, heartbeats and the retry of stale trials' workers: `study/liveness.py`;
- the study lock, held for the short steps that must not interleave (setting up, taking the next item): a
  file lock on one machine; with PostgreSQL a transaction-level advisory lock whose session the server
  ends after `lease_s` idle (`idle_in_transaction_session_timeout`) while a keeper thread of a live holder
  keeps it busy, so a frozen or cut-off holder loses the lock within `lease_s`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import sqlalchemy as sa
from filelock import FileLock
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial

from ablation.errors import UserError
from ablation.study.liveness import StaleCallback
from ablation.tracking.retry import retry_call

IDENTITY = ("worker", "host", "pid")  # user attributes naming the worker that runs a trial


class LockLost(RuntimeError):
    """The study lock was taken from this worker (it was frozen, or the database restarted)."""


def is_postgres(url: str | None) -> bool:
    """Whether `url` names a PostgreSQL database (SQLAlchemy's URL parser: any driver, `postgres` alias)."""
    if not url:
        return False
    try:
        return sa.engine.make_url(url).get_backend_name() in ("postgresql", "postgres")
    except sa.exc.ArgumentError:
        return False


def _retried(method: Callable) -> Callable:
    def call(self: RDBStorage, *args: object, **kwargs: object) -> object:
        return retry_call(method, self, *args, **kwargs)

    call.__name__ = call.__qualname__ = f"optuna storage {method.__name__}"
    return call


@functools.cache
def retrying_rdb_storage() -> type[RDBStorage]:
    """Optuna's RDB storage, each of whose calls is retried through a database restart."""
    names = [*BaseStorage.__abstractmethods__, "record_heartbeat", "_get_stale_trial_ids", "get_best_trial"]
    # Optuna's cache in front of the storage calls these directly
    names += ["_create_new_trial", "_get_best_trial_id", "_get_trials", "_set_trial_param"]
    names += ["get_trial_id_from_study_id_trial_number"]
    return type("RetryingRDBStorage", (RDBStorage,), {n: _retried(getattr(RDBStorage, n)) for n in names})


@functools.cache
def guarded_journal_storage() -> type[JournalStorage]:
    """Optuna's journal storage, whose calls a signal does not cut short: the journal's lock file is taken
    and given back around each write, and an interrupt between the two would leave it for others to break
    after 30 s (or break it under another writer)."""
    names = [*BaseStorage.__abstractmethods__, "get_best_trial"]
    return type("GuardedJournalStorage", (JournalStorage,), {n: _retried(getattr(JournalStorage, n)) for n in names})


def retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a stale trial again with the same parameters and item attributes, minus the dead worker's name."""
    clean = copy.deepcopy(trial)
    clean.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in (*IDENTITY, "mlflow_run_id")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback()(study, clean)


JOURNAL = "optuna.journal"
"""The study's Optuna journal in its run folder, where no database storage is named."""


def check_journal(path: Path, repair: bool = False) -> str | None:
    """A journal is JSON lines. Every complete line must parse, else the file is not a journal (one error
    naming it). A last line with no newline is a write cut short by a kill or a full disk: with `repair`
    it is dropped, under the journal's own lock, and the warning to print is returned."""
    lock = JournalFileSymlinkLock(str(path)) if repair else None  # a check alone writes nothing, not even a lock
    if lock is not None:
        lock.acquire()
    try:
        data = path.read_bytes()
        body, _, tail = data.rpartition(b"\n")
        for number, line in enumerate(body.split(b"\n") if data.count(b"\n") else [], start=1):
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if not (isinstance(entry, dict) and isinstance(entry.get("op_code"), int)):
                raise UserError(f"study storage {path}: line {number} is not an Optuna journal entry")
        if tail and not tail.startswith(b"{"):
            raise UserError(f"study storage {path}: not an Optuna journal (its last line is no journal entry)")
        if tail and repair:
            os.truncate(path, len(data) - len(tail))
            return f"warning: {path}: dropped a last entry cut short by a kill or a full disk ({len(tail)} bytes)"
    finally:
        if lock is not None:
            lock.release()
    return None


def open_storage(url: str | None, run_dir: Path, lease_s: float, on_stale: StaleCallback) -> BaseStorage:
    """The study's storage: a database (with trial heartbeats every lease_s / 4 and a grace period of
    lease_s), or the journal file in the run folder."""
    if url:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return retry_call(
                retrying_rdb_storage(),
                url,
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=max(1, round(lease_s / 4)),
                grace_period=max(1, round(lease_s)),
                heartbeat_stale_trial_callback=on_stale,
            )
    journal = run_dir / JOURNAL
    if journal.exists():
        warning = check_journal(journal, repair=True)
        if warning:
            print(warning, file=sys.stderr)
    return guarded_journal_storage()(JournalFileBackend(str(journal)))


class Held:
    """A held study lock; `check()` before a write that must not happen without it."""

    def check(self) -> None:
        """Raise LockLost if the lock was taken from this holder."""


class _PgHeld(Held):
    def __init__(self, conn: sa.Connection, lease_s: float) -> None:
        self.conn, self.lease_s = conn, lease_s
        self.last_ok = time.monotonic()
        self.lost = False
        self._use = threading.Lock()
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name="study-lock-keeper", daemon=True)
        self._keeper.start()

    def _touch(self) -> None:
        with self._use:
            try:
                self.conn.execute(sa.text("SELECT 1"))
            except sa.exc.SQLAlchemyError:
                self.lost = True
                return
        self.last_ok = time.monotonic()

    def _keep(self) -> None:
        while not self._stop.wait(self.lease_s / 4) and not self.lost:
            self._touch()

    def check(self) -> None:
        if not self.lost and time.monotonic() - self.last_ok > self.lease_s / 2:
            self._touch()  # a gap since the last touch: this process may have been frozen
        if self.lost:
            raise LockLost("the study lock was taken over (this worker was stopped, or the database restarted)")

    def release(self) -> None:
        self._stop.set()
        self._keeper.join()
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            self.conn.rollback()  # ends the transaction, and its advisory lock with it
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            self.conn.close()


class StudyLock:
    """The study's exclusive lock: see the module's docstring."""

    def __init__(self, storage_url: str | None, study: str, run_dir: Path, lease_s: float) -> None:
        self.run_dir, self.lease_s = run_dir, lease_s
        self.key = int.from_bytes(hashlib.sha256(f"ablation:{study}".encode()).digest()[:8], "big", signed=True)
        self.engine = (
            sa.create_engine(storage_url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
            if is_postgres(storage_url)
            else None
        )

    def _acquire(self) -> sa.Connection:
        conn = self.engine.connect()  # type: ignore[union-attr]
        try:
            ms = max(1000, int(self.lease_s * 1000))
            conn.execute(sa.text(f"SET idle_in_transaction_session_timeout = {ms}"))
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": self.key})
        except BaseException:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def __call__(self) -> Iterator[Held]:
        if self.engine is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with FileLock(self.run_dir / "study.lock"):
                yield Held()
            return
        held = _PgHeld(retry_call(self._acquire), self.lease_s)
        try:
            yield held
        finally:
            held.release()

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
