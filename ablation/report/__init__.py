"""The comparison report of a study, built from its MLflow runs only (so it can be rebuilt at any time)."""

from __future__ import annotations

import io
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import yaml

from ablation.config import TASKS
from ablation.corpus import REPO_ROOT
from ablation.io import write_csv_atomic, write_text_atomic
from ablation.report.figures import report_figures
from ablation.report.reader import StudyRuns, read_study
from ablation.report.render import Section, Table, to_html, to_markdown
from ablation.report.stats import Comparison, sentence
from ablation.report.tables import HEADLINE, comparisons, headline, param_table, summary

METRIC_NAMES = {"acc_at_1": "acc@1", "recall_at_5": "recall@5", "recall_at_10": "recall@10", "mrr": "MRR"}


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    summary: Path


def _headline_table(summary_table: pd.DataFrame, mode: str, metric: str) -> Table | None:
    t = headline(summary_table, mode, metric)
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


def _header(runs: StudyRuns, arms: list[str]) -> Section:
    tags = runs.study_run.data.tags
    finals = runs.finals()
    cfg = runs.config
    first = finals.iloc[0] if not finals.empty else (runs.runs.iloc[0] if not runs.runs.empty else None)
    device = first.get("tags.device", "unknown") if first is not None else "unknown"
    model = (cfg.get("model") or {}).get("name", "unknown")
    versions = ", ".join(f"{k.removeprefix('version.')} {v}" for k, v in sorted(tags.items()) if k.startswith("version."))
    study = cfg.get("study") or {}
    start = dt.datetime.fromtimestamp(runs.study_run.info.start_time / 1000, dt.timezone.utc)
    s = Section("Study", "Everything needed to rerun this study: the commit, the corpus digest and the resolved config.")
    commits = sorted(set(finals["tags.git_commit"].dropna())) if "tags.git_commit" in finals else []
    s.items([
        f"study: {runs.name}; started {start:%Y-%m-%d %H:%M} UTC",
        f"git commit: {tags.get('git_commit', 'unknown')}"
        + (f" (final runs: {', '.join(commits)})" if commits and commits != [tags.get("git_commit")] else "")
        + f"; corpus digest: {tags.get('corpus_digest', 'unknown')}",
        f"model: {model}; device: {device}",
        f"arms: {', '.join(arms)}; seeds: {study.get('seeds', '?')}; tuning budget: {study.get('n_trials', '?')} trials per arm "
        f"on {study.get('objective', '?')}",
        f"packages: {versions or 'not recorded'}",
    ])
    s.p("Resolved config:").pre(yaml.safe_dump(cfg, sort_keys=False) if cfg else "(not recorded: the study did not finish)")
    return s


def _missing(runs: StudyRuns, arms: list[str], seeds: list) -> list[str]:
    notes = []
    for arm in arms:
        done = runs.finals(arm)
        if len(done) < len(seeds):
            failed = runs.runs[(runs.runs["role"] == "final") & (runs.runs["arm"] == arm) & (runs.runs["status"] == "FAILED")]
            reasons = "; ".join(str(x) for x in failed["failure"].dropna().unique()[:2])
            notes.append(f"{arm}: {len(done)} of {len(seeds)} final runs finished"
                         + (f" ({len(failed)} failed: {reasons})" if len(failed) else " (missing or still running)"))
    return notes


def _comparison_section(comp: pd.DataFrame, arms: list[str]) -> Section:
    s = Section("Paired comparison against " + arms[0],
                "Each row is the difference in test acc@1 (arm minus reference) over the same queries, averaged over "
                "seeds; the interval is a 95 % bootstrap CI over queries and p is a sign-flip test of no difference.")
    if comp.empty:
        return s.p("No comparison: fewer than two arms with per-query results.")
    lines = []
    for arm in comp["arm"].unique():
        for mode in ("rerank", "retrieval"):
            part = comp[(comp["arm"] == arm) & (comp["mode"] == mode)]
            sig = part[part["significant"]]
            better, worse = int((sig["diff"] > 0).sum()), int((sig["diff"] < 0).sum())
            lines.append(f"{arm} vs {arms[0]}, {mode} acc@1: {part['diff'].mean():+.3f} on average over the 8 tasks; "
                         f"significantly better on {better} task(s), worse on {worse}, no significant difference on "
                         f"{len(part) - better - worse}.")
    s.p("In short:").items(lines)
    for mode in ("rerank", "retrieval"):
        part = comp[comp["mode"] == mode]
        rows = [[r.arm, r.task, f"{r.diff:+.3f}", f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]", f"{r.p_value:.3f}", str(r.n_queries),
                 "yes" if r.significant else "no"] for r in part.itertuples()]
        s.p(f"{mode} acc@1:").table(Table(["arm", "task", "Δ acc@1", "95 % CI", "p", "queries", "significant"], rows))
        s.items([sentence(r.task, r.arm, r.reference, Comparison(r.diff, r.ci_low, r.ci_high, r.p_value, r.n_queries))
                 for r in part.itertuples()])
    return s


def _tuning_section(runs: StudyRuns, arms: list[str], images: dict[str, bytes]) -> Section:
    s = Section("Tuning", "The best negative-sampling parameters per arm on validation, and how the objective "
                          "responded to the random rate; pruned and failed trials are counted.")
    rows = []
    for arm in arms:
        arm_run = runs.runs[(runs.runs["role"] == "arm") & (runs.runs["arm"] == arm)]
        tags = arm_run.iloc[0] if not arm_run.empty else pd.Series(dtype=object)
        trials = runs.trials(arm)
        states = trials["state"].fillna("failed").tolist() if not trials.empty else []
        rows.append([arm, str(tags.get("tags.best.negatives.random_rate", "—")), str(tags.get("tags.best.negatives.random_rate_decay", "—")),
                     str(states.count("complete")), str(states.count("pruned")), str(len(states) - states.count("complete") - states.count("pruned"))])
    s.table(Table(["arm", "best random_rate", "best random_rate_decay", "complete", "pruned", "failed"], rows))
    for arm in arms:
        for name, caption in ((f"{arm}_optuna_history.png", f"{arm}: objective per trial"),
                              (f"{arm}_objective_vs_random_rate.png", f"{arm}: objective vs initial random rate")):
            if name in images:
                s.figure(name, caption)
    return s


def build_report(study: str, tracking_uri: str | None = None, out_dir: str | None = None, experiment: str | None = None,
                 n_resamples: int = 10000) -> ReportPaths:
    """Read study `study` from MLflow and write report.html, report.md, figures and summary.csv."""
    from ablation.tracking import Tracker, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    runs = read_study(study, uri, experiment)
    cfg_study = runs.config.get("study") or {}
    arms = list(cfg_study.get("arms") or runs.runs[runs.runs["role"] == "arm"]["arm"].dropna().unique())
    seeds = list(cfg_study.get("seeds") or [])
    objective = cfg_study.get("objective", "val/rerank/acc_at_1/mean")
    out = Path(out_dir) if out_dir else REPO_ROOT / "reports" / study
    table = summary(runs, arms)
    comp = comparisons(runs, arms, n_resamples)
    figures = report_figures(runs, arms, objective, cfg_study.get("direction", "maximize") == "maximize")
    images = {}
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        images[name] = buf.getvalue()

    sections = [_header(runs, arms)]
    notes = _missing(runs, arms, seeds)
    if notes:
        sections.append(Section("Missing results", "Arms below lack final runs; their rows are absent or rest on fewer seeds.").items(notes))
    counts = param_table(runs, arms)
    sections.append(Section("Parameter counts", "total counts shared modules once per side; unique counts each stored "
                                                "tensor once, so sharing shows up as unique < total.")
                    .table(Table(list(counts.columns), [[str(v) for v in row] for row in counts.itertuples(index=False)])))
    head = Section("Test results", "Mean ± standard deviation over seeds on the test split; the best arm per task is in "
                                   "bold. Pools grow from sdoc (a few same-debate counters) to epa (the whole split).")
    for mode, metric in HEADLINE:
        t = _headline_table(table, mode, metric)
        if t is not None:
            head.p(f"{mode} {METRIC_NAMES[metric]}:").table(t)
    sections += [head, _comparison_section(comp, arms)]
    conv = Section("Convergence", "Training loss per step (moving average; band = min to max over seeds) and validation "
                                  "reranked acc@1 per epoch: which arm learns faster, and whether it has converged.")
    grads = Section("Gradients", "Gradient norms per arm and part; the cosine between the gradients the query side and "
                                 "the candidate side send into the encoder (negative = the sides pull apart); for two-encoder "
                                 "arms, how far the encoders drift from each other.")
    for sec, names in ((conv, [("loss.png", "training loss"), ("val_acc.png", "validation accuracy per epoch")]),
                       (grads, [("grad_norm.png", "total gradient norm"), ("grad_parts.png", "gradient norm per part"),
                                ("grad_cosine.png", "query/candidate gradient cosine"), ("encoder_distance.png", "encoder drift")])):
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
    write_csv_atomic(pd.concat([table.assign(kind="test"), comp.assign(kind="comparison")], ignore_index=True), paths.summary)
    write_text_atomic(to_markdown(title, sections), paths.markdown)
    write_text_atomic(to_html(title, sections, images), paths.html)
    client = Tracker(uri).client
    for p in (paths.html, paths.markdown, paths.summary):
        client.log_artifact(runs.study_run.info.run_id, str(p), "report")
    return paths
