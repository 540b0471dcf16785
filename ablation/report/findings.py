"""The report's sections that say what the study found: the verdict sentence, the paired comparison, training
against the untrained encoder, and tuning."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablation.report.reader import StudyRuns
from ablation.report.render import Section, Table
from ablation.report.stats import MIN_SEEDS, Comparison, describe


def _comparison(row: pd.Series) -> Comparison:
    return Comparison(
        row["diff"],
        row["ci_low"],
        row["ci_high"],
        row["p_value"],
        int(row["n_queries"]),
        int(row["n_seeds"]),
        row["p_adjusted"],
    )


def _slice_words(slice_: str, n: int) -> str:
    return {
        "all": f"all {n:,} test queries",
        "unseen": f"the {n:,} unseen test queries (neither text in training)",
    }.get(slice_, f"the {slice_} slice ({n:,} queries)")


def verdict(comp: pd.DataFrame, arms: list[str], mode: str) -> str:
    """The answer in one sentence: which arm, by how much, on which slice, with its interval, or that no
    difference was detected (or that too few seeds ran to tell)."""
    if comp.empty:
        return "No verdict: fewer than two arms have finished final runs with per-query results."
    head = comp[(comp["task"] == "mean") & (comp["mode"] == mode)].set_index(["arm", "slice"])
    parts = []
    for arm in head.index.get_level_values(0).unique():
        rows = {sl: _comparison(head.loc[(arm, sl)]) for sl in ("all", "unseen") if (arm, sl) in head.index}
        if not rows:
            continue
        what = f"mean {mode} acc@1 over the 8 tasks"
        seeds = min(c.n_seeds for c in rows.values())
        if seeds < MIN_SEEDS:
            parts.append(
                f"{arm} vs {arms[0]} cannot be decided: with {seeds} seed(s) per arm the seed variance cannot be "
                f"estimated (Δ {what} {describe(rows['all'])} on all queries)"
            )
            continue
        sig = [sl for sl, c in rows.items() if c.significant]
        if not sig:
            parts.append(
                f"no difference detected between {arm} and {arms[0]}: Δ {what} "
                + "; ".join(f"{describe(c)} on {_slice_words(sl, c.n_queries)}" for sl, c in rows.items())
            )
            continue
        sl = sig[0]
        c = rows[sl]
        better, worse = (arm, arms[0]) if c.diff > 0 else (arms[0], arm)
        parts.append(
            f"{better} beats {worse} by {abs(c.diff):.3f} {what} on {_slice_words(sl, c.n_queries)} "
            f"({arm} − {arms[0]}: {describe(c)}, {c.n_seeds} seeds)"
            + "".join(f"; on {_slice_words(o, rows[o].n_queries)}: {describe(rows[o])}" for o in rows if o != sl)
        )
    text = "; ".join(parts) if parts else "No verdict: no comparison could be made."
    return text[0].upper() + text[1:] + "."


def comparison_section(comp: pd.DataFrame, arms: list[str]) -> Section:
    s = Section(
        "Paired comparison against " + arms[0],
        "Each row is the difference in test acc@1 (arm minus reference) over the same queries, paired by seed "
        "and query. The 95 % interval and p account for both seeds and queries (a t interval whose variance "
        "adds the spread of the per-seed differences and of the per-query differences). p-values are "
        "Holm-adjusted: per-task rows over the 8 tasks of their slice and mode, the means over tasks over the "
        f"4 headline rows of each arm. 'significant' means adjusted p < 0.05 with at least {MIN_SEEDS} seeds.",
    )
    if comp.empty:
        return s.p("No comparison: fewer than two arms with per-query results.")
    if (comp["n_seeds"] < MIN_SEEDS).any():
        s.p(
            f"Fewer than {MIN_SEEDS} seeds per arm: the seed variance cannot be estimated, so no difference is called "
            "significant."
        )
    lines = []
    for (arm, slice_, mode), part in comp[comp["task"] != "mean"].groupby(["arm", "slice", "mode"], sort=False):
        sig = part[part["significant"]]
        better, worse = int((sig["diff"] > 0).sum()), int((sig["diff"] < 0).sum())
        lines.append(
            f"{arm} vs {arms[0]}, {mode} acc@1, {slice_} queries: significantly better on {better} task(s), "
            f"worse on {worse}, no significant difference on {len(part) - better - worse}."
        )
    s.p("In short:").items(lines)
    for (slice_, mode), part in comp.groupby(["slice", "mode"], sort=False):
        rows = [
            [
                r.arm,
                r.task,
                f"{r.diff:+.3f}",
                f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]",
                f"{r.p_value:.3f}",
                f"{r.p_adjusted:.3f}",
                f"{r.n_queries:,}",
                str(r.n_seeds),
                "yes" if r.significant else "no",
            ]
            for r in part.itertuples()
        ]
        s.p(f"{mode} acc@1, {slice_} queries:").table(
            Table(["arm", "task", "Δ acc@1", "95 % CI", "p", "Holm p", "queries", "seeds", "significant"], rows)
        )
    return s


def zero_shot_section(runs: StudyRuns, zs: pd.DataFrame, arms: list[str]) -> Section:
    s = Section(
        "Training against the untrained encoder",
        "Did training help? Validation mean retrieval acc@1 before any step (epoch 0) and after the last "
        "epoch, mean over seeds, next to the zero-shot encoder on the same queries; then each arm's test "
        "difference from zero-shot (a fixed reference: its only variance is the arm's seeds and the queries), "
        "Holm-adjusted over these rows.",
    )
    zero = runs.runs[(runs.runs["role"] == "zero-shot") & (runs.runs["status"] == "FINISHED")]
    key = "val/retrieval/acc_at_1/mean"
    zval = zero[f"metrics.{key}"].dropna() if f"metrics.{key}" in zero else pd.Series(dtype=float)
    rows = []
    for arm in arms:
        curves = [h for (a, _, k), h in runs.histories.items() if a == arm and k == key]
        if not curves:
            continue
        first = np.mean([h["value"].iloc[0] for h in curves])
        last = np.mean([h["value"].iloc[-1] for h in curves])
        rows.append([arm, f"{first:.3f}", f"{last:.3f}", f"{zval.iloc[0]:.3f}" if len(zval) else "—"])
    if rows:
        s.table(Table(["arm", "val acc@1 at epoch 0", "val acc@1 at the end", "zero-shot val acc@1"], rows))
    if not zs.empty:
        s.items(
            [
                f"{r.arm} − zero-shot, mean test retrieval acc@1 on {_slice_words(r.slice, r.n_queries)}: "
                f"{describe(_comparison(pd.Series(r._asdict())))}" + (" (significant)" if r.significant else "")
                for r in zs.itertuples()
            ]
        )
    return s


def _sig3(value: object) -> str:
    """A tuned value rounded to 3 significant digits, or — where none was recorded."""
    try:
        return f"{float(value):.3g}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"


def tuning_section(runs: StudyRuns, arms: list[str], images: dict[str, bytes]) -> Section:
    s = Section(
        "Tuning",
        "The best negative-sampling parameters per arm on validation, and how the objective "
        "responded to the random rate; pruned and failed trials are counted.",
    )
    rows = []
    for arm in arms:
        arm_run = runs.runs[(runs.runs["role"] == "arm") & (runs.runs["arm"] == arm)]
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
    for arm in arms:
        for name, caption in (
            (f"{arm}_optuna_history.png", f"{arm}: objective per trial"),
            (f"{arm}_objective_vs_random_rate.png", f"{arm}: objective vs initial random rate"),
        ):
            if name in images:
                s.figure(name, caption)
    return s
