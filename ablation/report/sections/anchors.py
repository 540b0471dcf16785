"""The best trained arm beside the untrained encoder at the same input length and beside the published
results, on the two tasks the paper headlines: sdoa (same debate, opposing stance; 7.6 candidates on
average) and epa (the whole test split, 2,801 candidates)."""

from __future__ import annotations

import pandas as pd

from ablation.report.render import Section, Table

PUBLISHED = {"sdoa": 0.60, "epa": 1 / 3}
"""Wachsmuth, Syed and Stein (ACL 2018), abstract: "For 7.6 candidates with opposing stance on average, we
rank the best counterargument highest with 60% accuracy. Even among all 2801 test set pairs as candidates,
we still find the best one about every third time." Reported on all test queries; no unseen slice."""
SOURCE = "Wachsmuth et al. 2018 (all test queries; about .60 and about a third)"
TASKS = ("sdoa", "epa")


def _acc(table: pd.DataFrame, arm: str, task: str, slice_: str) -> float | None:
    got = table[
        (table["arm"] == arm)
        & (table["slice"] == slice_)
        & (table["mode"] == "retrieval")
        & (table["metric"] == "acc_at_1")
        & (table["task"] == task)
    ]["mean"]
    return float(got.iloc[0]) if len(got) else None


def best_arm(tables: dict[str, pd.DataFrame], arms: list[str]) -> tuple[str, str] | None:
    """(level, arm) with the highest mean test retrieval acc@1 over the tasks on unseen queries (on all
    queries where no query is unseen); `tables`: level label → `tables.summary` of that level."""
    scored = []
    for level, table in tables.items():
        for arm in arms:
            value = _acc(table, arm, "mean", "unseen")
            value = _acc(table, arm, "mean", "all") if value is None else value
            if value is not None:
                scored.append((value, level, arm))
    return max(scored)[1:] if scored else None


def anchors_table(tables: dict[str, pd.DataFrame], arms: list[str], length: int | None) -> Table | None:
    """Rows: the best arm, zero-shot at the same level (so the same input length), and the published result;
    columns: sdoa and epa retrieval acc@1 on all and on unseen test queries. None without a trained arm."""
    best = best_arm(tables, arms)
    if best is None:
        return None
    level, arm = best
    table = tables[level]

    def cells(who: str) -> list[str]:
        return [
            "—" if (v := _acc(table, who, task, slice_)) is None else f"{v:.3f}"
            for task in TASKS
            for slice_ in ("all", "unseen")
        ]

    where = f" at {level}" if level else ""
    tokens = f" ({length} tokens)" if length else ""
    rows = [
        [f"best trained arm: {arm}{where}", *cells(arm)],
        [f"zero-shot, the same encoder untrained{tokens}", *cells("zero-shot")],
        [SOURCE, f"{PUBLISHED['sdoa']:.2f}", "—", f"{PUBLISHED['epa']:.2f}", "—"],
    ]
    header = ["", "sdoa, all", "sdoa, unseen", "epa, all", "epa, unseen"]
    return Table(header, rows)


def anchors_section(table: Table) -> Section:
    return Section(
        "Against the published results",
        "Test retrieval acc@1 (mean over seeds) of the best trained arm (by mean acc@1 on unseen queries), "
        "the untrained encoder on the same queries and inputs, and the published figures of the corpus' "
        "authors on sdoa and epa.",
    ).table(table)
