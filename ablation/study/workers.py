"""Coordination between worker processes on one machine: a study lock, work claims, liveness of owners.

A claim is a file created with O_EXCL holding ``host pid``; a claim whose process is gone (killed, even
with -9) is stale and may be taken over. This is what makes interrupted studies resumable.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

HOST = socket.gethostname()


def owner() -> dict[str, str]:
    """This process as recorded on trials and claims."""
    return {"host": HOST, "pid": str(os.getpid())}


def alive(host: str | None, pid: str | int | None) -> bool:
    """Whether the process `pid` on `host` still runs (processes on other hosts are assumed alive)."""
    if host != HOST:
        return True
    try:
        os.kill(int(pid), 0)  # type: ignore[arg-type]
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock held for the `with` block (released if the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield


def claim(folder: Path, name: str) -> bool:
    """Take the work item `name` unless a live process holds it; stale claims are taken over."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.claim"
    with locked(folder / ".claims.lock"):
        if path.exists():
            parts = path.read_text().split()
            if len(parts) == 2 and alive(parts[0], parts[1]):
                return False
            path.unlink()
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{HOST} {os.getpid()}")
    return True


def release(folder: Path, name: str) -> None:
    """Give a claimed work item back."""
    (folder / f"{name}.claim").unlink(missing_ok=True)
