"""Where the harness keeps its files (the repository root), and writing files so that a reader never sees a
half-written one: write to a temp file, then rename."""

from __future__ import annotations

import functools
import os
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
