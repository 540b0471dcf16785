"""The real ArguAna corpus (ARGUANA_DIR): split sizes of the paper's Table 1, and the task pools."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablation.corpus import read_split
from ablation.tasks import task_stats

pytestmark = pytest.mark.real

EXPECTED = {"training": (4083, 4065), "validation": (1290, 1287), "test": (1406, 1401)}


@pytest.mark.parametrize("split", list(EXPECTED))
def test_split_sizes_match_the_paper(real_corpus: Path, split: str) -> None:
    s = read_split(real_corpus, split)
    points, counters = EXPECTED[split]
    assert s.n + s.dropped_points == points
    assert s.n + s.dropped_counters == counters
    assert s.queries["theme"].nunique() == 15


def test_test_split_task_pools(real_corpus: Path) -> None:
    s = read_split(real_corpus, "test")
    stats = task_stats(s).set_index("task")
    assert (stats["queries"] == s.n).all()
    assert stats.loc["epc", "mean_candidates"] == s.n
    assert stats.loc["epa", "mean_candidates"] == 2 * s.n - 1
    order = ["sdoc", "sdc", "sda", "stc", "sta", "epc", "epa"]  # each pool contains the previous one
    assert list(stats.loc[order, "mean_candidates"]) == sorted(stats.loc[order, "mean_candidates"])
