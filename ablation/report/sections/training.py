"""The report's sections on how training went: convergence, gradients and clipping, and tuning."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ablation.names import Role
from ablation.report.reader import StudyRuns
from ablation.report.render import Section, Table


def clipping_table(runs: StudyRuns, arms: list[str]) -> tuple[str, Table] | None:
    """Per arm: the share of training steps whose pre-clip gradient norm exceeded `train.grad_clip`, and
    the median pre-clip norm (means over the final seeds)."""
    clip = (runs.config.get("train") or {}).get("grad_clip")
    rows = []
    for arm in arms:
        finals = runs.finals(arm)
        shares = finals["metrics.grad/clipped_share"].dropna() if "metrics.grad/clipped_share" in finals else []
        medians = [
            h["value"].median() for (a, _, k), h in runs.histories.items() if a == arm and k == "grad_norm/total"
        ]
        if len(medians):
            share = f"{float(np.mean(shares)):.0%}" if len(shares) else "—"
            rows.append([arm, share, f"{float(np.mean(medians)):.3g}"])
    if not rows:
        return None
    what = f"train.grad_clip = {clip:g}" if clip else "no clipping (train.grad_clip unset)"
    return f"Clipping ({what}):", Table(["arm", "steps clipped", "median pre-clip norm"], rows)


def _sig3(value: object) -> str:
    """A tuned value rounded to 3 significant digits, or — where none was recorded."""
    try:
        return f"{float(value):.3g}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"


def tuning_notes(runs: StudyRuns, arms: list[str], objective: str, maximize: bool = True) -> list[str]:
    """Where tuning's choice rests on noise: the best complete trial ahead of the runner-up by less than the
    seed-to-seed sd of the arm's final runs (at the chosen parameters), and pruned trials whose last value
    was already past the chosen best."""
    col, notes = f"metrics.{objective}", []
    for arm in arms:
        trials = runs.trials(arm)
        if trials.empty or col not in trials:
            continue
        done = trials[trials["state"] == "complete"][col].dropna().sort_values(ascending=not maximize)
        finals = runs.finals(arm)
        sd = (
            float(finals[col].dropna().std(ddof=1)) if col in finals and finals[col].notna().sum() > 1 else float("nan")
        )
        if len(done) >= 2 and not math.isnan(sd) and abs(done.iloc[0] - done.iloc[1]) < sd:
            notes.append(
                f"{arm}: the chosen trial ({done.iloc[0]:.4f}) is ahead of the runner-up ({done.iloc[1]:.4f}) by "
                f"{abs(done.iloc[0] - done.iloc[1]):.4f}, less than the seed-to-seed sd of its final runs "
                f"({sd:.4f}): between those two the choice is noise"
            )
        pruned = trials[trials["state"] == "pruned"][col].dropna()
        if len(done):
            past = pruned[pruned > done.iloc[0]] if maximize else pruned[pruned < done.iloc[0]]
            if len(past):
                values = ", ".join(f"{v:.4f}" for v in past)
                notes.append(
                    f"{arm}: pruned trial(s) had reached {values}, past the chosen {done.iloc[0]:.4f}, when pruned"
                )
    return notes


def tuning_section(
    runs: StudyRuns, arms: list[str], images: dict[str, bytes], notes: list[str] | None = None
) -> Section:
    s = Section(
        "Tuning",
        "The best negative-sampling parameters per arm on validation, and how the objective responded to the "
        "random rate; pruned trials are drawn at the last value they reported, failed ones at the bottom.",
    )
    rows = []
    for arm in arms:
        arm_run = runs.runs[(runs.runs["role"] == Role.ARM) & (runs.runs["arm"] == arm)]
        tags = arm_run.iloc[0] if not arm_run.empty else pd.Series(dtype=object)
        trials = runs.trials(arm)
        states = trials["state"].fillna("failed").tolist() if not trials.empty else []
        best = [_sig3(tags.get(f"tags.best.negatives.{key}")) for key in ("random_rate", "random_rate_final")]
        rows.append(
            [
                arm,
                *best,
                str(states.count("complete")),
                str(states.count("pruned")),
                str(len(states) - states.count("complete") - states.count("pruned")),
            ]
        )
    s.table(Table(["arm", "best initial random_rate", "best final random_rate", "complete", "pruned", "failed"], rows))
    if notes:
        s.items(notes)
    for arm in arms:
        for name, caption in (
            (f"{arm}_optuna_history.png", f"{arm}: objective per trial"),
            (f"{arm}_objective_vs_random_rate.png", f"{arm}: objective vs initial random rate"),
        ):
            if name in images:
                s.figure(name, caption)
    return s


def convergence_section(images: dict[str, bytes]) -> Section:
    s = Section(
        "Convergence",
        "Training loss per step (moving average; band = min to max over seeds) and validation "
        "acc@1 per epoch from epoch 0 (before any step): which arm learns faster, whether it has converged, "
        "and whether training helps at all.",
    )
    for name, caption in (
        ("loss.png", "training loss"),
        ("val_acc.png", "validation retrieval accuracy per epoch"),
        ("val_rerank_acc.png", "validation reranked accuracy per epoch"),
    ):
        if name in images:
            s.figure(name, caption)
    return s


def gradients_section(runs: StudyRuns, arms: list[str], images: dict[str, bytes]) -> Section:
    s = Section(
        "Gradients",
        "Gradient norms per arm and part, before clipping, against the clip threshold; the cosine between the "
        "gradients the query side and the candidate side send into the encoder (negative = the sides pull "
        "apart); for two-encoder arms, how far the encoders drift from each other.",
    )
    clipping = clipping_table(runs, arms)
    if clipping is not None:
        s.p(clipping[0]).table(clipping[1])
    for name, caption in (
        ("grad_norm.png", "total gradient norm"),
        ("grad_parts.png", "gradient norm per part"),
        ("grad_cosine.png", "query/candidate gradient cosine"),
        ("encoder_distance.png", "encoder drift"),
    ):
        if name in images:
            s.figure(name, caption)
    return s
