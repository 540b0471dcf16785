"""What a study holds, read from its MLflow runs: trials used per arm, the final run of each (arm, seed), the
zero-shot run, duplicates, runs done, and what is missing. The runner decides "complete" with it and the
report reads the same, so the two cannot disagree."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ablation.names import WORK_ROLES, Role
from ablation.training.trainer import NonFiniteLoss


def row_of(run: Any) -> dict[str, Any]:
    """The fields the accounting reads, from an MLflow run."""
    t = run.data.tags
    return {
        "run_id": run.info.run_id,
        "status": run.info.status,
        "start_time": run.info.start_time,
        **{k: t.get(k) for k in ("role", "arm", "seed", "trial", "failure")},
    }


def _nonfinite(row: Mapping[str, Any]) -> bool:
    return str(row.get("failure") or "").startswith(NonFiniteLoss.__name__)


def ended_on_its_own(row: Mapping[str, Any]) -> bool:
    """FINISHED, or FAILED on a non-finite loss (rerunning it would fail the same way): work that counts."""
    return row["status"] == "FINISHED" or (row["status"] == "FAILED" and _nonfinite(row))


@dataclass
class StudyState:
    """The accounting of one study's runs."""

    trials_used: dict[str, int] = field(default_factory=dict)  # arm → trial runs that used its budget
    finals: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (arm, seed) → FINISHED runs, oldest first
    settled: set[tuple[str, str]] = field(default_factory=set)  # (arm, seed) with a run that ended on its own
    zero_shot: list[str] = field(default_factory=list)  # FINISHED zero-shot runs, oldest first
    runs_done: int = 0  # trial, final and zero-shot runs that ended on their own

    def duplicates(self) -> list[tuple[str, str, str]]:
        """(what, run id, role to relabel it with) of every FINISHED final or zero-shot run after the first."""
        out = [
            (f"{arm} seed {seed}", r, "duplicate-final") for (arm, seed), runs in self.finals.items() for r in runs[1:]
        ]
        return out + [("the zero-shot run", r, "duplicate-zero-shot") for r in self.zero_shot[1:]]

    def missing(self, arms: Iterable[str], seeds: Iterable[int], n_trials: int, zero_shot: bool) -> list[str]:
        """What keeps the study from complete: a zero-shot run, trial budgets, one FINISHED final per (arm,
        seed) (a final that failed on a non-finite loss is settled but still missing)."""
        items = ["the zero-shot run"] if zero_shot and not self.zero_shot else []
        for arm in arms:
            used = self.trials_used.get(arm, 0)
            if used != n_trials:
                items.append(f"{arm}: {used} of {n_trials} trials")
            for seed in map(str, seeds):
                if not self.finals.get((arm, seed)):
                    items.append(f"{arm} seed {seed}: no finished final run")
        return items


def study_state(rows: Iterable[Mapping[str, Any]]) -> StudyState:
    """The accounting of `rows` (`row_of` of each run, or the report's table records), oldest first."""
    state = StudyState()
    for row in sorted(rows, key=lambda r: (r["start_time"] or 0, r["run_id"])):
        role, arm, seed = row.get("role"), row.get("arm"), row.get("seed")
        if role not in WORK_ROLES or not ended_on_its_own(row):
            continue
        state.runs_done += 1
        if role == Role.TRIAL:
            state.trials_used[arm] = state.trials_used.get(arm, 0) + 1
        elif role == Role.FINAL:
            state.settled.add((arm, seed))
            if row["status"] == "FINISHED":
                state.finals.setdefault((arm, seed), []).append(row["run_id"])
        elif row["status"] == "FINISHED":
            state.zero_shot.append(row["run_id"])
    return state
