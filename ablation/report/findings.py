"""The report's sections that say what the study found: the verdict sentence, the paired comparison, training
against the untrained encoder, and tuning."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from ablation.report.reader import StudyRuns
from ablation.report.render import Section, Table
from ablation.report.stats import MIN_SEEDS, Comparison, describe, detectable


def as_comparison(row: pd.Series) -> Comparison:
    return Comparison(
        row["diff"],
        row["ci_low"],
        row["ci_high"],
        row["p_value"],
        int(row["n_queries"]),
        int(row["n_seeds"]),
        row["p_adjusted"],
        float(row.get("se", float("nan"))),
        float(row.get("df", float("nan"))),
    )


def _slice_words(slice_: str, n: int) -> str:
    return {
        "all": f"all {n:,} test queries",
        "unseen": f"the {n:,} unseen test queries (neither text in training)",
    }.get(slice_, f"the {slice_} slice ({n:,} queries)")


SIDES = {
    "shared": "one encoder shared by the argument and the candidate side (Siamese)",
    "unshared": "separate towers",
    "shared_projection": "separate towers with one shared similarity head",
    "shared_embeddings": "separate towers sharing the token embeddings",
    "frozen_candidate": "separate towers with the candidate side frozen",
}


def _effect(c: Comparison) -> str:
    """`+0.012 (adjusted CI −0.010 to +0.034)`."""
    return f"{c.diff:+.3f} (adjusted 95 % CI {c.low:+.3f} to {c.high:+.3f})"


def _against(c: Comparison) -> str:
    if not c.seed_variance_known:
        return "cannot be told apart with so few seeds"
    if not c.significant:
        return "does not differ detectably from it"
    return f"beats it by {c.diff:.3f}" if c.diff > 0 else f"loses {-c.diff:.3f} to it"


def beats_untrained(parts: list[tuple[str, Comparison]], n_queries: int, slice_: str = "unseen") -> str:
    """The sentence a reader asks for first: whether any trained arm beats the untrained encoder on the
    slice, and which; where the seed variance is unknown, that it was not tested. `parts`: (arm label, its
    comparison against zero-shot on that slice)."""
    where = _slice_words(slice_, n_queries)
    if not parts:
        return f"Whether training beats the untrained encoder on {where} was not measured (no zero-shot run)."
    if not any(c.seed_variance_known for _, c in parts):
        seeds = min(c.n_seeds for _, c in parts)
        return (
            f"Whether a trained arm beats the untrained encoder on {where} is not tested ({seeds} seed(s); "
            f"{MIN_SEEDS} needed)."
        )
    better = [(a, c) for a, c in parts if c.significant and c.diff > 0]
    if not better:
        return f"No trained arm beats the untrained encoder on {where}."
    verb = "beats" if len(better) == 1 else "beat"
    return (
        " and ".join(a for a, _ in better)
        + f" {verb} the untrained encoder on {where}: "
        + "; ".join(f"{a} {_effect(c)}" for a, c in better)
        + "."
    )


def _reading(arm: str, ref: str, c: Comparison, where: str) -> str:
    if not c.seed_variance_known:
        return f"with {c.n_seeds} seed(s) per arm no call can be made on {where}"
    if c.significant:
        better, worse = (arm, ref) if c.diff > 0 else (ref, arm)
        return f"{better} beats {worse} by {abs(c.diff):.3f} on {where}"
    return f"no difference between {arm} and {ref} is detected on {where}"


def _plain_sharing(arm: str, ref: str, c: Comparison, mde: float) -> str:
    """The sharing effect of one arm in words, for the verdict's second sentence."""
    if not c.seed_variance_known:
        return f"{arm} against {ref} is not tested ({c.n_seeds} seeds)"
    if c.significant:
        better, worse = (arm, ref) if c.diff > 0 else (ref, arm)
        return f"{better} beats {worse} by {abs(c.diff):.3f}"
    size = f" (the study would find ±{mde:.3f})" if math.isfinite(mde) else ""
    return f"{arm} and {ref} are not told apart{size}"


def _sharing(comp: pd.DataFrame, arms: list[str], mode: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """Per arm: the plain phrase (unseen queries, else all), the readings, the numbers and the size caveats."""
    ref = arms[0]
    head = comp[(comp["task"] == "mean") & (comp["mode"] == mode)].set_index(["arm", "slice"])
    family = int((comp["family"] == "headline").sum() / (len(arms) - 1))
    plain, readings, numbers, caveats = [], [], [], []
    for arm in arms[1:]:
        rows = {sl: as_comparison(head.loc[(arm, sl)]) for sl in ("all", "unseen") if (arm, sl) in head.index}
        if not rows:
            continue
        numbers.append(
            f"{arm} − {ref}: "
            + "; ".join(f"{_effect(c)} on {_slice_words(sl, c.n_queries)}" for sl, c in rows.items())
            + f" ({min(c.n_seeds for c in rows.values())} seeds)."
        )
        mdes = {
            sl: detectable(float(head.loc[(arm, sl)]["se"]), float(head.loc[(arm, sl)]["df"]), family) for sl in rows
        }
        key = "unseen" if "unseen" in rows else "all"
        plain.append(_plain_sharing(arm, ref, rows[key], mdes[key]))
        for sl, c in rows.items():
            where = _slice_words(sl, c.n_queries)
            readings.append(_reading(arm, ref, c, where))
            if not c.significant and (math.isnan(mdes[sl]) or abs(c.diff) < mdes[sl]):
                caveats.append(
                    f"on {where} it would find a difference only from ±{mdes[sl]:.3f} on (80 % power at the Holm "
                    f"level), and the measured one, {c.diff:+.3f}, is smaller"
                    if not math.isnan(mdes[sl])
                    else f"on {where} the seed variance is unknown"
                )
    return plain, readings, numbers, caveats


def _against_zero(zs: pd.DataFrame, arms: list[str]) -> tuple[str, list[str], list[str]]:
    """The first sentence (unseen queries), the readings and the numbers against the untrained encoder."""
    first, readings, numbers = "", [], []
    zero = zs.set_index(["arm", "slice"]) if not zs.empty else pd.DataFrame()
    for sl in ("all", "unseen") if not zero.empty else ():
        parts = [(a, as_comparison(zero.loc[(a, sl)])) for a in arms if (a, sl) in zero.index]
        if not parts:
            continue
        if sl == "unseen":
            first = beats_untrained(parts, parts[0][1].n_queries)
        numbers.append(
            f"Against the untrained encoder on {_slice_words(sl, parts[0][1].n_queries)}: "
            + "; ".join(f"{a} − zero-shot {_effect(c)}" for a, c in parts)
            + "."
        )
        better = [a for a, c in parts if c.significant and c.diff > 0]
        worse = [(a, c) for a, c in parts if c.significant and c.diff < 0]
        where = "unseen queries" if sl == "unseen" else "all queries"
        if not any(c.seed_variance_known for _, c in parts):
            readings.append(f"against the untrained encoder on {where} nothing is tested with so few seeds")
        elif not better:
            none = "neither arm beats" if len(parts) == 2 else "no arm beats"
            readings.append(
                f"{none} the untrained encoder on {where}"
                + "".join(f"; {a} loses {-c.diff:.3f} to it" for a, c in worse)
            )
        else:
            readings.append("; ".join(f"{a} {_against(c)} on {where}" for a, c in parts))
    return first, readings, numbers


def verdict(comp: pd.DataFrame, zs: pd.DataFrame, arms: list[str], mode: str) -> str:
    """The answer in two paragraphs that cannot be misread. The plain reading first, in two sentences:
    whether any trained arm beats the untrained encoder on unseen queries, and what sharing does there.
    Then the reading in full, the question with the sharing effect on the objective's metric on all and
    unseen queries (with the intervals that make the call), each arm against the untrained encoder, and a
    size caveat where the study is too small to detect the effect it measured. The same text is the MLflow
    experiment's and study run's description."""
    if comp.empty or len(arms) < 2:
        return "No verdict: fewer than two arms have finished final runs with per-query results."
    ref = arms[0]
    question = (
        f"Question: does {ref} ({SIDES.get(ref, ref)}) beat "
        + " and ".join(f"{a} ({SIDES.get(a, a)})" for a in arms[1:])
        + f"? Measured on mean {mode} acc@1 over the 8 test tasks, paired by seed and query."
    )
    plain, readings, numbers, caveats = _sharing(comp, arms, mode)
    first, zero_readings, zero_numbers = _against_zero(zs, arms)
    unseen = "unseen" in set(comp["slice"])
    text = (first + " " if first else "") + f"Sharing, on {'unseen' if unseen else 'all'} queries: " + "; ".join(plain)
    text += (
        ".\n\nIn full: " + "; ".join(readings + zero_readings) + ". " + " ".join([question, *numbers, *zero_numbers])
    )
    if caveats:
        text += " Size: this study is too small to settle the question: " + "; ".join(caveats) + "."
    return text


def comparison_section(comp: pd.DataFrame, arms: list[str]) -> Section:
    s = Section(
        "Paired comparison against " + arms[0],
        "Each row is the difference in test acc@1 (arm minus reference) over the same queries, paired by seed "
        "and query. Intervals and p account for both seeds and queries (a t interval whose variance adds the "
        "spread of the per-seed differences and of the per-query differences). p-values are Holm-adjusted: "
        "per-task rows over the 8 tasks of their slice and mode, the means over tasks over the 4 headline "
        "rows of each arm. The adjusted interval is adjusted with them (level 1 − 0.05·p/Holm p), so it "
        "excludes 0 exactly when the row is called significant (Holm p < 0.05, with at least "
        f"{MIN_SEEDS} seeds); the unadjusted 95 % interval, which ignores the number of comparisons, is beside it.",
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
                f"[{r.ci_low_raw:+.3f}, {r.ci_high_raw:+.3f}]",
                f"{r.p_value:.3f}",
                f"{r.p_adjusted:.3f}",
                f"{r.n_queries:,}",
                str(r.n_seeds),
                r.call,
            ]
            for r in part.itertuples()
        ]
        head = ["arm", "task", "Δ acc@1", "adjusted CI (the call)", "unadjusted 95 % CI", "p", "Holm p"]
        s.p(f"{mode} acc@1, {slice_} queries:").table(Table([*head, "queries", "seeds", "call"], rows))
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
                f"{describe(as_comparison(pd.Series(r._asdict())))}" + (" (significant)" if r.significant else "")
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


def per_seed_table(runs: StudyRuns, arms: list[str], link: Callable[[str], str] | None = None) -> Table:
    """One row per final run: arm, seed, mean test acc@1 (retrieval and rerank; all and unseen queries) and
    its MLflow run id (linked to its page with `link`), so that any number of the report can be traced."""
    keys = [
        ("retrieval, all", "metrics.test/retrieval/acc_at_1/mean"),
        ("retrieval, unseen", "metrics.test/unseen/retrieval/acc_at_1/mean"),
        ("rerank, all", "metrics.test/rerank/acc_at_1/mean"),
    ]
    rows = []
    for arm in arms:
        for _, r in runs.finals(arm).sort_values("seed").iterrows():
            cells = [f"{r[k]:.3f}" if k in r and pd.notna(r[k]) else "—" for _, k in keys]
            rows.append([arm, str(r["seed"]), *cells, str(r["run_id"])])
    links = {(i, len(keys) + 2): link(row[-1]) for i, row in enumerate(rows)} if link else {}
    return Table(["arm", "seed", *(f"acc@1 {name}" for name, _ in keys), "MLflow run"], rows, links=links)


def discussion_section(summary: pd.DataFrame, counts: pd.DataFrame, arms: list[str]) -> Section:
    """Two facts a reader needs beside the verdict: what reranking does to acc@1, and how many parameters
    each arm trains."""
    s = Section("Reranking and capacity", "Two things that bear on the comparison.")
    mean = summary[(summary["task"] == "mean") & (summary["metric"] == "acc_at_1") & (summary["slice"] == "all")]
    lines = []
    for arm in arms:
        got = mean[mean["arm"] == arm].set_index("mode")["mean"]
        if {"retrieval", "rerank"} <= set(got.index):
            d = got["rerank"] - got["retrieval"]
            verb = "raises" if d > 0 else "lowers" if d < 0 else "leaves"
            lines.append(
                f"{arm}: reranking the top candidates with the pair classifier {verb} mean test acc@1 "
                f"from {got['retrieval']:.3f} to {got['rerank']:.3f} ({d:+.3f})"
            )
    if lines:
        lines.append(
            "where reranking lowers acc@1, the classifier undoes part of what the bi-encoder ranked right: the "
            "verdict is taken on the study's objective mode, and the other mode is in the tables above"
        )
    if not counts.empty and "trainable" in counts:
        trainable = counts.set_index("arm")["trainable"]
        ref = arms[0]
        parts = [f"{a} {int(trainable[a]):,}" for a in arms if a in trainable]
        ratio = [
            f"{a} trains {trainable[a] / trainable[ref]:.2f}× the parameters of {ref}"
            for a in arms[1:]
            if a in trainable and ref in trainable and trainable[ref]
        ]
        lines.append(
            "trainable parameters: "
            + ", ".join(parts)
            + (f" ({'; '.join(ratio)})" if ratio else "")
            + ": separate towers double what is learned from the same pairs, so a difference between the arms "
            "is also one of capacity per training example"
        )
    return s.items(lines) if lines else s.p("Nothing to say: no final runs with both modes.")
