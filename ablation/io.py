"""Where the harness keeps its files (the repository root), and writing files so that a reader never sees a
half-written one: write to a temp file, then rename."""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The repository: default home of data/, runs/, reports/ and mlflow.db."""


def write_text_atomic(text: str | bytes, path: str | Path) -> Path:
    """Write `text` to `path` atomically (same-folder temp file + rename), with the mode a plain write would
    give it (the temp file is created 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8") if isinstance(text, str) else text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@functools.cache
def _umask() -> int:
    """The process's umask, read once (reading it means setting it for an instant)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write_csv_atomic(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as CSV atomically."""
    return write_text_atomic(frame.to_csv(index=False), path)


@functools.cache
def git_commit() -> str:
    """The repository's commit (with `+dirty` when the tree has changes), or `unknown`: read once per
    process, at its start (the CLI and each worker call it first), since that is the code the process
    runs; the tree may move on while a study runs."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
