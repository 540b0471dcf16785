"""The report's tables, computed from the MLflow runs: headline metrics, parameter counts, comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablation.config import TASKS
from ablation.report.reader import StudyRuns
from ablation.report.stats import correctness, paired_comparison

HEADLINE = [("rerank", "acc_at_1"), ("retrieval", "acc_at_1"), ("rerank", "recall_at_5"), ("rerank", "recall_at_10"),
            ("rerank", "mrr")]
COUNT_KEYS = ["params/total", "params/unique", "params/trainable", "params/query_side", "params/candidate_side", "params/classifier"]


def summary(runs: StudyRuns, arms: list[str]) -> pd.DataFrame:
    """Long table: arm, mode, metric, task, mean, std, n_seeds — every headline number of the report."""
    rows = []
    sources = [(arm, runs.finals(arm)) for arm in arms]
    zs = runs.runs[(runs.runs["role"] == "zero-shot") & (runs.runs["status"] == "FINISHED")]
    if not zs.empty:
        sources.append(("zero-shot", zs))
    for arm, frame in sources:
        for mode, metric in HEADLINE:
            for task in (*TASKS, "mean"):
                col = f"metrics.test/{mode}/{metric}/{task}"
                values = frame[col].dropna().to_numpy() if col in frame else np.array([])
                if len(values) == 0:
                    continue
                rows.append({"arm": arm, "mode": mode, "metric": metric, "task": task, "mean": float(values.mean()),
                             "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0, "n_seeds": len(values)})
    return pd.DataFrame(rows, columns=["arm", "mode", "metric", "task", "mean", "std", "n_seeds"])


def headline(summary_table: pd.DataFrame, mode: str, metric: str) -> pd.DataFrame:
    """arms × tasks table of "mean ± std" strings for one metric, plus a mask of the best arm per task."""
    part = summary_table[(summary_table["mode"] == mode) & (summary_table["metric"] == metric)]
    if part.empty:
        return pd.DataFrame()
    means = part.pivot(index="arm", columns="task", values="mean").reindex(columns=[*TASKS, "mean"])
    stds = part.pivot(index="arm", columns="task", values="std").reindex(columns=[*TASKS, "mean"])
    order = [a for a in part["arm"].drop_duplicates()]
    return pd.concat({"mean": means.loc[order], "std": stds.loc[order]}, axis=1)


def param_table(runs: StudyRuns, arms: list[str]) -> pd.DataFrame:
    """Parameter counts per arm (identical across seeds; the first final or trial run is read)."""
    rows = []
    for arm in arms:
        frame = runs.finals(arm)
        if frame.empty:
            frame = runs.trials(arm)
        if frame.empty:
            continue
        row = frame.iloc[0]
        rows.append({"arm": arm, **{k.split("/")[1]: int(row[f"metrics.{k}"]) for k in COUNT_KEYS if f"metrics.{k}" in row and pd.notna(row[f"metrics.{k}"])}})
    return pd.DataFrame(rows)


def comparisons(runs: StudyRuns, arms: list[str], n_resamples: int = 10000) -> pd.DataFrame:
    """Every arm against the first: per task and mode, paired bootstrap difference in acc@1."""
    rows = []
    reference = arms[0]
    ref_frames = [f for (a, _), f in sorted(runs.per_query.items()) if a == reference]
    for arm in arms[1:]:
        frames = [f for (a, _), f in sorted(runs.per_query.items()) if a == arm]
        if not frames or not ref_frames:
            continue
        for mode in ("rerank", "retrieval"):
            for task in TASKS:
                c = paired_comparison(correctness(ref_frames, task, mode), correctness(frames, task, mode), n_resamples)
                rows.append({"arm": arm, "reference": reference, "mode": mode, "task": task, "diff": c.diff, "ci_low": c.low,
                             "ci_high": c.high, "p_value": c.p_value, "n_queries": c.n_queries, "significant": c.significant})
    return pd.DataFrame(rows)
