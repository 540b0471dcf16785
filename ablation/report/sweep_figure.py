"""The sweep's figure: against the level, the arm effect with its Holm-adjusted interval (left) and each
arm's acc@1 with zero-shot (right), on all queries (solid) and the unseen slice (dashed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ablation.study.tuning_plots import arm_colors

_STYLE = {"all": ("-", "o", 0.0), "unseen": ("--", "s", 0.12)}


def sweep_figure(
    rows: pd.DataFrame, means: pd.DataFrame, arms: list[str], levels: list[str], axis: str
) -> Figure | None:
    """None when no level has an effect row."""
    effects = rows[rows["kind"] == "effect"] if not rows.empty else rows
    if effects.empty or len(arms) < 2:
        return None
    colors = {**arm_colors(arms), "zero-shot": "0.45"}
    x = {label: i for i, label in enumerate(levels)}
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    for slice_, (line, marker, shift) in _STYLE.items():
        for arm in arms[1:]:
            e = effects[(effects["slice"] == slice_) & (effects["arm"] == arm)]
            if e.empty:
                continue
            xs = np.array([x[level] for level in e["level"]]) + shift
            err = np.vstack([e["diff"] - e["ci_low"], e["ci_high"] - e["diff"]])
            left.errorbar(
                xs, e["diff"], yerr=err, fmt=marker + line, color=colors[arm], capsize=4, label=f"{slice_} queries"
            )
            for xi, (_, r) in zip(xs, e.iterrows(), strict=True):
                if not r["significant"]:
                    left.plot(xi, r["diff"], marker, color="white", markeredgecolor=colors[arm])
        for arm in (*arms, "zero-shot"):
            m = means[(means["slice"] == slice_) & (means["arm"] == arm)]
            if m.empty:
                continue
            xs = np.array([x[level] for level in m["level"]]) + shift
            err = np.vstack([m["mean"] - m["ci_low"], m["ci_high"] - m["mean"]])
            right.errorbar(
                xs, m["mean"], yerr=err, fmt=marker + line, color=colors[arm], capsize=3, label=f"{arm}, {slice_}"
            )
    left.axhline(0, color="black", linewidth=1)
    left.set_ylabel(f"test retrieval acc@1, {arms[1]} − {arms[0]}")
    left.set_title("Arm effect per level (Holm-adjusted 95 % CI; hollow: not called)")
    right.set_ylabel("test retrieval acc@1 (mean over tasks)")
    right.set_title("Each arm per level (95 % CI over seeds and queries)")
    for ax in (left, right):
        ax.set_xticks(range(len(levels)), levels)
        ax.set_xlabel(axis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig
