"""The sweep's figure: against the level, the arm effect with its Holm-adjusted interval (left) and each
arm's acc@1 with zero-shot (right), on all queries (solid) and the unseen slice (dashed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ablation.report.stats import MIN_SEEDS
from ablation.tracking.view import arm_colors

_STYLE = {"all": ("-", "o", 0.0), "unseen": ("--", "s", 0.12)}


def _intervals(
    ax: Axes, rows: pd.DataFrame, y: str, color: str, label: str, x: dict, shift: float, fmt: str, capsize: int
) -> np.ndarray:
    """`rows[y]` at each row's level (shifted), with error bars to `ci_low` and `ci_high`; returns the x."""
    xs = np.array([x[level] for level in rows["level"]]) + shift
    err = np.vstack([rows[y] - rows["ci_low"], rows["ci_high"] - rows[y]])
    ax.errorbar(xs, rows[y], yerr=err, fmt=fmt, color=color, capsize=capsize, label=label)
    return xs


def sweep_figure(
    rows: pd.DataFrame, means: pd.DataFrame, arms: list[str], levels: list[str], axis: str
) -> Figure | None:
    """None when no level has an effect row."""
    effects = rows[rows["kind"] == "effect"] if not rows.empty else rows
    if effects.empty or len(arms) < 2:
        return None
    colors = arm_colors(arms)
    x = {label: i for i, label in enumerate(levels)}
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    for slice_, (line, marker, shift) in _STYLE.items():
        spread = 0.05  # arms side by side at a level, so that their intervals do not hide each other
        for k, arm in enumerate(arms[1:]):
            e = effects[(effects["slice"] == slice_) & (effects["arm"] == arm)]
            if e.empty:
                continue
            style = {"x": x, "shift": shift + k * spread, "fmt": marker + line}
            xs = _intervals(left, e, "diff", colors[arm], f"{arm}, {slice_} queries", capsize=4, **style)
            for xi, (_, r) in zip(xs, e.iterrows(), strict=True):
                if not r["significant"]:  # hollow, drawn above the error bar's filled marker
                    left.plot(xi, r["diff"], marker, mfc="white", mec=colors[arm], zorder=5)
        for k, arm in enumerate((*arms, "zero-shot")):
            m = means[(means["slice"] == slice_) & (means["arm"] == arm)]
            if not m.empty:
                style = {"x": x, "shift": shift + k * spread, "fmt": marker + line}
                _intervals(right, m, "mean", colors[arm], f"{arm}, {slice_}", capsize=3, **style)
    left.axhline(0, color="black", linewidth=1)
    left.set_ylabel(f"test retrieval acc@1, arm − {arms[0]}")
    untested = effects["n_seeds"].min() < MIN_SEEDS
    seeds = int(effects["n_seeds"].min())
    left.set_title(
        f"Arm effect per level: not tested ({seeds} seeds; {MIN_SEEDS} needed)"
        if untested
        else "Arm effect per level (Holm-adjusted 95 % CI; hollow: not called)"
    )
    right.set_ylabel("test retrieval acc@1 (mean over tasks)")
    right.set_title("Each arm per level (95 % CI over seeds and queries)")
    for ax in (left, right):
        ax.set_xticks(range(len(levels)), levels)
        ax.set_xlabel(axis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig
