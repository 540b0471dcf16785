"""The report's section that says what was run (commit, corpus, config, status) and what is missing."""

from __future__ import annotations

import datetime as dt

import yaml

from ablation.names import Role
from ablation.report.reader import StudyRuns
from ablation.report.render import Section


def study_section(runs: StudyRuns, arms: list[str]) -> Section:
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


def missing_notes(runs: StudyRuns, arms: list[str], seeds: list) -> list[str]:
    notes = []
    for arm in arms:
        done = runs.finals(arm)
        if len(done) < len(seeds):
            failed = runs.runs[
                (runs.runs["role"] == Role.FINAL) & (runs.runs["arm"] == arm) & (runs.runs["status"] == "FAILED")
            ]
            reasons = "; ".join(str(x) for x in failed["failure"].dropna().unique()[:2])
            notes.append(
                f"{arm}: {len(done)} of {len(seeds)} final runs finished"
                + (f" ({len(failed)} failed: {reasons})" if len(failed) else " (missing or still running)")
            )
    return notes


def missing_section(runs: StudyRuns, arms: list[str], seeds: list) -> Section | None:
    """What keeps the study from complete, and the inconsistencies the reader found; None when nothing."""
    notes = missing_notes(runs, arms, seeds) + runs.warnings
    if not notes:
        return None
    return Section(
        "Missing results and warnings",
        "What keeps this study from complete, and inconsistencies found in MLflow; rows of arms "
        "below are absent or rest on fewer seeds.",
    ).items(notes)
