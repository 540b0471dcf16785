"""`ablation run` on a config with `study.sweep`: check every level, then run the levels in order, each a
complete sub-study (`runner.run_study`), with the sweep's own MLflow run above them.

Every level is checked before anything is written (a bad level 3 stops the sweep before level 1 starts).
A rerun, or another process or machine with the same config, walks the same levels: finished ones are
found complete at once, the first unfinished one is resumed or joined. The sweep run is FINISHED when
every level is; a signal ends it KILLED, an error FAILED (a rerun resumes it).
"""

from __future__ import annotations

import time
from pathlib import Path

from ablation.config import ExperimentConfig, dump_yaml, shared_settings
from ablation.errors import UserError
from ablation.io import REPO_ROOT
from ablation.names import Role
from ablation.study.opening import end_runs, record_settings
from ablation.study.preflight import check_kind, check_recorded, check_study
from ablation.study.runner import StudyIncomplete, run_study
from ablation.study.storage import StudyLock
from ablation.study.sweep import Level, levels
from ablation.tracking.store import NOTE_TAG, Tracker


def sweep_note(cfg: ExperimentConfig, all_levels: list[Level]) -> str:
    s = cfg.study
    axis = ", ".join(s.sweep)
    shown = "; ".join(f"{lv.label} ({lv.name})" for lv in all_levels)
    return (
        f"Sweep {s.name} over {axis}: {len(all_levels)} levels, each a complete study ({s.n_trials} trials per "
        f"arm, seeds {', '.join(map(str, s.seeds))}): {shown}."
    )


def _open_sweep_run(cfg: ExperimentConfig, tracker: Tracker, experiment: str, folder: Path, note: str) -> str:
    """The sweep's run, made once under the sweep's lock (RUNNING again on a resume), with its settings."""
    s = cfg.study
    tags = {"study": s.name, "role": Role.SWEEP}
    with StudyLock(s.storage, s.name, folder, s.lease_s)() as held:
        held.check()
        run = tracker.find_or_create_run(experiment, s.name, tags)
        record_settings(tracker, run, shared_settings(cfg))
    tracker.resume(run)
    tracker.set_tags(run, {NOTE_TAG: note, "sweep_axis": ", ".join(s.sweep)})
    return run


def run_sweep(
    cfg: ExperimentConfig,
    corpus: str | None = None,
    tracking_uri: str | None = None,
    run_dir: str | None = None,
    workers: int = 1,
) -> str:
    """Run (or resume, or join) every level of the sweep in order; returns the summary lines. Raises
    StudyIncomplete when a level's workers stopped short (later levels are not started)."""
    if workers < 1:
        raise UserError(f"run: --workers must be at least 1, got {workers}")
    start = time.perf_counter()
    s = cfg.study
    folder = Path(run_dir) if run_dir else REPO_ROOT / "runs" / s.name
    all_levels = levels(cfg, folder)
    checked = [check_study(lv.cfg, corpus, tracking_uri, str(lv.folder)) for lv in all_levels]
    experiment = checked[0].experiment
    check_recorded(checked[0].uri, experiment, {"study": s.name, "role": Role.SWEEP}, shared_settings(cfg))
    check_kind(checked[0].uri, s.name, sweep=True)
    tracker = Tracker(checked[0].uri)  # every check passed: the first write
    run = _open_sweep_run(cfg, tracker, experiment, folder, sweep_note(cfg, all_levels))
    lines = []
    try:
        for lv in all_levels:
            print(
                f"sweep {s.name}: level {lv.index + 1} of {len(all_levels)}, {lv.label} (study {lv.name})", flush=True
            )
            lines.append(run_study(lv.cfg, corpus, tracking_uri, str(lv.folder), workers))
        if tracker.status(run) != "FINISHED":
            tracker.log_text(run, dump_yaml(cfg), "config.yaml")
            tracker.terminate(run, "FINISHED")
    except KeyboardInterrupt:
        end_runs(cfg, tracker, [run], "KILLED", "interrupted")
        raise
    except StudyIncomplete:
        raise
    except BaseException as exc:
        end_runs(cfg, tracker, [run], "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    head = f"sweep {s.name!r} ({len(all_levels)} levels) done in {time.perf_counter() - start:.0f} s"
    return "\n".join([head, *lines])
