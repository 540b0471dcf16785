"""The report's sections of test results: the headline tables, the per-seed runs, the paired comparison,
training against the untrained encoder, and what reranking and capacity add to the reading."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ablation.evaluation.ranking import metric_label
from ablation.names import OBJECTIVE, TASKS, Role, metric_key
from ablation.report.reader import StudyRuns
from ablation.report.render import Section, Table
from ablation.report.stats import MIN_SEEDS, describe
from ablation.report.tables import headline, headline_metrics
from ablation.report.verdict import as_comparison, slice_words
from ablation.tracking.view import run_url, ui_base


def headline_table(
    summary_table: pd.DataFrame,
    mode: str,
    metric: str,
    slice_: str = "all",
    zs: pd.DataFrame | None = None,
    comp: pd.DataFrame | None = None,
) -> Table | None:
    """One headline table. Bold marks a column's best row only where one of the report's own tests calls
    it ahead of the runner-up: the paired comparison with the reference arm (`comp`, Holm-adjusted, acc@1
    per task and on the mean), or the test against zero-shot (`zs`, mean retrieval acc@1). Where no test
    compares the two rows, nothing is bold, so bold never says what the verdict does not."""
    t = headline(summary_table, mode, metric, slice_)
    if t.empty:
        return None
    cols = [*TASKS, "mean"]
    rows = []
    for arm in t.index:
        cells = [arm]
        for task in cols:
            m, s = t["mean"].loc[arm, task], t["std"].loc[arm, task]
            fixed = arm == "zero-shot"  # one deterministic run: no seed spread to show
            cells.append("—" if pd.isna(m) else f"{m:.3f} ± —" if fixed else f"{m:.3f} ± {s:.3f}")
        rows.append(cells)
    called = _called(mode, metric, slice_, zs, comp)
    bold = set()
    for c, task in enumerate(cols, start=1):
        ranked = t["mean"][task].dropna().sort_values(ascending=False)
        if len(ranked) >= 2 and (ranked.index[0], ranked.index[1], task) in called:
            bold.add((list(t.index).index(ranked.index[0]), c))
    return Table(["arm", *cols], rows, bold)


def _called(
    mode: str, metric: str, slice_: str, zs: pd.DataFrame | None, comp: pd.DataFrame | None
) -> set[tuple[str, str, str]]:
    """(winner, loser, task) of every difference a test of the report calls on this table's quantity."""
    if metric != "acc_at_1":
        return set()
    found = []
    if comp is not None and not comp.empty:
        found.append(comp[(comp["mode"] == mode) & (comp["slice"] == slice_) & comp["significant"]])
    if zs is not None and not zs.empty and mode == "retrieval":
        found.append(zs[(zs["slice"] == slice_) & zs["significant"]])
    out = set()
    for frame in found:
        for r in frame.itertuples():
            winner, loser = (r.arm, r.reference) if r.diff > 0 else (r.reference, r.arm)
            out.add((winner, loser, r.task))
    return out


def slice_sizes(runs: StudyRuns) -> dict[str, str]:
    """How each slice reads in table captions: `all 1,401 queries`, `unseen: 783 queries`."""
    frames = list(runs.per_query.values())
    if not frames:
        return {}
    f = frames[0]
    first = f[(f["task"] == f["task"].iloc[0]) & (f["mode"] == f["mode"].iloc[0])]  # one row per query
    out = {"all": f"all {len(first):,} queries"}
    if "unseen" in first:
        out["unseen"] = f"unseen slice, {int(first['unseen'].sum()):,} queries"
    if "self_copy" in f:
        per_task = f[f["mode"] == f["mode"].iloc[0]].groupby("task", sort=False)["self_copy"].sum()
        out["self_copy"] = (
            "self-copy slice (queries per task: " + ", ".join(f"{t} {int(v):,}" for t, v in per_task.items()) + ")"
        )
    return out


def per_seed_table(runs: StudyRuns, arms: list[str], link: Callable[[str], str] | None = None) -> Table:
    """One row per final run: arm, seed, mean test acc@1 (retrieval and rerank; all and unseen queries) and
    its MLflow run id (linked to its page with `link`), so that any number of the report can be traced."""
    keys = [
        ("retrieval, all", "metrics." + metric_key("test", "retrieval")),
        ("retrieval, unseen", "metrics." + metric_key("test", "retrieval", slice_="unseen")),
        ("rerank, all", "metrics." + metric_key("test", "rerank")),
    ]
    rows = []
    for arm in arms:
        for _, r in runs.finals(arm).sort_values("seed").iterrows():
            cells = [f"{r[k]:.3f}" if k in r and pd.notna(r[k]) else "—" for _, k in keys]
            rows.append([arm, str(r["seed"]), *cells, str(r["run_id"])])
    links = {(i, len(keys) + 2): link(row[-1]) for i, row in enumerate(rows)} if link else {}
    return Table(["arm", "seed", *(f"acc@1 {name}" for name, _ in keys), "MLflow run"], rows, links=links)


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
    zero = runs.runs[(runs.runs["role"] == Role.ZERO_SHOT) & (runs.runs["status"] == "FINISHED")]
    key = OBJECTIVE
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
                f"{r.arm} − zero-shot, mean test retrieval acc@1 on {slice_words(r.slice, r.n_queries)}: "
                f"{describe(as_comparison(pd.Series(r._asdict())))}" + (" (significant)" if r.significant else "")
                for r in zs.itertuples()
            ]
        )
    return s


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


def parameters_section(counts: pd.DataFrame) -> Section:
    """Parameter counts per arm: total and unique, so that sharing shows."""
    rows = [
        [f"{v:,}" if isinstance(v, (int, np.integer)) else str(v) for v in row]
        for row in counts.itertuples(index=False)
    ]
    return Section(
        "Parameter counts",
        "total counts shared modules once per side; unique counts each stored "
        "tensor once, so sharing shows up as unique < total.",
    ).table(Table(list(counts.columns), rows))


def results_section(
    runs: StudyRuns,
    arms: list[str],
    table: pd.DataFrame,
    zs: pd.DataFrame,
    comp: pd.DataFrame,
    rerank_k: int,
    uri: str,
    forest: bool,
) -> Section:
    """The headline tables per slice, mode and metric, the per-seed runs (linked to their pages in the
    MLflow at `uri`) and the forest figure when there is one."""
    head = Section(
        "Test results",
        "Mean ± standard deviation over seeds on the test split, on all queries, on the "
        "unseen slice and (acc@1) on the self-copy slice, whose tasks hold few queries. Bold: a "
        "column's best row where one of this report's tests calls it ahead of the runner-up (acc@1 only: the "
        "paired, Holm-adjusted comparison with the reference arm, and the test against zero-shot on the mean); "
        "where no test compares the two rows, nothing is bold. Pools grow from sdoc (a few "
        "same-debate counters) to "
        "epa (the whole split). Rerank recall@K is left out for K ≤ "
        f"rerank_k = {rerank_k}, where it equals retrieval recall@K.",
    )
    sizes = slice_sizes(runs)
    for slice_ in ("all", "unseen", "self_copy"):
        tables = [
            (mode_, metric, headline_table(table, mode_, metric, slice_, zs, comp))
            for mode_, metric in headline_metrics(rerank_k)
            if slice_ != "self_copy" or metric == "acc_at_1"
        ]
        for mode_, metric, t in tables:
            if t is not None:
                head.p(f"{mode_} {metric_label(metric)}, {sizes.get(slice_, slice_)}:").table(t)
        if all(t is None for *_, t in tables) and runs.per_query:
            head.p(f"The {slice_.replace('_', '-')} slice holds no query of this study's test split.")
    experiment, study_run = runs.study_run.info.experiment_id, runs.study_run.info.run_id
    head.p(f"Per seed (MLflow: experiment {experiment} at {uri}; study run {study_run}; `make ui` opens it):")
    head.table(per_seed_table(runs, arms, lambda run: run_url(ui_base(uri), experiment, run)))
    if forest:
        head.figure("forest.png", "Each arm minus the reference per task, with the Holm-adjusted intervals")
    return head
