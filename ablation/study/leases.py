"""Coordination of machines through the study's PostgreSQL database: an advisory lock, a claims table and
leases.

Every worker holds a lease: a row whose heartbeat a background thread renews every `lease_s / 4` seconds.
A worker whose heartbeat is older than `lease_s` (by the database's clock, so machines' clocks do not
matter) is dead, whatever its hostname: its trials are failed and retried, its claims and MLflow runs
taken over. The advisory lock is held by a database session, so a killed holder releases it.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator, Mapping

import sqlalchemy as sa

from ablation.study.coordination import Coordinator, identity

_TABLES = """
CREATE TABLE IF NOT EXISTS ablation_leases (
    worker TEXT PRIMARY KEY, study TEXT NOT NULL, host TEXT, pid TEXT,
    started TIMESTAMPTZ NOT NULL DEFAULT now(), heartbeat TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS ablation_claims (
    study TEXT NOT NULL, name TEXT NOT NULL, worker TEXT NOT NULL,
    claimed TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (study, name));
"""


def lock_key(study: str) -> int:
    """A stable signed 64-bit advisory-lock key for the study."""
    return int.from_bytes(hashlib.sha256(f"ablation:{study}".encode()).digest()[:8], "big", signed=True)


class LeaseCoordinator(Coordinator):
    """Lock, claims and liveness for workers on many machines sharing one PostgreSQL database."""

    def __init__(self, url: str, study: str, lease_s: float) -> None:
        self.engine = sa.create_engine(url, pool_pre_ping=True, pool_size=2, connect_args={"connect_timeout": 10})
        self.study, self.lease_s, self.key = study, lease_s, lock_key(study)
        self.me = identity()
        self._stop = threading.Event()
        # CREATE TABLE IF NOT EXISTS races with itself in PostgreSQL; the lock orders it
        with self.lock(), self.engine.begin() as db:
            for statement in filter(str.strip, _TABLES.split(";")):
                db.execute(sa.text(statement))
            db.execute(
                sa.text("INSERT INTO ablation_leases (worker, study, host, pid) VALUES (:worker, :study, :host, :pid)"),
                {**self.me, "study": study},
            )
        self._beat = threading.Thread(target=self._heartbeat, name="lease-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            # a lost connection: the next beat retries
            with contextlib.suppress(sa.exc.SQLAlchemyError), self.engine.begin() as db:
                db.execute(
                    sa.text("UPDATE ablation_leases SET heartbeat = now() WHERE worker = :worker"),
                    {"worker": self.me["worker"]},
                )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": self.key})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
                conn.commit()

    def alive(self, tags: Mapping[str, str | None]) -> bool:
        worker = tags.get("worker")
        if worker == self.me["worker"]:
            return True
        with self.engine.connect() as db:
            fresh = db.execute(
                sa.text(
                    "SELECT heartbeat > now() - make_interval(secs => :lease) FROM ablation_leases "
                    "WHERE worker = :worker"
                ),
                {"worker": worker, "lease": self.lease_s},
            ).scalar()
        return bool(fresh)  # no lease at all: not a worker of this setup, nothing to wait for

    def claim(self, name: str) -> bool:
        with self.lock():
            with self.engine.connect() as db:
                holder = db.execute(
                    sa.text("SELECT worker FROM ablation_claims WHERE study = :study AND name = :name"),
                    {"study": self.study, "name": name},
                ).scalar()
            if holder is not None and holder != self.me["worker"] and self.alive({"worker": holder}):
                return False
            with self.engine.begin() as db:
                db.execute(
                    sa.text(
                        "INSERT INTO ablation_claims (study, name, worker) VALUES (:study, :name, :worker) "
                        "ON CONFLICT (study, name) DO UPDATE SET worker = :worker, claimed = now()"
                    ),
                    {"study": self.study, "name": name, "worker": self.me["worker"]},
                )
        return True

    def release(self, name: str) -> None:
        with self.engine.begin() as db:
            db.execute(
                sa.text("DELETE FROM ablation_claims WHERE study = :study AND name = :name AND worker = :worker"),
                {"study": self.study, "name": name, "worker": self.me["worker"]},
            )

    def close(self) -> None:
        self._stop.set()
        self._beat.join(timeout=5)
        self.engine.dispose()
