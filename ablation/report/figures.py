"""The report's figures: convergence, gradients and tuning, one colour per arm everywhere."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ablation.names import OBJECTIVE, Role, metric_key
from ablation.report.reader import StudyRuns
from ablation.report.tuning_figures import FINAL, RATE, tuning_figures
from ablation.tracking.view import arm_colors


def _seed_curves(runs: StudyRuns, arm: str, key: str) -> pd.DataFrame:
    """steps × seeds table of one metric's history."""
    series = {seed: h.set_index("step")["value"] for (a, seed, k), h in runs.histories.items() if a == arm and k == key}
    return pd.DataFrame(series).sort_index()


def _band(ax: Axes, curves: pd.DataFrame, color: str, label: str, smooth: int = 1) -> None:
    if curves.empty:
        return
    c = curves.rolling(smooth, min_periods=1).mean() if smooth > 1 else curves
    mean = c.mean(axis=1)
    ax.plot(c.index, mean, color=color, label=f"{label} (mean of {c.shape[1]} seeds)")
    if c.shape[1] > 1:
        ax.fill_between(c.index, c.min(axis=1), c.max(axis=1), color=color, alpha=0.2, linewidth=0)


def _plain_log_axis(ax: Axes) -> None:
    """A log-scale y axis whose ticks read 0.5, 2, 10 rather than 5×10⁻¹, 2×10⁰."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    # minor ticks labelled at 2 and 5 of each decade only, so that a narrow range still has labels
    lead = lambda v: round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0  # noqa: E731
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if lead(v) in (2, 5) else ""))


def curve_figure(
    runs: StudyRuns,
    arms: list[str],
    key: str,
    ylabel: str,
    title: str,
    xlabel: str = "training step",
    smooth: bool = False,
    logy: bool = False,
    reference: tuple[str, float] | None = None,
) -> Figure | None:
    """One metric's history per arm: mean over seeds, band from min to max; `reference` (label, value) is
    drawn as a dashed horizontal line."""
    colors = arm_colors(arms)
    fig = Figure(figsize=(7, 3.8), layout="constrained")
    ax = fig.subplots()
    drawn = False
    for arm in arms:
        curves = _seed_curves(runs, arm, key)
        if curves.empty or curves.isna().all().all():
            continue
        window = max(1, len(curves) // 20) if smooth else 1
        _band(ax, curves, colors[arm], arm, window)
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel + (",\nmoving average" if smooth else ""))
    if reference is not None:
        ax.axhline(reference[1], color="black", linestyle="--", linewidth=1, label=reference[0])
    if logy:
        _plain_log_axis(ax)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


PARTS = ["encoder", "head", "classifier", "query_encoder", "candidate_encoder", "query_head", "candidate_head"]


def part_colors(part: str) -> str:
    """A colour per model part (tab10, skipping the arms' first colours' meaning: these are parts, not arms)."""
    return f"C{PARTS.index(part) % 10}" if part in PARTS else "0.3"


def part_norms_figure(runs: StudyRuns, arms: list[str]) -> Figure | None:
    """Gradient norm of each part (encoders, heads, classifier), one panel per arm."""
    colors = arm_colors(arms)
    present = [a for a in arms if any(k[0] == a and k[2].startswith("grad_norm/") for k in runs.histories)]
    if not present:
        return None
    fig = Figure(figsize=(5.6 * len(present), 3.6), layout="constrained")
    axes = fig.subplots(1, len(present), squeeze=False)
    styles = ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 1))]
    for ax, arm in zip(axes[0], present, strict=True):
        keys = sorted(
            {
                k[2]
                for k in runs.histories
                if k[0] == arm and k[2].startswith("grad_norm/") and k[2] != "grad_norm/total"
            }
        )
        for i, key in enumerate(keys):
            curves = _seed_curves(runs, arm, key)
            smooth = curves.rolling(max(1, len(curves) // 20), min_periods=1).mean().mean(axis=1)
            part = key.split("/")[1]  # one colour per part, the same in every panel; the line style repeats it
            ax.plot(smooth.index, smooth, linestyle=styles[i % len(styles)], color=part_colors(part), label=part)
        _plain_log_axis(ax)
        ax.set_title(arm, color=colors[arm])
        ax.set_xlabel("training step")
        ax.set_ylabel("gradient L2 norm (pre-clip, log scale)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the data, not on it
    return fig


def forest_figure(comp: pd.DataFrame, arms: list[str]) -> Figure | None:
    """Per task and for the mean: each arm minus the reference (retrieval acc@1, all queries) with its
    Holm-adjusted interval; filled markers where the difference is called."""
    rows = comp[(comp["slice"] == "all") & (comp["mode"] == "retrieval")] if not comp.empty else comp
    if rows.empty:
        return None
    colors = arm_colors(arms)
    fig = Figure(figsize=(6.5, 0.45 * len(rows) + 1.4), layout="constrained")
    ax = fig.subplots()
    labels = []
    for y, r in enumerate(rows.itertuples()):
        labels.append(f"{r.arm}: {r.task}")
        ax.plot([r.ci_low, r.ci_high], [y, y], color=colors.get(r.arm, "C0"))
        ax.plot(
            r.diff, y, "o", color=colors.get(r.arm, "C0"), mfc=colors.get(r.arm, "C0") if r.significant else "white"
        )
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"test retrieval acc@1, arm − {rows['reference'].iloc[0]} (filled: called)")
    ax.set_title("Per-task differences with Holm-adjusted intervals")
    ax.grid(alpha=0.3, axis="x")
    return fig


def report_figures(
    runs: StudyRuns, arms: list[str], objective: str, maximize: bool, comp: pd.DataFrame | None = None
) -> dict[str, Figure]:
    """Every figure of the report, keyed by file name (figures with no data are left out)."""
    figs = {"forest.png": forest_figure(comp, arms) if comp is not None else None, **_curves(runs, arms)}
    figs.update(_tuning(runs, arms, objective, maximize))
    return {k: v for k, v in figs.items() if v is not None}


def _curves(runs: StudyRuns, arms: list[str]) -> dict[str, Figure | None]:
    """The convergence and gradient figures."""
    zero = runs.runs[(runs.runs["role"] == Role.ZERO_SHOT) & (runs.runs["status"] == "FINISHED")]
    key = f"metrics.{OBJECTIVE}"
    got = zero[key].dropna() if key in zero else pd.Series(dtype=float)
    zero_val = ("zero-shot encoder", float(got.iloc[0])) if len(got) else None
    clip = (runs.config.get("train") or {}).get("grad_clip")
    return {
        "loss.png": curve_figure(
            runs,
            arms,
            "loss/total",
            f"loss: {(runs.config.get('train') or {}).get('loss', 'triplet')} + CE pos + CE neg",
            "Convergence: training loss",
            smooth=True,
        ),
        "val_acc.png": curve_figure(
            runs,
            arms,
            OBJECTIVE,
            "validation retrieval acc@1 (mean of tasks)",
            "Convergence: validation accuracy",
            xlabel="epochs trained (0 = before any step)",
            reference=zero_val,
        ),
        "val_rerank_acc.png": curve_figure(
            runs,
            arms,
            metric_key("val", "rerank"),
            "validation reranked acc@1 (mean of tasks)",
            "Convergence: reranked validation accuracy",
            xlabel="epochs trained (0 = before any step)",
            reference=(f"{zero_val[0]}, retrieval (it has no reranker)", zero_val[1]) if zero_val else None,
        ),
        "grad_norm.png": curve_figure(
            runs,
            arms,
            "grad_norm/total",
            "total gradient norm, pre-clip",
            "Gradient norm" + (f" against the clip threshold {clip:g}" if clip else ""),
            smooth=True,
            logy=True,
            reference=("clip threshold (train.grad_clip)", float(clip)) if clip else None,
        ),
        "grad_parts.png": part_norms_figure(runs, arms),
        "grad_cosine.png": curve_figure(
            runs,
            arms,
            "grad_cosine/query_vs_candidate",
            "cosine(query-side, candidate-side gradient)",
            "Do the two sides pull the encoder the same way?",
        ),
        "encoder_distance.png": curve_figure(
            runs,
            arms,
            "encoder_distance",
            "L2 distance between encoders' weights",
            "Drift between query and candidate encoder",
        ),
    }


def _tuning(runs: StudyRuns, arms: list[str], objective: str, maximize: bool) -> dict[str, Figure]:
    """Each arm's tuning figures from its trial runs, keyed `<arm>_<name>`."""
    figs, colors = {}, arm_colors(arms)
    for arm in arms:
        trials = runs.trials(arm)
        if trials.empty:
            continue
        table = pd.DataFrame(
            {
                "number": trials["trial"].astype(int),
                "value": trials.get(f"metrics.{objective}", pd.Series(np.nan, index=trials.index)),
                "state": np.where(
                    trials["state"] == "complete", "COMPLETE", np.where(trials["state"] == "pruned", "PRUNED", "FAIL")
                ),
                **{
                    key: pd.to_numeric(trials[f"params.{key}"], errors="coerce")
                    for key in (RATE, FINAL)
                    if f"params.{key}" in trials
                },
            }
        )
        for name, fig in tuning_figures(table, objective, arm, colors[arm], maximize).items():
            figs[f"{arm}_{name}"] = fig
    return figs
