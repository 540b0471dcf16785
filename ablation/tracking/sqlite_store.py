"""A SQLite MLflow store that is whole or absent: checked before use, created where no kill can leave it
half-built.

MLflow builds a fresh store by running its migrations on the file in place; a kill or a full disk in those
seconds left a half-migrated schema that every later start refused ("table … already exists"). Here the
store is built in a temporary file beside the target and renamed into place, under the same lock file the
tracker takes, so the target path only ever holds a complete store."""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import time
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ablation.errors import UserError

HEADER = b"SQLite format 3\x00"


def _tables(db: Path) -> set[str] | None:
    """The table names of a SQLite file, opened read-only; None when it is not a readable database."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.DatabaseError:
        return None


def _rows(db: Path, table: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return int(con.execute(f"select count(*) from {table}").fetchone()[0])


def check_store(db: Path, what: str, repair: bool = True) -> str | None:
    """Refuse a file that is not an MLflow store; a store whose creation was cut short (no migration
    finished, no run in it) is moved aside with `repair`, so that it is built again, and left for that
    otherwise. Returns the warning to print after a repair."""
    if not db.exists() or db.stat().st_size == 0:
        return None
    with open(db, "rb") as f:
        head = f.read(len(HEADER))
    tables = _tables(db) if head == HEADER else None
    if tables is None:
        raise UserError(f"{what}: {db} is not an SQLite database (move it aside, or name another store)")
    if "alembic_version" in tables and _rows(db, "alembic_version"):  # a migration finished: MLflow's to judge
        return None
    if "runs" in tables and _rows(db, "runs"):
        raise UserError(f"{what}: {db} is an incomplete MLflow store that holds runs; repair or move it aside")
    if not repair:
        return None
    aside = db.with_name(f"{db.name}.incomplete-{time.strftime('%Y%m%d-%H%M%S')}")
    db.rename(aside)
    return f"warning: {db} was a store whose creation had been cut short, with no run in it: moved to {aside.name}"


def create_store(db: Path, lock_timeout_s: float = 600) -> None:
    """Build an empty MLflow store at `db` unless one is there, atomically (see the module docstring)."""
    from filelock import FileLock
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    with FileLock(f"{db}.lock", timeout=lock_timeout_s):
        if db.exists() and db.stat().st_size > 0:
            return
        tmp = db.with_name(f".{db.name}.creating-{os.getpid()}")
        for stale in db.parent.glob(f".{db.name}.creating-*"):  # left by a process killed while creating
            stale.unlink(missing_ok=True)
        quiet = [logging.getLogger(n) for n in ("mlflow.store.db.utils", "alembic.runtime.migration")]
        levels = [q.level for q in quiet]
        for q in quiet:  # two INFO lines per new store, not news to anyone
            q.setLevel(logging.WARNING)
        try:
            store = SqlAlchemyStore(f"sqlite:///{tmp}", str(db.parent / "mlartifacts"))
            store.engine.dispose()
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, db)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            for q, level in zip(quiet, levels, strict=True):
                q.setLevel(level)


def database(uri: str) -> Path | None:
    """The file a `sqlite:///<path>` URI names (SQLAlchemy's URL parser), or None for any other URI."""
    try:
        url = make_url(uri)
    except ArgumentError:
        return None
    return (
        Path(url.database)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
        else None
    )


def missing(uri: str) -> Path | None:
    """The file a `sqlite:///` URI names, where it does not exist yet (else None: it exists, or the URI
    names no sqlite file)."""
    db = database(uri)
    return None if db is None or db.is_file() else db


def prepare(uri: str, what: str = "tracking URI") -> None:
    """For a `sqlite:///` URI: check the file and create the store if missing, printing any repair."""
    db = database(uri)
    if db is None:
        return
    warning = check_store(db, f"{what} {uri!r}")
    if warning:
        print(warning, file=sys.stderr)
    create_store(db)
