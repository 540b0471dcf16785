"""Checks that run before a study writes anything: device, run folder, tracking store and Optuna storage.
Each failure is a `UserError` naming the problem, so bad input ends in one `error:` line, exit 2, with no
MLflow run, no store and no run folder created."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from ablation.config import ExperimentConfig
from ablation.encoders import check as check_model
from ablation.errors import UserError
from ablation.runtime import check_precision, resolve_device
from ablation.study.storage import JOURNAL, check_journal
from ablation.tracking import sqlite_store

SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")  # Optuna RDB storages


def _writable_folder(path: Path, what: str) -> None:
    """`path` is a folder we can write in, or can be made: its nearest existing ancestor is a writable
    folder, and nothing on the way is a file."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what}: {probe} is a file, not a folder (for {path})")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{what}: {probe} is not writable (for {path})")


def _existing_folder(path: Path, what: str) -> None:
    """`path` is a writable folder that exists (a database file is not made in a folder that is not there)."""
    _writable_folder(path, what)
    if not path.is_dir():
        raise UserError(f"{what}: the folder {path} does not exist")


def check_run_folder(path: Path) -> None:
    _writable_folder(path, "run folder")
    journal = path / JOURNAL
    if journal.exists():
        try:
            os.close(os.open(journal, os.O_WRONLY | os.O_APPEND))  # what Optuna does; refused when immutable
        except OSError as exc:
            raise UserError(f"study storage {journal}: cannot be written ({exc.strerror})") from None
        check_journal(journal)


def check_cache_dir(cfg: ExperimentConfig) -> None:
    if cfg.data.cache_dir is not None:
        _writable_folder(Path(cfg.data.cache_dir), "data.cache_dir")


def check_tracking_uri(uri: str) -> None:
    """A tracking store we can reach and write: a sqlite file in a writable folder, a `file:` folder, or an
    `mlflow server` that answers /health."""
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise UserError(f"tracking URI {uri!r}: use sqlite:///<path to a file>")
        db = Path(uri[len("sqlite:///") :])
        if db.is_dir():
            raise UserError(f"tracking URI {uri!r}: {db} is a folder, not a database file")
        if db.exists() and not os.access(db, os.R_OK | os.W_OK):
            raise UserError(f"tracking URI {uri!r}: {db} is not writable")
        _existing_folder(db.parent, f"tracking URI {uri!r}")
        sqlite_store.check_store(db, f"tracking URI {uri!r}", repair=False)
    elif scheme == "file" or not scheme:
        folder = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"tracking URI {uri!r}: {folder} is a file, not a folder")
        _writable_folder(folder, f"tracking URI {uri!r}")
    elif scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10) as answer:
                ok = answer.status == 200
        except (OSError, urllib.error.URLError) as exc:
            raise UserError(f"tracking URI {uri!r}: the MLflow server does not answer ({exc})") from None
        if not ok:
            raise UserError(f"tracking URI {uri!r}: the MLflow server's /health answered {answer.status}")
    else:
        raise UserError(f"tracking URI {uri!r}: unknown scheme {scheme!r} (use sqlite:///, file:, http(s)://)")


def check_storage(url: str | None) -> None:
    """An Optuna RDB storage we can connect to, with its driver installed (the journal file default is
    checked with the run folder)."""
    if url is None:
        return
    import sqlalchemy as sa

    scheme = url.split(":", 1)[0].split("+", 1)[0].lower() if ":" in url else ""
    if scheme not in SCHEMES:
        raise UserError(f"study.storage {url!r}: unknown scheme {scheme!r} (use postgresql://, sqlite:///, mysql://)")
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 10} if scheme != "sqlite" else {})
    except (ImportError, sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        raise UserError(f"study.storage {url!r}: {exc}") from None
    if scheme == "sqlite":
        engine.dispose()
        db = url.split(":///", 1)[-1]
        if db and db != ":memory:":
            if Path(db).is_dir():
                raise UserError(f"study.storage {url!r}: {db} is a folder, not a database file")
            _existing_folder(Path(db).parent, f"study.storage {url!r}")
        return
    try:
        with engine.connect():
            pass
    except sa.exc.SQLAlchemyError as exc:
        reason = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
        raise UserError(f"study.storage {url!r}: cannot connect ({reason})") from None
    finally:
        engine.dispose()


def preflight_run(cfg: ExperimentConfig, tracking_uri: str) -> None:
    """Everything one tracked run needs (`ablation train`), checked before it writes: device and precision,
    the model's depth, the cache folder and the tracking store."""
    check_precision(resolve_device(cfg.train.device), cfg.train.precision)
    check_model(cfg.model)
    check_cache_dir(cfg)
    check_tracking_uri(tracking_uri)


def preflight(cfg: ExperimentConfig, tracking_uri: str, run_dir: Path) -> None:
    """Everything a study needs, checked before it writes: a run's needs, the run folder and the storage."""
    preflight_run(cfg, tracking_uri)
    check_run_folder(run_dir)
    check_storage(cfg.study.storage)
