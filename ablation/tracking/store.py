"""Everything that talks to MLflow: no other module imports mlflow.

Runs are created with `MlflowClient` (no global active-run state), nested via the `mlflow.parentRunId`
tag, and always ended: FINISHED, FAILED (with a `failure` tag) or KILLED. Metrics are buffered and
written in batches so per-step recording costs little.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ablation.errors import redact
from ablation.io import REPO_ROOT
from ablation.runtime import INTERRUPTS
from ablation.tracking import sqlite_store
from ablation.tracking.retry import configure_client_retries, retry_call

PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # the run's description in the UI
# MLflow 3's UI opens an experiment on its GenAI overview unless it is marked as model training
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


class RunSuperseded(Exception):
    """The run's work was taken over by another worker (this one lost its lease): nothing more is written
    to the run, which the other worker has ended."""


class _Retried:
    """An MlflowClient whose every call is retried through a store's restart (`retry_call`)."""

    def __init__(self, client: MlflowClient) -> None:
        self.raw = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.raw, name)
        if not callable(method):
            return method
        return lambda *args, **kwargs: retry_call(method, *args, **kwargs)


def resolve_tracking_uri(cli: str | None = None, config: str | None = None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else config, else sqlite:///mlflow.db in the repo root."""
    return cli or os.environ.get("MLFLOW_TRACKING_URI") or config or f"sqlite:///{REPO_ROOT / 'mlflow.db'}"


def artifact_location(uri: str) -> str | None:
    """For a SQLite store, artifacts go to `mlartifacts/` next to the database file."""
    db = sqlite_store.database(uri)
    return (db.resolve().parent / "mlartifacts").as_uri() if db is not None else None


def quote(value: str) -> str:
    """A filter-string literal of `value`: single quotes, or double quotes where it holds a single quote
    (MLflow's parser reads no escapes; a value with both kinds cannot be searched)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"{value!r} holds both kinds of quote; MLflow cannot search for it")


class Tracker:
    """One MLflow store: experiments by name, runs created and searched."""

    def __init__(self, uri: str) -> None:
        """Open the store. A sqlite file is checked first and, where missing, built whole before MLflow opens
        it (`sqlite_store`): MLflow's own in-place creation left a half-built store when killed, and two
        processes creating one at once broke it."""
        self.uri = uri
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # not a line per run start/stop
        # a database error is retried, then ends in one error line; MLflow's log would add a traceback each time
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        configure_client_retries()
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # one progress line per run is ours
        sqlite_store.prepare(uri)
        self.client = _Retried(retry_call(MlflowClient, tracking_uri=uri))

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def resume(self, run_id: str) -> None:
        """Mark a run that was ended (KILLED by Ctrl-C, say) RUNNING again, as a resumed study is."""
        if self.status(run_id) in ("KILLED", "FAILED"):
            self.client.update_run(run_id, status="RUNNING")

    def experiment_id(self, name: str) -> str:
        """The id of experiment `name`, created (with artifacts next to a SQLite store) if missing."""
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            for key, value in EXPERIMENT_KIND.items():
                if exp.tags.get(key) != value:  # made by an older version of the harness
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        try:
            return self.client.create_experiment(
                name, artifact_location=artifact_location(self.uri), tags=EXPERIMENT_KIND
            )
        except MlflowException:  # another worker created it first
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def find_or_create_run(self, experiment: str, name: str, tags: dict[str, str], parent: str | None = None) -> str:
        """The oldest active run carrying `tags`, else a new RUNNING one (study and arm runs outlive resumes)."""
        runs = self.search(experiment, tags)
        if runs:
            return runs[0].info.run_id
        return self.create_run(experiment, name, {**tags, **({PARENT_TAG: parent} if parent else {})})

    def create_run(self, experiment: str, name: str, tags: Mapping[str, Any]) -> str:
        """A new RUNNING run, made once although the call is retried: a retry after an answer lost in a
        restart first looks for the run the lost call may have made (by a unique `run_key` tag)."""
        exp_id = self.experiment_id(experiment)
        key = uuid.uuid4().hex
        all_tags = {**{k: str(v) for k, v in tags.items()}, "run_key": key}
        attempts = 0

        def create() -> str:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                found = self.client.raw.search_runs([exp_id], f"tags.run_key = '{key}'")
                if found:
                    return found[0].info.run_id
            return self.client.raw.create_run(exp_id, run_name=name, tags=all_tags).info.run_id

        return retry_call(create)

    def search(
        self,
        experiment: str | None,
        tags: Mapping[str, str],
        status: str | None = None,
        exclude_status: str | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        """Active runs carrying every tag in `tags` (values quoted), oldest first, in `experiment` (None:
        every experiment); with `status`, only runs in it, with `exclude_status`, none in it."""
        if experiment is None:
            exp_ids = [e.experiment_id for e in self.client.search_experiments()]
        else:
            exp = self.client.get_experiment_by_name(experiment)
            exp_ids = [exp.experiment_id] if exp is not None else []
        if not exp_ids:
            return []
        clauses = [f"tags.{key} = {quote(str(value))}" for key, value in tags.items()]
        clauses += [f"attributes.status = {quote(status)}"] if status else []
        clauses += [f"attributes.status != {quote(exclude_status)}"] if exclude_status else []
        runs: list[Run] = []
        token = None
        while limit is None or len(runs) < limit:
            page = self.client.search_runs(
                exp_ids,
                " and ".join(clauses),
                max_results=min(limit or 1000, 1000),
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
        return runs[:limit] if limit else runs

    def delete_run(self, run_id: str) -> None:
        self.client.delete_run(run_id)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, redact(str(value)))

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, redact(text), path)

    def set_experiment_tags(self, experiment_id: str, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_experiment_tag(experiment_id, key, redact(str(value)))

    def log_figure(self, run_id: str, figure: Any, path: str) -> None:
        self.client.log_figure(run_id, figure, path)

    def log_artifact(self, run_id: str, local_path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(local_path), folder)

    def terminate(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def read_text(self, run_id: str, path: str) -> str | None:
        """An artifact's text, or None where the run has none at `path`."""
        try:
            return Path(self.client.download_artifacts(run_id, path)).read_text()
        except (MlflowException, OSError):
            return None

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of every logged value of one metric."""
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log finite `metrics` at `step` to a run (also a finished one: aggregates are added afterwards)."""
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        for chunk in chunks(items, 1000):
            self.client.log_batch(run_id, metrics=chunk)

    def log_history(self, run_id: str, key: str, steps: list[int], values: list[float]) -> None:
        """A metric's curve: `values[i]` at step `steps[i]` (non-finite values skipped)."""
        now = int(time.time() * 1000)
        items = [Metric(key, float(v), now, int(s)) for s, v in zip(steps, values, strict=True) if math.isfinite(v)]
        for chunk in chunks(items, 1000):
            self.client.log_batch(run_id, metrics=chunk)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        for chunk in chunks(_params(params), 100):
            self.client.log_batch(run_id, params=chunk)

    @contextlib.contextmanager
    def run(
        self,
        experiment: str,
        name: str,
        tags: dict[str, Any],
        parent: str | None = None,
        system_metrics_s: float | None = None,
        guard: Callable[[], None] | None = None,
        on_create: Callable[[str], None] | None = None,
    ) -> Iterator[RunRecorder]:
        """A run that is always ended: FINISHED, KILLED on Ctrl-C, FAILED with the reason otherwise; left
        alone when its work was taken over (`RunSuperseded`, raised by `guard` before any write or by a
        write to a run that another worker deleted). With `system_metrics_s`, MLflow samples CPU, memory
        (and GPU) every that many seconds while it runs. `on_create` gets the new run's id."""
        all_tags = {k: str(v) for k, v in tags.items()}
        if parent:
            all_tags[PARENT_TAG] = parent
        recorder: RunRecorder | None = None
        monitor = None
        try:
            with INTERRUPTS.critical():  # a signal right after the run exists still ends it
                recorder = RunRecorder(self.client, self.create_run(experiment, name, all_tags), guard=guard)
            if on_create is not None:
                on_create(recorder.run_id)
            if system_metrics_s:
                from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

                monitor = SystemMetricsMonitor(recorder.run_id, system_metrics_s, tracking_uri=self.uri)
                monitor.start()
            yield recorder
        except RunSuperseded:
            if recorder is not None:
                recorder.abandon()
            raise
        except KeyboardInterrupt:
            if recorder is not None:
                recorder.end("KILLED", "interrupted")
            raise
        except BaseException as exc:
            if recorder is not None:
                recorder.end("FAILED", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if monitor is not None:
                monitor.finish()
        recorder.end("FINISHED")


class RunRecorder:
    """Writes params, tags, buffered metrics and artifacts to one run."""

    def __init__(
        self, client: Any, run_id: str, flush_every: int = 500, guard: Callable[[], None] | None = None
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.flush_every = flush_every
        self.guard = guard  # raises RunSuperseded when this worker lost the run: checked before each write
        self._buffer: list[Metric] = []
        self._ended = False

    def _write(self, method: str, *args: Any, guarded: bool = True, **kwargs: Any) -> None:
        """One write to the run, unless it was taken over (then RunSuperseded, and no write)."""
        if guarded and self.guard is not None:
            self.guard()
        try:
            getattr(self.client, method)(self.run_id, *args, **kwargs)
        except MlflowException:
            if self.client.get_run(self.run_id).info.lifecycle_stage == "deleted":
                raise RunSuperseded(f"run {self.run_id} was deleted by the worker that took its work over") from None
            raise

    def abandon(self) -> None:
        """Stop writing: the run belongs to whoever took its work over."""
        self._ended = True
        self._buffer.clear()

    def log_params(self, params: dict[str, Any]) -> None:
        for chunk in chunks(_params(params), 100):
            self._write("log_batch", params=chunk)

    def set_tags(self, tags: dict[str, Any]) -> None:
        for chunk in chunks([RunTag(k, redact(str(v))) for k, v in tags.items()], 100):
            self._write("log_batch", tags=chunk)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Buffer finite metrics at `step` (non-finite values are skipped: MLflow would store NaN rows)."""
        now = int(time.time() * 1000)
        self._buffer.extend(
            Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(v)
        )
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            chunk, self._buffer = self._buffer[:1000], self._buffer[1000:]
            self._write("log_batch", metrics=chunk)

    def log_text(self, text: str, path: str) -> None:
        self._write("log_text", redact(text), path)

    def log_artifact(self, local_path: str | Path, folder: str | None = None) -> None:
        self._write("log_artifact", str(local_path), folder)

    def end(self, status: str, reason: str | None = None) -> None:
        """Flush and terminate once (each call retried through a busy or restarting store, and not cut short
        by a signal); a failure reason goes into the `failure` tag. A FINISHED end is checked by `guard`."""
        if self._ended:
            return
        self._ended = True
        finishing = status == "FINISHED"
        try:
            self.flush()
            if reason:
                self._write("set_tag", "failure", redact(reason)[:5000], guarded=finishing)
            self._write("set_terminated", status, guarded=finishing)
        except RunSuperseded:
            if finishing:
                raise  # not FINISHED: the run is the other worker's now


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    """`items` in consecutive pieces of at most `size` (MLflow's log_batch takes 1000 metrics or 100 params
    or tags per call)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def _params(params: Mapping[str, Any]) -> list[Param]:
    """Params as MLflow takes them: text of at most 6000 characters, with passwords masked."""
    return [Param(k, redact(str(v))[:6000]) for k, v in params.items()]


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape results, as `version.<name>` tags."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "mlflow", "optuna", "scikit-learn", "numpy", "pandas"):
        with contextlib.suppress(PackageNotFoundError):
            out[f"version.{name}"] = version(name)
    return out
