"""The statistics of a sweep: at each level, the arm effect (each arm minus the first, mean retrieval acc@1
over the tasks, paired by seed and query as in `stats.compare`), each arm against that level's zero-shot
reference, and the interaction: how the effect at each later level differs from the effect at the first.

The interaction is a difference of differences, ``E[q, s] = D_level[q, s] − D_first[q, s]`` with
``D = arm − reference``: the levels rank the same test queries, so it is paired by query, and by seed
label (each level retrains under the same seeds; the pairing is valid whether or not a seed's runs at two
levels are alike, and the seed component of the variance shows how much they are). The arm effects and
the interactions of all levels form one Holm family (the sweep's question), the rows against zero-shot
another; each interval agrees with its call (`tables.adjust_families`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ablation.report.reader import StudyRuns
from ablation.report.stats import compare, correctness
from ablation.report.tables import COMPARISON_COLUMNS, adjust_families, arm_per_query, comparison_row

SWEEP_SLICES = ("all", "unseen")
SWEEP_COLUMNS = ["kind", "level", *(c for c in COMPARISON_COLUMNS if c not in ("mode", "task"))]


@dataclass(frozen=True)
class LevelRuns:
    """One level of a sweep as read from MLflow."""

    label: str  # "freeze_layers=5"
    name: str  # its sub-study
    runs: StudyRuns
    zero_shot_from: str  # the sub-study whose zero-shot run is its reference


def scores(runs: StudyRuns, arm: str, slice_: str) -> pd.DataFrame:
    """queries × seeds table of the arm's retrieval acc@1 (mean over the tasks) on one slice."""
    return correctness(arm_per_query(runs, arm), None, "retrieval", slice_)


def _difference(arm: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """arm − reference on the queries and seeds both have."""
    rows = arm.index.intersection(reference.index)
    cols = [c for c in arm.columns if c in set(reference.columns)]
    return arm.loc[rows, cols] - reference.loc[rows, cols]


def sweep_comparisons(levels: list[LevelRuns], arms: list[str]) -> pd.DataFrame:
    """Rows of kind `effect` (per level), `interaction` (each later level against the first) and
    `zero-shot` (each arm per level), Holm-adjusted within the families `sweep` and `zero-shot`."""
    reference, rows = arms[0], []
    for slice_ in SWEEP_SLICES:
        first: dict[str, pd.DataFrame] = {}
        for i, lv in enumerate(levels):
            tables = {arm: scores(lv.runs, arm, slice_) for arm in arms}
            for arm in arms[1:]:
                c = compare(tables[reference], tables[arm])
                keys = {"arm": arm, "reference": reference, "slice": slice_}
                if not c.n_queries:
                    continue
                rows.append(comparison_row(c, kind="effect", level=lv.label, family="sweep", **keys))
                d = _difference(tables[arm], tables[reference])
                if i == 0:
                    first[arm] = d
                elif arm in first:
                    c = compare(first[arm], d)
                    label = f"{lv.label} vs {levels[0].label}"
                    rows.append(comparison_row(c, kind="interaction", level=label, family="sweep", **keys))
            zero = scores(lv.runs, "zero-shot", slice_)
            for arm in arms:
                c = compare(zero, tables[arm], fixed_reference=True)
                if c.n_queries and zero.shape[1]:
                    keys = {"arm": arm, "reference": "zero-shot", "slice": slice_}
                    rows.append(comparison_row(c, kind="zero-shot", level=lv.label, family="zero-shot", **keys))
    if not rows:
        return pd.DataFrame(columns=SWEEP_COLUMNS)
    return adjust_families(pd.DataFrame(rows), ["family"])[SWEEP_COLUMNS]


def arm_means(levels: list[LevelRuns], arms: list[str]) -> pd.DataFrame:
    """Each arm's (and zero-shot's) mean retrieval acc@1 per level and slice, with an unadjusted 95 %
    interval over seeds and queries (zero-shot: over queries): what the sweep figure plots."""
    rows = []
    for lv in levels:
        for slice_ in SWEEP_SLICES:
            for arm in (*arms, "zero-shot"):
                table = scores(lv.runs, arm, slice_)
                if table.empty:
                    continue
                zeros = pd.DataFrame({"0": np.zeros(len(table))}, index=table.index)
                c = compare(zeros, table, fixed_reference=True)
                rows.append(
                    {"level": lv.label, "arm": arm, "slice": slice_, "mean": c.diff, "ci_low": c.low, "ci_high": c.high}
                )
    return pd.DataFrame(rows, columns=["level", "arm", "slice", "mean", "ci_low", "ci_high"])
