"""Figures of a tuning study: optimisation history and objective vs random rate, from a trials table.
Figures are built without pyplot, so no backend is chosen at import time and none stays open.

The table has one row per trial with columns `number`, `value`, `state` and one column per tuned
setting; the report builds it from MLflow (`trials_table` builds it from an Optuna study) and logs the
figures on each arm's MLflow run too.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

RATE = "negatives.random_rate"
FINAL = "negatives.random_rate_final"


def trials_table(study: object) -> pd.DataFrame:
    """An Optuna study's trials as the table the figures read; a pruned trial's value is the last one it
    reported (as its MLflow run's metric is)."""
    df = study.trials_dataframe(attrs=("number", "value", "state", "params"))  # type: ignore[attr-defined]
    if df.empty:
        return pd.DataFrame(columns=["number", "value", "state"])
    # a study with metric names (`set_metric_names`) calls its value column `value_<name>`
    df = df.rename(columns=lambda c: "value" if c.startswith("value_") else c.removeprefix("params_"))
    last = {t.number: t.intermediate_values[max(t.intermediate_values)] for t in study.trials if t.intermediate_values}  # type: ignore[attr-defined]
    pruned = df["state"] == "PRUNED"
    df.loc[pruned, "value"] = df.loc[pruned, "number"].map(last)
    return df


def _finish(fig: Figure, ax: Axes, xlabel: str, ylabel: str, title: str) -> Figure:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def history_figure(
    trials: pd.DataFrame, objective: str, title: str, color: str = "C0", maximize: bool = True
) -> Figure:
    """Objective per trial: complete ones as dots, pruned ones as hollow circles at the last value they
    reported, failed ones as grey crosses at the bottom; and the best complete trial so far."""
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    done = trials[trials["state"] == "COMPLETE"].sort_values("number")
    ax.plot(done["number"], done["value"], "o", color=color, label="complete trial")
    pruned = trials[(trials["state"] == "PRUNED") & trials["value"].notna()]
    if not pruned.empty:
        ax.plot(pruned["number"], pruned["value"], "o", mfc="none", color=color, label="pruned (last value)")
    if not done.empty:
        best = done["value"].cummax() if maximize else done["value"].cummin()
        ax.step(done["number"], best, where="post", color=color, alpha=0.6, label="best so far")
    other = trials[~trials.index.isin(done.index) & ~trials.index.isin(pruned.index)]
    if not other.empty:
        shown = pd.concat([done["value"], pruned["value"]]).dropna()
        low = float(shown.min()) if len(shown) else 0.0
        ax.plot(other["number"], [low] * len(other), "x", color="grey", label="failed (no value)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, ax, "trial number", objective, title)


def rate_figure(trials: pd.DataFrame, objective: str, title: str, color: str = "C0") -> Figure:
    """Objective against the initial random rate; each marker's fill is the final rate of its schedule; pruned
    trials at their last value, as squares."""
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    done = trials[trials["state"] == "COMPLETE"]
    pruned = trials[(trials["state"] == "PRUNED") & trials["value"].notna()]
    if RATE in pruned and not pruned.empty:
        ax.scatter(
            pruned[RATE].astype(float),
            pruned["value"],
            marker="s",
            facecolor="none",
            edgecolor=color,
            s=60,
            label="pruned trial (last value)",
        )
    if RATE in done and not done.empty:
        final = pd.to_numeric(done[FINAL], errors="coerce") if FINAL in done else done[RATE]
        final = final.fillna(done[RATE]).astype(float)  # no final rate: constant
        points = ax.scatter(
            done[RATE].astype(float),
            done["value"],
            c=final,
            cmap="viridis",
            vmin=0,
            vmax=1,
            s=60,
            edgecolor=color,
            linewidth=1.5,
            label="trial (fill: final random rate)",
        )
        fig.colorbar(points, ax=ax, label="final random_rate")
    else:
        ax.text(0.5, 0.5, "no complete trial", transform=ax.transAxes, ha="center", color="grey")
    ax.set_xlim(-0.02, 1.02)
    return _finish(fig, ax, "initial random_rate (share of random negatives)", objective, title)


def tuning_figures(
    trials: pd.DataFrame, objective: str, arm: str, color: str = "C0", maximize: bool = True
) -> dict[str, Figure]:
    """Both tuning figures of one arm, keyed by artifact file name."""
    return {
        "optuna_history.png": history_figure(trials, objective, f"{arm}: optimisation history", color, maximize),
        "objective_vs_random_rate.png": rate_figure(trials, objective, f"{arm}: objective vs random rate", color),
    }
