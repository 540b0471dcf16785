"""Coordination of the processes that share one study: a study lock, claims on work items, and liveness.

Two kinds, chosen by `study.storage`: on one machine (the default journal file, or sqlite) a file lock and
claim files in the run folder, with liveness by host and pid; with a PostgreSQL storage, shared by many
machines, `LeaseCoordinator` (leases.py) keeps lock, claims and liveness in that database.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path

from filelock import FileLock


def identity() -> dict[str, str]:
    """This process as recorded on trials, claims and runs: a worker id unique across machines and restarts,
    plus host and pid for people."""
    return {"worker": uuid.uuid4().hex[:16], "host": socket.gethostname(), "pid": str(os.getpid())}


class Coordinator(ABC):
    """What the workers of one study agree through."""

    me: dict[str, str]

    @abstractmethod
    def lock(self) -> contextlib.AbstractContextManager[None]:
        """An exclusive lock over the study, held for a `with` block, released if its holder dies."""

    @abstractmethod
    def claim(self, name: str) -> bool:
        """Take work item `name` unless a live worker holds it; a dead worker's claim is taken over."""

    @abstractmethod
    def release(self, name: str) -> None:
        """Give a claimed work item back."""

    @abstractmethod
    def alive(self, tags: Mapping[str, str | None]) -> bool:
        """Whether the worker named by `tags` (its identity, as recorded) may still be working."""

    def close(self) -> None:  # noqa: B027 - most coordinators have nothing to stop
        """Stop any background work (a heartbeat)."""


class FileCoordinator(Coordinator):
    """One machine: a file lock and claim files (``host pid``, created with O_EXCL) in the run folder.
    A process killed even with -9 is seen as gone, so its claims are taken over."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.me = identity()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(self.folder / "study.lock"):
            yield

    def claim(self, name: str) -> bool:
        folder = self.folder / "claims"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.claim"
        with FileLock(folder / ".claims.lock"):
            if path.exists():
                parts = path.read_text().split()
                if len(parts) == 2 and self.alive({"host": parts[0], "pid": parts[1]}):
                    return False
                path.unlink()
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{self.me['host']} {self.me['pid']}")
        return True

    def release(self, name: str) -> None:
        (self.folder / "claims" / f"{name}.claim").unlink(missing_ok=True)

    def alive(self, tags: Mapping[str, str | None]) -> bool:
        """Same host: whether the pid runs. Another host sharing this folder cannot be seen, so it counts as
        alive (a study over machines needs a PostgreSQL storage and its leases)."""
        if tags.get("worker") == self.me["worker"]:
            return True
        if tags.get("host") != self.me["host"]:
            return True
        try:
            os.kill(int(tags.get("pid")), 0)  # type: ignore[arg-type]
        except (ProcessLookupError, ValueError, TypeError):
            return False
        except PermissionError:
            return True
        return True


def is_postgres(url: str | None) -> bool:
    return bool(url) and url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")  # type: ignore[union-attr]


def coordinator_for(storage: str | None, study: str, folder: Path, lease_s: float) -> Coordinator:
    """Leases in PostgreSQL when the study's storage is there, else files in the run folder."""
    if is_postgres(storage):
        from ablation.study.leases import LeaseCoordinator

        return LeaseCoordinator(storage, study, lease_s)  # type: ignore[arg-type]
    return FileCoordinator(folder)
