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
from ablation.errors import redact
from ablation.evaluation.ranking import metric_label
from ablation.io import REPO_ROOT, write_csv_atomic, write_text_atomic
from ablation.report.anchors import anchors_section, anchors_table
from ablation.report.figures import report_figures
from ablation.report.findings import (
    comparison_section,
    discussion_section,
    per_seed_table,
    tuning_notes,
    tuning_section,
    verdict,
    zero_shot_section,
)
from ablation.report.levels import level_reference
from ablation.report.publish import publish
from ablation.report.reader import StudyRuns, read_study
from ablation.report.render import Section, Table, to_html, to_markdown
from ablation.report.tables import against_zero_shot, comparisons, headline, headline_metrics, param_table, summary
from ablation.tracking.view import run_url, ui_base


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    summary: Path


def _headline_table(
    summary_table: pd.DataFrame, mode: str, metric: str, slice_: str = "all", zs: pd.DataFrame | None = None
) -> Table | None:
    """One headline table; bold marks a column's best row where it leads the runner-up by more than the
    larger seed sd of the two; against the zero-shot row (one fixed run, no seed sd) only where the report's
    own test against zero-shot calls it (its mean retrieval acc@1), so bold never says what the verdict
    does not."""
    t = headline(summary_table, mode, metric, slice_)
    if t.empty:
        return None
    cols = [*TASKS, "mean"]
    rows, bold = [], set()
    for arm in t.index:
        cells = [arm]
        for task in cols:
            m, s = t["mean"].loc[arm, task], t["std"].loc[arm, task]
            fixed = arm == "zero-shot"  # one deterministic run: no seed spread to show
            cells.append("—" if pd.isna(m) else f"{m:.3f} ± —" if fixed else f"{m:.3f} ± {s:.3f}")
        rows.append(cells)
    called = set()
    if zs is not None and not zs.empty and mode == "retrieval" and metric == "acc_at_1":
        hit = zs[(zs["slice"] == slice_) & zs["significant"]]
        called = {(r.arm, r.diff > 0) for r in hit.itertuples()}
    for c, task in enumerate(cols, start=1):
        ranked = t["mean"][task].dropna().sort_values(ascending=False)
        if len(ranked) < 2:
            continue
        first, second = ranked.index[0], ranked.index[1]
        if "zero-shot" in (first, second):
            trained = second if first == "zero-shot" else first
            leads = task == "mean" and (trained, first != "zero-shot") in called
        else:
            leads = ranked.iloc[0] - ranked.iloc[1] > max(t["std"].loc[first, task], t["std"].loc[second, task])
        if leads:
            bold.add((list(t.index).index(first), c))
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
    precision = first.get("tags.precision") if first is not None else None
    device += f", {precision}" if isinstance(precision, str) else ""
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
            f"on {study.get('objective', '?')}; trials used: "
            + ", ".join(f"{arm} {runs.trials_used(arm)}" for arm in arms),
            _status(runs, arms, study),
            f"packages: {versions or 'not recorded'}",
        ]
    )
    s.p("Resolved config:").pre(
        yaml.safe_dump(cfg, sort_keys=False) if cfg else "(not recorded: the study did not finish)"
    )
    return s


def _status(runs: StudyRuns, arms: list[str], study: dict) -> str:
    """`status: complete` only when the study run is FINISHED, every arm used its budget and every (arm,
    seed) has exactly one finished final run; else `status: incomplete`, with what is off."""
    off = [] if runs.study_run.info.status == "FINISHED" else [f"the study run is {runs.study_run.info.status}"]
    if study:  # the same accounting as the runner's (study/state.py)
        off += runs.state.missing(
            arms, study.get("seeds") or [], study.get("n_trials", 0), study.get("zero_shot", True)
        )
    return "status: complete" if not off and study else "status: incomplete (" + "; ".join(off or ["no config"]) + ")"


def _clipping_table(runs: StudyRuns, arms: list[str]) -> tuple[str, Table] | None:
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


def build_report(
    study: str,
    tracking_uri: str | None = None,
    out_dir: str | None = None,
    experiment: str | None = None,
    zero_shot_from: str | None = None,
) -> ReportPaths:
    """Read study `study` from MLflow and write report.html, report.md, figures and summary.csv.
    `zero_shot_from`: the study whose zero-shot run is the reference (default: for a sweep's level without
    its own, the level whose reference it shares; a sweep's own report is `sweep.build_sweep_report`)."""
    from ablation.tracking.store import Tracker, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    zero_shot_from = zero_shot_from or level_reference(study, uri, experiment)
    runs = read_study(study, uri, experiment, zero_shot_from)
    cfg_study = runs.config.get("study") or {}
    arms = list(cfg_study.get("arms") or runs.runs[runs.runs["role"] == "arm"]["arm"].dropna().unique())
    seeds = list(cfg_study.get("seeds") or [])
    objective = cfg_study.get("objective", "val/retrieval/acc_at_1/mean")
    rerank_k = int((runs.config.get("eval") or {}).get("rerank_k", 10))
    out = Path(out_dir) if out_dir else REPO_ROOT / "reports" / study
    table = summary(runs, arms, rerank_k)
    comp = comparisons(runs, arms)
    zs = against_zero_shot(runs, arms)
    mode = objective.split("/")[1] if objective.count("/") == 3 else "retrieval"
    answer = verdict(comp, zs, arms, mode)
    publish(uri, runs, arms, comp, answer, zs)
    figures = report_figures(runs, arms, objective, cfg_study.get("direction", "maximize") == "maximize", comp)
    images = {}
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        images[name] = buf.getvalue()

    sections = [
        Section(
            "Verdict",
            f"The answer on the study's objective metric ({mode} acc@1), with intervals over seeds and queries "
            "that are adjusted for the number of comparisons (they exclude 0 exactly when a difference is "
            "called); details in the comparison below.",
        ).paragraphs(answer),
    ]
    anchors = anchors_table({"": table}, arms, (runs.config.get("model") or {}).get("max_length"))
    if anchors is not None:
        sections.append(anchors_section(anchors))
    sections.append(_header(runs, arms))
    notes = _missing(runs, arms, seeds) + runs.warnings
    if notes:
        sections.append(
            Section(
                "Missing results and warnings",
                "What keeps this study from complete, and inconsistencies found in MLflow; rows of arms "
                "below are absent or rest on fewer seeds.",
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
        "unseen slice and (acc@1) on the self-copy slice, whose tasks hold few queries. Bold: a "
        "column's best row where it leads the runner-up by more than the larger seed sd of the two (against "
        "the zero-shot row, only where the test against zero-shot calls it). Pools grow from sdoc (a few "
        "same-debate counters) to "
        "epa (the whole split). Rerank recall@K is left out for K ≤ "
        f"rerank_k = {rerank_k}, where it equals retrieval recall@K.",
    )
    sizes = _slice_sizes(runs)
    for slice_ in ("all", "unseen", "self_copy"):
        tables = [
            (mode_, metric, _headline_table(table, mode_, metric, slice_, zs))
            for mode_, metric in headline_metrics(rerank_k)
            if slice_ != "self_copy" or metric == "acc_at_1"
        ]
        for mode_, metric, t in tables:
            if t is not None:
                head.p(f"{mode_} {metric_label(metric)}, {sizes.get(slice_, slice_)}:").table(t)
        if all(t is None for *_, t in tables) and runs.per_query:
            head.p(f"The {slice_.replace('_', '-')} slice holds no query of this study's test split.")
    head.p(
        f"Per seed (MLflow: experiment {runs.study_run.info.experiment_id} at {uri}; study run "
        f"{runs.study_run.info.run_id}; `make ui` opens it):"
    ).table(per_seed_table(runs, arms, lambda run: run_url(ui_base(uri), runs.study_run.info.experiment_id, run)))
    if "forest.png" in images:
        head.figure("forest.png", "Each arm minus the reference per task, with the Holm-adjusted intervals")
    sections += [
        head,
        comparison_section(comp, arms),
        zero_shot_section(runs, zs, arms),
        discussion_section(table, counts, arms),
    ]
    conv = Section(
        "Convergence",
        "Training loss per step (moving average; band = min to max over seeds) and validation "
        "acc@1 per epoch from epoch 0 (before any step): which arm learns faster, whether it has converged, "
        "and whether training helps at all.",
    )
    grads = Section(
        "Gradients",
        "Gradient norms per arm and part, before clipping, against the clip threshold; the cosine between the "
        "gradients the query side and the candidate side send into the encoder (negative = the sides pull "
        "apart); for two-encoder arms, how far the encoders drift from each other.",
    )
    clipping = _clipping_table(runs, arms)
    if clipping is not None:
        grads.p(clipping[0]).table(clipping[1])
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
    maximize = cfg_study.get("direction", "maximize") == "maximize"
    sections.append(tuning_section(runs, arms, images, tuning_notes(runs, arms, objective, maximize)))

    title = f"Ablation report: {study}"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        write_text_atomic(data, out / name)
    paths = ReportPaths(out / "report.html", out / "report.md", out / "summary.csv")
    write_csv_atomic(
        pd.concat(
            [
                table.assign(kind="test"),
                comp.assign(kind="comparison", metric="acc_at_1"),
                zs.assign(kind="zero-shot", metric="acc_at_1"),
            ],
            ignore_index=True,
        ),
        paths.summary,
    )
    write_text_atomic(redact(to_markdown(title, sections)), paths.markdown)
    write_text_atomic(redact(to_html(title, sections, images)), paths.html)
    tracker = Tracker(uri)
    for p in (paths.html, paths.markdown, paths.summary):
        tracker.log_artifact(runs.study_run.info.run_id, p, "report")
    return paths
