"""Bold in the headline tables marks exactly what the report's text says it marks: a column's best row
where one of the report's own tests calls it ahead of the runner-up, and nothing the tests do not say."""

from __future__ import annotations

import pandas as pd

from ablation.names import TASKS
from ablation.report.sections.results import headline_table


def _summary(values: dict[str, dict[str, tuple[float, float]]], metric: str = "acc_at_1") -> pd.DataFrame:
    """A summary table (arm, task, mean, std) of retrieval `metric` on all queries; unnamed cells 0.3 ± 0."""
    rows = []
    for arm, cells in values.items():
        for task in [*TASKS, "mean"]:
            m, s = cells.get(task, (0.3, 0.0))
            rows.append({"arm": arm, "task": task, "mean": m, "std": s, "mode": "retrieval", "metric": metric})
    return pd.DataFrame(rows).assign(slice="all")


def _bold(table: object) -> set[tuple[str, str]]:
    """(arm, column) of every bold cell."""
    return {(table.rows[r][0], table.header[c]) for r, c in table.bold}  # type: ignore[attr-defined]


def _tests(*rows: tuple[str, str, str, float, bool]) -> pd.DataFrame:
    """Test rows (arm, reference, task, arm − reference, called) on all queries, retrieval."""
    return pd.DataFrame(
        [
            {"arm": a, "reference": r, "task": t, "diff": d, "significant": s, "slice": "all", "mode": "retrieval"}
            for a, r, t, d, s in rows
        ]
    )


VALUES = {
    "shared": {"sdoc": (0.50, 0.02), "sdc": (0.42, 0.05), "epa": (0.60, 0.01), "mean": (0.55, 0.01)},
    "unshared": {"sdoc": (0.40, 0.03), "sdc": (0.40, 0.01), "mean": (0.45, 0.01)},
    "shared_projection": {"sdoc": (0.45, 0.01), "mean": (0.50, 0.01)},
    "zero-shot": {"epa": (0.50, 0.0), "mean": (0.40, 0.0)},
}
SUMMARY = _summary(VALUES)


def test_bold_is_where_the_paired_test_with_the_runner_up_calls_the_lead() -> None:
    comp = _tests(
        ("shared_projection", "shared", "sdoc", -0.05, True),  # the runner-up of sdoc: called
        ("shared_projection", "shared", "sdc", -0.02, False),  # unshared is sdc's runner-up
        ("unshared", "shared", "sdc", -0.02, False),  # not called: however large the seed sd rule would make it
        ("shared_projection", "shared", "mean", -0.05, False),  # the mean's runner-up: not called
        ("unshared", "shared", "mean", -0.10, True),  # called, but against the third row
    )
    assert _bold(headline_table(SUMMARY, "retrieval", "acc_at_1", comp=comp)) == {("shared", "sdoc")}


def test_no_test_between_two_rows_means_no_bold_and_recall_tables_have_none() -> None:
    # shared_projection ahead of unshared: no test compares two non-reference arms
    values = {
        "shared": {"mean": (0.30, 0.0)},
        "unshared": {"mean": (0.45, 0.0)},
        "shared_projection": {"mean": (0.5, 0)},
    }
    comp = _tests(("shared_projection", "shared", "mean", 0.20, True), ("unshared", "shared", "mean", 0.15, True))
    assert _bold(headline_table(_summary(values), "retrieval", "acc_at_1", comp=comp)) == set()
    recall = _summary(VALUES, metric="recall_at_5")
    tested = _tests(("shared_projection", "shared", "sdoc", -0.05, True))
    assert _bold(headline_table(recall, "retrieval", "recall_at_5", comp=tested)) == set()  # the tests are on acc@1


def test_against_zero_shot_bold_follows_the_zero_shot_test_both_ways() -> None:
    ahead = _summary({"shared": {"mean": (0.55, 0.01)}, "zero-shot": {"mean": (0.45, 0.0)}})
    assert _bold(headline_table(ahead, "retrieval", "acc_at_1", zs=_tests())) == set()
    zs = _tests(("shared", "zero-shot", "mean", 0.10, True))
    assert _bold(headline_table(ahead, "retrieval", "acc_at_1", zs=zs)) == {("shared", "mean")}
    behind = _summary({"shared": {"mean": (0.40, 0.01)}, "zero-shot": {"mean": (0.45, 0.0)}})
    zs = _tests(("shared", "zero-shot", "mean", -0.05, True))
    assert _bold(headline_table(behind, "retrieval", "acc_at_1", zs=zs)) == {("zero-shot", "mean")}
    reranked = behind.assign(mode="rerank")
    assert _bold(headline_table(reranked, "rerank", "acc_at_1", zs=zs)) == set()  # the test is on retrieval
