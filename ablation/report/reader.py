"""Reading a study back from MLflow, the single source of truth of every number in the report."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pandas as pd
import yaml

from ablation.errors import UserError
from ablation.names import OBJECTIVE, Role, metric_key
from ablation.study.state import StudyState, study_state
from ablation.tracking.store import Tracker

HISTORY_KEYS = (
    "loss/total",
    "grad_norm/total",
    "grad_cosine/query_vs_candidate",
    "encoder_distance",
    "epoch/loss/total",
    "epoch/grad_norm/total",
)
VAL_KEYS = (metric_key("val", "rerank"), OBJECTIVE)


@dataclass
class StudyRuns:
    """The runs of one study as tables, plus what the figures and statistics need."""

    name: str
    config: dict
    study_run: object
    runs: pd.DataFrame  # one row per run: run_id, role, arm, seed, trial, status, state, metrics.*, params.*, tags.*
    per_query: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)  # (arm, seed) → per-query ranks
    histories: dict[tuple[str, str, str], pd.DataFrame] = field(default_factory=dict)  # (arm, seed, key) → step/value
    warnings: list[str] = field(default_factory=list)  # inconsistencies found while reading
    state: StudyState = field(default_factory=StudyState)  # the accounting the runner judged complete with

    def finals(self, arm: str | None = None) -> pd.DataFrame:
        f = self.runs[(self.runs["role"] == Role.FINAL) & (self.runs["status"] == "FINISHED")]
        return f if arm is None else f[f["arm"] == arm]

    def trials(self, arm: str) -> pd.DataFrame:
        return self.runs[(self.runs["role"] == Role.TRIAL) & (self.runs["arm"] == arm)]

    def trials_used(self, arm: str) -> int:
        """Trials that used the arm's budget: finished (complete or pruned), or failed on a non-finite loss."""
        return self.state.trials_used.get(arm, 0)


def _dedupe(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str], StudyState]:
    """The study's accounting (`study/state.py`, as the runner keeps it), with one FINISHED final run per
    (arm, seed) and one zero-shot run: the oldest counts, later copies are relabelled `duplicate-final` /
    `duplicate-zero-shot` and named in a warning."""
    if frame.empty:
        return frame, [], StudyState()
    frame, warnings = frame.copy(), []
    state = study_state(frame.to_dict("records"))
    for what, run_id, role in state.duplicates():
        warnings.append(f"{what}: run {run_id} duplicates an earlier finished run and is not counted")
        frame.loc[frame["run_id"] == run_id, "role"] = role
    return frame, warnings, state


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


def read_study(
    name: str, tracking_uri: str, experiment: str | None = None, zero_shot_from: str | None = None
) -> StudyRuns:
    """All runs of study `name` (searched in `experiment`, else in every experiment of the store); with
    `zero_shot_from`, the zero-shot reference is that study's (a sweep's levels share one)."""
    tracker = Tracker(tracking_uri)
    runs = tracker.search(experiment, {"study": name})
    if zero_shot_from and zero_shot_from != name:
        runs += tracker.search(experiment, {"study": zero_shot_from, "role": Role.ZERO_SHOT})
    study = [r for r in runs if r.data.tags.get("role") == Role.STUDY]
    if not study:
        raise UserError(f"report: no study named {name!r} in {tracking_uri} (run `ablation run` first)")
    study_run = study[0]  # the oldest
    text = tracker.read_text(study_run.info.run_id, "config.yaml")  # None: the study did not finish
    frame, warnings, state = _dedupe(_frame(runs))
    config = (yaml.safe_load(text) if text else None) or {}
    out = StudyRuns(name, config, study_run, frame, warnings=warnings, state=state)
    for _, row in out.runs[
        out.runs["role"].isin([Role.FINAL, Role.ZERO_SHOT]) & (out.runs["status"] == "FINISHED")
    ].iterrows():
        arm, seed = row["arm"], row["seed"]
        csv = tracker.read_text(row["run_id"], "per_query_test.csv")
        if csv is not None:  # else the report says which per-query results are missing
            out.per_query[(arm, seed)] = pd.read_csv(io.StringIO(csv))
        if row["role"] == Role.FINAL:
            present = {k[len("metrics.") :] for k in row.index if k.startswith("metrics.") and pd.notna(row[k])}
            keys = set(HISTORY_KEYS) | {k for k in present if k.startswith("grad_norm/")} | set(VAL_KEYS)
            for key in sorted(keys & present):
                steps, values = zip(*tracker.metric_history(row["run_id"], key), strict=True)
                out.histories[(arm, seed, key)] = pd.DataFrame({"step": steps, "value": values}).sort_values("step")
    return out
