"""The report's tables, computed from the MLflow runs: headline metrics, parameter counts, comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablation.evaluation.ranking import MODES
from ablation.names import TASKS, Role
from ablation.report.reader import StudyRuns
from ablation.report.stats import (
    MIN_SEEDS,
    Comparison,
    adjusted_interval,
    compare,
    correctness,
    detectable,
    holm,
)

HEADLINE = [
    ("retrieval", "acc_at_1"),
    ("rerank", "acc_at_1"),
    ("retrieval", "recall_at_5"),
    ("retrieval", "recall_at_10"),
    ("rerank", "recall_at_5"),
    ("rerank", "recall_at_10"),
    ("retrieval", "mrr"),
    ("rerank", "mrr"),
]


def headline_metrics(rerank_k: int) -> list[tuple[str, str]]:
    """The report's metrics, less rerank recall@K for K ≤ rerank_k: reranking the top rerank_k keeps
    their set, so it equals retrieval recall@K there."""
    return [
        (mode, metric)
        for mode, metric in HEADLINE
        if not (mode == "rerank" and metric.startswith("recall_at_") and int(metric.rsplit("_", 1)[1]) <= rerank_k)
    ]


SLICES = ("all", "unseen", "self_copy")
COUNT_KEYS = [
    "params/total",
    "params/unique",
    "params/trainable",
    "params/query_side",
    "params/candidate_side",
    "params/classifier",
]


def seed_stats(values: np.ndarray) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one seed) and count of one metric over seeds."""
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, len(values)


def summary(runs: StudyRuns, arms: list[str], rerank_k: int = 10) -> pd.DataFrame:
    """Long table: arm, slice, mode, metric, task, mean, std, n_seeds — every headline number of the report."""
    rows = []
    sources = [(arm, runs.finals(arm)) for arm in arms]
    zs = runs.runs[(runs.runs["role"] == Role.ZERO_SHOT) & (runs.runs["status"] == "FINISHED")]
    if not zs.empty:
        sources.append(("zero-shot", zs))
    for arm, frame in sources:
        for slice_ in SLICES:
            prefix = "" if slice_ == "all" else f"{slice_}/"
            for mode, metric in headline_metrics(rerank_k):
                for task in (*TASKS, "mean"):
                    col = f"metrics.test/{prefix}{mode}/{metric}/{task}"
                    values = frame[col].dropna().to_numpy() if col in frame else np.array([])
                    if len(values) == 0:
                        continue
                    mean, std, n = seed_stats(values)
                    rows.append(
                        {
                            "arm": arm,
                            "slice": slice_,
                            "mode": mode,
                            "metric": metric,
                            "task": task,
                            "mean": mean,
                            "std": std,
                            "n_seeds": n,
                        }
                    )
    return pd.DataFrame(rows, columns=["arm", "slice", "mode", "metric", "task", "mean", "std", "n_seeds"])


def headline(summary_table: pd.DataFrame, mode: str, metric: str, slice_: str = "all") -> pd.DataFrame:
    """arms × tasks tables of means and standard deviations for one metric on one slice."""
    part = summary_table[
        (summary_table["mode"] == mode) & (summary_table["metric"] == metric) & (summary_table["slice"] == slice_)
    ]
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
        rows.append(
            {
                "arm": arm,
                **{
                    k.split("/")[1]: int(row[f"metrics.{k}"])
                    for k in COUNT_KEYS
                    if f"metrics.{k}" in row and pd.notna(row[f"metrics.{k}"])
                },
            }
        )
    return pd.DataFrame(rows)


def arm_per_query(runs: StudyRuns, arm: str) -> dict[str, pd.DataFrame]:
    return {seed: frame for (a, seed), frame in sorted(runs.per_query.items()) if a == arm}


def comparison_row(c: Comparison, **keys: object) -> dict:
    return {
        **keys,
        "diff": c.diff,
        "ci_low": c.low,
        "ci_high": c.high,
        "se": c.se,
        "df": c.df,
        "p_value": c.p_value,
        "n_queries": c.n_queries,
        "n_seeds": c.n_seeds,
    }


def adjust_families(frame: pd.DataFrame, family: list[str]) -> pd.DataFrame:
    """Holm-adjusted p within each family of rows, the interval that agrees with it (`ci_low`, `ci_high`;
    the unadjusted 95 % one moves to `ci_low_raw`, `ci_high_raw`), and `significant` after it (3+ seeds
    only: with fewer, `call` says that no call is made)."""
    frame = frame.copy()
    frame["p_adjusted"] = np.nan
    frame["detectable"] = np.nan
    frame["ci_low_raw"], frame["ci_high_raw"] = frame["ci_low"], frame["ci_high"]
    for idx in frame.groupby(family, dropna=False).indices.values():
        rows = frame.index[idx]
        frame.loc[rows, "p_adjusted"] = holm(frame.loc[rows, "p_value"].to_numpy())
        frame.loc[rows, "detectable"] = [
            detectable(frame.loc[i, "se"], frame.loc[i, "df"], len(rows))
            if frame.loc[i, "n_seeds"] >= MIN_SEEDS
            else np.nan
            for i in rows
        ]
        for i in rows:
            r = frame.loc[i]
            frame.loc[i, ["ci_low", "ci_high"]] = adjusted_interval(
                r["diff"], r["se"], r["df"], r["p_value"], r["p_adjusted"], len(rows)
            )
    frame["significant"] = (frame["p_adjusted"] < 0.05) & (frame["n_seeds"] >= MIN_SEEDS)
    frame["call"] = np.where(
        frame["n_seeds"] < MIN_SEEDS,
        [f"not tested ({n} seed{'s' * (n != 1)}; {MIN_SEEDS} needed)" for n in frame["n_seeds"]],
        np.where(
            frame["significant"],
            "significant",
            [f"not significant (would find ±{d:.3f})" for d in frame["detectable"]],
        ),
    )
    return frame


COMPARISON_COLUMNS = [
    "arm",
    "reference",
    "slice",
    "mode",
    "task",
    "diff",
    "ci_low",
    "ci_high",
    "ci_low_raw",
    "ci_high_raw",
    "se",
    "df",
    "p_value",
    "p_adjusted",
    "n_queries",
    "n_seeds",
    "significant",
    "call",
    "detectable",
    "family",
]


def comparisons(runs: StudyRuns, arms: list[str]) -> pd.DataFrame:
    """Every arm against the first, on every slice, mode and task, and on the mean over tasks. Per-task
    p-values are Holm-adjusted over the 8 tasks of one (arm, slice, mode); the means over tasks of all
    queries and of the unseen slice, in both modes (the headline), over those 4 per arm."""
    reference, rows = arms[0], []
    ref = arm_per_query(runs, reference)
    for arm in arms[1:]:
        mine = arm_per_query(runs, arm)
        if not mine or not ref:
            continue
        for slice_ in SLICES:
            for mode in MODES:
                for task in (*TASKS, "mean"):
                    if task == "mean" and slice_ == "self_copy":
                        continue  # the self-copy slice differs per task (mostly epa): no mean over tasks
                    key = None if task == "mean" else task
                    c = compare(correctness(ref, key, mode, slice_), correctness(mine, key, mode, slice_))
                    if c.n_queries:
                        rows.append(
                            comparison_row(
                                c,
                                arm=arm,
                                reference=reference,
                                slice=slice_,
                                mode=mode,
                                task=task,
                                family="headline" if task == "mean" else f"{slice_}/{mode}",
                            )
                        )
    if not rows:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    return adjust_families(pd.DataFrame(rows), ["arm", "family"])[COMPARISON_COLUMNS]


def against_zero_shot(runs: StudyRuns, arms: list[str]) -> pd.DataFrame:
    """Each arm's mean retrieval acc@1 over the tasks against the untrained encoder (a fixed reference),
    on all queries and the unseen slice; Holm-adjusted over all these rows."""
    zero = arm_per_query(runs, "zero-shot")
    rows = []
    for arm in arms:
        mine = arm_per_query(runs, arm)
        if not zero or not mine:
            continue
        for slice_ in ("all", "unseen"):
            c = compare(
                correctness(zero, None, "retrieval", slice_),
                correctness(mine, None, "retrieval", slice_),
                fixed_reference=True,
            )
            if c.n_queries:
                rows.append(
                    comparison_row(
                        c,
                        arm=arm,
                        reference="zero-shot",
                        slice=slice_,
                        mode="retrieval",
                        task="mean",
                        family="zero-shot",
                    )
                )
    if not rows:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    return adjust_families(pd.DataFrame(rows), ["family"])[COMPARISON_COLUMNS]
