"""The comparison report of a study, built from its MLflow runs only (so it can be rebuilt at any time)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ablation.errors import redact
from ablation.io import REPO_ROOT, write_csv_atomic, write_text_atomic
from ablation.names import OBJECTIVE, Role
from ablation.report.figures import report_figures
from ablation.report.levels import level_reference
from ablation.report.publish import publish
from ablation.report.reader import StudyRuns, read_study
from ablation.report.render import Section, to_html, to_markdown
from ablation.report.sections.anchors import anchors_section, anchors_table
from ablation.report.sections.results import (
    comparison_section,
    discussion_section,
    parameters_section,
    results_section,
    zero_shot_section,
)
from ablation.report.sections.study import missing_section, study_section
from ablation.report.sections.training import convergence_section, gradients_section, tuning_notes, tuning_section
from ablation.report.tables import against_zero_shot, comparisons, param_table, summary
from ablation.report.verdict import verdict, verdict_section


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    summary: Path


def _pngs(figures: dict) -> dict[str, bytes]:
    images = {}
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        images[name] = buf.getvalue()
    return images


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
    from ablation.tracking.store import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    runs = read_study(study, uri, experiment, zero_shot_from or level_reference(study, uri, experiment))
    cfg_study = runs.config.get("study") or {}
    arms = list(cfg_study.get("arms") or runs.runs[runs.runs["role"] == Role.ARM]["arm"].dropna().unique())
    objective = cfg_study.get("objective", OBJECTIVE)
    maximize = cfg_study.get("direction", "maximize") == "maximize"
    rerank_k = int((runs.config.get("eval") or {}).get("rerank_k", 10))
    table, comp, zs = summary(runs, arms, rerank_k), comparisons(runs, arms), against_zero_shot(runs, arms)
    mode = objective.split("/")[1] if objective.count("/") == 3 else "retrieval"
    answer = verdict(comp, zs, arms, mode)
    figures = report_figures(runs, arms, objective, maximize, comp)
    images = _pngs(figures)  # before MLflow saves the tuning figures again
    publish(uri, runs, arms, comp, answer, zs, figures)
    anchors = anchors_table({"": table}, arms, (runs.config.get("model") or {}).get("max_length"))
    counts = param_table(runs, arms)
    sections = [
        verdict_section(answer, mode),
        anchors_section(anchors) if anchors is not None else None,
        study_section(runs, arms),
        missing_section(runs, arms, list(cfg_study.get("seeds") or [])),
        parameters_section(counts),
        results_section(runs, arms, table, zs, comp, rerank_k, uri, "forest.png" in images),
        comparison_section(comp, arms),
        zero_shot_section(runs, zs, arms),
        discussion_section(table, counts, arms),
        convergence_section(images),
        gradients_section(runs, arms, images),
        tuning_section(runs, arms, images, tuning_notes(runs, arms, objective, maximize)),
    ]
    numbers = [table.assign(kind="test"), comp.assign(kind="comparison", metric="acc_at_1")]
    numbers.append(zs.assign(kind="zero-shot", metric="acc_at_1"))
    out = Path(out_dir) if out_dir else REPO_ROOT / "reports" / study
    sections = [s for s in sections if s is not None]
    return _write(uri, runs, out, f"Ablation report: {study}", sections, images, pd.concat(numbers, ignore_index=True))


def _write(
    uri: str,
    runs: StudyRuns,
    out: Path,
    title: str,
    sections: list[Section],
    images: dict[str, bytes],
    numbers: pd.DataFrame,
) -> ReportPaths:
    """The figures, summary.csv, report.md and report.html (passwords masked), each written atomically and
    logged on the study run under `report/`."""
    from ablation.tracking.store import Tracker

    out.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        write_text_atomic(data, out / name)
    paths = ReportPaths(out / "report.html", out / "report.md", out / "summary.csv")
    write_csv_atomic(numbers, paths.summary)
    write_text_atomic(redact(to_markdown(title, sections)), paths.markdown)
    write_text_atomic(redact(to_html(title, sections, images)), paths.html)
    tracker = Tracker(uri)
    for p in (paths.html, paths.markdown, paths.summary):
        tracker.log_artifact(runs.study_run.info.run_id, p, "report")
    return paths
