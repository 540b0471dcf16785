"""The comparison report of a study, built from its MLflow runs only (so it can be rebuilt at any time)."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ablation.data.tasks import TASKS
from ablation.evaluation.ranking import metric_label
from ablation.io import REPO_ROOT, write_csv_atomic, write_text_atomic
from ablation.report.figures import report_figures
from ablation.report.reader import StudyRuns, read_study
from ablation.report.render import Section, Table, to_html, to_markdown
from ablation.report.stats import MIN_SEEDS, Comparison, describe
from ablation.report.tables import against_zero_shot, comparisons, headline, headline_metrics, param_table, summary


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    summary: Path


def _headline_table(summary_table: pd.DataFrame, mode: str, metric: str, slice_: str = "all") -> Table | None:
    t = headline(summary_table, mode, metric, slice_)
    if t.empty:
        return None
    cols = [*TASKS, "mean"]
    rows, bold = [], set()
    best = t["mean"].max(axis=0)
    for r, arm in enumerate(t.index):
        cells = [arm]
        for c, task in enumerate(cols, start=1):
            m, s = t["mean"].loc[arm, task], t["std"].loc[arm, task]
            cells.append("—" if pd.isna(m) else f"{m:.3f} ± {s:.3f}")
            if pd.notna(m) and m == best[task] and t["mean"][task].notna().sum() > 1:
                bold.add((r, c))
        rows.append(cells)
    return Table(["arm", *cols], rows, bold)


def _slice_sizes(runs: StudyRuns) -> dict[str, str]:
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


def _header(runs: StudyRuns, arms: list[str]) -> Section:
    tags = runs.study_run.data.tags
    finals = runs.finals()
    cfg = runs.config
    first = finals.iloc[0] if not finals.empty else (runs.runs.iloc[0] if not runs.runs.empty else None)
    device = first.get("tags.device", "unknown") if first is not None else "unknown"
    model = (cfg.get("model") or {}).get("name", "unknown")
    versions = ", ".join(
        f"{k.removeprefix('version.')} {v}" for k, v in sorted(tags.items()) if k.startswith("version.")
    )
    study = cfg.get("study") or {}
    start = dt.datetime.fromtimestamp(runs.study_run.info.start_time / 1000, dt.timezone.utc)
    s = Section(
        "Study", "Everything needed to rerun this study: the commit, the corpus digest and the resolved config."
    )
    commits = sorted(set(finals["tags.git_commit"].dropna())) if "tags.git_commit" in finals else []
    s.items(
        [
            f"study: {runs.name}; started {start:%Y-%m-%d %H:%M} UTC",
            f"git commit: {tags.get('git_commit', 'unknown')}"
            + (f" (final runs: {', '.join(commits)})" if commits and commits != [tags.get("git_commit")] else "")
            + f"; corpus digest: {tags.get('corpus_digest', 'unknown')}",
            f"model: {model}; device: {device}",
            f"arms: {', '.join(arms)}; seeds: {study.get('seeds', '?')}; "
            f"tuning budget: {study.get('n_trials', '?')} trials per arm "
            f"on {study.get('objective', '?')}",
            f"packages: {versions or 'not recorded'}",
        ]
    )
    s.p("Resolved config:").pre(
        yaml.safe_dump(cfg, sort_keys=False) if cfg else "(not recorded: the study did not finish)"
    )
    return s


def _missing(runs: StudyRuns, arms: list[str], seeds: list) -> list[str]:
    notes = []
    for arm in arms:
        done = runs.finals(arm)
        if len(done) < len(seeds):
            failed = runs.runs[
                (runs.runs["role"] == "final") & (runs.runs["arm"] == arm) & (runs.runs["status"] == "FAILED")
            ]
            reasons = "; ".join(str(x) for x in failed["failure"].dropna().unique()[:2])
            notes.append(
                f"{arm}: {len(done)} of {len(seeds)} final runs finished"
                + (f" ({len(failed)} failed: {reasons})" if len(failed) else " (missing or still running)")
            )
    return notes


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


def _comparison_section(comp: pd.DataFrame, arms: list[str]) -> Section:
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


def _zero_shot_section(runs: StudyRuns, zs: pd.DataFrame, arms: list[str]) -> Section:
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


def _tuning_section(runs: StudyRuns, arms: list[str], images: dict[str, bytes]) -> Section:
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


def build_report(
    study: str, tracking_uri: str | None = None, out_dir: str | None = None, experiment: str | None = None
) -> ReportPaths:
    """Read study `study` from MLflow and write report.html, report.md, figures and summary.csv."""
    from ablation.tracking.store import Tracker, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    runs = read_study(study, uri, experiment)
    cfg_study = runs.config.get("study") or {}
    arms = list(cfg_study.get("arms") or runs.runs[runs.runs["role"] == "arm"]["arm"].dropna().unique())
    seeds = list(cfg_study.get("seeds") or [])
    objective = cfg_study.get("objective", "val/retrieval/acc_at_1/mean")
    rerank_k = int((runs.config.get("eval") or {}).get("rerank_k", 10))
    out = Path(out_dir) if out_dir else REPO_ROOT / "reports" / study
    table = summary(runs, arms, rerank_k)
    comp = comparisons(runs, arms)
    zs = against_zero_shot(runs, arms)
    figures = report_figures(runs, arms, objective, cfg_study.get("direction", "maximize") == "maximize")
    images = {}
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        images[name] = buf.getvalue()

    mode = objective.split("/")[1] if objective.count("/") == 3 else "retrieval"
    sections = [
        Section(
            "Verdict",
            f"The answer on the study's objective metric ({mode} acc@1), with its 95 % interval "
            "over seeds and queries; details in the comparison below.",
        ).p(verdict(comp, arms, mode)),
        _header(runs, arms),
    ]
    notes = _missing(runs, arms, seeds)
    if notes:
        sections.append(
            Section(
                "Missing results", "Arms below lack final runs; their rows are absent or rest on fewer seeds."
            ).items(notes)
        )
    counts = param_table(runs, arms)
    sections.append(
        Section(
            "Parameter counts",
            "total counts shared modules once per side; unique counts each stored "
            "tensor once, so sharing shows up as unique < total.",
        ).table(
            Table(
                list(counts.columns),
                [
                    [f"{v:,}" if isinstance(v, (int, np.integer)) else str(v) for v in row]
                    for row in counts.itertuples(index=False)
                ],
            )
        )
    )
    head = Section(
        "Test results",
        "Mean ± standard deviation over seeds on the test split, on all queries, on the "
        "unseen slice and (acc@1) on the self-copy slice, whose tasks hold few queries; the "
        "best arm per task is in bold. Pools grow from sdoc (a few same-debate counters) to "
        "epa (the whole split). Rerank recall@K is left out for K ≤ "
        f"rerank_k = {rerank_k}, where it equals retrieval recall@K.",
    )
    sizes = _slice_sizes(runs)
    for slice_ in ("all", "unseen", "self_copy"):
        tables = [
            (mode_, metric, _headline_table(table, mode_, metric, slice_))
            for mode_, metric in headline_metrics(rerank_k)
            if slice_ != "self_copy" or metric == "acc_at_1"
        ]
        for mode_, metric, t in tables:
            if t is not None:
                head.p(f"{mode_} {metric_label(metric)}, {sizes.get(slice_, slice_)}:").table(t)
        if all(t is None for *_, t in tables) and runs.per_query:
            head.p(f"The {slice_.replace('_', '-')} slice holds no query of this study's test split.")
    sections += [head, _comparison_section(comp, arms), _zero_shot_section(runs, zs, arms)]
    conv = Section(
        "Convergence",
        "Training loss per step (moving average; band = min to max over seeds) and validation "
        "acc@1 per epoch from epoch 0 (before any step): which arm learns faster, whether it has converged, "
        "and whether training helps at all.",
    )
    grads = Section(
        "Gradients",
        "Gradient norms per arm and part; the cosine between the gradients the query side and "
        "the candidate side send into the encoder (negative = the sides pull apart); for two-encoder "
        "arms, how far the encoders drift from each other.",
    )
    for sec, names in (
        (
            conv,
            [
                ("loss.png", "training loss"),
                ("val_acc.png", "validation retrieval accuracy per epoch"),
                ("val_rerank_acc.png", "validation reranked accuracy per epoch"),
            ],
        ),
        (
            grads,
            [
                ("grad_norm.png", "total gradient norm"),
                ("grad_parts.png", "gradient norm per part"),
                ("grad_cosine.png", "query/candidate gradient cosine"),
                ("encoder_distance.png", "encoder drift"),
            ],
        ),
    ):
        for name, caption in names:
            if name in images:
                sec.figure(name, caption)
        sections.append(sec)
    sections.append(_tuning_section(runs, arms, images))

    title = f"Ablation report: {study}"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        write_text_atomic(data, out / name)
    paths = ReportPaths(out / "report.html", out / "report.md", out / "summary.csv")
    write_csv_atomic(
        pd.concat(
            [table.assign(kind="test"), comp.assign(kind="comparison"), zs.assign(kind="zero-shot")], ignore_index=True
        ),
        paths.summary,
    )
    write_text_atomic(to_markdown(title, sections), paths.markdown)
    write_text_atomic(to_html(title, sections, images), paths.html)
    tracker = Tracker(uri)
    for p in (paths.html, paths.markdown, paths.summary):
        tracker.log_artifact(runs.study_run.info.run_id, p, "report")
    return paths
