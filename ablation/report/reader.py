"""Reading a study back from MLflow, the single source of truth of every number in the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ablation.errors import UserError

HISTORY_KEYS = ("loss/total", "grad_norm/total", "grad_cosine/query_vs_candidate", "encoder_distance")
VAL_KEYS = ("val/rerank/acc_at_1/mean", "val/retrieval/acc_at_1/mean")


@dataclass
class StudyRuns:
    """The runs of one study as tables, plus what the figures and statistics need."""

    name: str
    config: dict
    study_run: object
    runs: pd.DataFrame  # one row per run: run_id, role, arm, seed, trial, status, state, metrics.*, params.*, tags.*
    per_query: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)  # (arm, seed) → per-query ranks
    histories: dict[tuple[str, str, str], pd.DataFrame] = field(default_factory=dict)  # (arm, seed, key) → step/value

    def finals(self, arm: str | None = None) -> pd.DataFrame:
        f = self.runs[(self.runs["role"] == "final") & (self.runs["status"] == "FINISHED")]
        return f if arm is None else f[f["arm"] == arm]

    def trials(self, arm: str) -> pd.DataFrame:
        return self.runs[(self.runs["role"] == "trial") & (self.runs["arm"] == arm)]


def _frame(runs: list) -> pd.DataFrame:
    rows = []
    for r in runs:
        t = r.data.tags
        row = {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name,
            "status": r.info.status,
            "role": t.get("role"),
            "arm": t.get("arm"),
            "seed": t.get("seed"),
            "trial": t.get("trial"),
            "state": t.get("state"),
            "failure": t.get("failure"),
            "start_time": r.info.start_time,
            "end_time": r.info.end_time,
        }
        row.update({f"metrics.{k}": v for k, v in r.data.metrics.items()})
        row.update({f"params.{k}": v for k, v in r.data.params.items()})
        row.update({f"tags.{k}": v for k, v in t.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def read_study(name: str, tracking_uri: str, experiment: str | None = None) -> StudyRuns:
    """All runs of study `name` (searched in `experiment`, else in every experiment of the store)."""
    client = MlflowClient(tracking_uri)
    exps = [client.get_experiment_by_name(experiment)] if experiment else client.search_experiments()
    exp_ids = [e.experiment_id for e in exps if e is not None]
    if not exp_ids:
        raise UserError(f"report: no MLflow experiment found for study {name!r} at {tracking_uri}")
    runs = []
    token = None
    while True:
        page = client.search_runs(exp_ids, filter_string=f"tags.study = '{name}'", max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    study = [r for r in runs if r.data.tags.get("role") == "study"]
    if not study:
        raise UserError(f"report: no study named {name!r} in {tracking_uri} (run `ablation run` first)")
    study_run = sorted(study, key=lambda r: r.info.start_time)[0]
    try:
        config = yaml.safe_load(Path(client.download_artifacts(study_run.info.run_id, "config.yaml")).read_text())
    except (MlflowException, OSError):  # a study interrupted before its end has no config artifact yet
        config = {}
    out = StudyRuns(name, config or {}, study_run, _frame(runs))
    for _, row in out.runs[
        out.runs["role"].isin(["final", "zero-shot"]) & (out.runs["status"] == "FINISHED")
    ].iterrows():
        arm, seed = row["arm"], row["seed"]
        try:
            path = client.download_artifacts(row["run_id"], "per_query_test.csv")
            out.per_query[(arm, seed)] = pd.read_csv(path)
        except (MlflowException, OSError):
            pass  # the report says which per-query results are missing
        if row["role"] == "final":
            present = {k[len("metrics.") :] for k in row.index if k.startswith("metrics.") and pd.notna(row[k])}
            keys = set(HISTORY_KEYS) | {k for k in present if k.startswith("grad_norm/")} | set(VAL_KEYS)
            for key in sorted(keys & present):
                hist = client.get_metric_history(row["run_id"], key)
                out.histories[(arm, seed, key)] = pd.DataFrame(
                    {"step": [m.step for m in hist], "value": [m.value for m in hist]}
                ).sort_values("step")
    return out
