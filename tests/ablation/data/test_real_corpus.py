"""The real ArguAna corpus (ARGUANA_DIR): split sizes of the paper's Table 1, and the task pools."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablation.data.corpus import read_split
from ablation.data.slices import query_slices, training_texts
from ablation.data.tasks import task_stats

pytestmark = pytest.mark.real

EXPECTED = {"training": (4083, 4065), "validation": (1290, 1287), "test": (1406, 1401)}


@pytest.mark.parametrize("split", list(EXPECTED))
def test_split_sizes_match_the_paper(real_corpus: Path, split: str) -> None:
    s = read_split(real_corpus, split)
    points, counters = EXPECTED[split]
    assert s.n + s.dropped_points == points
    assert s.n + s.dropped_counters == counters
    assert s.queries["theme"].nunique() == 15


# Mean candidates per query of the official pools (Wachsmuth et al. 2018, test split), as published
PUBLISHED = {
    "sdoc": 3.89,
    "sdc": 7.65,
    "sdoa": 7.65,
    "sda": 14.30,
    "stc": 136.5,
    "sta": 272.1,
    "epc": 1400.8,
    "epa": 2800.8,
}


def test_test_split_pools_have_the_published_sizes(real_corpus: Path) -> None:
    s = read_split(real_corpus, "test")
    stats = task_stats(s).set_index("task")
    assert (stats["queries"] == s.n).all()
    for task, published in PUBLISHED.items():
        digits = len(str(published).split(".")[1])
        assert round(stats.loc[task, "mean_candidates"], digits) == published, task
    # 218 false pairs are copies of the true counter in the whole split, 6 in each debate and theme task
    assert stats.loc["epc", "false_pairs"] == s.n * (s.n - 1) - 218


def test_slices_of_the_real_splits(real_corpus: Path) -> None:
    seen = training_texts(real_corpus)
    for split, unseen in (("test", 783), ("validation", 713)):
        s = read_split(real_corpus, split)
        slices = query_slices(s, seen)
        assert {int(m.sum()) for m in slices["unseen"].values()} == {unseen}, split
        assert slices["self_copy"]["epc"].sum() == 0  # counters only: no point, so no copy of the query's text
    assert int(query_slices(read_split(real_corpus, "test"), seen)["self_copy"]["epa"].sum()) == 214


def test_mining_on_the_real_training_split_never_picks_a_copy(real_corpus: Path) -> None:
    import numpy as np

    from ablation.training.negatives import Forbidden, mine

    s = read_split(real_corpus, "training")
    forbidden = Forbidden.from_codes(s.text_codes)
    vectors = np.random.default_rng(0).normal(size=(int(s.text_codes.max()) + 1, 16))[s.text_codes]  # copies coincide
    negs = mine(vectors[s.n :], vectors, 0.0, np.random.default_rng(1), forbidden)
    texts = [" ".join(t.split()) for t in s.candidate_texts]
    assert not any(texts[j] in (texts[i], texts[s.n + i]) for i, j in enumerate(negs.index))
    # 1,844 queries have their own text elsewhere as a point, at distance 0: each copy had to be passed over
    assert negs.dup_used == 0 and negs.dup_skipped >= 1844
    assert mine(vectors[s.n :], vectors, 1.0, np.random.default_rng(1), forbidden).dup_used == 0


def test_contiguous_pools_equal_the_masks_on_the_real_split(real_corpus: Path) -> None:
    import numpy as np

    from ablation.data.tasks import TaskMasks, TaskPools
    from ablation.names import TASKS

    s = read_split(real_corpus, "test")
    masks, pools = TaskMasks(s), TaskPools(s)
    cols = np.arange(2 * s.n)[None, :]
    for task in TASKS:
        c_lo, c_hi, p_lo, p_hi, exclude_self = pools.ranges(task)
        from_pools = ((cols >= c_lo[:, None]) & (cols < c_hi[:, None])) | (
            (cols >= p_lo[:, None]) & (cols < p_hi[:, None])
        )
        if exclude_self:
            from_pools[np.arange(s.n), s.n + np.arange(s.n)] = False
        from_pools[pools.excluded] = False
        assert np.array_equal(from_pools, masks.mask(task)), task
        members = np.nonzero(from_pools)
        assert pools.contains(task, *members).all() and (pools.sizes(task) == from_pools.sum(1)).all()


def test_evaluation_matches_a_dense_reference_on_the_real_split(real_corpus: Path) -> None:
    from tests.conftest import assert_matches_reference

    assert_matches_reference(read_split(real_corpus, "test"), k=10, seed=0)
