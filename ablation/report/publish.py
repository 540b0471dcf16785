"""The report's numbers, written back to MLflow so that `mlflow ui` compares the arms with no expanding:
each arm run gets every test metric's mean over its final seeds (`<key>`, `<key>_std`, `<key>_n`), the
study run the headline comparison (`compare/<arm>_minus_<reference>/...`). Computed with the report's own
functions, so the UI and the report show the same numbers; rebuilding the report logs them again."""

from __future__ import annotations

import pandas as pd

from ablation.names import OBJECTIVE, Role, metric_key
from ablation.report.reader import StudyRuns
from ablation.report.tables import seed_stats

TUNING_FIGURES = ("optuna_history.png", "objective_vs_random_rate.png")
"""The tuning figures each arm's MLflow run carries (drawn by `tuning_figures`)."""


def arm_aggregates(runs: StudyRuns, arm: str) -> dict[str, float]:
    """Every `test/...` metric of the arm's finished final runs: mean, `_std` and `_n` over seeds."""
    finals = runs.finals(arm)
    out: dict[str, float] = {}
    for col in sorted(c for c in finals.columns if c.startswith("metrics.test/")):
        values = finals[col].dropna().to_numpy(dtype=float)
        if len(values):
            key = col.removeprefix("metrics.")
            out[key], out[f"{key}_std"], out[f"{key}_n"] = seed_stats(values)
    return out


HISTORIES = (
    metric_key("val", "retrieval"),
    metric_key("val", "rerank"),
    "epoch/loss/total",
    "epoch/grad_norm/total",
    "loss/total",
    "grad_norm/total",
)
"""Curves each arm run carries as the mean over its final seeds, step by step, for MLflow's grouped charts."""


def arm_histories(runs: StudyRuns, arm: str) -> dict[str, pd.Series]:
    """key → mean over the arm's final seeds at each step (validation: each epoch, from 0)."""
    out = {}
    for key in HISTORIES:
        curves = [h.set_index("step")["value"] for (a, _, k), h in runs.histories.items() if a == arm and k == key]
        if curves:
            out[key] = pd.concat(curves, axis=1).mean(axis=1).sort_index()
    return out


VIEW_COLUMNS = tuple(
    metric_key("test", mode, slice_=slice_) for slice_ in ("all", "unseen") for mode in ("retrieval", "rerank")
)
"""The headline metrics (all and unseen queries) as the MLflow view's columns, each with its `_std`."""
VIEW_CURVES = (OBJECTIVE, "epoch/loss/total", "epoch/grad_norm/total")
"""The MLflow view's line charts: validation acc@1 and the epoch means of the training loss and of the
pre-clip gradient norm, one point per epoch; each arm run's line is the mean over its seeds."""


def headline_comparison(comp: pd.DataFrame) -> dict[str, float]:
    """The headline rows of `tables.comparisons` (acc@1, mean over tasks, all and unseen queries, both
    modes) and the rows against zero-shot: each arm minus its reference, the interval that agrees with the
    call (Holm-adjusted), Holm-adjusted p and seed count."""
    out: dict[str, float] = {}
    for _, r in comp[comp["family"].isin(["headline", "zero-shot"])].iterrows():
        key = f"compare/{r['arm']}_minus_{r['reference']}/{r['slice']}/{r['mode']}/acc_at_1/mean"
        out[key] = r["diff"]
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = r["ci_low"], r["ci_high"]
        out[f"{key}_p_holm"], out[f"{key}_n_seeds"] = r["p_adjusted"], r["n_seeds"]
    return out


def publish(
    tracking_uri: str,
    runs: StudyRuns,
    arms: list[str],
    comp: pd.DataFrame,
    verdict: str = "",
    zs: pd.DataFrame | None = None,
    figures: dict | None = None,
) -> None:
    """Log the aggregates, mean curves and tuning figures (`figures`: the report's, keyed `<arm>_<name>`)
    on the arm runs and the headline comparisons (against the first
    arm and against zero-shot) on the study run; the verdict becomes the description of the study run and
    of its experiment (what MLflow shows first); the experiment also gets the view `make ui` opens."""
    from ablation.tracking.store import NOTE_TAG, Tracker
    from ablation.tracking.view import view_state, view_tag

    tracker = Tracker(tracking_uri)
    experiment = runs.study_run.info.experiment_id
    if verdict:
        tracker.set_tags(runs.study_run.info.run_id, {NOTE_TAG: verdict})
        tracker.set_experiment_tags(experiment, {NOTE_TAG: verdict})
    tracker.set_experiment_tags(experiment, view_tag(runs.name, view_state(runs.name, VIEW_COLUMNS, VIEW_CURVES)))
    arm_runs = runs.runs[runs.runs["role"] == Role.ARM]
    for arm in arms:
        ids = arm_runs[arm_runs["arm"] == arm]["run_id"].tolist()
        values = arm_aggregates(runs, arm)
        if ids and values:
            tracker.log_metrics(ids[0], values)
        for key, curve in arm_histories(runs, arm).items() if ids else ():
            if not tracker.metric_history(ids[0], key):  # once: a rebuilt report does not repeat the curve
                tracker.log_history(ids[0], key, curve.index.tolist(), curve.tolist())
        for name in TUNING_FIGURES if ids else ():
            if f"{arm}_{name}" in (figures or {}):
                tracker.log_figure(ids[0], figures[f"{arm}_{name}"], name)
    comparison = headline_comparison(comp if zs is None or zs.empty else pd.concat([comp, zs], ignore_index=True))
    if comparison:
        tracker.log_metrics(runs.study_run.info.run_id, comparison)
