"""Bold in the headline tables marks exactly what the report's text says it marks, and never what the
verdict does not say."""

from __future__ import annotations

import pandas as pd

from ablation.names import TASKS
from ablation.report.sections.results import headline_table


def _summary(values: dict[str, dict[str, tuple[float, float]]]) -> pd.DataFrame:
    """A summary table (arm, task, mean, std) of retrieval acc@1 on all queries; unnamed cells are 0.3 ± 0."""
    rows = []
    for arm, cells in values.items():
        for task in [*TASKS, "mean"]:
            m, s = cells.get(task, (0.3, 0.0))
            rows.append({"arm": arm, "task": task, "mean": m, "std": s, "mode": "retrieval", "metric": "acc_at_1"})
    return pd.DataFrame(rows).assign(slice="all")


def _bold(table: object) -> set[tuple[str, str]]:
    """(arm, column) of every bold cell."""
    return {(table.rows[r][0], table.header[c]) for r, c in table.bold}  # type: ignore[attr-defined]


def _zs(*called: tuple[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"arm": a, "diff": d, "slice": "all", "significant": True} for a, d in called])


SUMMARY = _summary(
    {
        "shared": {"sdoc": (0.50, 0.02), "sdc": (0.42, 0.05), "epa": (0.60, 0.01), "mean": (0.55, 0.01)},
        "unshared": {"sdoc": (0.40, 0.03), "sdc": (0.40, 0.01), "mean": (0.35, 0.01)},
        "zero-shot": {"epa": (0.50, 0.0), "mean": (0.45, 0.0)},
    }
)


def test_bold_marks_a_lead_over_the_runner_up_larger_than_either_seed_sd() -> None:
    bold = _bold(headline_table(SUMMARY, "retrieval", "acc_at_1", zs=_zs(("shared", 0.10))))
    assert ("shared", "sdoc") in bold  # leads by 0.10, more than the larger sd (0.03)
    assert ("shared", "sdc") not in bold  # leads by 0.02, less than the larger sd (0.05)
    # every other task is a tie at 0.3, except epa, whose runner-up is zero-shot (no test per task)
    assert bold == {("shared", "sdoc"), ("shared", "mean")}


def test_a_lead_over_zero_shot_is_bold_only_where_the_verdicts_test_calls_it() -> None:
    assert ("shared", "mean") not in _bold(headline_table(SUMMARY, "retrieval", "acc_at_1", zs=_zs()))
    # a call of another arm, or a call the other way round, does not make shared's cell bold
    wrong = _zs(("unshared", 0.10), ("shared", -0.10))
    assert ("shared", "mean") not in _bold(headline_table(SUMMARY, "retrieval", "acc_at_1", zs=wrong))
    assert ("shared", "epa") not in _bold(headline_table(SUMMARY, "retrieval", "acc_at_1", zs=_zs(("shared", 0.1))))


def test_zero_shot_ahead_is_bold_only_where_the_verdict_says_the_arm_loses_to_it() -> None:
    ahead = _summary({"shared": {"mean": (0.40, 0.01)}, "zero-shot": {"mean": (0.45, 0.0)}})
    assert ("zero-shot", "mean") not in _bold(headline_table(ahead, "retrieval", "acc_at_1", zs=_zs()))
    called = _bold(headline_table(ahead, "retrieval", "acc_at_1", zs=_zs(("shared", -0.05))))
    assert ("zero-shot", "mean") in called
