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


def test_contiguous_pools_equal_the_masks_on_the_real_split(real_corpus: Path) -> None:
    import numpy as np

    from ablation.config import TASKS
    from ablation.tasks import TaskMasks, TaskPools

    s = read_split(real_corpus, "test")
    masks, pools = TaskMasks(s), TaskPools(s)
    cols = np.arange(2 * s.n)[None, :]
    for task in TASKS:
        c_lo, c_hi, p_lo, p_hi, exclude_self = pools.ranges(task)
        from_pools = ((cols >= c_lo[:, None]) & (cols < c_hi[:, None])) | ((cols >= p_lo[:, None]) & (cols < p_hi[:, None]))
        if exclude_self:
            from_pools[np.arange(s.n), s.n + np.arange(s.n)] = False
        assert np.array_equal(from_pools, masks.mask(task)), task


def test_evaluation_matches_a_dense_reference_on_the_real_split(real_corpus: Path) -> None:
    from tests.ablation.test_evaluate import assert_matches_reference

    assert_matches_reference(read_split(real_corpus, "test"), k=10, seed=0)
