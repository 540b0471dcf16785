"""Every check that runs before a study (or `ablation train`) writes anything: device and precision, the
model's depth, folders, the tracking store and the Optuna storage, the objective, the corpus, and what the
stores already hold (the settings a study started with, in Optuna and in MLflow; a study name used by a
sweep or a sweep's by a study; items MLflow has finished runs of that the Optuna storage lost). Each
failure is a `UserError` naming the problem, so bad input ends in one `error:` line, exit 2, with no MLflow
run, no store and no run folder created."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa

from ablation.config import ExperimentConfig, differences, shared_settings
from ablation.data.run_data import RunData, load_run_data
from ablation.encoders import check as check_model
from ablation.errors import UserError
from ablation.evaluation.ranking import MODES, metric_names
from ablation.io import REPO_ROOT
from ablation.names import WORK_ROLES, Role
from ablation.runtime import check_precision, resolve_device
from ablation.study.context import queue_name
from ablation.study.storage import JOURNAL, check_journal, is_postgres
from ablation.tracking import sqlite_store
from ablation.tracking.retry import RETRY_ENV
from ablation.tracking.store import Tracker, resolve_tracking_uri

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


SETTINGS = "settings"  # user attr of every queue, and artifact of the study run: the settings it started with


def check_objective(cfg: ExperimentConfig) -> None:
    """The objective must name a validation metric the trainer records."""
    parts = cfg.study.objective.split("/")
    metrics = metric_names(cfg.eval.ks)
    if (
        len(parts) != 4
        or parts[0] != "val"
        or parts[1] not in MODES
        or parts[2] not in metrics
        or parts[3] not in (*cfg.eval.val_tasks, "mean")
    ):
        raise UserError(
            f"config: study.objective {cfg.study.objective!r} is not a validation metric "
            "(val/<retrieval|rerank>/<acc_at_1|mrr|recall_at_K>/<task|mean>)"
        )


def _settings(cfg: ExperimentConfig, data: RunData) -> dict[str, Any]:
    return {**shared_settings(cfg), "corpus_digest": data.digest}


def _read_storage(cfg: ExperimentConfig, run_dir: Path) -> optuna.storages.BaseStorage | None:
    """The study's Optuna storage, opened without writing anything (None: it holds nothing yet)."""
    url = cfg.study.storage
    if url:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 10} if is_postgres(url) else {})
        try:
            if "studies" not in sa.inspect(engine).get_table_names():
                return None
        finally:
            engine.dispose()
        return optuna.storages.RDBStorage(url)
    if (run_dir / "optuna.journal").is_file():
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal")))
    return None


def _recorded(storage: optuna.storages.BaseStorage | None, cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The settings this study's queues were started with (None: new)."""
    if storage is None:
        return None
    for arm in cfg.study.arms:
        try:
            study_id = storage.get_study_id_from_name(queue_name(cfg.study.name, "tuning", arm))
        except KeyError:
            continue
        found = storage.get_study_user_attrs(study_id).get(SETTINGS)
        if found is not None:
            return found
    return None


def reconcile(storage: optuna.storages.BaseStorage | None, cfg: ExperimentConfig, uri: str, where: str) -> None:
    """The Optuna storage holds every item MLflow holds a finished run of: a journal deleted or cut (or a
    database emptied) would otherwise make the study run its work again. Read only."""
    if sqlite_store.missing(uri):
        return
    tracker = Tracker(uri)
    done = [
        r
        for r in tracker.search(cfg.tracking.experiment or cfg.study.name, {"study": cfg.study.name}, "FINISHED")
        if r.data.tags.get("role") in WORK_ROLES and "optuna_trial" in r.data.tags
    ]
    numbers: dict[str, set[int]] = {}
    lost = []
    for run in done:
        queue = run.data.tags["optuna_study"]
        if queue not in numbers:
            try:
                study_id = storage.get_study_id_from_name(queue) if storage is not None else None
            except KeyError:
                study_id = None
            trials = storage.get_all_trials(study_id, deepcopy=False) if study_id is not None else []
            numbers[queue] = {t.number for t in trials}
        if int(run.data.tags["optuna_trial"]) not in numbers[queue]:
            lost.append(f"{queue} trial {run.data.tags['optuna_trial']}")
    if lost:
        raise UserError(
            f"study {cfg.study.name!r}: its Optuna storage ({where}) lacks {len(lost)} item(s) that MLflow holds "
            f"finished runs of (e.g. {', '.join(sorted(lost)[:3])}): entries were lost (a journal deleted or cut "
            "short). Restore it, or give the study another study.name; nothing was run again"
        )


def check_same(name: str, recorded: dict[str, Any] | None, settings: dict[str, Any], where: str) -> None:
    diff = "; ".join(differences(recorded, settings)) if recorded is not None else ""
    if not diff:
        return
    raise UserError(
        f"study {name!r} was started ({where}) with other settings: {diff}. Use the same config, or another "
        "study.name (only paths, devices and services may differ per machine: see the README)"
    )


@dataclass(frozen=True)
class Checked:
    """A study that passed every check before its first write."""

    cfg: ExperimentConfig
    uri: str
    folder: Path
    data: RunData
    settings: dict[str, Any]
    experiment: str


def check_study(cfg: ExperimentConfig, corpus: str | None, tracking_uri: str | None, run_dir: str | None) -> Checked:
    """Every check of a study that writes nothing: config, device, folders, stores, corpus, model,
    objective, and the settings it was started with (in Optuna and in MLflow)."""
    check_objective(cfg)
    os.environ[RETRY_ENV] = str(cfg.tracking.retry_s)
    uri = resolve_tracking_uri(tracking_uri, cfg.tracking.uri)
    folder = Path(run_dir) if run_dir else REPO_ROOT / "runs" / cfg.study.name
    preflight(cfg, uri, folder)
    data = load_run_data(cfg, corpus)
    settings = _settings(cfg, data)
    experiment = cfg.tracking.experiment or cfg.study.name
    storage = _read_storage(cfg, folder)
    check_same(cfg.study.name, _recorded(storage, cfg), settings, "in its Optuna storage")
    check_recorded(uri, experiment, {"study": cfg.study.name, "role": Role.STUDY}, settings)
    reconcile(storage, cfg, uri, cfg.study.storage or str(folder / "optuna.journal"))
    check_kind(uri, cfg.study.name, sweep=False)
    return Checked(cfg, uri, folder, data, settings, experiment)


def check_kind(uri: str, name: str, sweep: bool) -> None:
    """A study name names one thing: a plain study given a sweep's name (or a sweep a plain study's) would
    write into the other's experiment and run folder. Read only."""
    if sqlite_store.missing(uri):
        return
    other = "study" if sweep else Role.SWEEP
    found = Tracker(uri).search(None, {"study": name, "role": other}, limit=1)
    if found and not (other == "study" and found[0].data.tags.get("level")):
        what = "a plain study" if sweep else "a sweep"
        raise UserError(f"study.name {name!r} is already {what} in {uri}; give this one another study.name")


def check_recorded(uri: str, experiment: str, tags: dict[str, str], settings: dict[str, Any]) -> None:
    """The settings that the run carrying `tags` was started with, if there is one, are `settings`. Read
    only: a sqlite store that does not exist yet is not created by the check."""
    if sqlite_store.missing(uri):
        return
    tracker = Tracker(uri)
    for run in tracker.search(experiment, tags, limit=1):
        text = tracker.read_text(run.info.run_id, f"{SETTINGS}.json")
        check_same(tags["study"], json.loads(text) if text else None, settings, f"in MLflow at {uri}")
